"""Helpers for end-to-end tests: the real bridge as a child process, and smpplib clients."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import smpplib.client
import smpplib.consts

READY_RE = re.compile(r"SMPP on port\(s\) \[([0-9, ]+)\]")
ADMIN_RE = re.compile(r"admin HTTP on (\S+):([0-9]+)")


class BridgeProcess:
    """``smpp-bridge run`` in a child process, on ephemeral ports."""

    def __init__(self, workdir: Path, config_yaml: str) -> None:
        self.workdir = workdir
        self.config_path = workdir / "bridge.yaml"
        self.config_path.write_text(textwrap.dedent(config_yaml))
        os.chmod(self.config_path, 0o600)
        self.proc: subprocess.Popen[str] | None = None
        self.ports: list[int] = []
        self.admin_port: int | None = None
        self.output: list[str] = []
        self._reader: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self.ports[0]

    @property
    def admin_url(self) -> str:
        assert self.admin_port is not None, "start the bridge with with_admin(config)"
        return f"http://127.0.0.1:{self.admin_port}"

    @property
    def db_path(self) -> Path:
        return self.workdir / "data" / "bridge.sqlite3"

    def start(self, timeout: float = 20.0) -> BridgeProcess:
        self.output = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "run", "--config", str(self.config_path)],
            cwd=self.workdir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = READY_RE.search(line)
                if m:
                    admin = ADMIN_RE.search(line)
                    self.admin_port = int(admin.group(2)) if admin else None
                    self.ports = [int(p) for p in m.group(1).split(",")]
                    ready.set()

        self._reader = threading.Thread(target=pump, daemon=True)
        self._reader.start()
        if not ready.wait(timeout):
            self.kill()
            raise RuntimeError("bridge did not start:\n" + "".join(self.output))
        return self

    def kill(self) -> None:
        """kill -9: no chance to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._reader:
            self._reader.join(5)
        return self.proc.returncode

    def log_text(self) -> str:
        return "".join(self.output)

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)


def base_config(*, esmes: str | None = None, extra: str = "") -> str:
    esmes = esmes or """
      - system_id: alice
        password: secret1
        allowed_ips: [127.0.0.1]
        max_binds: 3
      - system_id: bob
        password: secret2
        allowed_ips: [127.0.0.1]
    """
    return (
        textwrap.dedent(
            """
            smpp:
              listeners:
                - host: 127.0.0.1
                  port: 0
              timers:
                session_init: 5
                enquire_link: 30
                inactivity: 120
                response: 5
                unbind_grace: 1
            store:
              path: data/bridge.sqlite3
            admin:
              port: 0
            esmes:
            """
        )
        + textwrap.indent(textwrap.dedent(esmes).strip("\n"), "  ")
        + "\n"
        + textwrap.dedent(extra)
    )


def with_admin(config_yaml: str, *, token: str | None = None, port: int | None = None) -> str:
    """The config with the admin HTTP server on (base_config turns it off with port 0)."""
    block = "admin:\n  port: 0\n"
    assert block in config_yaml, "expected base_config's admin section"
    admin = f"admin:\n  host: 127.0.0.1\n  port: {port or free_port()}\n"
    if token is not None:
        admin += f"  token: {token}\n"
    return config_yaml.replace(block, admin)


def client(port: int, *, timeout: float = 5, **kw) -> smpplib.client.Client:  # type: ignore[no-untyped-def]
    c = smpplib.client.Client("127.0.0.1", port, timeout=timeout, allow_unknown_opt_params=True, **kw)
    c.connect()
    return c


