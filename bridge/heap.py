"""Giving the C heap's free memory back to the system, on a timer (glibc's ``malloc_trim``).

Why (README, "Memory while sending"): while the bridge sends steadily, the memory in use in
glibc's heap of the event loop's thread stays flat, but the heap's free part grows (the soak
measured it growing from 1 to 3-6 MB in 8 minutes) and stays resident: glibc hands back to the system only a free
stretch at the very top of a heap, and a few live blocks above the freed ones keep them there.
Resident memory then creeps up by megabytes an hour with nothing leaking. ``malloc_trim(0)``
returns every whole free page of every heap (glibc 2.8 and later), wherever it lies.

Rules
-----
* Every ``TRIM_SECONDS`` (5) the trimmer calls ``malloc_trim(0)`` in the event loop's thread
  (1 to 3 ms on a fragmented heap of tens of MB here; from another thread it would hold the
  same allocator locks). Pages it returns that are written again later simply come back; in
  the soak, trimming every 10 s halved the growth (README, "Memory while sending").
* Only glibc has ``malloc_trim``; elsewhere (musl, macOS) the trimmer does nothing, and says so
  once in the log at start.
* ``SMPP_BRIDGE_MALLOC_TRIM_SECONDS`` in the environment sets the interval (0 turns it off: the
  soak benchmark's ``--malloc-trim 0`` compares); a value that is not a number of seconds >= 0
  stops the start with an error that says so.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Mapping

import trio

log = logging.getLogger(__name__)

TRIM_SECONDS = 5.0
ENV = "SMPP_BRIDGE_MALLOC_TRIM_SECONDS"


class HeapSettingError(ValueError):
    """``SMPP_BRIDGE_MALLOC_TRIM_SECONDS`` is not a number of seconds >= 0."""


def malloc_trim_function() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (returns 1 when it gave memory back), or None without glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).malloc_trim  # the process's own symbols: libc's allocator
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_size_t]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


def trim_interval(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds between trims, from ``SMPP_BRIDGE_MALLOC_TRIM_SECONDS`` (default TRIM_SECONDS)."""
    raw = environ.get(ENV, "").strip()
    if not raw:
        return TRIM_SECONDS
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise HeapSettingError(f"{ENV}={raw!r}: expected a number of seconds >= 0 (0 turns the trimming "
                         f"off; unset: every {TRIM_SECONDS:g} s)")
    return value


class HeapTrimmer:
    """Calls ``trim(0)`` every ``interval`` seconds in the event loop's thread."""

    def __init__(self, interval: float, trim: Callable[[int], int] | None) -> None:
        self.interval = interval
        self._trim = trim
        self.trims = 0  # calls made
        self.released = 0  # calls that gave memory back
        self.longest = 0.0  # seconds, the longest call

    @property
    def active(self) -> bool:
        return self._trim is not None and self.interval > 0

    def trim_once(self) -> bool:
        assert self._trim is not None
        started = time.perf_counter()
        gave_back = bool(self._trim(0))
        self.longest = max(self.longest, time.perf_counter() - started)
        self.trims += 1
        self.released += gave_back
        return gave_back

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        if self._trim is None:
            log.info("malloc_trim is not available (not glibc): the C heap's free memory is not "
                     "given back on a timer")
            return
        if self.interval <= 0:
            log.info("%s=0: the C heap's free memory is not given back on a timer", ENV)
            return
        while True:
            await trio.sleep(self.interval)
            self.trim_once()
