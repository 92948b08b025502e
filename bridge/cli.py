"""The ``smpp-bridge`` command."""

from __future__ import annotations

import argparse
import errno
import getpass
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import trio

from . import __version__


def _setup_logging(level: str = "info") -> None:
    """Logging for the demo and the emulators (``run`` uses the config's logging section)."""
    from .logs import configure_logging

    configure_logging(level if level in ("debug", "info", "warning", "error") else "info", "text")


def _cmd_check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config, store_location_issues

    if not _apply_env_file(args):
        return 1
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print(f"{len(exc.issues)} error(s) in {args.file}", file=sys.stderr)
        _env_hint(exc, args)
        return 1
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    issues = store_location_issues(config)
    if issues:
        print(str(ConfigError(issues, args.file)), file=sys.stderr)
        print(f"{len(issues)} error(s) in {args.file}", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    return 0


def load_env_file(path: str) -> dict[str, str]:
    """``NAME=value`` lines, as systemd's ``EnvironmentFile=`` reads them (the subset a secrets
    file needs): blank lines and lines starting with ``#`` or ``;`` are skipped, ``export`` in
    front is allowed, a value in single or double quotes loses them. Raises ValueError naming
    the line for anything else, and for a file other users can read."""
    with open(path, encoding="utf-8") as f:
        mode = os.fstat(f.fileno()).st_mode
        text = f.read()
    if os.name == "posix" and mode & 0o004:
        raise ValueError(f"{path} can be read by every user (mode {mode & 0o777:o}): it holds secrets; "
                         f"chmod 0640 {path} (or 0600)")
    out: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("export "):
            line = line[len("export "):].lstrip()
        name, sep, value = line.partition("=")
        name, value = name.strip(), value.strip()
        if not sep or not name.replace("_", "a").isalnum() or name[0].isdigit():
            raise ValueError(f"{path}:{n}: expected NAME=value (NAME of letters, digits and _)")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        out[name] = value
    return out


def _apply_env_file(args: argparse.Namespace) -> bool:
    """--env-file FILE: put its variables into this process's environment (they win over
    variables already set, as with systemd's EnvironmentFile=). False after printing why not."""
    path = getattr(args, "env_file", None)
    if not path:
        return True
    try:
        os.environ.update(load_env_file(path))
    except OSError as exc:
        print(f"{path}: cannot read the environment file: {exc.strerror}", file=sys.stderr)
        return False
    except (ValueError, UnicodeDecodeError) as exc:
        print(f"{exc}", file=sys.stderr)
        return False
    return True


def _env_hint(exc: Exception, args: argparse.Namespace) -> None:
    """A missing ``*_env`` variable, checked outside systemd: point at --env-file."""
    if "is not set" in str(exc) and not getattr(args, "env_file", None):
        print("The *_env secrets come from the environment: pass the file the service uses, "
              "e.g. --env-file /etc/smpp-bridge/secrets.env", file=sys.stderr)


def _run_app(config, banner: str | None = None, config_path: str | None = None) -> int:  # type: ignore[no-untyped-def]
    from .app import App
    from .heap import HeapSettingError

    try:
        app = App(config, handle_signals=True, config_path=config_path)
    except HeapSettingError as exc:  # a setting from the environment, not from the config
        print(f"smpp-bridge stopped: {exc}", file=sys.stderr)
        return 1

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

    return _trio_run(main, config_ports(config, config_path or "the config"))


# (port, host, what, how to change it): the ports a command listens on, for a clear message
# when one of them is taken.
Port = tuple[int, str, str, str]


def _trio_run(main: Any, ports: list[Port] | None = None) -> int:
    from .store.records import StoreError

    try:
        trio.run(main)
    except KeyboardInterrupt:
        pass
    except BaseExceptionGroup as group:
        # Ctrl-C inside a nursery arrives wrapped in a group: still just a stop.
        interrupts, rest = group.split(KeyboardInterrupt)
        if rest is None:
            return 0
        return _stopped_by_oserror(rest, ports)
    except (OSError, StoreError) as exc:
        return _stopped_by_oserror(exc, ports)
    return 0


def _stopped_by_oserror(exc: BaseException, ports: list[Port] | None) -> int:
    """A port in use, a store directory that cannot be created, a store refused at start (damaged,
    lost, read-only): say so plainly, with the fix."""
    from .store.records import StoreError

    errors, rest = (exc.split((OSError, StoreError)) if isinstance(exc, BaseExceptionGroup) else (exc, None))
    if errors is None or rest is not None:
        raise exc
    for err in _leaves(errors):
        if isinstance(err, OSError) and err.errno == errno.EADDRINUSE:
            print(f"smpp-bridge stopped: {_port_in_use(ports or [])}", file=sys.stderr)
        else:
            print(f"smpp-bridge stopped: {err}", file=sys.stderr)
    return 2


def _port_in_use(ports: list[Port]) -> str:
    """Which of the ports is taken (probed now that ours are closed), and how to pick another."""
    import socket

    busy = []
    for port, host, what, how in ports:
        if not port:
            continue
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    busy.append(f"port {port} ({what} on {host}) is already in use by another program: "
                                f"stop that program, or choose another port with {how}")
    if busy:
        return "; ".join(busy)
    listed = ", ".join(f"{port} ({what}: {how})" for port, _h, what, how in ports if port) or "?"
    return f"a port is already in use (this run listens on {listed})"


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for e in exc.exceptions for leaf in _leaves(e)]
    return [exc]


