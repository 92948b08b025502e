"""A bridge (``App``) in this trio run with its config in a file, SMSC emulators, and an ESME
(smpplib in a worker thread): for the tests of connectors changed by a config reload and of
outbind."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import trio

from bridge.app import App
from bridge.config import load_config

from e2e_support import client, receipt_fields, receive_deliver_sm, submit

ESME, ESME_PASSWORD = "alice", "secret1"
ADMIN_TOKEN = "connector-reload-test-token-0123456789"


def connector(name: str, port: int, *, password: str = "secret", **extra: Any) -> str:
    keys = {"host": "127.0.0.1", "port": port, "system_id": "bridge", "password": password, "tls": "false",
            "rebind_min": 0.2, "rebind_max": 1, "response_timeout": 3, "status_poll_interval": 0.1,
            "health_interval": 0.3, **extra}  # fmt: skip
    return "\n".join([f"- name: {name}", *(f"  {k}: {v}" for k, v in keys.items())])


def route(name: str, channels: list[str], prefixes: list[str] | None = None) -> str:
    out = f"- name: {name}\n  channels: [{', '.join(channels)}]"
    if prefixes:
        out += f"\n  prefixes: [{', '.join(repr(p) for p in prefixes)}]"
    return out


def write_config(path: Path, connectors: list[str], routes: list[str]) -> Path:
    text = textwrap.dedent(f"""\
        smpp:
          listeners: [{{host: 127.0.0.1, port: 0}}]
          timers: {{session_init: 5, enquire_link: 30, inactivity: 600, response: 5, unbind_grace: 1}}
        esmes:
          - system_id: {ESME}
            password: {ESME_PASSWORD}
            allowed_ips: [127.0.0.1]
            max_binds: 4
        store:
          path: {path.parent / "bridge.sqlite3"}
        admin:
          port: 0
          token: {ADMIN_TOKEN}
        scheduler:
          retry_backoff: 0.2
          retry_backoff_max: 1
          busy_retry: 0.2
          logout_cooldown: 0.3
          quarantine_base: 0.3
          quarantine_max: 1
        """)
    text += "connectors:\n" + textwrap.indent("\n".join(connectors), "  ") + "\n"
    text += "routes:\n" + textwrap.indent("\n".join(routes), "  ") + "\n"
    path.write_text(text)
    path.chmod(0o600)
    return path


async def start_app(nursery: trio.Nursery, path: Path) -> App:
    app = App(load_config(path), config_path=path)
    await nursery.start(app.run)
    return app


async def wait_for(cond: Any, timeout: float = 20.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.02)


class Esme:
    """One smpplib transceiver bind to the bridge, driven from worker threads."""

    def __init__(self, app: App) -> None:
        self.port = app.smpp_ports[0]
        self.c: Any = None

    async def bind(self) -> Esme:
        def go() -> Any:
            c = client(self.port, timeout=20)
            c.bind_transceiver(system_id=ESME, password=ESME_PASSWORD)
            return c

        self.c = await trio.to_thread.run_sync(go)
        return self

    async def submit(self, dest: str, text: str) -> str:
        resp = await trio.to_thread.run_sync(lambda: submit(self.c, text.encode(), dest=dest, registered_delivery=1))
        assert resp.status == 0, resp.status
        return resp.message_id.decode()

    async def receipts(self, count: int) -> dict[str, dict[str, str]]:
        """The next ``count`` receipts, by our message id."""
        pdus = await trio.to_thread.run_sync(lambda: receive_deliver_sm(self.c, count, timeout=30))
        out = {}
        for p in pdus:
            f = receipt_fields(p)
            out[f["id"]] = f
        return out

    async def close(self) -> None:
        c = self.c
        if c is not None:
            await trio.to_thread.run_sync(lambda: (c.unbind(), c.disconnect()))


async def console_page(app: App, path: str) -> str:
    """A page of the app's web console, logged in with the admin token (no socket: ASGI)."""
    import httpx

    transport = httpx.ASGITransport(app=app.http_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8025") as c:
        await c.post("/console/login", data={"secret": ADMIN_TOKEN})
        return (await c.get(path)).text