def read_until(c: smpplib.client.Client, command: str, timeout: float = 5.0):  # type: ignore[no-untyped-def]
    """Read PDUs until one with the given command arrives; return it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pdu = c.read_pdu()
        except socket.timeout:
            continue
        if pdu.command == command:
            return pdu
    raise TimeoutError(f"no {command} within {timeout} s")


def submit(c: smpplib.client.Client, text: bytes = b"hello", dest: str = "+4917012345", **kw):  # type: ignore[no-untyped-def]
    """submit_sm and return the submit_sm_resp PDU."""
    params = dict(
        source_addr_ton=smpplib.consts.SMPP_TON_ALNUM,
        source_addr="app",
        dest_addr_ton=smpplib.consts.SMPP_TON_INTL,
        destination_addr=dest,
        short_message=text,
    )
    params.update(kw)
    c.send_message(**params)
    return read_until(c, "submit_sm_resp")


def raw_connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    return s


def recv_pdu(s: socket.socket) -> tuple[int, int, int, bytes] | None:
    """(command_id, status, sequence, body) of the next PDU, or None on EOF."""
    head = _recv_exact(s, 16)
    if head is None:
        return None
    length, cid, status, seq = (int.from_bytes(head[i : i + 4], "big") for i in range(0, 16, 4))
    body = _recv_exact(s, length - 16) if length > 16 else b""
    return cid, status, seq, body or b""


def _recv_exact(s: socket.socket, n: int) -> bytes | None:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def header(length: int, cid: int, status: int, seq: int) -> bytes:
    return b"".join(x.to_bytes(4, "big") for x in (length, cid, status, seq))


def pdu_bytes(cid: int, seq: int, body: bytes, status: int = 0) -> bytes:
    return header(16 + len(body), cid, status, seq) + body


def bind_body(system_id: str, password: str) -> bytes:
    return system_id.encode() + b"\0" + password.encode() + b"\0" + b"\0" + bytes([0x34, 0, 0]) + b"\0"


# Ports a test hands to a child process (which binds them later) come from a block of its own
# per xdist worker, below the kernel's ephemeral range (32768-60999 on Linux): a port the kernel
# gives out for port 0 (to another worker, or to an outgoing connection) could be taken between
# our check and the child's bind; these are handed out by us alone, each once per run.
_PORT_BLOCK = 1500
_PORT_BASE = 20000 + _PORT_BLOCK * int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw") or 0)
_next_port = {socket.SOCK_STREAM: _PORT_BASE, socket.SOCK_DGRAM: _PORT_BASE}


def _free(kind: socket.SocketKind) -> int:
    for _ in range(_PORT_BLOCK):
        port = _next_port[kind]
        _next_port[kind] = _PORT_BASE + (port + 1 - _PORT_BASE) % _PORT_BLOCK
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_PORT_BASE}-{_PORT_BASE + _PORT_BLOCK - 1}")


def free_port() -> int:
    return _free(socket.SOCK_STREAM)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):  # type: ignore[no-untyped-def]
    """Poll until predicate() is truthy; return its value (functional waiting, not timing)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        time.sleep(interval)


def goip_config(emulator_url: str, *, lines: int = 4, esmes: str | None = None, scheduler: str = "",
                caps: str = "per_minute: 0", extra: str = "", device: str = "") -> str:
    """``device``: more keys for goip1 (indented by 4 spaces), e.g. inbox_poll_interval."""
    return base_config(
        esmes=esmes,
        extra=f"""
devices:
  - name: goip1
    kind: goip_http
    url: {emulator_url}
    username: admin
    password: admin
    lines: {lines}
    timeout: 2
    status_poll_interval: 0.1
    status_timeout: 10
    caps: {{{caps}}}
{device}
routes:
  - name: all
    channels: [goip1]
scheduler:
  retry_backoff: 0.2
  retry_backoff_max: 1
  busy_retry: 0.2
  logout_cooldown: 0.5
  quarantine_base: 0.5
  quarantine_max: 2
{scheduler}
{extra}
""",
    )


def receive_deliver_sm(c: smpplib.client.Client, count: int, timeout: float = 15.0) -> list:
    """Read until ``count`` deliver_sm arrived; smpplib answers each with deliver_sm_resp."""
    got: list = []
    c.set_message_received_handler(lambda pdu: got.append(pdu))
    deadline = time.monotonic() + timeout
    c._socket.settimeout(0.5)
    while len(got) < count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"got {len(got)} of {count} deliver_sm")
        try:
            c.read_once()
        except socket.timeout:
            pass
    return got


def receipt_fields(pdu) -> dict:  # type: ignore[no-untyped-def]
    text = pdu.short_message.decode("ascii")
    fields = dict(re.findall(r"(id|sub|dlvrd|stat|err):(\S+)", text))
    fields["text"] = text
    return fields


# -- every device kind's emulator as its own process ------------------------------------------

EMULATOR_READY_RE = re.compile(r"emulator ready\b.*?https?://[^\s:/]+:(\d+)/")


def free_udp_port() -> int:
    return _free(socket.SOCK_DGRAM)


class KindEmulator:
    """``smpp-bridge emulate KIND --port 0 ...`` in a child process, driven over its HTTP test
    hooks (``/emulator/sent``, ``/emulator/state``, ``/emulator/faults``, ``/emulator/inject``).

    The port is read from the emulator's "emulator ready ... http://HOST:PORT/" line (for
    goip_udp: the port of its test hooks; the GoIP itself talks UDP to the bridge). ``restart``
    starts it again on the same port (a phone that went away and came back)."""

    def __init__(self, kind: str, *args: str, port: int = 0) -> None:
        self.kind = kind
        self.args = [str(a) for a in args]
        self.port = port
        self.output: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.start()

    def start(self, timeout: float = 20.0) -> KindEmulator:
        flag = "--control-port" if self.kind == "goip_udp" else "--port"
        self.output = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "emulate", self.kind, flag, str(self.port),
             "--log-level", "warning", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        ready = threading.Event()
        port: list[int] = []

        def pump() -> None:
            assert self.proc is not None and self.proc.stdout is not None
            for line in self.proc.stdout:
                self.output.append(line)
                m = EMULATOR_READY_RE.search(line)
                if m and not ready.is_set():
                    port.append(int(m.group(1)))
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(timeout) or not port:
            self.stop()
            raise RuntimeError(f"{self.kind} emulator did not start:\n" + "".join(self.output))
        self.port = port[0]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, method: str, path: str, body: dict | None = None):  # type: ignore[no-untyped-def]
        import httpx

        r = httpx.request(method, self.url + path, json=body, timeout=5)
        r.raise_for_status()
        return r.json()

    def sent(self) -> list[dict]:
        return self.call("GET", "/emulator/sent")

    def state(self) -> dict:
        return self.call("GET", "/emulator/state")

    def faults(self, **changes) -> dict:  # type: ignore[no-untyped-def]
        return self.call("POST", "/emulator/faults", changes)

    def inject(self, **fields) -> dict:  # type: ignore[no-untyped-def]
        return self.call("POST", "/emulator/inject", fields)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def restart(self) -> KindEmulator:
        self.stop()
        return self.start()


