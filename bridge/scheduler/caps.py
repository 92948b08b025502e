"""Caps and pacing of one channel: how many sends it may start, and when.

Rules
-----
* Caps per channel: per minute, per hour (sliding windows) and per day (reset at a configured
  local time); pacing spreads sends evenly over the per-minute/per-hour budget, with jitter.
* Counters are rebuilt from the store after a restart (``recovery.recover`` records every send
  of the last day again, without pacing), so a restart does not reset a day cap.
* A send the device certainly did not take does not count (``Channel._unrecord``).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import deque
from typing import Any


class CapCounter:
    """Sends started on one channel, checked against its caps."""

    def __init__(self, caps: Any, rng: random.Random, *, tz: dt.tzinfo | None = None) -> None:
        self.caps = caps
        self.rng = rng
        self.tz = tz
        self.minute: deque[float] = deque()
        self.hour: deque[float] = deque()
        self.day: list[float] = []
        self.day_start = 0.0
        self.next_at = 0.0  # pacing: earliest next send

    @property
    def interval(self) -> float:
        c = self.caps
        return max(60.0 / c.per_minute if c.per_minute else 0.0, 3600.0 / c.per_hour if c.per_hour else 0.0)

    def _day_start(self, now: float) -> float:
        reset: dt.time = self.caps.day_reset
        local = dt.datetime.fromtimestamp(now, self.tz).astimezone(self.tz)
        start = local.replace(hour=reset.hour, minute=reset.minute, second=0, microsecond=0)
        if start > local:
            start -= dt.timedelta(days=1)
        return start.timestamp()

    def _trim(self, now: float) -> None:
        while self.minute and now - self.minute[0] >= 60:
            self.minute.popleft()
        while self.hour and now - self.hour[0] >= 3600:
            self.hour.popleft()
        if not self.day_start <= now < self.day_start + 86400:
            # Crossed the daily reset (or first use): the day counter starts again.
            self.day_start = self._day_start(now)
            self.day = [t for t in self.day if t >= self.day_start]

    def record(self, t: float, *, pace: bool = True) -> None:
        self.minute.append(t)
        self.hour.append(t)
        self.day.append(t)
        if pace and self.interval:
            j = self.caps.jitter
            self.next_at = t + self.interval * (1 + j * (2 * self.rng.random() - 1))

    def wait_time(self, now: float) -> float:
        """Seconds until a send is allowed (0 = now)."""
        self._trim(now)
        c = self.caps
        waits = [self.next_at - now]
        if c.per_minute and len(self.minute) >= c.per_minute:
            waits.append(self.minute[len(self.minute) - c.per_minute] + 60 - now)
        if c.per_hour and len(self.hour) >= c.per_hour:
            waits.append(self.hour[len(self.hour) - c.per_hour] + 3600 - now)
        if c.per_day and len(self.day) >= c.per_day:
            waits.append(self.day_start + 86400 - now)
        return max(0.0, *waits)

    def remaining(self, now: float) -> dict[str, float]:
        self._trim(now)
        c = self.caps

        def left(cap: int, used: int) -> float:
            return float(cap - used) if cap else math.inf

        return {
            "minute": left(c.per_minute, len(self.minute)),
            "hour": left(c.per_hour, len(self.hour)),
            "day": left(c.per_day, len(self.day)),
        }

    def load(self, now: float) -> tuple[int, int]:
        self._trim(now)
        return len(self.day), len(self.hour)