def _cmd_run(args: argparse.Namespace) -> int:
    from .config import ConfigError, load_config, store_location_issues

    if not _apply_env_file(args):
        return 2
    try:
        config = load_config(args.config)
        issues = store_location_issues(config)
        if issues:
            raise ConfigError(issues, args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        print("The bridge did not start: fix the errors above (smpp-bridge check-config FILE).", file=sys.stderr)
        _env_hint(exc, args)
        return 2
    except OSError as exc:
        print(f"{args.config}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    from .logs import collect_secrets, configure_logging

    configure_logging(config.logging.level, config.logging.format, collect_secrets(config))
    return _run_app(
        config, "smpp-bridge ready: SMPP on port(s) {ports}; {admin}", config_path=os.path.abspath(args.config)
    )


def config_ports(config: Any, source: str) -> list[Port]:
    """The ports a config listens on, each with the key that sets it."""
    out: list[Port] = [
        (lst.port, lst.host, "SMPP", f"smpp.listeners[{i}].port in {source}")
        for i, lst in enumerate(config.smpp.listeners)
    ]
    if config.admin.enabled:
        out.append((config.admin.port, config.admin.host, "admin HTTP", f"admin.port in {source}"))
    return out


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    _setup_logging(args.log_level)
    data_dir = Path(args.data_dir) if args.data_dir else Path(tempfile.mkdtemp(prefix="smpp-bridge-demo-"))
    ports: list[Port] = [(args.smpp_port, "127.0.0.1", "SMPP", "--smpp-port"),
                         (args.admin_port, "127.0.0.1", "admin HTTP", "--admin-port (0 turns it off)")]
    return _trio_run(lambda: run_demo(args.site, data_dir, args.smpp_port, args.admin_port), ports)


def _cmd_hash_password(args: argparse.Namespace) -> int:
    from .passwords import hash_console_password, hash_password

    if args.password is not None:
        pw = args.password
    elif not sys.stdin.isatty():
        pw = sys.stdin.readline().rstrip("\n")  # a script piping it in: one line, no prompt
    else:
        pw = getpass.getpass("password: ")
        if getpass.getpass("the same password again: ") != pw:
            print("the two passwords differ: nothing hashed, run it again", file=sys.stderr)
            return 2
    try:
        print(hash_console_password(pw) if args.console else hash_password(pw))
    except ValueError as exc:
        print(f"cannot hash that password: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_emulate(args: argparse.Namespace) -> int:
    """Run one device emulator on its own. Prints one line with "emulator ready" and the URL
    (the real port when --port 0 picked a free one) once it listens; Ctrl-C stops it.

    Each kind's ``emulator.py`` declares its options (``add_arguments``), how it is built from
    them (``from_cli``) and its ``DEFAULT_PORT`` (None for one that is not an HTTP server and
    runs itself: ``cli_main``)."""
    from .devices import registry

    _setup_logging(args.log_level)
    module = registry.emulator(args.kind)
    try:
        emulator, what = module.from_cli(args)
    except (ValueError, OSError) as exc:
        print(f"cannot start the {args.kind} emulator: {exc}", file=sys.stderr)
        return 2
    if module.DEFAULT_PORT is None:
        main, ports = module.cli_main(emulator, args)
        return _trio_run(main, ports)
    port = args.port
    scheme = "https" if getattr(emulator, "ssl_context", None) is not None else "http"

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            actual = await nursery.start(emulator.serve, args.host, port)
            print(
                f"{args.kind} emulator ready on {scheme}://{args.host}:{actual}/ ({what}); "
                f"test hooks under /emulator/; Ctrl-C stops it",
                flush=True,
            )

    return _trio_run(main, [(port, args.host, f"{args.kind} emulator HTTP", "--port (0 = any free port)")])


def _add_emulate_parsers(em: argparse.ArgumentParser) -> None:
    """One sub-command per device kind (bridge/devices/registry.py), with the options its
    emulator.py declares."""
    from .devices import registry

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, help="random seed (ids, faults), for repeatable runs")
    common.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                        help="log level [info]")
    kinds = em.add_subparsers(dest="kind", metavar="KIND", required=True,
                              help="the device kind to emulate: " + ", ".join((*registry.KINDS, *registry.CONNECTOR_KINDS)))
    for kind in (*registry.KINDS, *registry.CONNECTOR_KINDS):
        module = registry.emulator(kind)
        aliases = list(getattr(module, "CLI_ALIASES", ()))
        summary = (module.__doc__ or kind).strip().splitlines()[0].split(":")[0].rstrip(".")
        k = kinds.add_parser(kind, aliases=aliases, parents=[common], help=summary,
                             description=(module.__doc__ or "").strip().split("\n\n")[0])
        if module.DEFAULT_PORT is not None:
            k.add_argument("--port", type=int, default=module.DEFAULT_PORT,
                           help=f"HTTP port [{module.DEFAULT_PORT}; 0 = any free port]")
            k.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
        else:
            k.add_argument("--host", default="127.0.0.1", help="address to send from and to listen on "
                           "for the test hooks [127.0.0.1]")
        module.add_arguments(k)
        k.set_defaults(kind=kind)


def _cmd_status(args: argparse.Namespace) -> int:
    import httpx

    if not _apply_env_file(args):
        return 2
    url, token = _admin_target(args)
    if url is None:
        return 2
    if args.ready:
        return _check_ready(url, args.timeout)
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
            "set SMPP_BRIDGE_ADMIN_TOKEN, or --config FILE (with --env-file FILE for admin.token_env) "
            "to read admin.token from the bridge's config",
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


def _check_ready(url: str, timeout: float) -> int:
    """``status --ready``: /readyz only (no token needed); exit 0 when ready, 1 when not. For
    container HEALTHCHECKs and scripts."""
    import httpx

    try:
        r = httpx.get(url.rstrip("/") + "/readyz", timeout=timeout)
    except httpx.HTTPError as exc:
        print(f"not ready: cannot reach the admin API at {url}: {exc}", file=sys.stderr)
        return 1
    if r.status_code != 200:
        print(f"not ready: {url}/readyz answered HTTP {r.status_code}: {r.text[:200]}", file=sys.stderr)
        return 1
    print("ready")
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
        try:
            host, port, config_token = _admin_section(args.config, need_token=token is None and not args.ready)
        except ValueError as exc:
            print(f"{args.config}: {exc}", file=sys.stderr)
            return None, None
        if not port:
            print(f"{args.config}: admin.port is 0, so the admin API is off; set a port and restart", file=sys.stderr)
            return None, None
        host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
        if ":" in host:
            host = f"[{host}]"
        url = url or f"http://{host}:{port}"
        token = token if token is not None else config_token
    return url or "http://127.0.0.1:8025", token


def _admin_section(path: str, *, need_token: bool) -> tuple[str, int, str | None]:
    """(host, port, token) from a config's ``admin`` section alone. ``status`` talks to a bridge
    that already runs with this file: the rest of it (ESME and device secrets, the store) is not
    its business, so a secret it cannot resolve there does not stop it."""
    import yaml

    from .config import AdminConfig

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except OSError as exc:
        raise ValueError(f"cannot read: {exc.strerror} (the bridge's config is readable by root and "
                         "its user only: use sudo, or pass --admin URL and --token-file)") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(f"not a readable YAML file ({exc}); smpp-bridge check-config says more") from None
    admin = (data or {}).get("admin") if isinstance(data, dict) else None
    admin = admin if isinstance(admin, dict) else {}
    host, port = admin.get("host", AdminConfig.host), admin.get("port", AdminConfig.port)
    if not isinstance(host, str) or not isinstance(port, int) or isinstance(port, bool):
        raise ValueError("admin.host / admin.port: expected a host name and a port number; "
                         "smpp-bridge check-config says more")
    token = None
    if need_token:
        if isinstance(admin.get("token"), str):
            token = admin["token"]
        elif isinstance(admin.get("token_env"), str):
            token = os.environ.get(admin["token_env"])
            if token is None:
                raise ValueError(f"admin.token_env: environment variable {admin['token_env']} is not set "
                                 "(pass --env-file /etc/smpp-bridge/secrets.env, or --token-file)")
        elif isinstance(admin.get("token_file"), str):
            token_path = Path(admin["token_file"]).expanduser()
            if not token_path.is_absolute():
                token_path = Path(path).absolute().parent / token_path
            try:
                token = token_path.read_text().strip()
            except OSError as exc:
                raise ValueError(f"admin.token_file: cannot read {token_path}: {exc.strerror}") from None
    return host, port, token


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


def _connector_row(name: str, c: dict[str, Any]) -> list[Any]:
    ok = c["submits"].get("ESME_ROK", 0)
    other = sum(n for k, n in c["submits"].items() if k != "ESME_ROK")
    r = c["receipts"]
    return [name, f"{c['binds_up']}/{len(c['binds'])}", f"{ok}/{other}", f"{r['matched']}/{r['unmatched']}",
            c["throttled"], c["mo"]]


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
    if st.get("connectors"):
        out += ["", "Upstream SMSC connectors"]
        out.append(_table(["CONNECTOR", "BINDS UP", "SUBMITS OK/OTHER", "RECEIPTS MATCHED/UNMATCHED", "THROTTLED", "MO"], [
            _connector_row(name, c) for name, c in sorted(st["connectors"].items())
        ]))
        for name, c in sorted(st["connectors"].items()):
            for bind, b in sorted(c["binds"].items()):
                if b["state"] != "bound":
                    out.append(f"  {bind} is {b['state']}: {b['detail']}")
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


def _cmd_store(args: argparse.Namespace) -> int:
    from .store import tools

    if args.db:
        db = Path(args.db)
    else:
        from .config import ConfigError, load_config

        if not _apply_env_file(args):
            return 1
        try:
            db = Path(load_config(args.config).store.path)
        except (ConfigError, OSError) as exc:
            print(f"{args.config}: {exc}", file=sys.stderr)
            return 1
    return tools.check(db) if args.store_command == "check" else tools.recover(db)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="smpp-bridge",
        description="SMPP 3.4 server that sends and receives SMS through local GSM hardware.",
    )
    p.add_argument("--version", action="version", version=f"smpp-bridge {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the bridge with a config file")
    run.add_argument("--config", "-c", required=True, help="path to bridge.yaml")
    run.add_argument("--env-file", metavar="FILE", help="read NAME=value secrets (the *_env keys) from this file first, as the systemd unit does: /etc/smpp-bridge/secrets.env")
    run.set_defaults(func=_cmd_run)

    check = sub.add_parser("check-config", help="validate a config file and list every error")
    check.add_argument("file", help="path to bridge.yaml")
    check.add_argument("--env-file", metavar="FILE", help="read NAME=value secrets (the *_env keys) from this file first, as the systemd unit does: /etc/smpp-bridge/secrets.env")
    check.set_defaults(func=_cmd_check_config)

    demo = sub.add_parser("demo", help="run on an embedded default config (loopback only)")
    demo.add_argument("--smpp-port", type=int, default=2775, help="SMPP port to listen on (loopback) [2775]")
    demo.add_argument("--data-dir", help="where the SQLite store lives (default: a new temporary folder)")
    demo.add_argument("--admin-port", type=int, default=8025, help="admin API and /metrics port; 0 turns it off")
    demo.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"],
                      help="log level [info]")
    demo.add_argument("--site", choices=["goip", "mixed", "upstream"], default="goip",
                      help="goip: one emulated GoIP (8 lines); mixed: a GoIP, a GoIP in SMS-server mode, "
                      "an LTE router and an Android phone, routed by prefix with failover; upstream: SIMs and "
                      "an emulated upstream SMSC, each the other's failover [goip]")
    demo.set_defaults(func=_cmd_demo)

    st = sub.add_parser("status", help="show ESMEs, channels, queues and the store of a running bridge")
    st.add_argument("--admin", help="admin API URL [SMPP_BRIDGE_ADMIN_URL, from --config, or http://127.0.0.1:8025]")
    st.add_argument("--config", "-c", help="read the admin URL and token from this bridge.yaml")
    st.add_argument("--token", help="admin token (visible in ps: prefer --token-file or SMPP_BRIDGE_ADMIN_TOKEN)")
    st.add_argument("--token-file", help="file holding the admin token")
    st.add_argument("--env-file", metavar="FILE", help="read admin.token_env's variable from this file "
                    "(/etc/smpp-bridge/secrets.env) when using --config")
    st.add_argument("--json", action="store_true", help="print the raw JSON")
    st.add_argument("--ready", action="store_true",
                    help="only ask /readyz (no token needed): exit 0 when ready, 1 when not (health checks)")
    st.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the answer [10]")
    st.set_defaults(func=_cmd_status)

    hp = sub.add_parser("hash-password", help="print a salted hash for esmes[].password_hash")
    hp.add_argument("--password", help="the password (visible in ps; when omitted it is asked for twice, "
                    "or read as one line from standard input when that is not a terminal)")
    hp.add_argument("--console", action="store_true",
                    help="hash a web console password (admin.console_password_hash: at least 10 characters, "
                    "a slower hash) instead of an SMPP password")
    hp.set_defaults(func=_cmd_hash_password)

    sto = sub.add_parser("store", help="check or recover the SQLite store (the bridge stopped)")
    sto_kinds = sto.add_subparsers(dest="store_command", metavar="ACTION", required=True,
                                   help="check: will the bridge start on the store; recover: make a new one from what is readable")
    for name, summary in (
        ("check", "examine the store (unchanged): exit 0 if the bridge will start on it, else say what is wrong"),
        ("recover", "move a damaged store aside and copy what is readable into a new one (stop the bridge first)"),
    ):
        k = sto_kinds.add_parser(name, help=summary, description=summary)
        where = k.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", "-c", help="the store of this bridge.yaml (store.path)")
        where.add_argument("--db", help="the database file itself")
        k.add_argument("--env-file", metavar="FILE", help="read NAME=value secrets first (as for run)")
    sto.set_defaults(func=_cmd_store)

    em = sub.add_parser(
        "emulate",
        help="run a device emulator on its own",
        description="Run one device emulator until Ctrl-C. It prints 'KIND emulator ready on "
        "http://HOST:PORT/' once it listens (--port 0 picks a free port). Every HTTP emulator "
        "has test hooks under /emulator/ (sent, state, faults, inject); goip_udp serves them "
        "on --control-port.",
    )
    _add_emulate_parsers(em)
    em.set_defaults(func=_cmd_emulate)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # `smpp-bridge status --json | head`: the reader has gone; stop quietly, as cat does.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a program a closed pipe stopped
    return int(code)


if __name__ == "__main__":
    sys.exit(main())
