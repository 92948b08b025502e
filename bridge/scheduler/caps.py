"""Caps and pacing of one channel: how many sends it may start, and when.

Rules
-----
* Caps per channel: per minute, per hour (sliding windows) and per day (reset at a configured
  local time); pacing spreads sends evenly over the per-minute/per-hour budget, with jitter.
* Counters are rebuilt from the store after a restart (``recovery.recover`` records every send
  of the last day again, without pacing), so a restart does not reset a day cap.
* A send the device certainly did not take does not count (``unrecord``).
* Memory stays flat while sending, whatever the send rate: a sliding window keeps send times
  only when it has a cap, and then at most the cap's number of them (the oldest one that still
  counts is all a wait needs); the day keeps a count (its reset is a fixed time); the load the
  dispatcher balances on (sends today, sends in the last hour) counts the hour in one-minute
  buckets. (A list of every send time of the day, and a deque of the hour's, grew with every
  send: 20 MB an hour at 512 busy lines.)
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
        # Send times, only for a window with a cap, and only as many as the cap.
        self.minute: deque[float] = deque(maxlen=caps.per_minute or 0)
        self.hour: deque[float] = deque(maxlen=caps.per_hour or 0)
        self._buckets: deque[list[int]] = deque()  # [minute number, sends] of the last hour
        self.day = 0  # sends since day_start
        self.day_start = 0.0
        self._last: float | None = None  # the last send recorded (unrecord takes it back)
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
        while self._buckets and (self._buckets[0][0] + 1) * 60 <= now - 3600:
            self._buckets.popleft()
        self._roll(now)

    def _roll(self, t: float) -> None:
        if t >= self.day_start + 86400:
            # Crossed the daily reset (or first use): the day counter starts again.
            self.day_start = self._day_start(t)
            self.day = 0
        elif t < self.day_start:
            # The clock went back over the reset: the day it is in now, keeping the count
            # (never gives a cap back).
            self.day_start = self._day_start(t)

    def record(self, t: float, *, pace: bool = True) -> None:
        self.minute.append(t)  # (maxlen 0 without a cap: kept nowhere)
        self.hour.append(t)
        m = int(t // 60)
        if self._buckets and self._buckets[-1][0] == m:
            self._buckets[-1][1] += 1
        else:
            self._buckets.append([m, 1])
        if t >= self.day_start + 86400:
            self._roll(t)
        self._last = t
        if t >= self.day_start:  # a send before the last reset (a restart replays a day) is not today's
            self.day += 1
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
        if c.per_day and self.day >= c.per_day:
            waits.append(self.day_start + 86400 - now)
        return max(0.0, *waits)

    def remaining(self, now: float) -> dict[str, float]:
        self._trim(now)
        c = self.caps

        def left(cap: int, used: int) -> float:
            return float(cap - used) if cap else math.inf

        return {
            "minute": left(c.per_minute, len(self.minute)),
            "hour": left(c.per_hour, len(self.hour)),  # (at most the cap: it is the maxlen)
            "day": left(c.per_day, self.day),
        }

    def load(self, now: float) -> tuple[int, int]:
        self._trim(now)
        return self.day, sum(n for _m, n in self._buckets)

    @property
    def last(self) -> float | None:
        """When the last send recorded started."""
        return self._last

    def unrecord(self, t: float) -> None:
        """Take back the send recorded last at ``t``: the device certainly did not take it."""
        if self._last != t:
            return
        self._last = None
        for dq in (self.minute, self.hour):
            if dq and dq[-1] == t:
                dq.pop()
        if self._buckets and self._buckets[-1][0] == int(t // 60):
            self._buckets[-1][1] -= 1
        if self.day and t >= self.day_start:
            self.day -= 1
