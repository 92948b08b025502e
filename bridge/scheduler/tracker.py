"""Handset reports followed in the background.

Rules
-----
* Devices with real handset reports (phones, routers, brevis.one) free their channel once the
  device took every part of a message; the ``ReportTracker`` then follows the status of each
  part until it is final or its device's ``status_timeout`` passes, and finishes the message
  with its receipt.
* No report in time: the device took the part (it answered the send), so it counts as handed
  to the network, unless the device says it no longer knows it (UNKNOWN).
* Each message is checked in a task of its own (at most TRACK_CONCURRENCY at once), and one
  device that is slow to answer never holds up the reports of the others. A message whose
  check fails is tried again after RESCUE_DELAY, and given up (UNKNOWN, with its receipt) after
  MAX_RESCUES failures in a row (failures of a store that cannot write at all are not counted,
  and a message whose giving up could not be stored stays followed).
* A part whose device a reload removed (an upstream connector, ``Scheduler.drop_device``) gets
  that driver's last word (a receipt that came before it unbound), else it counts as handed to
  the network at once: no report can come any more.
* What is followed lives in memory only; after a restart ``recovery.recover`` hands every SENT
  message of such a device to the tracker again.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from ..devices.base import DeliveryState
from ..lifecycle import State
from ..store import StoreUnwritable
from .channel import MAX_RESCUES, RESCUE_DELAY
from .parts import part_result

if TYPE_CHECKING:
    from .facade import Scheduler

log = logging.getLogger(__name__)

TRACK_TICK = 0.25  # seconds between passes over messages waiting for handset reports
TRACK_CONCURRENCY = 32  # messages whose reports are checked at the same time


class ReportTracker:
    """Messages with every part at a device that gives handset reports, followed until final."""

    def __init__(self, sched: Scheduler) -> None:
        self.sched = sched
        # Messages with every part at a device that gives handset reports: id -> since.
        self._tracked: dict[int, float] = {}
        # When each part of a followed message was last polled: id -> {part seq: time}. Keyed by
        # message, so that whatever stops following a message drops its notes with it.
        self._track_polled: dict[int, dict[int, float]] = {}
        self._track_wake = trio.Event()

    def forget(self, mid: int) -> None:
        """Stop following ``mid`` (finished, gone or given up)."""
        self._tracked.pop(mid, None)
        self._track_polled.pop(mid, None)

    def track(self, mid: int) -> None:
        """Follow the status of every part of ``mid`` (all with a device that gives handset
        reports) until each is final or its device's status_timeout passes; then finish it."""
        if mid not in self._tracked:
            self._tracked[mid] = self.sched.clock()
            self._track_wake.set()

    async def run(self) -> None:
        # Each message is checked in a task of its own (at most TRACK_CONCURRENCY at once), and
        # a pass never waits for a slow one: a phone that takes its timeout to answer a status
        # poll must not hold up the reports of every other device's messages.
        limiter = trio.CapacityLimiter(TRACK_CONCURRENCY)
        checking: set[int] = set()

        async def check(mid: int, since: float) -> None:
            try:
                async with limiter:
                    if await self._check_tracked(mid, since):
                        self.forget(mid)
            except Exception as exc:
                self.sched.metrics.scheduler_errors.inc()
                if isinstance(exc, StoreUnwritable):
                    # The store's fault, not the message's: not counted towards giving up; it
                    # stays followed and is checked again once the store writes.
                    log.error("following the reports of message %s: the store cannot write (%s); will retry", mid, exc)
                else:
                    log.exception("following the reports of message %s failed; will retry", mid)
                    # Given up only when that could be stored; else it stays followed.
                    if self.sched.note_failure(mid) > MAX_RESCUES and await self.sched.give_up(mid, exc):
                        return
                await trio.sleep(RESCUE_DELAY)  # this message only: the others go on
            else:
                self.sched.failures.pop(mid, None)
            finally:
                checking.discard(mid)

        async with trio.open_nursery() as nursery:
            while True:
                if not self._tracked:
                    self._track_wake = trio.Event()
                    await self._track_wake.wait()
                for mid, since in list(self._tracked.items()):
                    if mid not in checking:
                        checking.add(mid)
                        nursery.start_soon(check, mid, since)
                await trio.sleep(TRACK_TICK)

    async def _check_tracked(self, mid: int, since: float) -> bool:
        """True when the message is finished (or gone)."""
        parts = await self.sched.store.parts(mid)
        if not parts:
            return True
        now = self.sched.clock()
        results: list[tuple[str, str | None]] = []
        kind = ""  # no device left in the config: the generic receipt policy
        for p in parts:
            device = self.sched.config.device(p.device)
            driver = self.sched.drivers.get(p.device)
            # A connector removed by a reload: what it heard before it unbound, then no more.
            gone = self.sched.retired.get(p.device) if driver is None else None
            if gone is not None:
                device, driver = gone
            kind = device.kind if device is not None else kind
            if p.state != "sent":
                results.append((p.state, p.error))
                continue
            if driver is None or device is None:
                results.append(("unknown", None))
                continue
            polled = self._track_polled.setdefault(mid, {})
            if now - polled.get(p.seq, 0.0) < device.status_poll_interval:
                return False
            polled[p.seq] = now
            status = await driver.status(p.channel, p.ref)
            if status.poll_failed:
                self.sched.metrics.status_poll_failures.labels(p.device).inc()
            elif status.state.final and status.state is not DeliveryState.SENT:
                result = part_result(status)
                await self.sched.store.update_part(mid, p.seq, result[0], error=result[1])
                results.append(result)
                continue
            if status.network_stat and not status.poll_failed:
                await self.sched.network_progress(mid, p.device, status.network_stat)
            if gone is None and now - max(since, p.sent_at or since) < device.status_timeout:
                return False  # keep waiting for this part's handset report
            # No handset report in time (or none can come: its device was removed). The device
            # took the part (it answered the send), so it counts as handed to the network,
            # unless the device says it no longer knows it.
            forgot = status.state is DeliveryState.UNKNOWN and not status.poll_failed
            result = ("unknown", None) if forgot else ("network", None)
            why = "its device was removed by a config reload" if gone is not None else "no handset report within status_timeout"
            await self.sched.store.update_part(mid, p.seq, result[0], error=why)
            results.append(result)
        self._track_polled.pop(mid, None)
        rec = await self.sched.store.record(mid)
        # SUBMITTING too: a crash between the last part's "sent" and the message's move to SENT
        # leaves it there, and recovery hands it to this tracker (every part is with the device).
        if rec is not None and rec.state in (State.SENT, State.SUBMITTING):
            await self.sched.finish(mid, self.sched.receipts.combine(kind, results), kind=kind)
        return True
