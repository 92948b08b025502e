"""What waits for the scheduler -- a route's queue and the timers of scheduled and retried
messages -- with only a bounded window of it in memory; the rest is paged from the store.

Rules
-----
* A route's queue hands out higher priority_flag first, then the lowest id (the oldest
  submit), as one unbounded heap would. A message is in a route's queue at most once: pushing
  one that is already there does nothing.
* The store is the truth, and its index is the queue (``messages_queue``: route, priority, id of
  the QUEUED rows; ``messages_timer``: due time, id of the SCHEDULED and RETRY_WAIT rows). In
  memory each ordered stream (a priority level of a route; the timers) keeps at most about
  ``window`` items: the head of the stream. Behind its *cursor* the stream lives in the store
  only, and is paged in (``Paged.merge``) when the window runs low, so memory and pick cost do
  not grow with the backlog, and a restart loads nothing of it (``mark_unknown``: the levels are
  found on the first refill).
* A stream's cursor only moves forward, so a message handed out is never paged in again while
  its row still says QUEUED (the channel re-reads it anyway: ``Channel._process``). A message
  announced (``push``, after its commit) at or before the cursor joins the window; one behind
  the cursor is left to the store, where the next page finds it. A page is read in the store's
  writer (``Store.queued_page``), after the hooks of every commit it can see ran, and what was
  announced while it was read is merged with it (``Paged.merge``): nothing is skipped.
* A stream that holds all the store has of it (``exhausted``) takes every announced message until
  its window is full; then its cursor is set at the largest id it ever held and the rest waits
  in the store. Only messages queued again behind the cursor (a retry released, a requeue)
  make a window grow past ``window``; they are few (at most one per channel and timer).
* After a config reload moved messages to a route (``reset``), that route's queue is found again
  from the store; a message a channel already holds may then be handed out a second time, and
  ``Store.begin_part`` refuses the second channel (ClaimedElsewhere): one message, one channel.
* A timer may be handed out twice (released twice): ``Store.release_due`` moves a message only
  while it is still due, so the second does nothing.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

from ..lifecycle import State
from ..store import QueueEntry

WINDOW = 512  # items of one stream kept in memory (refilled when below half)

K = TypeVar("K", bound=Hashable)


class Paged(Generic[K]):
    """One ordered stream of waiting items (keys ``K``, ascending) of which only the head is
    in memory. ``cursor``: every stored item with key <= cursor is in ``heap`` or was handed
    out; items with larger keys are in the store only (``backlog`` counts them, as well as it
    is known). ``exhausted``: the store has nothing beyond the cursor."""

    def __init__(self, window: int, *, exhausted: bool) -> None:
        self.window = window
        self.heap: list[tuple[K, Any]] = []
        self.cursor: K | None = None  # None: before the first key
        self.exhausted = exhausted
        self.hi: K | None = None  # the largest key ever held in memory
        self.backlog = 0

    def admits(self, key: K) -> bool:
        """Does an announced item with ``key`` belong in memory (else it waits in the store)?"""
        if self.exhausted:
            if len(self.heap) < self.window or self.hi is None or key <= self.hi:
                return True
            # Full: the rest waits in the store, behind everything ever held.
            self.exhausted = False
            self.cursor = self.hi
            return False
        return self.cursor is not None and key <= self.cursor

    def add(self, key: K, item: Any) -> None:
        heapq.heappush(self.heap, (key, item))
        if self.hi is None or key > self.hi:
            self.hi = key

    def wants_page(self) -> bool:
        return not self.exhausted and len(self.heap) < self.window // 2

    def merge(self, rows: list[Any], limit: int) -> None:
        """A page read from the store (rows whose first item is the key, ascending, all
        > cursor, at most ``limit``; the caller holds them): moves the cursor past them."""
        if rows:
            self.cursor = rows[-1][0]
        if len(rows) < limit:
            self.exhausted = True
            self.backlog = 0
        else:
            self.backlog = max(0, self.backlog - len(rows))


class RouteQueue:
    """Messages of one route waiting for a channel, one ``Paged`` stream per priority level
    (keys: message ids)."""

    def __init__(self, name: str, window: int = WINDOW) -> None:
        self.name = name
        self.window = window
        self._levels: dict[int, Paged[int]] = {}
        self._order: list[int] = []  # priority levels, highest first
        self._queued_at: dict[int, float] = {}  # ids in memory -> when queued
        self._last: dict[int, tuple[str | None, str | None]] = {}
        # The store may hold levels not found yet (after a start or a reload): refill first.
        self.unknown = False
        self._loading = False
        self._during: list[tuple[QueueEntry, float]] = []

    # -- announcements and picks ----------------------------------------------------------------

    def _level(self, priority: int) -> Paged[int]:
        lvl = self._levels.get(priority)
        if lvl is None:
            # A level never seen: the store has nothing else of it unless it was not looked at.
            lvl = self._levels[priority] = Paged(self.window, exhausted=not self.unknown)
            self._order = sorted(self._levels, reverse=True)
        return lvl

    def push(self, entry: QueueEntry, now: float) -> None:
        if entry.id in self._queued_at:
            return
        lvl = self._level(entry.priority)
        if lvl.admits(entry.id):
            self._hold(lvl, entry, now)
            return
        lvl.backlog += 1
        if self._loading:
            self._during.append((entry, now))

    def _hold(self, lvl: Paged[int], entry: QueueEntry, now: float) -> None:
        lvl.add(entry.id, None)
        self._queued_at[entry.id] = now
        if entry.channel is not None:
            self._last[entry.id] = (entry.device, entry.channel)

    def pop(self) -> QueueEntry | None:
        """The next message, or None: the queue is empty, or its head is in the store only
        (``wants_refill``)."""
        if self.unknown:
            return None
        for priority in self._order:
            lvl = self._levels[priority]
            while lvl.heap:
                mid = heapq.heappop(lvl.heap)[0]
                if self._queued_at.pop(mid, None) is not None:
                    device, channel = self._last.pop(mid, (None, None))
                    return QueueEntry(mid, self.name, priority, State.QUEUED, device=device, channel=channel)
            if not lvl.exhausted:
                return None  # its next messages are in the store: page them in first
        return None

    def __len__(self) -> int:
        return len(self._queued_at) + sum(lvl.backlog for lvl in self._levels.values())

    def oldest_age(self, now: float) -> float:
        """How long the oldest message held in memory has waited (the head of the queue:
        the messages in the store only are behind it)."""
        return now - min(self._queued_at.values()) if self._queued_at else 0.0

    # -- paging ---------------------------------------------------------------------------------

    def wants_refill(self) -> bool:
        return self.unknown or any(lvl.wants_page() for lvl in self._levels.values())

    def mark_unknown(self) -> None:
        """The store may hold messages of this route that were never announced (a start):
        find its levels and their heads on the next refill."""
        self.unknown = True
        for lvl in self._levels.values():
            if lvl.exhausted:
                lvl.exhausted = False
                lvl.cursor = lvl.hi

    def reset(self) -> None:
        """Messages were moved to this route in the store (a config reload): forget what is
        held and find it all again from the store."""
        self._levels.clear()
        self._order = []
        self._queued_at.clear()
        self._last.clear()
        self.unknown = True

    async def refill(self, page: Callable[..., Awaitable[tuple[dict[int, int] | None, dict[int, list[tuple[int, str | None, str | None]]]]]], now: float) -> None:
        """Page in the head of every level running low (and find the levels when unknown).
        ``page(route, discover, after, limit)`` is ``Store.queued_page``."""
        discover = self.unknown
        after = {p: lvl.cursor or 0 for p, lvl in self._levels.items() if discover or lvl.wants_page()}
        limit = self.window
        self._loading, self._during = True, []
        try:
            counts, rows = await page(self.name, discover, after, limit)
        finally:
            self._loading = False
        during, self._during = self._during, []
        if discover and counts is not None:
            for p in counts:
                if p not in self._levels:  # found now: paged from its first id
                    self._levels[p] = Paged(self.window, exhausted=False)
            self.unknown = False
        for p, found in rows.items():
            lvl = self._level(p)
            if counts is not None:
                lvl.backlog = max(0, counts.get(p, 0) - len(lvl.heap))
            lvl.merge(found, limit)
            for mid, device, channel in found:
                if mid not in self._queued_at:
                    self._hold(lvl, QueueEntry(mid, self.name, p, State.QUEUED, device=device, channel=channel), now)
        for entry, at in during:
            lvl = self._level(entry.priority)
            if entry.id not in self._queued_at and (lvl.exhausted or (lvl.cursor is not None and entry.id <= lvl.cursor)):
                self._hold(lvl, entry, at)
        for p in [p for p, lvl in self._levels.items() if lvl.exhausted and not lvl.heap]:
            del self._levels[p]
        self._order = sorted(self._levels, reverse=True)


class TimerQueue:
    """Scheduled and retried messages waiting for their due time (keys: (due, id)); released
    by the facade's timer loop. Duplicates are harmless (``Store.release_due``)."""

    def __init__(self, window: int = WINDOW) -> None:
        self._stream: Paged[tuple[float, int]] = Paged(window, exhausted=True)
        self._loading = False
        self._during: list[tuple[tuple[float, int], QueueEntry]] = []
        self._tiebreak = itertools.count()  # equal keys (a message announced twice) never compare entries

    def push(self, due: float, entry: QueueEntry, *, hold: bool = False) -> None:
        """A message waits for ``due``. ``hold``: keep it in memory whatever the cursor (a
        timer the store could not honour, tried again at a time the store does not know)."""
        key = (due, entry.id)
        if hold or self._stream.admits(key):
            self._stream.add(key, (next(self._tiebreak), entry))
            return
        self._stream.backlog += 1
        if self._loading:
            self._during.append((key, entry))

    def next_due(self) -> float | None:
        """When the first held timer is due (None: none held)."""
        return self._stream.heap[0][0][0] if self._stream.heap else None

    def pop_due(self, now: float) -> QueueEntry | None:
        heap = self._stream.heap
        if heap and heap[0][0][0] <= now:
            return heapq.heappop(heap)[1][1]
        return None

    def __len__(self) -> int:
        return len(self._stream.heap) + self._stream.backlog

    def wants_refill(self) -> bool:
        return self._stream.wants_page()

    def mark_unknown(self) -> None:
        s = self._stream
        s.exhausted = False
        s.cursor = s.hi

    async def refill(self, page: Callable[..., Awaitable[list[tuple[float, QueueEntry]]]]) -> None:
        """``page(after, limit)`` is ``Store.timers_page``: (due, entry) after the cursor."""
        s = self._stream
        limit = s.window
        self._loading, self._during = True, []
        try:
            found = await page(s.cursor, limit)
        finally:
            self._loading = False
        during, self._during = self._during, []
        rows = [((due, e.id), e) for due, e in found]
        s.merge(rows, limit)
        for key, entry in rows:
            s.add(key, (next(self._tiebreak), entry))
        for key, entry in during:
            if s.exhausted or (s.cursor is not None and key <= s.cursor):
                s.add(key, (next(self._tiebreak), entry))
