"""Routing, and one worker per channel.

Rules
-----
* A channel (one GoIP line, one router modem, one phone SIM) is owned by exactly one task, the
  ``Channel`` worker. It never has two messages in flight, and it reads the final status of the
  part it sent before it sends the next one (GoIP keeps status only for a line's last message).
* Messages wait in an in-memory priority queue per route (higher priority_flag first, then
  oldest first; a heap, so picking costs O(log n) however long the queue). The store is the
  truth: the queues are rebuilt from it on start, and every pick re-reads the message, so a
  cancel_sm that happened meanwhile is honoured.
* The dispatcher gives the next message of a route to the least-loaded idle channel of that
  route (fewest sends today, then this hour), preferring another channel than the one that just
  failed it. A channel is idle only when its caps and pacing allow a send now and it is healthy.
* Caps per channel: per minute, per hour (sliding windows) and per day (reset at a configured
  local time); pacing spreads sends evenly over the per-minute/per-hour budget, with jitter.
  Counters are rebuilt from the store after a restart, so a restart does not reset a day cap.
* Health: GSM logout -> the channel rests for ``logout_cooldown`` and is then probed; repeated
  errors -> quarantine with exponential back-off and a probe; wrong credentials -> every channel
  of the device is quarantined. A message never waits on a sick channel: it goes back to its
  route's queue for another channel.
* Before each device call the part is durably marked ``submitting`` together with the id the
  channel's status slot showed before the call (``pre_ref``). An ambiguous send (timeout after
  the request left, or a crash mid-call) is reconciled through the device: a new id in the slot
  of a channel only we use means the device took our message; the same id means it did not.
  When the device cannot tell, ``scheduler.ambiguous`` decides: ``unknown`` (default: never
  resend; final state UNKNOWN, receipt stat:UNKNOWN) or ``resend``. Every case is counted in
  ``smpp_bridge_ambiguous_sends_total``.
* Long messages go out as separate plain SMS, one part after the other on the same channel
  (GoIP firmware crashes on concatenated sends); the recipient sees several SMS in order.
"""

from __future__ import annotations

import datetime as dt
import heapq
import itertools
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from .receipts import policy as dlr  # device status -> receipt: dlr.Outcome, dlr.ReceiptPolicy
from .devices.base import DeliveryState, Driver, SendOutcome, StatusResult
from .inbound import OPTOUT_ERR, OPTOUT_NETWORK_ERROR
from . import lifecycle
from .lifecycle import InvalidTransition, State, is_final
from .smpp.text import message_class, split_text
from .store import ClaimedElsewhere, MessageRecord, QueueEntry, Store

log = logging.getLogger(__name__)

WAITING = lifecycle.WAITING  # nothing has gone to a device yet (the lifecycle's definition)
TRACK_TICK = 0.25  # seconds between passes over messages waiting for handset reports
RESCUE_DELAY = 2.0  # seconds before a message whose handling failed is taken up again
# Failures in a row after which a message is given up: finished UNKNOWN with its receipt, so one
# poisoned message (a bug that fails it every time) never holds its channel forever.
MAX_RESCUES = 3
TRACK_CONCURRENCY = 32  # messages whose reports are checked at the same time


# -- caps and pacing ----------------------------------------------------------------------------


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


# -- queues -------------------------------------------------------------------------------------


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


# -- channels -----------------------------------------------------------------------------------


