#!/usr/bin/env python3
"""Receipts backlog: an ESME that was away while receipts piled up comes back. How fast does
the bridge hand them over, against how fast that ESME could submit at window 10? Does memory
stay bounded while the backlog drains?

    python bench/receipts_backlog.py               # 100,000 receipts
    python bench/receipts_backlog.py --receipts 20000

1. builds a store file holding ``--receipts`` undelivered delivery receipts (outbox rows, the
   payload the receipt policy writes) for ESME ``alice``, straight into SQLite;
2. starts the real bridge on it (``MALLOC_ARENA_MAX=2``), binds one receiver that answers every
   deliver_sm with deliver_sm_resp at once, counts them until all arrived, and samples the
   bridge's VmRSS every second: receipts per second, and the largest RSS against the RSS at the
   start of the drain;
3. in the same run, on the same bridge: alice submits ``--submits`` at window 10 (one
   transmitter, bench/loadgen.py): submit_sm per second.

Goal (issue 14): the receipts arrive at least as fast as the ESME submits at window 10; memory
stays bounded while draining (the outbox is read in pages of 200, never whole).
"""

from __future__ import annotations

import argparse
import os
import socket
import sqlite3
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from backlog import rss_mb  # noqa: E402
from e2e_support import BridgeProcess, base_config, bind_body, pdu_bytes  # noqa: E402
from loadgen import run_load  # noqa: E402

from bridge.receipts.payload import encode_payload  # noqa: E402
from bridge.store import Store  # noqa: E402

BIND_RECEIVER = 0x00000001
DELIVER_SM = 0x00000005
HEADER = struct.Struct(">IIII")


def build(path: Path, n: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    s = Store(path)
    s.open()
    s.close()
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    now = time.time()

    def payload(i: int) -> str:
        text = f"id:{i:010d} sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 stat:DELIVRD err:000 text:hello"
        return encode_payload({"params": {
            "source_addr_ton": 1, "source_addr_npi": 1, "source_addr": f"+49170{i:07d}",
            "destination_addr": "bench", "esm_class": 0x04, "data_coding": 0,
            "short_message": text.encode("ascii"),
        }, "tlvs": {}})  # fmt: skip

    db.executemany(
        "INSERT INTO outbox (esme, kind, message, created_at, expire_at, payload) VALUES (?,?,?,?,?,?)",
        (("alice", "receipt", i, now, now + 86400 * 3, payload(i)) for i in range(1, n + 1)),
    )
    db.execute("COMMIT")
    db.close()


def receive(port: int, want: int, counts: list[int], done: threading.Event) -> None:
    s = socket.create_connection(("127.0.0.1", port), timeout=30)
    s.sendall(pdu_bytes(BIND_RECEIVER, 1, bind_body("alice", "secret1")))
    buf = b""
    while counts[0] < want:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
        out = []
        while len(buf) >= 16:
            length, cid, _status, seq = HEADER.unpack_from(buf)
            if len(buf) < length:
                break
            buf = buf[length:]
            if cid == DELIVER_SM:
                counts[0] += 1
                out.append(pdu_bytes(0x80000000 | DELIVER_SM, seq, b"\0"))
        if out:
            s.sendall(b"".join(out))
    done.set()
    s.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--receipts", type=int, default=100_000)
    ap.add_argument("--submits", type=int, default=20_000)
    args = ap.parse_args()
    os.environ["MALLOC_ARENA_MAX"] = "2"
    work = Path(tempfile.mkdtemp(prefix="receipts-"))
    bridge = BridgeProcess(work, base_config(extra="limits:\n  queue_depth: 5000000\n"))
    build(bridge.db_path, args.receipts)
    print(f"{args.receipts:,} receipts waiting for alice", flush=True)
    bridge.start(timeout=60)
    assert bridge.proc is not None
    pid = bridge.proc.pid
    try:
        counts, done = [0], threading.Event()
        rss_start = rss_mb(pid)
        peak = rss_start
        t0 = time.monotonic()
        threading.Thread(target=receive, args=(bridge.port, args.receipts, counts, done), daemon=True).start()
        while not done.wait(1.0):
            peak = max(peak, rss_mb(pid))
            if time.monotonic() - t0 > 900:
                break
        drain = time.monotonic() - t0
        peak = max(peak, rss_mb(pid))
        rate = counts[0] / drain
        print(f"drain: {counts[0]:,} receipts in {drain:.1f} s = {rate:,.0f}/s; RSS {rss_start:.1f} MB at the "
              f"start, at most {peak:.1f} MB while draining", flush=True)
        result = run_load(port=bridge.port, system_id="alice", password="secret1", sessions=1, window=10,
                          count=args.submits)
        submit_rate = result["rate_per_s"]
        print(f"submit at window 10: {result['accepted']:,} in {result['duration_s']:.1f} s = {submit_rate:,.0f}/s")
    finally:
        bridge.stop()
    print("\nagainst the goals (issue 14):")
    ok = counts[0] == args.receipts and rate >= submit_rate
    print(f"  receipts/s >= the ESME's window-10 submit_sm/s: {rate:,.0f} vs {submit_rate:,.0f}: {'met' if ok else 'MISSED'}")
    print(f"  memory bounded while draining: +{peak - rss_start:.1f} MB over {args.receipts:,} receipts "
          f"({(peak - rss_start) * 1e6 / max(1, args.receipts):.0f} bytes per receipt)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
