#!/usr/bin/env python3
"""Backlog: does the bridge's memory, start time and pick cost stay flat with a million queued?

    python bench/backlog.py                        # 20,000 and 1,000,000 queued (a few minutes)
    python bench/backlog.py --size 20000 --size 100000 --seconds 10

For each ``--size`` N:

1. builds a store file holding N QUEUED messages of one route (mixed priorities), written
   straight into SQLite through the store's own schema (submitting a million over SMPP would
   take minutes and measures ingest, which bench/ingest.py does);
2. starts the real bridge on it (``smpp-bridge run``, ``MALLOC_ARENA_MAX=2`` as the systemd unit
   and the container set it) with one emulated 8-line GoIP that takes 3 s per SMS, and times
   start -> first successful bind_transceiver ("restart to first bind": for the bridge this is
   a restart with a backlog);
3. submits ``--submits`` more over SMPP (3 binds x window 50) while the GoIP sends, then keeps
   sending for ``--seconds``, sampling VmRSS each second (the figure is the largest sample);
4. stops it (SIGTERM), starts it again and measures restart to first bind and the memory after
   restart the same way;
5. measures the scheduler's pick cost in-process over the same store: the real Scheduler and
   Store, 32 channels, ``--picks`` picks through the dispatcher including the page reads: CPU
   time per message of all the process's threads (best of 5), at 1,000 queued and at N.

Goals (issue 14): with 1,000,000 waiting, resident memory <= 64 MB and <= 1.25 x the figure at
20,000; restart to first bind <= 2 s; memory after restart within the same bounds; pick cost
at 1M within 1.5 x of 1k. Figures are printed against the goals; nothing is asserted.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
from e2e_support import BridgeProcess, EmulatorProcess, bind_body, goip_config, pdu_bytes, raw_connect, recv_pdu  # noqa: E402
from loadgen import run_load  # noqa: E402

from bridge.config import load_config_text  # noqa: E402
from bridge.devices.base import Capabilities  # noqa: E402
from bridge.metrics import Metrics  # noqa: E402
from bridge.scheduler import Scheduler  # noqa: E402
from bridge.store import Store  # noqa: E402

RSS_GOAL_MB = 64.0
RSS_RATIO_GOAL = 1.25
BIND_GOAL_S = 2.0
PICK_RATIO_GOAL = 1.5
BIND_TRANSCEIVER = 0x00000009


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def build_store(path: Path, n: int, route: str = "all") -> None:
    """N QUEUED messages (priority 0 mostly, some 1 and 2) in a fresh store file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    s = Store(path)
    s.open()
    s.close()
    db = sqlite3.connect(str(path), isolation_level=None)
    db.execute("PRAGMA synchronous=OFF")
    db.execute("BEGIN")
    rng = random.Random(1)
    now = time.time()
    text = "a campaign message waiting for its SIM"
    rows = (
        (i, "alice", "queued", now, now, f"+49170{i:07d}", rng.choice((0, 0, 0, 1, 2)), text.encode(), text, route)
        for i in range(1, n + 1)
    )
    db.executemany(
        "INSERT INTO messages (id, esme, state, created_at, updated_at, destination_addr, priority, "
        "body, text, route) VALUES (?,?,?,?,?,?,?,?,?,?)",
        rows,
    )
    db.execute(
        "INSERT INTO meta(key, value) VALUES('last_id', ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value",
        (str(n),),
    )
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()


