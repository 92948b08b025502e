"""The scheduler's small pieces on their own, without a store or a device: a route's queue
(priority first, then oldest; a message queued once; the channel a retry last failed on) and a
channel's cap counter (per-minute and per-hour sliding windows, the daily reset at a local
time, pacing, and the counts a restart rebuilds). Plain functions of time: no clock needed."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections import deque

from bridge.config import Caps
from bridge.lifecycle import State
from bridge.scheduler import CapCounter, RouteQueue
from bridge.store import QueueEntry

UTC = dt.timezone.utc


def entry(mid: int, priority: int = 0, *, device: str | None = None, channel: str | None = None) -> QueueEntry:
    return QueueEntry(mid, "r", priority, State.QUEUED, device=device, channel=channel)


def drain(q: RouteQueue) -> list[int]:
    out = []
    while (e := q.pop()) is not None:
        out.append(e.id)
    return out


# -- RouteQueue ---------------------------------------------------------------------------------


def test_queue_gives_higher_priority_first_then_oldest():
    q = RouteQueue("r")
    for mid, prio in [(5, 0), (2, 0), (7, 3), (3, 1), (9, 3), (1, 0)]:
        q.push(entry(mid, prio), now=100.0)
    assert len(q) == 6
    assert drain(q) == [7, 9, 3, 1, 2, 5]
    assert len(q) == 0 and q.pop() is None


def test_queue_holds_a_message_once():
    q = RouteQueue("r")
    q.push(entry(4), now=10.0)
    q.push(entry(4, priority=3), now=20.0)  # already waiting: keeps its place and its age
    assert len(q) == 1
    assert q.oldest_age(30.0) == 20.0
    got = q.pop()
    assert got is not None and (got.id, got.priority, got.route, got.state) == (4, 0, "r", State.QUEUED)
    assert q.pop() is None
    q.push(entry(4), now=40.0)  # taken out, then queued again (a requeue): waits once more
    assert drain(q) == [4]


def test_queue_remembers_the_channel_a_retry_last_failed_on():
    q = RouteQueue("r")
    q.push(entry(1, device="goip1", channel="2"), now=0.0)
    q.push(entry(2), now=0.0)
    first, second = q.pop(), q.pop()
    assert (first.device, first.channel) == ("goip1", "2")
    assert (second.device, second.channel) == (None, None)


def test_queue_age_is_its_oldest_message():
    q = RouteQueue("r")
    assert q.oldest_age(50.0) == 0.0
    q.push(entry(1), now=10.0)
    q.push(entry(2), now=30.0)
    assert q.oldest_age(50.0) == 40.0
    q.pop()
    assert q.oldest_age(50.0) == 20.0


# -- CapCounter ---------------------------------------------------------------------------------


def counter(**caps) -> CapCounter:
    caps.setdefault("jitter", 0.0)
    return CapCounter(Caps(**caps), random.Random(1), tz=UTC)


def at(day: int, hour: int, minute: int = 0, second: float = 0.0) -> float:
    return dt.datetime(2024, 3, day, hour, minute, tzinfo=UTC).timestamp() + second


def test_per_minute_cap_is_a_sliding_window():
    c = counter(per_minute=2)
    t0 = at(1, 12)
    c.record(t0, pace=False)
    c.record(t0 + 10, pace=False)
    assert c.remaining(t0 + 20)["minute"] == 0
    assert c.wait_time(t0 + 20) == 40.0  # the first send leaves the window at t0 + 60
    assert c.wait_time(t0 + 60) == 0.0
    assert c.remaining(t0 + 60)["minute"] == 1
    assert c.wait_time(t0 + 70) == 0.0 and c.remaining(t0 + 70)["minute"] == 2


def test_per_hour_cap_is_a_sliding_window():
    c = counter(per_minute=0, per_hour=3)
    t0 = at(1, 12)
    for s in (0, 600, 1200):
        c.record(t0 + s, pace=False)
    assert c.wait_time(t0 + 1800) == 1800.0
    assert c.remaining(t0 + 1800) == {"minute": math.inf, "hour": 0, "day": math.inf}
    assert c.wait_time(t0 + 3600) == 0.0


def test_day_cap_resets_at_the_configured_local_time():
    c = counter(per_minute=0, per_day=2, day_reset=dt.time(6, 30))
    c.record(at(1, 20), pace=False)
    c.record(at(1, 23), pace=False)
    # Full until 06:30 the next morning, not until midnight.
    assert c.wait_time(at(2, 1)) == at(2, 6, 30) - at(2, 1)
    assert c.remaining(at(2, 6, 29))["day"] == 0
    assert c.wait_time(at(2, 6, 30)) == 0.0
    assert c.remaining(at(2, 6, 30))["day"] == 2
    assert c.load(at(2, 6, 30)) == (0, 0)


def test_sends_before_the_reset_do_not_count_for_the_new_day():
    c = counter(per_minute=0, per_day=5, day_reset=dt.time(6, 0))
    c.record(at(1, 5, 59), pace=False)  # the day that began yesterday at 06:00
    c.record(at(1, 6, 1), pace=False)  # today's
    assert c.remaining(at(1, 6, 50))["day"] == 4
    assert c.load(at(1, 6, 50)) == (1, 2)  # (sends today, sends in the last hour)


def test_counts_rebuilt_after_a_restart_keep_the_day_cap():
    # recovery.recover records the last day's sends again, without pacing: a restart must not
    # give a full day cap back.
    c = counter(per_minute=0, per_day=3)
    for h in (1, 2, 3):
        c.record(at(1, h), pace=False)
    assert c.next_at == 0.0
    assert c.wait_time(at(1, 4)) == at(2, 0) - at(1, 4)


def test_pacing_spreads_sends_over_the_budget():
    c = counter(per_minute=6, per_hour=120)
    assert c.interval == 30.0  # the tighter of 60/6 = 10 s and 3600/120 = 30 s
    t0 = at(1, 12)
    c.record(t0)
    assert c.wait_time(t0 + 1) == 29.0
    assert c.wait_time(t0 + 30) == 0.0


def test_pacing_jitter_stays_within_its_fraction():
    c = CapCounter(Caps(per_minute=6, jitter=0.5), random.Random(7), tz=UTC)
    t0 = at(1, 12)
    waits = set()
    for i in range(50):
        c.record(t0 + i * 100)
        waits.add(round(c.next_at - (t0 + i * 100), 6))
    assert all(5.0 <= w <= 15.0 for w in waits)  # 10 s +- 50 %
    assert len(waits) > 10  # really jittered, not one fixed interval


def test_no_caps_mean_no_waiting():
    c = counter(per_minute=0)
    t0 = at(1, 12)
    for i in range(1000):
        c.record(t0 + i * 0.001)
    assert c.interval == 0.0
    assert c.wait_time(t0 + 1) == 0.0
    assert c.remaining(t0 + 1) == {"minute": math.inf, "hour": math.inf, "day": math.inf}


def test_a_counter_holds_no_more_send_times_than_its_last_hour():
    # Memory while sending (issue 14): a channel sending all day kept every send time of the day
    # in a list until the daily reset, and every one of the last hour in a deque. Without caps
    # on them, the windows need no send times; the day needs only its count.
    c = counter(per_minute=0, per_day=100_000)
    t0 = at(1, 1, 0)
    sends = 10_000
    for i in range(sends):  # one every 7.2 s: 500 an hour, over 20 hours of one day (UTC reset)
        t = t0 + i * 7.2
        c.wait_time(t)
        c.record(t, pace=False)
    end = t0 + (sends - 1) * 7.2  # the last send
    held = sum(len(v) for v in vars(c).values() if isinstance(v, (list, deque)))
    assert held <= 61  # no send times without a cap on their window: an hour of minute counts
    assert c.remaining(end)["day"] == 100_000 - sends
    today, last_hour = c.load(end)
    assert today == sends and 500 <= last_hour <= 509  # the hour to the minute


def test_a_send_taken_back_leaves_every_window_as_before():
    c = counter(per_minute=5, per_day=5)
    t0 = at(1, 12)
    c.record(t0, pace=False)
    c.record(t0 + 1, pace=False)
    c.unrecord(t0 + 1)
    assert c.remaining(t0 + 2) == {"minute": 4, "hour": math.inf, "day": 4}
    c.unrecord(t0 + 1)  # only the last send, once
    assert c.remaining(t0 + 2) == {"minute": 4, "hour": math.inf, "day": 4}


def test_a_capped_window_holds_no_more_send_times_than_its_cap():
    c = counter(per_minute=3, per_hour=10)
    t0 = at(1, 12)
    for i in range(10):  # ten sends in 20 minutes: the hour's cap is reached
        c.record(t0 + i * 120, pace=False)
    assert len(c.hour) <= 10 and len(c.minute) <= 3
    now = t0 + 9 * 120 + 1
    assert c.wait_time(now) == t0 + 3600 - now  # the first of the ten leaves the hour
    assert c.remaining(now)["hour"] == 0
