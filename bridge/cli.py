"""The ``smpp-bridge`` command."""

from __future__ import annotations

import argparse
import getpass
import logging
import sys
import tempfile
from pathlib import Path

import trio

from . import __version__


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    # httpx logs full request URLs (device credentials in query strings) at INFO/DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)


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


def _run_app(config, banner: str | None = None) -> int:  # type: ignore[no-untyped-def]
    from .app import App

    app = App(config, handle_signals=True)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(app.run)
            if banner:
                print(banner.format(ports=app.smpp_ports, port=app.smpp_ports[0]), flush=True)

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    return 0


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
    _setup_logging(config.logging.level)
    return _run_app(config, "smpp-bridge ready: SMPP on port(s) {ports}")


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
            app = App(config, handle_signals=True)
            await nursery.start(app.run)
            port = app.smpp_ports[0]
            print(
                "smpp-bridge demo is running.\n"
                f"  store: {config.store.path}\n"
                f"  emulated GoIP (8 lines): http://127.0.0.1:{goip_port}/ "
                f"(GET /emulator/sent lists what it 'sent')\n"
                f"  bind any SMPP 3.4 client to 127.0.0.1:{port} with system_id 'demo', password 'demo'\n"
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

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    return 0


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
    demo.add_argument("--log-level", default="info")
    demo.set_defaults(func=_cmd_demo)

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
