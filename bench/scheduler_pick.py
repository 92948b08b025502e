"""Scheduler cost per message: picking with 1k, 100k and 1M messages queued.

    python bench/scheduler_pick.py [--size 1000 --size 100000 ...]

Builds a store file per size (QUEUED messages of one route, mixed priorities), then runs the
real Scheduler over the real Store with 32 channels whose drivers are never called: each round
marks every channel idle and runs the dispatcher's refill (page reads from the store, as the
dispatcher does) and one dispatch pass, timing the CPU of both (``backlog.pick_cost``, best of 5). The
target (issue 14): the per-message pick time with 1M queued within 1.5x of the time with 1k.
bench/backlog.py measures the same next to memory and restart time.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backlog import PICK_RATIO_GOAL, build_store, pick_cost  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, action="append", help="messages queued (repeatable)")
    ap.add_argument("--picks", type=int, default=4000)
    args = ap.parse_args()
    sizes = args.size or [1_000, 100_000, 1_000_000]
    cost: dict[int, float] = {}
    for n in sizes:
        path = Path(tempfile.mkdtemp(prefix="pick-")) / "b.sqlite3"
        build_store(path, n)
        picks = min(args.picks, n // 2)
        cost[n] = min(trio.run(pick_cost, path, picks) for _ in range(5))
        print(f"  {n:>9,} queued: {cost[n] * 1e6:7.2f} us CPU per message ({picks} picks, best of 5)", flush=True)
    small, big = min(cost), max(cost)
    ratio = cost[big] / cost[small]
    ok = ratio <= PICK_RATIO_GOAL
    print(f"  ratio {big:,} / {small:,}: {ratio:.2f} (target <= {PICK_RATIO_GOAL}: {'met' if ok else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
