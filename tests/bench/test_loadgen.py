"""The load generator (bench/loadgen.py) against a real bridge: every submit answered ESME_ROK and
stored. Speed is measured by bench/ingest.py, never asserted here."""

from __future__ import annotations

import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from loadgen import SubmitTemplate, format_result, run_load  # noqa: E402

BANNER_RE = re.compile(r"bind any SMPP 3\.4 client to [0-9.]+:(\d+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def demo_bridge(tmp_path: Path):  # type: ignore[no-untyped-def]
    data_dir = tmp_path / "data"
    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "demo", "--smpp-port", str(_free_port()), "--data-dir", str(data_dir),
         "--admin-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()
    port: list[int] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            m = BANNER_RE.search(line)
            if m:
                port.append(int(m.group(1)))
                ready.set()
        ready.set()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        assert ready.wait(20) and port, "the bridge did not start:\n" + "".join(lines)
        yield proc, port[0], data_dir / "bridge.sqlite3"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        reader.join(5)


def test_template_patches_sequence_and_destination() -> None:
    t = SubmitTemplate("hi")
    batch = t.batch(7, 3, 41)
    assert len(batch) == 3 * t.size
    for i in range(3):
        pdu = bytes(batch[i * t.size : (i + 1) * t.size])
        assert int.from_bytes(pdu[0:4], "big") == t.size
        assert int.from_bytes(pdu[4:8], "big") == 0x00000004
        assert int.from_bytes(pdu[12:16], "big") == 7 + i
        assert pdu[t.dest_start : t.dest_end] == b"%07d" % (41 + i)


@pytest.mark.parametrize("processes", [1, 2])
def test_run_load_against_the_demo_bridge(demo_bridge, processes: int) -> None:  # type: ignore[no-untyped-def]
    proc, port, db = demo_bridge
    result = run_load(
        port=port, count=200, window=10, sessions=2, processes=processes, timeout=30, stall_timeout=10
    )
    assert result["accepted"] == 200, format_result(result)
    assert result["errors"] == {} and result["lost"] == 0 and result["not_sent"] == 0, format_result(result)
    assert result["problems"] == [], format_result(result)
    assert result["latency_ms"]["max"] > 0
    assert result["unbind_timeouts"] == 0

    proc.send_signal(signal.SIGTERM)
    proc.wait(15)
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        (n,) = conn.execute("SELECT count(*) FROM messages").fetchone()
    finally:
        conn.close()
    assert n == 200
