"""The ``smpp-bridge`` command."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import attrs
import trio

from . import __version__


def _setup_logging(level: str = "info") -> None:
    """Logging for the demo and the emulators (``run`` uses the config's logging section)."""
    from .logs import configure_logging

    configure_logging(level if level in ("debug", "info", "warning", "error") else "info", "text")


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        load_config(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{len(exc.issues)} error(s) in {args.file}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    return 0


def _run_app(config, banner: str | None = None, config_path: str | None = None) -> int:  # type: ignore[no-untyped-def]
    from .app import App

    app = App(config, handle_signals=True, config_path=config_path)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            if banner:
                admin = (
                    f"admin HTTP on {config.admin.host}:{app.admin_port}"
                    if app.admin_port is not None
                    else "admin HTTP off"
                )
                print(banner.format(ports=app.smpp_ports, port=app.smpp_ports[0], admin=admin), flush=True)

    return _trio_run(main)


def _trio_run(main: Any) -> int:
    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except (OSError, BaseExceptionGroup) as exc:
        # A port in use, a store directory that cannot be created: say so plainly.
        errors, rest = (exc.split(OSError) if isinstance(exc, BaseExceptionGroup) else (exc, None))
        if errors is None or rest is not None:
            raise
        for err in _leaves(errors):
            print(f"smpp-bridge stopped: {err}", file=sys.stderr)
        return 2
    return 0


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print("The bridge did not start: fix the errors above (smpp-bridge check-config FILE).", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"{args.config}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    from .logs import collect_secrets, configure_logging

    configure_logging(config.logging.level, config.logging.format, collect_secrets(config))
    return _run_app(
        config, "smpp-bridge ready: SMPP on port(s) {ports}; {admin}", config_path=os.path.abspath(args.config)
    )


def _cmd_demo(args: argparse.Namespace) -> int:
    from .app import App
    from .config import default_demo_config
    from .emulators.goip import GoipEmulator

    _setup_logging(args.log_level)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="smpp-bridge-demo-"))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            # A GoIP with 8 lines and fast timings, so receipts come back within seconds.
            emulator = GoipEmulator(lines=8, send_duration=0.3)
            goip_port = await nursery.start(emulator.serve, "127.0.0.1", 0)
            config = default_demo_config(
                data_dir,
                smpp_port=args.smpp_port,
                goip_url=f"http://127.0.0.1:{goip_port}",
                goip_lines=8,
            )
            config = attrs.evolve(config, admin=attrs.evolve(config.admin, port=args.admin_port))
            app = App(config, handle_signals=True)
            await nursery.start(app.run)
            port = app.smpp_ports[0]
            admin = (
                f"  admin API and metrics: http://127.0.0.1:{app.admin_port}/metrics, "
                f"/api/status (or: smpp-bridge status --admin http://127.0.0.1:{app.admin_port})\n"
                if app.admin_port is not None
                else ""
            )
            print(
                "smpp-bridge demo is running.\n"
                f"  store: {config.store.path}\n"
                f"  emulated GoIP (8 lines): http://127.0.0.1:{goip_port}/ "
                f"(GET /emulator/sent lists what it 'sent')\n"
                f"  bind any SMPP 3.4 client to 127.0.0.1:{port} with system_id 'demo', password 'demo'\n"
                f"{admin}"
                "  for example, with smpplib:\n"
                "    import smpplib.client\n"
                f"    c = smpplib.client.Client('127.0.0.1', {port}); c.connect()\n"
                "    c.bind_transceiver(system_id='demo', password='demo')\n"
                "    c.send_message(source_addr='demo', destination_addr='+15550001',\n"
                "                   short_message=b'hello', registered_delivery=1)\n"
                "    c.listen()  # prints nothing by itself: set c.set_message_received_handler(print)\n"
                f"  SMPP on port(s) [{port}]\n"
                "  Ctrl-C stops it.",
                flush=True,
            )
            await app.stopped.wait()
            nursery.cancel_scope.cancel()

    return _trio_run(main)


def _cmd_hash_password(args: argparse.Namespace) -> int:
    from .passwords import hash_password

    pw = args.password if args.password is not None else getpass.getpass("password: ")
    try:
        print(hash_password(pw))
    except ValueError as exc:
        print(f"cannot hash that password: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_emulate(args: argparse.Namespace) -> int:
    _setup_logging(args.log_level)
    if args.kind == "goip":
        from .emulators.goip import run_goip_emulator

        print(f"GoIP emulator: {args.lines} lines on http://{args.host}:{args.port}/", flush=True)
        try:
            trio.run(
                lambda: run_goip_emulator(
                    port=args.port,
                    lines=args.lines,
                    host=args.host,
                    send_duration=args.send_duration,
                    username=args.username,
                    password=args.password,
                )
            )
        except KeyboardInterrupt:
            pass
        return 0
    print(f"unknown emulator kind {args.kind!r}", file=sys.stderr)
    return 2


def _cmd_status(args: argparse.Namespace) -> int:
    import httpx

    url, token = _admin_target(args)
    if url is None:
        return 2
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        r = httpx.get(url.rstrip("/") + "/api/status", headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(
            f"cannot reach the admin API at {url}: {exc}.\n"
            "Is the bridge running, and is admin.port set (not 0)? Pass --admin URL or --config FILE.",
            file=sys.stderr,
        )
        return 2
    if r.status_code == 401:
        print(
            f"the admin API at {url} refused the token ({r.json().get('error', '')}): pass --token-file FILE, "
            "set SMPP_BRIDGE_ADMIN_TOKEN, or --config FILE to read admin.token from the bridge's config",
            file=sys.stderr,
        )
        return 2
    if r.status_code != 200:
        print(f"the admin API at {url} answered HTTP {r.status_code}: {r.text[:500]}", file=sys.stderr)
        return 2
    status = r.json()
    if args.json:
        import json

        print(json.dumps(status, indent=2))
    else:
        print(format_status(status))
    return 0


def _admin_target(args: argparse.Namespace) -> tuple[str | None, str | None]:
    """(admin URL, token) from --admin/--token/--token-file, the environment or --config."""
    url = args.admin or os.environ.get("SMPP_BRIDGE_ADMIN_URL")
    token = args.token or os.environ.get("SMPP_BRIDGE_ADMIN_TOKEN")
    if args.token_file:
        try:
            token = Path(args.token_file).read_text().strip()
        except OSError as exc:
            print(f"{args.token_file}: cannot read: {exc.strerror}", file=sys.stderr)
            return None, None
    if args.config:
        from .config import ConfigError, load_config

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            print(str(exc), file=sys.stderr)
            print(f"cannot read the admin settings from {args.config}: fix the errors above", file=sys.stderr)
            return None, None
        if not config.admin.enabled:
            print(f"{args.config}: admin.port is 0, so the admin API is off; set a port and restart", file=sys.stderr)
            return None, None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(config.admin.host, config.admin.host)
        if ":" in host:
            host = f"[{host}]"
        url = url or f"http://{host}:{config.admin.port}"
        if token is None and config.admin.token is not None:
            token = config.admin.token.reveal()
    return url or "http://127.0.0.1:8025", token


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[("-" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    return "\n".join(lines)


def _age(seconds: float | None) -> str:
    if not seconds:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def format_status(st: dict[str, Any]) -> str:
    """The admin API's /api/status as terminal tables."""
    out = [
        f"smpp-bridge {st['version']}  up {_age(st['uptime_seconds'])}  "
        f"{'ready' if st['ready'] else 'NOT READY'}  SMPP ports {st['smpp']['ports']}  "
        f"connections {st['smpp']['connections']}",
        "",
        "ESMEs",
    ]
    rows = []
    for e in st["esmes"]:
        kinds: dict[str, int] = {}
        for b in e["binds"]:
            kinds[b["bind_type"]] = kinds.get(b["bind_type"], 0) + 1
        binds = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())) or ("none" if e["enabled"] else "disabled")
        r, mo = e["outbox"]["receipt"], e["outbox"]["mo"]
        rows.append([e["system_id"], binds, r["waiting"], _age(r["oldest_seconds"]), mo["waiting"], _age(mo["oldest_seconds"])])
    out.append(_table(["ESME", "BINDS", "RECEIPTS WAITING", "OLDEST", "MO WAITING", "OLDEST"], rows))
    out += ["", "Channels"]
    rows = []
    for d in st["devices"]:
        h = d["health"]
        up = "?" if h is None else ("up" if h["up"] else "DOWN")
        for c in d["channels"]:
            caps = c["caps_remaining"]
            left = "/".join("∞" if caps.get(w) is None else str(int(caps[w])) for w in ("minute", "hour", "day")) if caps else "-"
            reg = {True: "yes", False: "NO", None: "?"}[c["registered"]]
            state = c["state"] + (" (paused)" if c["paused"] and c["state"] != "paused" else "")
            if c.get("back_in_seconds"):
                state += f" {_age(c['back_in_seconds'])}"
            rows.append([c["key"], up, state, reg, c["signal"], left, ",".join(c["routes"]) or "-"])
    out.append(_table(["CHANNEL", "DEVICE", "STATE", "GSM", "SIGNAL", "LEFT MIN/HOUR/DAY", "ROUTES"], rows))
    down = [d for d in st["devices"] if d["health"] is not None and not d["health"]["up"]]
    for d in down:
        out.append(f"  device {d['name']} is down: {d['health']['detail']}")
    out += ["", "Routes"]
    rows = [
        [r["name"], r["queued"], _age(r["oldest_queued_seconds"]), f"{r['channels_available']}/{len(r['channels'])}"]
        for r in st["routes"]
    ]
    out.append(_table(["ROUTE", "QUEUED", "OLDEST", "CHANNELS AVAILABLE"], rows))
    s = st["store"]
    by_state = ", ".join(f"{k} {v}" for k, v in sorted(s["messages_by_state"].items())) or "-"
    free = s["disk_free_bytes"]
    out += [
        "",
        f"Store {s['path']}: {s['database_bytes'] / 2**20:.1f} MiB, "
        f"{'?' if free is None else f'{free / 2**30:.1f} GiB'} free on its disk, "
        f"{s['active_messages']} active",
        f"  messages by state: {by_state}",
    ]
    return "\n".join(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smpp-bridge",
        description="SMPP 3.4 server that sends and receives SMS through local GSM hardware.",
    )
    p.add_argument("--version", action="version", version=f"smpp-bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the bridge with a config file")
    run.add_argument("--config", "-c", required=True, help="path to bridge.yaml")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and list every error")
    check.add_argument("file")
    check.set_defaults(func=_cmd_check_config)

    demo = sub.add_parser("demo", help="run on an embedded default config (loopback only)")
    demo.add_argument("--smpp-port", type=int, default=2775)
    demo.add_argument("--data-dir", help="where the SQLite store lives (default: a new temporary folder)")
    demo.add_argument("--admin-port", type=int, default=8025, help="admin API and /metrics port; 0 turns it off")
    demo.add_argument("--log-level", default="info")
    demo.set_defaults(func=_cmd_demo)

    st = sub.add_parser("status", help="show ESMEs, channels, queues and the store of a running bridge")
    st.add_argument("--admin", help="admin API URL [SMPP_BRIDGE_ADMIN_URL, from --config, or http://127.0.0.1:8025]")
    st.add_argument("--config", "-c", help="read the admin URL and token from this bridge.yaml")
    st.add_argument("--token", help="admin token (visible in ps: prefer --token-file or SMPP_BRIDGE_ADMIN_TOKEN)")
    st.add_argument("--token-file", help="file holding the admin token")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.add_argument("--timeout", type=float, default=10.0)
    st.set_defaults(func=_cmd_status)

    hp = sub.add_parser("hash-password", help="print a salted hash for esmes[].password_hash")
    hp.add_argument("--password", help="the password (prompted for when omitted)")
    hp.set_defaults(func=_cmd_hash_password)

    em = sub.add_parser("emulate", help="run a device emulator on its own")
    em.add_argument("kind", choices=["goip"])
    em.add_argument("--port", type=int, default=8081)
    em.add_argument("--host", default="127.0.0.1")
    em.add_argument("--lines", type=int, default=8)
    em.add_argument("--send-duration", type=float, default=2.5, help="seconds a line stays busy per SMS")
    em.add_argument("--username", default="admin")
    em.add_argument("--password", default="admin")
    em.add_argument("--log-level", default="info")
    em.set_defaults(func=_cmd_emulate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