class Channel:
    """One channel and its worker task."""

    def __init__(self, sched: Scheduler, device: Any, channel_id: str, driver: Driver) -> None:
        self.sched = sched
        self.device = device
        self.device_name: str = device.name
        self.id = channel_id
        self.key = f"{device.name}:{channel_id}"
        self.driver = driver
        self.kind: str = device.kind
        # Devices with real handset reports free the channel once the device took the message
        # and follow its status in the background (Scheduler.track); the others (GoIP HTTP:
        # one status slot per line) hold the channel until the status is final.
        # What the kind declares (bridge/devices/<kind>/__init__.py), never guessed.
        declared = driver.declared
        self.reports = declared.handset_reports
        self.whole_text = declared.whole_text
        # Characters the device refuses at the start of a text: no part may start with one.
        self.part_start_refused: frozenset[str] = declared.part_start_refused
        self.send_options = declared.send_options
        self.first_poll_delay = declared.first_poll_delay
        self.caps = CapCounter(device.channel_caps(channel_id), sched.rng)
        self.routes: list[str] = []
        self.state = "ready"  # ready | sending | cooldown | quarantine | paused
        self.idle = False
        self.paused = False
        self._assigned: QueueEntry | None = None
        self._assign_event = trio.Event()
        self.down_until = 0.0
        self.consecutive_errors = 0
        self.quarantine_level = 0
        self.last_ref: str | None = None
        self.recover: list[QueueEntry] = []
        self.inflight = 0
        self._wake = trio.Event()
        # Why the channel rests, when a health check can end the rest early (it is probed at
        # once, Scheduler.device_health): "device_up" - taken out because its device was down;
        # "registered" - GSM logout (a health check or a send said so). None: only its own
        # probe ends it (errors: the back-off must hold).
        self.back_when: str | None = None

    # the dispatcher's side

    def give(self, entry: QueueEntry) -> None:
        self.idle = False
        self._assigned = entry
        self._assign_event.set()

    def poke(self) -> None:
        """Re-check readiness now (config reload, pause/resume)."""
        self._wake.set()

    def pause(self) -> None:
        """Take no new message. A message in progress is finished first (a device call cannot
        be taken back); the state shows "paused" once it is done."""
        self.paused = True
        if self.idle:
            # Waiting for work: leave that wait (with nothing assigned) so the worker sees the
            # pause at once. Only an idle channel may be woken this way: give() clears idle.
            self.idle = False
            self._assign_event.set()
        self.poke()
        self.sched.wake()  # its route may now have no healthy channel: failover

    def resume(self) -> None:
        self.paused = False
        self.poke()
        self.sched.wake()

    def take_out(self, reason: str, *, cooldown: float | None = None) -> None:
        """Out of service now: quarantined (probed when it ends) or, with ``cooldown``, resting
        like after a GSM logout. A channel waiting idle for work leaves that wait, so it rests
        and probes instead of taking the next message."""
        if cooldown is not None:
            self.cooldown(cooldown, reason)
        else:
            self._penalise(reason, probe=True)
        if self.idle:
            self.idle = False
            self._assign_event.set()
        self.poke()

    @property
    def healthy(self) -> bool:
        """Able to send now or soon: not cooling down, quarantined or paused."""
        return not self.paused and self.state in ("ready", "sending")

    @property
    def busy(self) -> bool:
        """A message is in progress on this channel (sending, or waiting for its status)."""
        return self.state == "sending"

    def load(self, now: float) -> tuple[int, int, float]:
        day, hour = self.caps.load(now)
        return day, hour, self.sched.rng.random()

    # the worker

    async def run(self) -> None:
        while True:
            # What this channel was doing before a restart, or a message whose handling failed
            # (the store could not write): finished here, on this channel, before anything new.
            while self.recover:
                await self._guarded(self._resume, self.recover.pop(0))
            await self._wait_ready()
            self._assign_event = trio.Event()
            self.idle = True
            self.sched.wake()
            await self._assign_event.wait()
            entry, self._assigned = self._assigned, None
            if entry is not None:
                await self._guarded(self._process, entry)

    async def _guarded(self, fn: Callable[[QueueEntry], Any], entry: QueueEntry) -> None:
        """A bug while handling one message must not kill the channel: put it back."""
        try:
            await fn(entry)
        except trio.Cancelled:
            raise
        except (InvalidTransition, ClaimedElsewhere) as exc:
            if isinstance(exc, InvalidTransition) and not is_final(exc.current):
                await self._rescue(entry, exc)
                return
            # A lost race, not a fault: while this channel picked the message up, the expiry
            # sweep or cancel_sm finished it (with its receipt), or another channel began
            # sending it. Nothing was sent from here; go on.
            log.debug("channel %s: message %s is not this channel's any more (%s)", self.key, entry.id, exc)
            self.sched.failures.pop(entry.id, None)
        except Exception as exc:
            await self._rescue(entry, exc)
        else:
            self.sched.failures.pop(entry.id, None)

    async def _rescue(self, entry: QueueEntry, exc: Exception) -> None:
        """Handling ``entry`` failed (the store could not write, or a bug): take it up again from
        its stored state after RESCUE_DELAY, or give it up after MAX_RESCUES in a row."""
        self.sched.metrics.scheduler_errors.inc()
        if self.sched.note_failure(entry.id) > MAX_RESCUES:
            log.error("channel %s: handling message %s failed", self.key, entry.id, exc_info=exc)
            await self.sched.give_up(entry.id, exc, self)
            return
        log.error(
            "channel %s: handling message %s failed (the store could not write, or a bug); "
            "it is taken up again from its stored state in %.0f s",
            self.key, entry.id, RESCUE_DELAY, exc_info=exc,
        )  # fmt: skip
        await trio.sleep(RESCUE_DELAY)
        # Like crash recovery: the stored state says where the message is (still queued, or
        # with a device: reconciled through the device), so nothing is lost or sent twice.
        self.recover.append(entry)

    async def _wait_ready(self) -> None:
        while True:
            now = self.sched.clock()
            self.idle = False
            if self.paused:
                self._set_state("paused")
                await self._sleep(3600)
                continue
            if now < self.down_until:
                await self._sleep(self.down_until - now)
                if self.sched.clock() >= self.down_until and self.state in ("cooldown", "quarantine"):
                    if not await self._probe():
                        continue
                continue
            wait = self.caps.wait_time(now)
            if wait > 0:
                await self._sleep(wait)
                continue
            self._set_state("ready")
            return

    async def _sleep(self, seconds: float) -> None:
        self._wake = trio.Event()
        with trio.move_on_after(max(0.0, seconds)):
            await self._wake.wait()

    async def _probe(self) -> bool:
        """After a cool-down or quarantine: is the channel usable again?"""
        health = await self.driver.health()
        ch = health.channels.get(self.id) if health.ok else None
        if not health.ok or (ch is not None and ch.registered is False):
            self._penalise("probe failed: " + (health.detail or "channel not registered"), probe=True)
            return False
        log.info("channel %s is back after %s", self.key, self.state)
        self.consecutive_errors = 0
        self.back_when = None
        self._set_state("ready")
        return True

    def _set_state(self, state: str) -> None:
        if state != self.state:
            was_healthy = self.healthy
            self.state = lifecycle.CHANNEL.check(self.state, state).value
            self.sched.metrics.set_channel_state(self.device_name, self.id, state)
            if was_healthy and not self.healthy:
                # Its route may have no healthy channel left: the dispatcher must look again
                # (failover), also for a message this channel just put back in the queue (the
                # dispatcher may have looked while this channel still counted as healthy).
                self.sched.wake()

    def cooldown(self, seconds: float, reason: str) -> None:
        self.down_until = self.sched.clock() + seconds
        self._set_state("cooldown")
        log.warning("channel %s cooling down for %.0f s: %s", self.key, seconds, reason)

    def _penalise(self, reason: str, *, probe: bool = False) -> None:
        cfg = self.sched.config.scheduler
        self.consecutive_errors += 1
        if probe or self.consecutive_errors >= cfg.quarantine_after:
            delay = min(cfg.quarantine_max, cfg.quarantine_base * 2**self.quarantine_level)
            self.quarantine_level += 1
            self.down_until = self.sched.clock() + delay
            self._set_state("quarantine")
            self.sched.metrics.channel_quarantines.labels(self.device_name, self.id).inc()
            log.warning(
                "channel %s quarantined for %.0f s after %d errors (last: %s)",
                self.key, delay, self.consecutive_errors, reason,
            )  # fmt: skip

    def _healthy(self) -> None:
        self.consecutive_errors = 0
        self.quarantine_level = 0

    # -- one message ----------------------------------------------------------------------------

    async def _process(self, entry: QueueEntry) -> None:
        sched = self.sched
        rec = await sched.store.record(entry.id)
        if rec is None or rec.state is not State.QUEUED:
            return  # cancelled or finished meanwhile
        if rec.expire_at is not None and sched.clock() > rec.expire_at:
            await sched.finish(rec.id, dlr.Outcome(State.EXPIRED, "EXPIRED", 0, None, "validity period ended"))
            return
        if sched.store.is_opted_out(rec.destination_addr):
            # Never sent to a number that opted out (inbound.py): REJECTD, err 011.
            sched.metrics.optout_blocked.labels(rec.esme, "receipt").inc()
            await sched.finish(rec.id, dlr.Outcome(State.REJECTED, "REJECTD", OPTOUT_ERR, OPTOUT_NETWORK_ERROR, "the recipient opted out"))
            return
        await self._send_parts(rec, await sched.store.parts(rec.id))

    async def _send_parts(self, rec: MessageRecord, done_parts: list[Any]) -> None:
        sched = self.sched
        parts = (
            [rec.text or ""] if self.whole_text
            else split_text(rec.text or "", avoid_start=self.part_start_refused).parts
        )  # fmt: skip
        total = len(parts)
        done = ("network", "delivered", "sent") if self.reports else ("network", "delivered")
        results: dict[int, tuple[str, str | None]] = {
            p.seq: (p.state, p.error) for p in done_parts if p.state in done
        }
        for seq, text in enumerate(parts, 1):
            if seq in results:
                continue
            if seq > 1:
                # Pace the parts of one message like any other send on this channel.
                wait = self.caps.wait_time(sched.clock())
                if wait > 0:
                    await trio.sleep(wait)
            outcome = await self._send_one(rec, seq, total, text)
            if outcome is None:
                return  # the message went back to a queue or was finished
            results[seq] = outcome
            if outcome[0] in ("failed", "unknown"):
                break
        if any(r[0] == "sent" for r in results.values()) and not any(r[0] in ("failed", "unknown") for r in results.values()):
            # Every part is with the device: its handset reports are followed in the background.
            sched.track(rec.id)
            return
        await sched.finish(rec.id, sched.receipts.combine(self.kind, [r for r in results.values() if r[0] != "sent"]), kind=self.kind)

    async def _send_one(self, rec: MessageRecord, seq: int, total: int, text: str) -> tuple[str, str | None] | None:
        """Send one part and wait for its final status. Returns (result, error code) or None when
        the message left this channel (requeued, retried later or finished)."""
        sched = self.sched
        m = sched.metrics
        if self.last_ref is None:
            self.last_ref = await self.driver.last_ref(self.id)
        pre_ref = self.last_ref
        if not await sched.store.begin_part(rec.id, seq, total, self.device_name, self.id, pre_ref):
            sched.metrics.messages_final.labels(State.EXPIRED.value).inc()  # ran out just now
            return None
        self._set_state("sending")
        self.inflight = 1
        m.channel_inflight.labels(self.device_name, self.id).set(1)
        started = sched.clock()
        self.caps.record(started)
        options: dict[str, bool] = {}
        if "flash" in self.send_options:
            options["flash"] = message_class(rec.data_coding) == 0
        if "urgent" in self.send_options:
            options["urgent"] = rec.priority >= 2
        try:
            result = await self.driver.send(self.id, rec.destination_addr, text, **options)
        finally:
            self.inflight = 0
            m.channel_inflight.labels(self.device_name, self.id).set(0)
        m.send_latency.labels(self.device_name, self.id).observe(max(0.0, sched.clock() - started))
        o = result.outcome
        m.sends.labels(self.device_name, self.id, o.value).inc()
        if o is SendOutcome.ACCEPTED:
            self._healthy()
            return await self._after_accept(rec, seq, total, result.ref)
        if o is SendOutcome.AMBIGUOUS:
            return await self._ambiguous(rec, seq, total, pre_ref, result.detail)
        # Certainly not sent: the call does not count against the caps.
        self._unrecord(started)
        if o is SendOutcome.BUSY:
            # Someone else uses the line (or the device lags): rest briefly, keep the message.
            self.last_ref = None
            await sched.requeue(rec.id, "line busy")
            self.cooldown(sched.config.scheduler.busy_retry, "line busy")
        elif o is SendOutcome.CHANNEL_DOWN:
            await sched.requeue(rec.id, f"channel down: {result.detail}")
            self.cooldown(sched.config.scheduler.logout_cooldown, result.detail or "GSM logout")
            self.back_when = "registered"  # a health check that sees it registered ends the rest
            m.channel_failures.labels(self.device_name, self.id, "channel_down").inc()
        elif o is SendOutcome.AUTH_FAILED:
            await sched.requeue(rec.id, "device refused credentials")
            sched.quarantine_device(self.device_name, result.detail or "device refused our credentials: check username/password")
            m.channel_failures.labels(self.device_name, self.id, "auth_failed").inc()
        elif o is SendOutcome.REJECTED:
            m.channel_failures.labels(self.device_name, self.id, "rejected").inc()
            await sched.finish(
                rec.id, dlr.Outcome(State.UNDELIVERABLE, "UNDELIV", 0, None, f"device refused the text: {result.detail}")
            )
        else:  # ERROR
            m.channel_failures.labels(self.device_name, self.id, "error").inc()
            self._penalise(result.detail)
            await sched.retry_later(rec, f"device error: {result.detail}")
        return None

    def _unrecord(self, started: float) -> None:
        for dq in (self.caps.minute, self.caps.hour):
            if dq and dq[-1] == started:
                dq.pop()
        if self.caps.day and self.caps.day[-1] == started:
            self.caps.day.pop()

    async def _after_accept(self, rec: MessageRecord, seq: int, total: int, ref: str | None) -> tuple[str, str | None]:
        sched = self.sched
        self.last_ref = ref.lower() if ref else None
        await sched.store.update_part(rec.id, seq, "sent", ref=ref)
        if seq == 1:
            await sched.intermediate(rec.id)
        if seq == total:
            await sched.store.move(rec.id, State.SENT, f"device took all {total} part(s)")
        if self.reports:
            return ("sent", None)  # followed by Scheduler.track; the channel is free
        status = await self._poll(ref)
        result = _part_result(status)
        await sched.store.update_part(rec.id, seq, result[0], error=result[1])
        if result[0] == "failed":
            self.sched.metrics.channel_failures.labels(self.device_name, self.id, "device_failed").inc()
        return result

    async def _poll(self, ref: str | None) -> StatusResult:
        """Poll the device until the part's status is final or status_timeout passes."""
        interval = self.device.status_poll_interval
        deadline = self.sched.clock() + self.device.status_timeout
        last = StatusResult(DeliveryState.UNKNOWN, detail="no status read yet", poll_failed=True)
        first = True
        while True:
            if not first:
                await trio.sleep(interval)
            elif self.first_poll_delay:
                await trio.sleep(interval)  # e.g. a GoIP line is busy for seconds: nothing to see yet
            first = False
            status = await self.driver.status(self.id, ref)
            if status.poll_failed:
                self.sched.metrics.status_poll_failures.labels(self.device_name).inc()
            else:
                last = status
                if status.state.final or status.state is DeliveryState.UNKNOWN:
                    return status
            if self.sched.clock() >= deadline:
                log.warning("channel %s: no final status for %s within %.0f s", self.key, ref, self.device.status_timeout)
                return StatusResult(DeliveryState.UNKNOWN, detail=f"no final status within status_timeout ({last.detail})")

    async def _ambiguous(self, rec: MessageRecord, seq: int, total: int, pre_ref: str | None, detail: str) -> tuple[str, str | None] | None:
        """The device may or may not have taken the part. Ask it; else apply the policy."""
        sched = self.sched
        now_ref = await self.driver.last_ref(self.id)
        resolution = sched.resolve_ambiguity(pre_ref, now_ref)
        sched.metrics.ambiguous.labels(self.device_name, resolution).inc()
        log.warning("channel %s: ambiguous send of message %s part %d (%s): %s", self.key, rec.id, seq, detail, resolution)
        if resolution == "reconciled_sent":
            self._healthy()
            return await self._after_accept(rec, seq, total, now_ref)
        self._unrecord_if_not_sent(resolution)
        self.last_ref = now_ref
        self._penalise(f"ambiguous send: {detail}")
        if resolution in ("reconciled_not_sent", "policy_resend"):
            await sched.retry_later(rec, f"send may have failed ({detail}): {resolution}")
            return None
        await sched.store.update_part(rec.id, seq, "unknown", error="ambiguous")
        return ("unknown", None)

    def _unrecord_if_not_sent(self, resolution: str) -> None:
        if resolution == "reconciled_not_sent" and self.caps.minute:
            self._unrecord(self.caps.minute[-1])

    async def _resume(self, entry: QueueEntry) -> None:
        """After a restart: finish what this channel was doing when the bridge stopped."""
        sched = self.sched
        rec = await sched.store.record(entry.id)
        if rec is None:
            return
        if rec.state in lifecycle.ROUTED_WAITING:
            # Never reached a device: back to its queue (or its timer).
            row = await sched.store.queue_entry(rec.id)
            sched.on_new_message(QueueEntry(
                rec.id, row.route if row else entry.route, rec.priority, rec.state,
                rec.schedule_at, rec.expire_at, row.next_attempt_at if row else None,
            ))  # fmt: skip
            return
        if rec.state not in (State.SUBMITTING, State.SENT):
            return
        parts = await sched.store.parts(rec.id)
        pending = [p for p in parts if p.state in ("submitting", "sent")]
        for p in pending:
            if p.state == "submitting":
                now_ref = await self.driver.last_ref(self.id)
                resolution = sched.resolve_ambiguity(p.pre_ref, now_ref)
                sched.metrics.ambiguous.labels(self.device_name, resolution).inc()
                log.warning(
                    "recovery: message %s part %d was in a device call when the bridge stopped: %s",
                    rec.id, p.seq, resolution,
                )  # fmt: skip
                if resolution == "reconciled_sent":
                    await sched.store.update_part(rec.id, p.seq, "sent", ref=now_ref)
                    p = _with_ref(p, now_ref)
                elif resolution in ("reconciled_not_sent", "policy_resend"):
                    self.last_ref = now_ref
                    await sched.retry_later(rec, f"recovery: {resolution}", count_attempt=False)
                    return
                else:
                    await sched.store.update_part(rec.id, p.seq, "unknown", error="ambiguous (crash)")
                    parts = await sched.store.parts(rec.id)
                    await sched.finish(rec.id, sched.receipts.combine(self.kind, [(x.state, x.error) for x in parts if x.state != "submitting"]), kind=self.kind)
                    return
            if self.reports:
                continue  # with the device: Scheduler.track follows its report
            status = await self._poll(p.ref)
            result = _part_result(status)
            self.last_ref = p.ref
            await sched.store.update_part(rec.id, p.seq, result[0], error=result[1])
        parts = await sched.store.parts(rec.id)
        if any(p.state in ("failed", "unknown") for p in parts):
            await sched.finish(rec.id, sched.receipts.combine(self.kind, [(p.state, p.error) for p in parts]), kind=self.kind)
            return
        # Some parts still to send: continue on this channel.
        await self._send_parts(rec, parts)


