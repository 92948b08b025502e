"""One channel and its worker task: pick, send the parts, poll, health.

Rules
-----
* A channel (one GoIP line, one router modem, one phone SIM) is owned by exactly one task, the
  ``Channel`` worker. It never has two messages in flight, and it reads the final status of the
  part it sent before it sends the next one (GoIP keeps status only for a line's last message).
  Devices with real handset reports free the channel once the device took every part; the
  report tracker (``tracker.py``) follows their status.
* A channel is idle (the dispatcher may give it a message) only when its caps and pacing allow
  a send now and it is healthy. Every pick re-reads the message: one cancelled, expired or sent
  to an opted-out number meanwhile is finished here, not sent.
* Health: GSM logout -> the channel rests for ``logout_cooldown`` and is then probed; repeated
  errors -> quarantine with exponential back-off and a probe; wrong credentials -> every channel
  of the device is quarantined (``Scheduler.quarantine_device``). A message never waits on a sick
  channel: it goes back to its route's queue for another channel.
* Before each device call the part is durably marked ``submitting`` together with the id the
  channel's status slot showed before the call (``pre_ref``). An ambiguous send (timeout after
  the request left) is reconciled through the device: a new id in the slot of a channel only we
  use means the device took our message; the same id means it did not. When the device cannot
  tell, ``scheduler.ambiguous`` decides (``Scheduler.resolve_ambiguity``): ``unknown`` (default:
  never resend; final state UNKNOWN, receipt stat:UNKNOWN) or ``resend``. Every case is counted
  in ``smpp_bridge_ambiguous_sends_total``.
* Long messages go out as separate plain SMS, one part after the other on the same channel
  (GoIP firmware crashes on concatenated sends); the recipient sees several SMS in order.
* A fault while handling one message never kills the channel (``_guarded``). A lost race is not
  a fault: the expiry sweep or cancel_sm finished the message, or another channel began sending
  it, while this one picked it up; nothing was sent from here and the channel goes on. Any other
  failure (the store could not write, a bug) is rescued: the message is taken up again from its
  stored state after RESCUE_DELAY, like after a crash, and given up (finished UNKNOWN with its
  receipt) after MAX_RESCUES failures in a row, so one poisoned message never holds its channel.
  A store that cannot write at all (``StoreUnwritable``: disk full, read-only, file gone) says
  nothing about the message: such failures are not counted towards giving up, the message is
  taken up again every RESCUE_DELAY until the store writes (its outage is an alert of its own),
  and a message whose giving up could not be stored is taken up again too: none waits for a
  restart.
"""

from __future__ import annotations

import logging
import math
import zlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from .. import lifecycle
from ..devices.base import Capability, DeliveryState, Driver, SendOutcome, StatusResult
from ..inbound import OPTOUT_ERR, OPTOUT_NETWORK_ERROR
from ..lifecycle import InvalidTransition, State, is_final
from ..receipts.policy import Outcome
from ..smpp.text import message_class, split_text
from ..store import ClaimedElsewhere, MessageRecord, QueueEntry, StoreUnwritable, Superseded
from .caps import CapCounter
from .parts import part_result
from .recovery import resume

if TYPE_CHECKING:
    from .facade import Scheduler

log = logging.getLogger(__name__)

