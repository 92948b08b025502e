"""Messages of one route waiting for a channel.

Rules
-----
* Messages wait in an in-memory priority queue per route (higher priority_flag first, then
  oldest first; a heap, so picking costs O(log n) however long the queue).
* A message is in a route's queue at most once: pushing one that is already there does
  nothing.
* The store is the truth: the queues are rebuilt from it on start (``recovery.recover``), and
  every pick re-reads the message (``Channel._process``), so a cancel_sm that happened meanwhile
  is honoured.
"""

from __future__ import annotations

import heapq

from ..lifecycle import State
from ..store import QueueEntry


class RouteQueue:
    """Messages of one route waiting for a channel: a heap of (-priority, id).

    Kept small on purpose (a long backlog lives here): per message one heap tuple and one
    dict entry (when it was queued); the channel a retried message last failed on, only for
    those that have one."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._heap: list[tuple[int, int]] = []
        self._queued_at: dict[int, float] = {}
        self._last: dict[int, tuple[str | None, str | None]] = {}

    def push(self, entry: QueueEntry, now: float) -> None:
        if entry.id in self._queued_at:
            return
        heapq.heappush(self._heap, (-entry.priority, entry.id))
        self._queued_at[entry.id] = now
        if entry.channel is not None:
            self._last[entry.id] = (entry.device, entry.channel)

    def pop(self) -> QueueEntry | None:
        while self._heap:
            neg_priority, mid = heapq.heappop(self._heap)
            if self._queued_at.pop(mid, None) is not None:
                device, channel = self._last.pop(mid, (None, None))
                return QueueEntry(mid, self.name, -neg_priority, State.QUEUED, device=device, channel=channel)
        return None

    def __len__(self) -> int:
        return len(self._queued_at)

    def oldest_age(self, now: float) -> float:
        return now - min(self._queued_at.values()) if self._queued_at else 0.0
