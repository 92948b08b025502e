"""Scheduler cost per message: picking with 1k versus 100k messages queued.

    python bench/scheduler_pick.py

Builds the real Scheduler over 32 channels (drivers are never called: only the dispatcher's
pick path is measured), queues N messages with mixed priorities, then repeatedly marks every
channel idle and runs one dispatch pass, timing the picks. The target: the per-message pick
time with 100k queued is within 1.5x of the time with 1k queued.
"""

from __future__ import annotations

import random
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import trio

from bridge.config import load_config_text
from bridge.lifecycle import State
from bridge.metrics import Metrics
from bridge.scheduler import Scheduler
from bridge.store import QueueEntry, Store

CHANNELS = 32
PICKS = 800


def config():  # type: ignore[no-untyped-def]
    return load_config_text(
        textwrap.dedent(
            """
            esmes: [{system_id: bench, password: bench}]
            devices:
              - {name: g1, kind: goip_http, url: "http://127.0.0.1:9", password: x, lines: 16}
              - {name: g2, kind: goip_http, url: "http://127.0.0.1:9", password: x, lines: 16}
            routes:
              - {name: all, channels: [g1, g2]}
            """
        )
    )


async def measure(queued: int, rounds: int = 5) -> float:
    best = float("inf")
    for _ in range(rounds):
        store = Store(Path(tempfile.mkdtemp()) / "b.sqlite3")
        sched = Scheduler(config(), store, {"g1": object(), "g2": object()}, Metrics())  # type: ignore[dict-item]
        rng = random.Random(1)
        for i in range(queued):
            sched.on_new_message(QueueEntry(i + 1, "all", rng.choice((0, 0, 0, 1, 2)), State.QUEUED))
        picked = 0
        elapsed = 0.0
        while picked < PICKS:
            for ch in sched.channels.values():
                ch.idle = True
            t = time.perf_counter()
            picked += sched.dispatch()
            elapsed += time.perf_counter() - t
        best = min(best, elapsed / picked)
    return best


async def main() -> int:
    small = await measure(1_000)
    large = await measure(100_000)
    ratio = large / small
    print(f"per-message pick, {CHANNELS} channels, {PICKS} picks, best of 5:")
    print(f"  1,000 queued:   {small * 1e6:7.2f} us")
    print(f"  100,000 queued: {large * 1e6:7.2f} us")
    print(f"  ratio {ratio:.2f} (target <= 1.5: {'met' if ratio <= 1.5 else 'MISSED'})")
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main))