RESCUE_DELAY = 2.0  # seconds before a message whose handling failed is taken up again
# Failures in a row after which a message is given up: finished UNKNOWN with its receipt, so one
# poisoned message (a bug that fails it every time) never holds its channel forever.
MAX_RESCUES = 3


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
        self.batch_status = Capability.STATUS_BATCH in declared.flags
        # Where in each status_poll_interval this device's ticks fall (a fraction of it), the
        # same for all its channels, different from device to device (_poll_pause says why).
        self.poll_phase = zlib.crc32(device.name.encode()) % 1000 / 1000
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

    def take_out(self, reason: str, *, cooldown: float | None = None, quiet: bool = False) -> None:
        """Out of service now: quarantined (probed when it ends) or, with ``cooldown``, resting
        like after a GSM logout. A channel waiting idle for work leaves that wait, so it rests
        and probes instead of taking the next message."""
        if cooldown is not None:
            self.cooldown(cooldown, reason, quiet=quiet)
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
        except (InvalidTransition, ClaimedElsewhere, Superseded) as exc:
            if isinstance(exc, InvalidTransition) and not (is_final(exc.current) or exc.current in lifecycle.WAITING):
                await self._rescue(entry, exc)
                return
            # A lost race, not a fault: while this channel picked the message up, the expiry
            # sweep or cancel_sm finished it (with its receipt), another channel began sending
            # it, or replace_sm changed it (it is queued again, or waits for its new schedule,
            # with its new content). Nothing was sent from here; go on.
            log.debug("channel %s: message %s is not this channel's any more (%s)", self.key, entry.id, exc)
            self.sched.failures.pop(entry.id, None)
        except Exception as exc:
            await self._rescue(entry, exc)
        else:
            self.sched.failures.pop(entry.id, None)

    async def _rescue(self, entry: QueueEntry, exc: Exception) -> None:
        """Handling ``entry`` failed (the store could not write, or a bug): take it up again from
        its stored state after RESCUE_DELAY, or give it up after MAX_RESCUES in a row. A store
        that cannot write at all is not the message's fault and does not count."""
        self.sched.metrics.scheduler_errors.inc()
        unwritable = isinstance(exc, StoreUnwritable)
        if not unwritable and self.sched.note_failure(entry.id) > MAX_RESCUES:
            log.error("channel %s: handling message %s failed", self.key, entry.id, exc_info=exc)
            if await self.sched.give_up(entry.id, exc, self):
                return
        elif unwritable:
            log.error(
                "channel %s: message %s waits for the store, which cannot write (%s); it is taken "
                "up again from its stored state every %.0f s until the store writes",
                self.key, entry.id, exc, RESCUE_DELAY,
            )  # fmt: skip
        else:
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

    def cooldown(self, seconds: float, reason: str, *, quiet: bool = False) -> None:
        self.down_until = self.sched.clock() + seconds
        self._set_state("cooldown")
        log.log(logging.INFO if quiet else logging.WARNING,
                "channel %s cooling down for %.0f s: %s", self.key, seconds, reason)

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
        rec, parts = await sched.store.record_and_parts(entry.id)
        if rec is None or rec.state is not State.QUEUED:
            return  # cancelled or finished meanwhile
        if rec.expire_at is not None and sched.clock() > rec.expire_at:
            await sched.finish(rec.id, Outcome(State.EXPIRED, "EXPIRED", 0, None, "validity period ended"))
            return
        if sched.store.is_opted_out(rec.destination_addr):
            # Never sent to a number that opted out (inbound.py): REJECTD, err 011.
            sched.metrics.optout_blocked.labels(rec.esme, "receipt").inc()
            await sched.finish(rec.id, Outcome(State.REJECTED, "REJECTD", OPTOUT_ERR, OPTOUT_NETWORK_ERROR, "the recipient opted out"))
            return
        await self._send_parts(rec, parts)

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
        # A part's final status not stored yet (seq, state, error): stored before the next part
        # goes out, or with the message's final state in one transaction.
        unsaved: tuple[int, str, str | None] | None = None
        for seq, text in enumerate(parts, 1):
            if seq in results:
                continue
            if unsaved is not None:
                await sched.store.update_part(rec.id, unsaved[0], unsaved[1], error=unsaved[2])
                unsaved = None
            if seq > 1:
                # Pace the parts of one message like any other send on this channel.
                wait = self.caps.wait_time(sched.clock())
                if wait > 0:
                    await trio.sleep(wait)
            outcome = await self._send_one(rec, seq, total, text)
            if outcome is None:
                return  # the message went back to a queue or was finished
            state, error, stored = outcome
            results[seq] = (state, error)
            if not stored:
                unsaved = (seq, state, error)
            if state in ("failed", "unknown"):
                break
        if any(r[0] == "sent" for r in results.values()) and not any(r[0] in ("failed", "unknown") for r in results.values()):
            # Every part is with the device: its handset reports are followed in the background.
            sched.track(rec.id)
            return
        outcome = sched.receipts.combine(self.kind, [r for r in results.values() if r[0] != "sent"])
        await sched.finish(rec.id, outcome, kind=self.kind, part=unsaved)

    async def _send_one(self, rec: MessageRecord, seq: int, total: int, text: str) -> tuple[str, str | None, bool] | None:
        """Send one part and wait for its final status. Returns (result, error code, whether that
        is stored already: the caller stores it otherwise) or None when the message left this
        channel (requeued, retried later or finished)."""
        sched = self.sched
        m = sched.metrics
        if self.last_ref is None:
            self.last_ref = await self.driver.last_ref(self.id)
        pre_ref = self.last_ref
        if not await sched.store.begin_part(rec.id, seq, total, self.device_name, self.id, pre_ref,
                                            expect_text=rec.text):
            sched.metrics.messages_final.labels(State.EXPIRED.value).inc()  # ran out just now
            return None
        self._set_state("sending")
        self.inflight = 1
        m.channel_inflight.labels(self.device_name, self.id).set(1)
        started = sched.clock()
        self.caps.record(started)
        options: dict[str, Any] = {}
        if "flash" in self.send_options:
            options["flash"] = message_class(rec.data_coding) == 0
        if "urgent" in self.send_options:
            options["urgent"] = rec.priority >= 2
        if "source" in self.send_options:  # an upstream SMSC sends with the ESME's sender
            options["source"] = rec.source_addr
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
                rec.id, Outcome(State.UNDELIVERABLE, "UNDELIV", 0, None, f"device refused the text: {result.detail}")
            )
        else:  # ERROR
            m.channel_failures.labels(self.device_name, self.id, "error").inc()
            self._penalise(result.detail)
            await sched.retry_later(rec, f"device error: {result.detail}")
        return None

    def _unrecord(self, started: float) -> None:
        self.caps.unrecord(started)

    async def _after_accept(self, rec: MessageRecord, seq: int, total: int, ref: str | None) -> tuple[str, str | None, bool]:
        """The device took the part: stored (one commit with the ENROUTE receipt and, for the
        last part, the move to SENT), then its final status polled. That status is returned NOT
        stored (the caller stores it with what follows: the next part or the final state)."""
        sched = self.sched
        self.last_ref = ref.lower() if ref else None
        await sched.part_sent(rec.id, seq, total, ref)
        if self.reports:
            return ("sent", None, True)  # followed by Scheduler.track; the channel is free
        status = await self.poll_status(ref)
        state, error = part_result(status)
        if state == "failed":
            self.sched.metrics.channel_failures.labels(self.device_name, self.id, "device_failed").inc()
        return (state, error, False)

    async def poll_status(self, ref: str | None) -> StatusResult:
        """Poll the device until the part's status is final or status_timeout passes."""
        interval = self.device.status_poll_interval
        deadline = self.sched.clock() + self.device.status_timeout
        last = StatusResult(DeliveryState.UNKNOWN, detail="no status read yet", poll_failed=True)
        first = True
        while True:
            if not first or self.first_poll_delay:
                # (first_poll_delay: e.g. a GoIP line is busy for seconds: nothing to see yet)
                await self._poll_pause(interval, first=first)
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

    async def _poll_pause(self, interval: float, *, first: bool) -> None:
        """The wait before the next status poll: ``interval``, or, on a device that answers
        every channel's status with one request (``STATUS_BATCH``: a GoIP's send_status.xml), up
        to the device's next tick, a multiple of ``interval`` on the clock (at least
        ``interval`` away before the first poll). Every channel of the device waiting for a
        status then polls at the same moment and the driver answers them all from one request:
        polls per device per second are 1 / interval, however many of its lines are busy, and a
        final status is still seen within one interval.

        Each device's ticks are shifted by its own phase (``poll_phase``): with the ticks of
        every device on the same moments, 16 GoIPs of 32 lines found their finished sends all at
        once, and the event loop lagged 6.5 ms at p90 (bench/channels.py --many; 1.3 ms with
        the phases)."""
        if not self.batch_status:
            await trio.sleep(interval)
            return
        now = self.sched.clock()
        offset = self.poll_phase * interval
        k = math.floor((now - offset + (interval if first else 0.0)) / interval) + 1
        await trio.sleep(max(0.0, k * interval + offset - now))

    async def _ambiguous(self, rec: MessageRecord, seq: int, total: int, pre_ref: str | None, detail: str) -> tuple[str, str | None, bool] | None:
        """The device may or may not have taken the part. Ask it; else apply the policy."""
        sched = self.sched
        now_ref = await sched.ask_last_ref(self, pre_ref)
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
        return ("unknown", None, True)

    def _unrecord_if_not_sent(self, resolution: str) -> None:
        if resolution == "reconciled_not_sent" and self.caps.last is not None:
            self._unrecord(self.caps.last)

    async def _resume(self, entry: QueueEntry) -> None:
        """After a restart: finish what this channel was doing when the bridge stopped
        (recovery.resume)."""
        await resume(self, entry)
