"""Helpers shared by the reliability tests (tests/reliability): short/full sizes, a look into
the bridge process (/proc), and the admin /metrics endpoint.

Every group has a SHORT form (what `python -m pytest` and CI run) and a FULL form (marked
``full``: `python -m pytest -n 0 -m full tests/reliability -k GROUP`). Both call the same code with
different sizes; an environment variable overrides a size for a one-off run
(e.g. ``RELIABILITY_CRASH_KILLS=50``). ``-n 0`` runs the full forms one after another in one
process (not on the suite's parallel workers), so their timings are their own and ``-s`` shows
their figures.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


def size(name: str, default: float) -> float:
    """``default``, unless RELIABILITY_<NAME> is set in the environment."""
    value = os.environ.get(f"RELIABILITY_{name.upper()}")
    return type(default)(value) if value else default


def short_and_full(short, full, name: str):  # type: ignore[no-untyped-def]
    """Parameters for a test that runs SHORT by default and FULL with -m full."""
    return pytest.mark.parametrize(
        name,
        [pytest.param(short, id="short"), pytest.param(full, id="full", marks=pytest.mark.full)],
    )


def rss_kb(pid: int) -> int:
    """Resident memory of a process, in KiB (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$")


def scrape(admin_url: str) -> dict[str, float]:
    """The admin /metrics endpoint as {'name{labels}': value}."""
    import httpx

    text = httpx.get(admin_url + "/metrics", timeout=10).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def metric_sum(samples: dict[str, float], name: str, **labels: str) -> float:
    """Sum of every sample of ``name`` whose labels include ``labels``."""
    total = 0.0
    for key, value in samples.items():
        base, _, rest = key.partition("{")
        if base != name:
            continue
        if all(f'{k}="{v}"' in rest for k, v in labels.items()):
            total += value
    return total


# -- emulated devices and ESMEs ---------------------------------------------------------------------

import select  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

import smpplib.client  # noqa: E402
import smpplib.exceptions  # noqa: E402
import smpplib.smpp  # noqa: E402

from e2e_support import EmulatorProcess, free_port  # noqa: E402


class Goip(EmulatorProcess):
    """An emulated GoIP process that can be switched off and on again on the same port (a
    device that is gone for a while, then back: it comes back empty, like a rebooted GoIP)."""

    def __init__(self, lines: int = 2, send_duration: float = 0.05, password: str = "admin") -> None:
        self.lines = lines
        self.send_duration = send_duration
        self.password = password
        self.port = free_port()
        self.sent_before: list[dict] = []  # what it sent before it went away
        self._launch()

    def _launch(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "emulate", "goip", "--port", str(self.port),
             "--lines", str(self.lines), "--send-duration", str(self.send_duration), "--password", self.password,
             "--log-level", "warning"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("GoIP emulator did not start")

    def gone(self) -> None:
        self.sent_before += self.sent()
        self.stop()

    def back(self) -> None:
        self._launch()

    def all_sent(self) -> list[dict]:
        return self.sent_before + self.sent()


class ReceiptCollector:
    """A receiver bind (smpplib) in a thread: records every deliver_sm with the time it came,
    answers it, and binds again whenever the connection goes."""

    def __init__(self, port_fn, system_id: str = "alice", password: str = "secret1") -> None:  # type: ignore[no-untyped-def]
        self.port_fn = port_fn
        self.system_id = system_id
        self.password = password
        self.receipts: list[tuple[float, str, str]] = []  # (time.time(), message id, stat)
        self.mo: list[tuple[float, bytes]] = []
        self.binds = 0
        self._stop = threading.Event()
        self._bound = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receipts", daemon=True)

    def start(self, wait: float = 10.0) -> ReceiptCollector:
        self._thread.start()
        assert self._bound.wait(wait), "the receiver did not bind"
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def by_id(self) -> dict[str, list[tuple[float, str]]]:
        out: dict[str, list[tuple[float, str]]] = {}
        for t, mid, stat in list(self.receipts):
            out.setdefault(mid, []).append((t, stat))
        return out

    def _run(self) -> None:
        c = None
        while not self._stop.is_set():
            if c is None:
                port = self.port_fn()
                if port is None:
                    time.sleep(0.05)
                    continue
                c = smpplib.client.Client("127.0.0.1", port, timeout=5, allow_unknown_opt_params=True)
                c.logger.setLevel("CRITICAL")
                try:
                    c.connect()
                    c.bind_receiver(system_id=self.system_id, password=self.password)
                    self.binds += 1
                    self._bound.set()
                except (smpplib.exceptions.ConnectionError, smpplib.exceptions.PDUError, OSError):
                    c = None
                    time.sleep(0.1)
                    continue
            try:
                readable, _, _ = select.select([c._socket], [], [], 0.1)
                if not readable:
                    continue
                pdu = c.read_pdu()
                if pdu.command == "deliver_sm":
                    sm = pdu.short_message or b""
                    m = re.search(rb"id:(\S+).*stat:(\S+)", sm)
                    if pdu.esm_class & 0x04 and m:
                        self.receipts.append((time.time(), m.group(1).decode(), m.group(2).decode()))
                    else:
                        self.mo.append((time.time(), sm))
                    resp = smpplib.smpp.make_pdu("deliver_sm_resp", client=c)
                    resp.sequence = pdu.sequence
                    c.send_pdu(resp)
                elif pdu.command == "enquire_link":
                    resp = smpplib.smpp.make_pdu("enquire_link_resp", client=c)
                    resp.sequence = pdu.sequence
                    c.send_pdu(resp)
            except (smpplib.exceptions.ConnectionError, OSError):
                c = None
        if c is not None:
            try:
                c.unbind()
                c.disconnect()
            except Exception:
                pass


def connect_from(source: str, port: int) -> socket.socket:
    """A TCP connection to the bridge from a chosen loopback address (127.0.0.2 is a second
    client machine as far as the bridge can tell)."""
    s = socket.socket()
    s.bind((source, 0))
    s.settimeout(10)
    s.connect(("127.0.0.1", port))
    return s


def bind_pdu(system_id: str, password: str, seq: int = 1) -> bytes:
    from bridge.smpp.constants import CommandId
    from bridge.smpp.pdu import Pdu, encode

    return encode(Pdu(CommandId.BIND_TRANSCEIVER, 0, seq,
                      {"system_id": system_id, "password": password, "interface_version": 0x34}))
