"""``smpp-bridge demo --site upstream``: SIM channels first, an upstream SMSC when they are down.

One emulated GoIP (2 SIM lines, HTTP API) and one emulated SMSC (``bridge/connectors/emulator.py``)
the bridge binds to as an ESME. Two routes fail over into each other: local destinations go
out through the SIMs and, while every SIM is logged out, through the SMSC; "+1..." goes to the
SMSC and, while it is unreachable, through the SIMs. Receipts come back either way. The config
is written to the data directory as ``bridge.yaml`` and loaded like any other.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import trio

from .demo import demo_common_yaml

GOIP, SMSC = "sims", "provider"
GOIP_LINES = 2
SMSC_SYSTEM_ID, SMSC_PASSWORD = "bridge", "demo-pw"
HEALTH_INTERVAL = 2.0


def upstream_site_yaml(*, smpp_port: int, admin_port: int, goip_url: str, smsc_port: int,
                       store_path: str = "bridge.sqlite3") -> str:
    common = demo_common_yaml(smpp_port=smpp_port, admin_port=admin_port, store_path=store_path)
    yaml = textwrap.dedent(f"""\
        # smpp-bridge demo: SIMs first, an upstream SMSC when they are down
        # (written by `smpp-bridge demo --site upstream`).
        {{common}}
        devices:
          - name: {GOIP}
            kind: goip_http
            url: {goip_url}
            password: admin
            lines: {GOIP_LINES}
            timeout: 3
            status_poll_interval: 0.3
            health_interval: {HEALTH_INTERVAL}
            caps: {{per_minute: 0}}
        connectors:
          - name: {SMSC}
            host: 127.0.0.1
            port: {smsc_port}
            system_id: {SMSC_SYSTEM_ID}
            password: {SMSC_PASSWORD}
            tls: false            # the emulated SMSC speaks plain SMPP on loopback
            window: 4
            health_interval: {HEALTH_INTERVAL}
            rebind_max: 5
        routes:
          - name: international
            prefixes: ["+1"]
            channels: [{SMSC}]
            failover: local
          - name: local
            channels: [{GOIP}]
            failover: international
        scheduler:
          retry_backoff: 2
          retry_backoff_max: 10
          logout_cooldown: 20
        inbound:
          default_esme: demo
        """)
    return yaml.replace("{common}\n", common)


async def run_upstream_site(data_dir: Path, smpp_port: int, admin_port: int) -> None:
    from .app import App
    from .config import load_config
    from .connectors.emulator import SmscEmulator, control
    from .demo import _admin_line, _smpplib_example, free_tcp_port
    from .devices.goip_http.emulator import GoipEmulator
    from .http.server import HttpServer

    if admin_port == 0:
        admin_port = free_tcp_port()
    async with trio.open_nursery() as nursery:
        goip = GoipEmulator(lines=GOIP_LINES, send_duration=0.3)
        goip_port = await nursery.start(goip.serve, "127.0.0.1", 0)
        smsc = SmscEmulator(SMSC_SYSTEM_ID, SMSC_PASSWORD)
        smsc_port = await nursery.start(smsc.serve, 0)
        hooks = HttpServer(lambda request: control(smsc, request), name="smsc-emulator")
        hooks_port = await nursery.start(hooks.serve, "127.0.0.1", 0)
        data_dir.mkdir(parents=True, exist_ok=True)
        config_path = data_dir / "bridge.yaml"
        config_path.write_text(upstream_site_yaml(
            smpp_port=smpp_port, admin_port=admin_port, goip_url=f"http://127.0.0.1:{goip_port}", smsc_port=smsc_port,
        ))  # fmt: skip
        os.chmod(config_path, 0o600)  # inline passwords: only the owner may read it
        config = load_config(config_path)
        app = App(config, handle_signals=True, config_path=config_path)
        await nursery.start(app.run)
        with trio.move_on_after(10):  # the first bind, so the demo starts whole
            while smsc.bound == 0:
                await trio.sleep(0.05)
        port = app.smpp_ports[0]
        g, s = f"http://127.0.0.1:{goip_port}", f"http://127.0.0.1:{hooks_port}"
        post = "curl -s -X POST -H 'Content-Type: application/json'"
        lines_out = ", ".join(f'"{n}": null' for n in range(1, GOIP_LINES + 1))
        lines_in = ", ".join(str(n) for n in range(1, GOIP_LINES + 1))
        print(
            "smpp-bridge demo (upstream site) is running.\n"
            f"  config: {config_path} (SIMs and an upstream SMSC connector: read it, copy it)\n"
            f"  store: {config.store.path}\n"
            f"  bind any SMPP 3.4 client to 127.0.0.1:{port} with system_id 'demo', password 'demo'\n"
            f"{_admin_line(app)}"
            "  where messages go (first match wins; a route with no healthy channel fails over):\n"
            f"    +1...          international -> {SMSC} (upstream SMSC); failover: local\n"
            f"    anything else  local         -> {GOIP} (GoIP, {GOIP_LINES} SIM lines); failover: international\n"
            f"  emulated GoIP: {g}/ (GET /emulator/sent lists what the SIMs 'sent')\n"
            f"  emulated SMSC on SMPP port {smsc_port}, bound by the bridge as '{SMSC_SYSTEM_ID}': test hooks {s}/\n"
            f"    (GET /emulator/sent, POST /emulator/faults, POST /emulator/inject for an MO from upstream)\n"
            "  watch the failover (health checks every "
            f"{HEALTH_INTERVAL:g} s):\n"
            f"    log out the SIMs:  {post} {g}/emulator/faults -d '{{\"logout\": {{{lines_out}}}}}'\n"
            f"      then a local message goes out through the SMSC ({s}/emulator/sent), its receipt comes back;\n"
            f"      undo: {post} {g}/emulator/faults -d '{{\"login\": [{lines_in}]}}'\n"
            f"    an MO from upstream: {post} {s}/emulator/inject -d '{{\"sender\": \"+15550100\", \"text\": \"hi\"}}'\n"
            "    smpp-bridge status (with the admin URL above) shows the connector's binds, submits and receipts\n"
            f"{_smpplib_example(port, '+4915550001')}"
            f"  SMPP on port(s) [{port}]\n"
            "  Ctrl-C stops it.",
            flush=True,
        )
        await app.stopped.wait()
        nursery.cancel_scope.cancel()