class EmulatorProcess(KindEmulator):
    """``smpp-bridge emulate goip`` in a child process, driven over its HTTP test hooks.

    Its port is the one the OS gave it, read from its ready line: a port picked here beforehand
    could be taken meanwhile by another test run, and the test would then drive someone else's
    emulator."""

    def __init__(self, lines: int = 4, send_duration: float = 0.2) -> None:
        super().__init__("goip", "--lines", str(lines), "--send-duration", str(send_duration))

    def _call(self, method: str, path: str, body: dict | None = None):  # type: ignore[no-untyped-def]
        return self.call(method, path, body)

    def sent(self) -> list[dict]:
        """Every SMS the emulated GoIP 'sent': line, destination, text, id, error."""
        return self.call("GET", "/emulator/sent")

    def inject(self, line: int, sender: str, text: str, **extra) -> None:  # type: ignore[no-untyped-def,override]
        """An SMS arrives in ``line``'s inbox (extra: when=ISO-8601, mojibake=True)."""
        self.call("POST", "/emulator/inject", {"line": line, "sender": sender, "text": text, **extra})


def start_emulators(*specs: tuple) -> list[KindEmulator]:  # type: ignore[type-arg]
    """Start several emulators at once (each spec: (kind, *args)); they boot in parallel."""
    out: list[KindEmulator | None] = [None] * len(specs)
    errors: list[BaseException] = []

    def boot(i: int, spec: tuple) -> None:  # type: ignore[type-arg]
        try:
            out[i] = KindEmulator(spec[0], *spec[1:])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(i, s)) for i, s in enumerate(specs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        for e in out:
            if e is not None:
                e.stop()
        raise errors[0]
    return [e for e in out if e is not None]


def admin(bridge: BridgeProcess, method: str, path: str, body: dict | None = None):  # type: ignore[no-untyped-def]
    """Call the bridge's admin API (started with with_admin) and return the JSON answer."""
    import httpx

    r = httpx.request(method, bridge.admin_url + path, json=body, timeout=10)
    return r.json()


def channel_states(bridge: BridgeProcess) -> dict[str, str]:
    """{"device:channel": state} from the admin API's /api/status."""
    st = admin(bridge, "GET", "/api/status")
    return {c["key"]: c["state"] for d in st["devices"] for c in d["channels"]}


def message_state(bridge: BridgeProcess, message_id: str) -> str:
    return admin(bridge, "GET", f"/api/messages/{message_id}")["message"]["state"]


def bind_trx(bridge: BridgeProcess, system_id: str = "alice", password: str = "secret1"):  # type: ignore[no-untyped-def]
    c = client(bridge.port)
    c.bind_transceiver(system_id=system_id, password=password)
    return c


def no_more_deliver_sm(c: smpplib.client.Client, seconds: float = 1.0) -> list:
    """Every deliver_sm that arrives within ``seconds`` (expected: none)."""
    got: list = []
    c.set_message_received_handler(lambda pdu: got.append(pdu))
    c._socket.settimeout(0.2)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            c.read_once()
        except socket.timeout:
            pass
    return got


def smsc_emulator(*args: str) -> tuple[KindEmulator, int]:
    """``smpp-bridge emulate smsc`` in a child process: (it, its SMPP port). Its test hooks
    (``/emulator/sent``, ``/emulator/faults``, ``/emulator/inject``) are on ``.url``."""
    emu = KindEmulator("smpp", "--smpp-port", "0", *args)
    m = re.search(r"SMPP port (\d+)", "".join(emu.output))
    assert m is not None, emu.output
    return emu, int(m.group(1))


def connector_yaml(port: int, name: str = "smsc1", extra: str = "") -> str:
    """A ``connectors:`` section with one connector to the SMSC emulator on ``port``
    (``extra``: more keys, each line indented by 4 spaces)."""
    return (
        f"connectors:\n  - name: {name}\n    host: 127.0.0.1\n    port: {port}\n"
        f"    system_id: bridge\n    password: secret\n    tls: false\n{extra}"
    )
