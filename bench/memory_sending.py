#!/usr/bin/env python3
"""Memory while sending: where does the bridge's memory go during steady sending with an
unchanged backlog? (issue 14, goal 2: find the cause; bench/soak.py judges the slope.)

    python bench/memory_sending.py                  # 5 minutes, 20 s between snapshots
    python bench/memory_sending.py --minutes 30 --lines 8 --backlog 200000

The bridge runs in this process (the real ``App``, its real store on a file holding
``--backlog`` QUEUED messages, built directly) so that ``tracemalloc`` can see its Python heap;
the emulated GoIP runs in a child process (its own list of sent SMS is not ours). Its lines send
as fast as the emulator allows (``--send-duration``), so the bridge sends steadily from a
backlog that hardly changes. Every ``--interval`` seconds it prints VmRSS, the traced Python
heap and the number of messages sent; at the end it prints the allocation sites whose memory
grew most between the end of warm-up (the first ``--warmup`` fraction) and the end, by file and
line (tracemalloc slows the bridge, so rates here are not throughput figures).

The judgement: after warm-up, the traced heap should not grow with the number of messages sent
(printed as bytes per message sent); a site that grows by a similar amount per message is a
leak (a dict keyed by message id, a label set per message...).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402
from backlog import build_store, rss_mb  # noqa: E402
from e2e_support import EmulatorProcess, goip_config  # noqa: E402

from bridge.app import App  # noqa: E402
from bridge.config import load_config_text  # noqa: E402


def sent_count(db: Path) -> int:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return c.execute("SELECT count(*) FROM messages WHERE final_at IS NOT NULL").fetchone()[0]
    finally:
        c.close()


async def run(args: argparse.Namespace, config_text: str, db: Path) -> None:
    app = App(load_config_text(config_text))
    async with trio.open_nursery() as nursery:
        await nursery.start(app.run)
        start = time.monotonic()
        total = args.minutes * 60
        warm_at = start + total * args.warmup
        warm_snap = None
        warm_heap = warm_sent = 0
        print(f"{'t (s)':>6} {'RSS MB':>8} {'heap MB':>8} {'sent':>8}", flush=True)
        while time.monotonic() - start < total:
            await trio.sleep(args.interval)
            heap, _peak = tracemalloc.get_traced_memory()
            sent = sent_count(db)
            print(f"{time.monotonic() - start:6.0f} {rss_mb(os.getpid()):8.1f} {heap / 1e6:8.2f} {sent:8d}", flush=True)
            if warm_snap is None and time.monotonic() >= warm_at:
                warm_snap, warm_heap, warm_sent = tracemalloc.take_snapshot(), heap, sent
        end_snap = tracemalloc.take_snapshot()
        heap, _peak = tracemalloc.get_traced_memory()
        sent = sent_count(db)
        nursery.cancel_scope.cancel()
    if warm_snap is None:
        print("the run ended before warm-up did: run longer")
        return
    per = (heap - warm_heap) / max(1, sent - warm_sent)
    print(f"\nafter warm-up: heap {warm_heap / 1e6:.2f} -> {heap / 1e6:.2f} MB over {sent - warm_sent} "
          f"messages sent: {per:.0f} bytes per message (flat: about 0)")
    keep = [tracemalloc.Filter(False, tracemalloc.__file__), tracemalloc.Filter(False, "<frozen importlib._bootstrap>")]
    stats = end_snap.filter_traces(keep).compare_to(warm_snap.filter_traces(keep), "lineno")
    print("largest growth by allocation site:")
    for s in stats[: args.top]:
        print(f"  {s.size_diff / 1024:+9.1f} KiB {s.count_diff:+7d} blocks  {s.traceback}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=5.0)
    ap.add_argument("--interval", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=0.3, help="fraction of the run that is warm-up")
    ap.add_argument("--backlog", type=int, default=100_000)
    ap.add_argument("--lines", type=int, default=8)
    ap.add_argument("--send-duration", type=float, default=0.05)
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="memsend-"))
    db = work / "bridge.sqlite3"
    build_store(db, args.backlog)
    emulator = EmulatorProcess(lines=args.lines, send_duration=args.send_duration)
    config_text = goip_config(emulator.url, lines=args.lines, extra="limits:\n  queue_depth: 5000000\n")
    config_text = config_text.replace("path: data/bridge.sqlite3", f"path: {db}")
    tracemalloc.start(1)
    try:
        trio.run(run, args, config_text, db)
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