def _with_ref(p: Any, ref: str | None) -> Any:
    return attrs.evolve(p, ref=ref, state="sent")


def _part_result(status: StatusResult) -> tuple[str, str | None]:
    s = status.state
    if s is DeliveryState.DELIVERED:
        return ("delivered", None)
    if s is DeliveryState.SENT:
        return ("network", None)
    if s is DeliveryState.FAILED:
        return ("failed", status.error_code)
    return ("unknown", None)


# -- the scheduler ------------------------------------------------------------------------------


class Scheduler:
    """Routes messages and runs one worker per channel."""

    EXPIRY_SWEEP_SECONDS = 10.0

    def __init__(
        self,
        config: Any,
        store: Store,
        drivers: Mapping[str, Driver],
        metrics: Any,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.drivers = dict(drivers)
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        self.receipts = dlr.ReceiptPolicy(config.receipts)
        # Receipt rows with the config in force (retention, each ESME's receipts mode).
        self.receipt_rows = dlr.Receipts(lambda: self.config, clock)
        self.queues: dict[str, RouteQueue] = {}
        self.channels: dict[str, Channel] = {}
        self.route_channels: dict[str, list[Channel]] = {}
        self._timers: list[tuple[float, int, QueueEntry]] = []
        self._timer_wake = trio.Event()
        self._wake = trio.Event()
        self._tiebreak = itertools.count()
        # Queued messages whose route is gone (they wait for update_routes).
        self.unrouted: list[QueueEntry] = []
        # Messages with every part at a device that gives handset reports: id -> since.
        self._tracked: dict[int, float] = {}
        self.failures: dict[int, int] = {}  # message id -> handling failures in a row
        self._track_polled: dict[tuple[int, int], float] = {}
        self._track_wake = trio.Event()
        self._build()

    # -- wiring ---------------------------------------------------------------------------------

    def _build(self) -> None:
        for device in self.config.devices:
            if not device.enabled or device.name not in self.drivers:
                continue
            for ch in device.channel_ids():
                if device.channel_enabled(ch):
                    self.channels[f"{device.name}:{ch}"] = Channel(self, device, ch, self.drivers[device.name])
        for route in self.config.routes:
            self.queues[route.name] = RouteQueue(route.name)
            chans = [self.channels[f"{d}:{c}"] for d, c in route.channels if f"{d}:{c}" in self.channels]
            self.route_channels[route.name] = chans
            for ch in chans:
                ch.routes.append(route.name)

    def route_for(self, esme: str, destination: str) -> str | None:
        route = self.config.route_for(esme, destination)
        return route.name if route is not None else None

    def wake(self) -> None:
        self._wake.set()

    # -- intake ---------------------------------------------------------------------------------

    def on_new_message(self, entry: QueueEntry) -> None:
        """Store hook: a message was committed in QUEUED, SCHEDULED or RETRY_WAIT."""
        now = self.clock()
        if entry.state is State.QUEUED:
            q = self.queues.get(entry.route or "")
            if q is None:
                log.error("message %s has route %r that no longer exists; it waits for a reload", entry.id, entry.route)
                self.unrouted.append(entry)
                return
            q.push(entry, now)
            self._wake.set()
        else:
            due = entry.schedule_at if entry.state is State.SCHEDULED else entry.next_attempt_at
            heapq.heappush(self._timers, (due or now, next(self._tiebreak), entry))
            self._timer_wake.set()

    async def requeue(self, mid: int, detail: str) -> None:
        """Back to the route's queue at once: the device certainly did not take it."""
        await self.store.move(mid, State.QUEUED, detail)

    async def retry_later(self, rec: MessageRecord, detail: str, *, count_attempt: bool = True) -> None:
        cfg = self.config.scheduler
        row = await self.store.queue_entry(rec.id)
        attempts = (row.attempts if row else 0) + (1 if count_attempt else 0)
        if attempts >= cfg.max_attempts:
            await self.finish(rec.id, dlr.Outcome(State.UNDELIVERABLE, "UNDELIV", 0, None, f"gave up after {attempts} attempts: {detail}"))
            return
        delay = min(cfg.retry_backoff_max, cfg.retry_backoff * 2 ** max(0, attempts - 1))
        self.metrics.retries.inc()
        await self.store.move(rec.id, State.RETRY_WAIT, detail, attempts=attempts, next_attempt_at=self.clock() + delay)

    async def finish(self, mid: int, outcome: dlr.Outcome, *, kind: str | None = None) -> None:
        rec = await self.store.move(
            mid,
            outcome.state,
            outcome.detail,
            outbox=lambda r: self.receipt_rows.rows(r, outcome),
            error=outcome.detail or None,
        )
        self.metrics.messages_final.labels(outcome.state.value).inc()
        log.info("message %s: %s (%s)", rec.message_id, outcome.state.value, outcome.detail or outcome.stat)

    def note_failure(self, mid: int) -> int:
        """Count one more failure in a row of handling message ``mid``; returns the count."""
        n = self.failures[mid] = self.failures.get(mid, 0) + 1
        return n

    async def give_up(self, mid: int, exc: BaseException, channel: Channel | None = None) -> None:
        """A message whose handling failed MAX_RESCUES + 1 times in a row: finish it UNKNOWN
        with its receipt (nobody can say whether a device took it), so its channel goes on."""
        self.failures.pop(mid, None)
        self._tracked.pop(mid, None)
        device, ch = (channel.device_name, channel.id) if channel is not None else ("", "")
        self.metrics.messages_poisoned.labels(device, ch).inc()
        detail = f"handling failed {MAX_RESCUES + 1} times in a row: {type(exc).__name__}: {exc}"[:300]
        try:
            await self.finish(mid, dlr.Outcome(State.UNKNOWN, "UNKNOWN", 0, None, detail))
        except Exception:
            # Not even that could be stored: leave it to crash recovery after the next start
            # rather than hold the channel.
            log.exception(
                "message %s could not be finished after repeated failures; it stays in the store "
                "and is looked at again after a restart. Check the disk and the log above.", mid,
            )  # fmt: skip
            return
        log.error(
            "message %s given up as UNKNOWN on %s: %s. Its receipt says UNKNOWN; the traceback "
            "above shows the fault: report it as a bug (with the device's answer) and check "
            "with the recipient whether the SMS arrived.",
            mid, f"{device}:{ch}" if channel is not None else "the report tracker", detail,
        )  # fmt: skip

    async def intermediate(self, mid: int) -> None:
        """The device took the first part: an ENROUTE receipt if the ESME asked (bit 4)."""
        rec = await self.store.record(mid)
        if rec is None or not rec.registered_delivery & 0x10:
            return
        if self.receipt_rows.per_part(rec.esme) and rec.esme_parts > 1:
            rec = attrs.evolve(rec, part_ids=await self.store.part_ids(mid))
        rows = self.receipt_rows.rows(rec, dlr.Outcome(State.SENT, "ENROUTE"), intermediate=True)
        for esme, kind, payload, expire_at in rows:
            await self.store.add_outbox(esme, kind, mid, payload, expire_at)

    # -- handset reports followed in the background ----------------------------------------------

    def track(self, mid: int) -> None:
        """Follow the status of every part of ``mid`` (all with a device that gives handset
        reports) until each is final or its device's status_timeout passes; then finish it."""
        if mid not in self._tracked:
            self._tracked[mid] = self.clock()
            self._track_wake.set()

    async def _tracker(self) -> None:
        # Each message is checked in a task of its own (at most TRACK_CONCURRENCY at once), and
        # a pass never waits for a slow one: a phone that takes its timeout to answer a status
        # poll must not hold up the reports of every other device's messages.
        limiter = trio.CapacityLimiter(TRACK_CONCURRENCY)
        checking: set[int] = set()

        async def check(mid: int, since: float) -> None:
            try:
                async with limiter:
                    if await self._check_tracked(mid, since):
                        self._tracked.pop(mid, None)
            except Exception as exc:
                self.metrics.scheduler_errors.inc()
                log.exception("following the reports of message %s failed; will retry", mid)
                if self.note_failure(mid) > MAX_RESCUES:
                    await self.give_up(mid, exc)
                else:
                    await trio.sleep(RESCUE_DELAY)  # this message only: the others go on
            else:
                self.failures.pop(mid, None)
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
        parts = await self.store.parts(mid)
        if not parts:
            return True
        now = self.clock()
        results: list[tuple[str, str | None]] = []
        kind = ""  # no device left in the config: the generic receipt policy
        for p in parts:
            device = self.config.device(p.device)
            driver = self.drivers.get(p.device)
            kind = device.kind if device is not None else kind
            if p.state != "sent":
                results.append((p.state, p.error))
                continue
            if driver is None or device is None:
                results.append(("unknown", None))
                continue
            last_poll = self._track_polled.get((mid, p.seq), 0.0)
            if now - last_poll < device.status_poll_interval:
                return False
            self._track_polled[(mid, p.seq)] = now
            status = await driver.status(p.channel, p.ref)
            if status.poll_failed:
                self.metrics.status_poll_failures.labels(p.device).inc()
            elif status.state.final and status.state is not DeliveryState.SENT:
                result = _part_result(status)
                await self.store.update_part(mid, p.seq, result[0], error=result[1])
                results.append(result)
                continue
            if now - max(since, p.sent_at or since) < device.status_timeout:
                return False  # keep waiting for this part's handset report
            # No handset report in time. The device took the part (it answered the send), so it
            # counts as handed to the network, unless the device says it no longer knows it.
            gone = status.state is DeliveryState.UNKNOWN and not status.poll_failed
            result = ("unknown", None) if gone else ("network", None)
            await self.store.update_part(mid, p.seq, result[0], error="no handset report within status_timeout")
            results.append(result)
        for p in parts:
            self._track_polled.pop((mid, p.seq), None)
        rec = await self.store.record(mid)
        # SUBMITTING too: a crash between the last part's "sent" and the message's move to SENT
        # leaves it there, and recovery hands it to this tracker (every part is with the device).
        if rec is not None and rec.state in (State.SENT, State.SUBMITTING):
            await self.finish(mid, self.receipts.combine(kind, results), kind=kind)
        return True

    def resolve_ambiguity(self, pre_ref: str | None, now_ref: str | None) -> str:
        """reconciled_sent | reconciled_not_sent | policy_unknown | policy_resend."""
        if pre_ref is not None and now_ref:
            return "reconciled_sent" if now_ref.lower() != pre_ref.lower() else "reconciled_not_sent"
        if pre_ref == "" and now_ref == "":
            return "reconciled_not_sent"
        return "policy_resend" if self.config.scheduler.ambiguous == "resend" else "policy_unknown"

    def quarantine_device(self, device: str, reason: str) -> None:
        for ch in self.channels.values():
            if ch.device_name == device:
                # take_out, not just _penalise: an idle channel of the device must leave its
                # wait for work, or it would take the next message while quarantined.
                ch.take_out(reason)
                # Refused credentials (or a switched-off API) concern the whole device, and its
                # health check tells when they are accepted again: back then, not after the
                # whole (doubling) quarantine.
                ch.back_when = "device_up"

    def device_health(self, device: str, health: Any) -> None:
        """A health check's answer (bridge/monitor.py). A device that is down (unreachable,
        refusing our credentials, a phone not seen for offline_after) is taken out of service:
        its ready channels are quarantined and probed, so routes with a failover use it
        meanwhile. A ready channel the device reports as not registered on the GSM network
        (GoIP line logged out, GoIP SMS-server line without keepalive) rests for
        ``logout_cooldown``. A channel taken out this way comes back as soon as a later check
        finds the device well (through its probe). Channels busy with a message are left to
        that message's outcome."""
        now = self.clock()
        why = "refuses our credentials" if health.auth_failed else "is down"
        taken: list[str] = []
        for ch in self.channels.values():
            if ch.device_name != device:
                continue
            c = health.channels.get(ch.id) if health.ok else None
            if ch.state == "ready" and not ch.paused:
                if not health.ok:
                    taken.append(ch.id)
                    ch.take_out(f"health check: device {why}: {health.detail}")
                    ch.back_when = "device_up"
                elif c is not None and c.registered is False:
                    ch.take_out("health check: not registered on the GSM network",
                                cooldown=self.config.scheduler.logout_cooldown)
                    ch.back_when = "registered"
            elif ch.state in ("cooldown", "quarantine") and health.ok and ch.down_until > now:
                if (ch.back_when == "device_up" and (c is None or c.registered is not False)) or (
                    ch.back_when == "registered" and c is not None and c.registered is True
                ):
                    ch.down_until = now  # probe now
                    ch.poke()
        if taken:
            log.warning("device %s %s (%s): channel(s) %s out of service until it is well again",
                        device, why, health.detail, ", ".join(taken))

    # -- running --------------------------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild queues, timers and cap counters from the store (start and crash recovery)."""
        now = self.clock()
        for device, channel, t in await self.store.channel_starts(now - 86400):
            ch = self.channels.get(f"{device}:{channel}")
            if ch is not None:
                ch.caps.record(t, pace=False)
        for entry in await self.store.load_active():
            if entry.state in (State.SUBMITTING, State.SENT):
                ch = self.channels.get(f"{entry.device}:{entry.channel}")
                if ch is not None and ch.reports and entry.state is State.SENT:
                    self.track(entry.id)
                elif ch is not None:
                    ch.recover.append(entry)
                else:
                    log.error("message %s was on channel %s:%s, which is gone; applying the ambiguity policy", entry.id, entry.device, entry.channel)
                    self.metrics.ambiguous.labels(entry.device or "gone", "policy_unknown").inc()
                    await self.finish(entry.id, dlr.Outcome(State.UNKNOWN, "UNKNOWN", 0, None, "its channel was removed while it was being sent"))
            elif entry.state is State.ACCEPTED:
                rec = await self.store.record(entry.id)
                if rec is not None:
                    route = self.route_for(rec.esme, rec.destination_addr)
                    if route is None:
                        await self.finish_rejected_no_route(rec)
                    else:
                        await self.store.route_accepted(entry.id, route, "routed")
            else:
                self.on_new_message(entry)

    async def finish_rejected_no_route(self, rec: MessageRecord) -> None:
        """REJECTED for want of a route, with its receipt in the same transaction."""
        outcome = dlr.Outcome(State.REJECTED, "REJECTD", 0, None, "no route for this destination")
        await self.store.route_accepted(
            rec.id, None, outcome.detail, outbox=lambda r: self.receipt_rows.rows(r, outcome)
        )
        self.metrics.messages_final.labels(State.REJECTED.value).inc()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.recover()
        async with trio.open_nursery() as nursery:
            for ch in self.channels.values():
                self.metrics.set_channel_state(ch.device_name, ch.id, ch.state)
                nursery.start_soon(ch.run)
            nursery.start_soon(self._dispatcher)
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._expiry_sweeper)
            nursery.start_soon(self._tracker)
            task_status.started()

    async def _dispatcher(self) -> None:
        while True:
            self._wake = trio.Event()
            self.dispatch()
            await self._wake.wait()

    def dispatch(self) -> int:
        """Hand queued messages to idle channels; returns how many were handed out."""
        now = self.clock()
        handed = 0
        for name, q in self.queues.items():
            chans = self.route_channels.get(name, ())
            if len(q) and not any(c.healthy for c in chans):
                chans = self._failover_channels(name)
            while len(q):
                idle = [c for c in chans if c.idle and c.healthy]
                if not idle:
                    break
                entry = q.pop()
                if entry is None:
                    break
                ch = self._choose(idle, entry, now)
                ch.give(entry)
                handed += 1
        return handed

    def _failover_channels(self, name: str) -> list[Channel]:
        """The channels of the first healthy route along this route's failover chain."""
        seen = {name}
        route = self.config.route(name)
        while route is not None and route.failover and route.failover not in seen:
            seen.add(route.failover)
            chans = self.route_channels.get(route.failover, [])
            if any(c.healthy for c in chans):
                self.metrics.failovers.labels(name, route.failover).inc()
                return chans
            route = self.config.route(route.failover)
        return []

    def _choose(self, idle: list[Channel], entry: QueueEntry, now: float) -> Channel:
        if entry.channel and len(idle) > 1:
            others = [c for c in idle if c.id != entry.channel or c.device_name != entry.device]
            if others:
                idle = others
        return min(idle, key=lambda c: c.load(now))

    async def _timer_loop(self) -> None:
        while True:
            now = self.clock()
            while self._timers and self._timers[0][0] <= now:
                _due, _n, entry = heapq.heappop(self._timers)
                try:
                    # Moved only if its stored due time has come: replace_sm may have set a
                    # later one (and with it a timer of its own).
                    await self.store.release_due(entry.id, now, "scheduled time reached" if entry.state is State.SCHEDULED else "retry")
                except (InvalidTransition, KeyError) as exc:  # cancelled or expired meanwhile
                    log.debug("timer for message %s: %s", entry.id, exc)
                except Exception as exc:  # the store cannot write now: try again shortly
                    log.warning("timer for message %s: %s; trying again in %.0f s", entry.id, exc, RESCUE_DELAY)
                    heapq.heappush(self._timers, (now + RESCUE_DELAY, next(self._tiebreak), entry))
            self._timer_wake = trio.Event()
            delay = self._timers[0][0] - self.clock() if self._timers else 3600
            with trio.move_on_after(max(0.0, delay)):
                await self._timer_wake.wait()

    async def _expiry_sweeper(self) -> None:
        while True:
            await trio.sleep(self.EXPIRY_SWEEP_SECONDS)
            try:
                now = self.clock()
                outcome = dlr.Outcome(State.EXPIRED, "EXPIRED", 0, None, "validity period ended")
                expired = await self.store.expire_waiting(now, lambda r: self.receipt_rows.rows(r, outcome))
                if expired:
                    self.metrics.messages_final.labels("expired").inc(len(expired))
                    log.info("%d messages expired while waiting for a channel", len(expired))
            except Exception:
                log.exception("expiry sweep failed; will retry")

    # -- views for metrics and the admin API -----------------------------------------------------

    def queue_stats(self) -> dict[str, tuple[int, float]]:
        now = self.clock()
        return {name: (len(q), q.oldest_age(now)) for name, q in self.queues.items()}

    # -- config reload ---------------------------------------------------------------------------

    async def update_routes(self, config: Any) -> dict[str, Any]:
        """Apply a reloaded config's routes, scheduler policy and receipt table. Channels keep
        running as they are (devices and channels change with a restart only): a route that
        names a channel this bridge does not run gets it after a restart, and the answer lists
        it. Messages waiting on a route that is gone get the route the new config picks for
        them, keeping their turn; those that no route fits any more are REJECTED, with a
        receipt when asked for."""
        self.config = config
        self.receipts = dlr.ReceiptPolicy(config.receipts)
        not_running: list[str] = []
        route_channels: dict[str, list[Channel]] = {}
        for ch in self.channels.values():
            ch.routes = []
        for route in config.routes:
            chans: list[Channel] = []
            for d, c in route.channels:
                ch = self.channels.get(f"{d}:{c}")
                if ch is None:
                    not_running.append(f"{d}:{c}")
                elif ch not in chans:
                    chans.append(ch)
                    ch.routes.append(route.name)
            route_channels[route.name] = chans
            self.queues.setdefault(route.name, RouteQueue(route.name))
        self.route_channels = route_channels
        waiting: list[QueueEntry] = []
        for name in [n for n in self.queues if n not in route_channels]:
            q = self.queues.pop(name)
            while (entry := q.pop()) is not None:
                waiting.append(entry)
        moved = await self.store.reroute_waiting(set(route_channels), self.route_for)
        new_route = {mid: route for mid, _old, route in moved}
        waiting += self.unrouted
        self.unrouted = []
        now = self.clock()
        for entry in waiting:
            route = new_route.get(entry.id, entry.route)
            q = self.queues.get(route or "")
            if q is not None:
                q.push(attrs.evolve(entry, route=route), now)
        rejected = 0
        for mid, old, route in moved:
            if route is None:
                detail = f"route {old!r} was removed by a config reload and no route matches now"
                try:
                    await self.finish(mid, dlr.Outcome(State.REJECTED, "REJECTD", 0, None, detail))
                    rejected += 1
                except Exception as exc:  # a channel took it meanwhile: it goes out as it is
                    log.info("message %s left as it is after the reload: %s", mid, exc)
        self.wake()
        return {
            "rerouted": sum(1 for _m, _o, r in moved if r is not None),
            "rejected": rejected,
            "channels_not_running": sorted(set(not_running)),
        }