def first_bind(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            s = raw_connect(port)
        except OSError:
            time.sleep(0.01)
            continue
        s.sendall(pdu_bytes(BIND_TRANSCEIVER, 1, bind_body("alice", "secret1")))
        got = recv_pdu(s)
        s.close()
        if got is not None and got[0] == 0x80000000 | BIND_TRANSCEIVER and got[1] == 0:
            return
        time.sleep(0.01)
    raise RuntimeError("no successful bind")


def config(emulator_url: str) -> str:
    return goip_config(emulator_url, lines=8, extra="limits:\n  queue_depth: 5000000\n")


def run_bridge(bridge: BridgeProcess, submits: int, seconds: float) -> tuple[float, float]:
    """Start, time to first bind, submit, sample RSS: (seconds to first bind, largest RSS MB)."""
    t0 = time.monotonic()
    bridge.start(timeout=60)
    first_bind(bridge.port)
    to_bind = time.monotonic() - t0
    assert bridge.proc is not None
    pid = bridge.proc.pid
    peak = rss_mb(pid)
    if submits:
        result = run_load(port=bridge.port, system_id="alice", password="secret1", sessions=3,
                          window=50, count=submits, bind_type="transceiver")
        if result["accepted"] != submits:
            print(f"    warning: {result['accepted']} of {submits} submits accepted: {result['errors']}")
        peak = max(peak, rss_mb(pid))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(1.0)
        peak = max(peak, rss_mb(pid))
    bridge.stop()
    return to_bind, peak


PICK_CONFIG = """
esmes: [{system_id: alice, password: secret1}]
devices:
  - {name: goip1, kind: goip_http, url: "http://127.0.0.1:9", password: x, lines: 32}
routes:
  - {name: all, channels: [goip1]}
"""


class IdleDriver:
    """A driver that is never called: only the dispatcher's pick is measured."""

    declared = Capabilities()


async def pick_cost(path: Path, picks: int) -> float:
    """CPU seconds per message handed out by the dispatcher (refills included), over the store at
    ``path`` (left unchanged: the channels never act on what they are given)."""
    store = Store(path)
    store.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            sched = Scheduler(load_config_text(PICK_CONFIG), store, {"goip1": IdleDriver()}, Metrics())  # type: ignore[dict-item]
            await sched.recover()
            await sched.refill()  # the first page (finding the levels): part of a start, not of a pick
            picked, elapsed = 0, 0.0
            while picked < picks:
                for ch in sched.channels.values():
                    ch.idle = True
                t = time.process_time()  # CPU of every thread (the store's too): steadier than
                await sched.refill()  # the wall clock on a shared machine
                picked += sched.dispatch()
                elapsed += time.process_time() - t
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    return elapsed / picked


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, action="append", help="messages queued (repeatable; default 20000 and 1000000)")
    ap.add_argument("--submits", type=int, default=5000, help="submitted over SMPP on top, during the first run")
    ap.add_argument("--seconds", type=float, default=15.0, help="sending time sampled after each start")
    ap.add_argument("--picks", type=int, default=4000, help="picks timed per pick-cost run")
    args = ap.parse_args()
    sizes = args.size or [20_000, 1_000_000]
    os.environ["MALLOC_ARENA_MAX"] = "2"  # as packaging/ sets it for the service
    emulator = EmulatorProcess(lines=8, send_duration=3.0)
    results: dict[int, dict[str, float]] = {}
    try:
        for n in sizes:
            work = Path(tempfile.mkdtemp(prefix="backlog-"))
            bridge = BridgeProcess(work, config(emulator.url))
            t = time.monotonic()
            build_store(bridge.db_path, n)
            print(f"{n:,} queued: store built in {time.monotonic() - t:.1f} s "
                  f"({bridge.db_path.stat().st_size / 1e6:.0f} MB)", flush=True)
            bind1, rss1 = run_bridge(bridge, args.submits, args.seconds)
            print(f"  first run:  first bind after {bind1:.2f} s, RSS {rss1:.1f} MB (max over the run)", flush=True)
            bind2, rss2 = run_bridge(bridge, 0, args.seconds)
            print(f"  restart:    first bind after {bind2:.2f} s, RSS {rss2:.1f} MB", flush=True)
            picks = min(args.picks, n // 2)
            pick = min(trio.run(pick_cost, bridge.db_path, picks) for _ in range(5))
            print(f"  pick cost:  {pick * 1e6:.1f} us CPU per message ({picks} picks, best of 5)", flush=True)
            results[n] = {"bind": bind1, "rss": rss1, "restart_bind": bind2, "restart_rss": rss2, "pick": pick}
        small = Path(tempfile.mkdtemp(prefix="backlog-")) / "small.sqlite3"
        build_store(small, 1_000)
        pick_1k = min(trio.run(pick_cost, small, 500) for _ in range(5))
    finally:
        emulator.stop()

    print("\nagainst the goals (issue 14):")
    base = results.get(20_000)
    big_n = max(results)
    big = results[big_n]
    print(f"  pick cost 1,000 queued: {pick_1k * 1e6:.1f} us")
    for n, r in results.items():
        print(f"  {n:>9,} queued: RSS {r['rss']:.1f} MB, after restart {r['restart_rss']:.1f} MB, "
              f"restart to first bind {r['restart_bind']:.2f} s, pick {r['pick'] * 1e6:.1f} us")
    worst = max(big["rss"], big["restart_rss"])
    print(f"  RSS with {big_n:,} <= {RSS_GOAL_MB:.0f} MB: {worst:.1f} MB, {verdict(worst <= RSS_GOAL_MB)}")
    if base is not None and big_n != 20_000:
        ratio = worst / max(base["rss"], base["restart_rss"])
        print(f"  RSS {big_n:,} / 20,000 <= {RSS_RATIO_GOAL}: {ratio:.2f}, {verdict(ratio <= RSS_RATIO_GOAL)}")
    print(f"  restart to first bind with {big_n:,} <= {BIND_GOAL_S:.0f} s: {big['restart_bind']:.2f} s, "
          f"{verdict(big['restart_bind'] <= BIND_GOAL_S)}")
    ratio = big["pick"] / pick_1k
    print(f"  pick cost {big_n:,} / 1,000 <= {PICK_RATIO_GOAL}: {ratio:.2f}, {verdict(ratio <= PICK_RATIO_GOAL)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
