"""The Scheduler: the facade that wires the scheduler's pieces and that the rest of the bridge
calls (app.py, admin.py, metrics.py, reload.py, the store's hooks).

Rules
-----
* It owns the route queues (``queues.py``), one ``Channel`` worker per enabled channel
  (``channel.py``), the dispatcher (``routing.py``), the timers of scheduled and retried
  messages, the expiry sweep and the report tracker (``tracker.py``), all in one nursery
  (``run``), after ``recovery.recover`` rebuilt them from the store.
* Every final state goes through ``finish``: the move and its receipt rows in one transaction.
* Retries back off exponentially (``retry_backoff`` doubled, at most ``retry_backoff_max``) and
  end: after ``max_attempts`` the message is UNDELIVERABLE.
* A scheduled or retried message's timer releases it only if its stored due time has come
  (replace_sm may have set a later one); a timer the store could not honour is tried again
  after RESCUE_DELAY.
* Messages still waiting when their validity ends are EXPIRED by a sweep every
  EXPIRY_SWEEP_SECONDS, with their receipts.
* A config reload may add and remove the channels of upstream connectors while running
  (``add_device``, ``retire_device``, ``drop_device``; bridge/connectors/reconfigure.py): a
  retired channel takes no new message and finishes the one it is sending first; a part whose
  device was dropped before its report came counts as handed to the network (tracker.py).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

import trio

from ..devices.base import Driver
from ..lifecycle import InvalidTransition, State
from ..receipts.policy import Outcome, ReceiptPolicy, Receipts
from ..keyed_tasks import KeyedTasks
from ..store import MessageRecord, QueueEntry, Store
from . import recovery, routing
from .channel import MAX_RESCUES, RESCUE_DELAY, Channel
from .queues import RouteQueue, TimerQueue
from .tracker import ReportTracker

log = logging.getLogger(__name__)


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
        self.receipts = ReceiptPolicy(config.receipts)
        # Receipt rows with the config in force (retention, each ESME's receipts mode).
        self.receipt_rows = Receipts(lambda: self.config, clock)
        self.queues: dict[str, RouteQueue] = {}
        self.channels: dict[str, Channel] = {}
        self.route_channels: dict[str, list[Channel]] = {}
        self.timers = TimerQueue()
        self._timer_wake = trio.Event()
        self._wake = trio.Event()
        # Queued messages whose route is gone (they wait for update_routes).
        self.unrouted: list[QueueEntry] = []
        self.failures: dict[int, int] = {}  # message id -> handling failures in a row
        self.tracker = ReportTracker(self)  # handset reports followed in the background
        self._tasks = KeyedTasks()  # channel workers by key (some come and go with a reload)
        # Devices dropped by a reload: (config, driver), for the reports of parts they took.
        self.retired: dict[str, tuple[Any, Driver]] = {}
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
        return routing.route_for(self.config, esme, destination)

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
            # (A due time of None is "at once", as the store's index has it: 0.)
            self.timers.push(due or 0.0, entry)
            self._timer_wake.set()

    async def requeue(self, mid: int, detail: str) -> None:
        """Back to the route's queue at once: the device certainly did not take it."""
        await self.store.move(mid, State.QUEUED, detail)

    async def retry_later(self, rec: MessageRecord, detail: str, *, count_attempt: bool = True) -> None:
        cfg = self.config.scheduler
        row = await self.store.queue_entry(rec.id)
        attempts = (row.attempts if row else 0) + (1 if count_attempt else 0)
        if attempts >= cfg.max_attempts:
            await self.finish(rec.id, Outcome(State.UNDELIVERABLE, "UNDELIV", 0, None, f"gave up after {attempts} attempts: {detail}"))
            return
        delay = min(cfg.retry_backoff_max, cfg.retry_backoff * 2 ** max(0, attempts - 1))
        self.metrics.retries.inc()
        await self.store.move(rec.id, State.RETRY_WAIT, detail, attempts=attempts, next_attempt_at=self.clock() + delay)

    async def finish(
        self, mid: int, outcome: Outcome, *, kind: str | None = None, part: tuple[int, str, str | None] | None = None
    ) -> None:
        """The final state with its receipts; ``part`` (seq, state, error): the last part's own
        state, stored in the same transaction."""
        rec = await self.store.move(
            mid,
            outcome.state,
            outcome.detail,
            outbox=lambda r: self.receipt_rows.rows(r, outcome),
            part=part,
            error=outcome.detail or None,
        )
        self.metrics.messages_final.labels(outcome.state.value).inc()
        log.info("message %s: %s (%s)", rec.message_id, outcome.state.value, outcome.detail or outcome.stat)

    def note_failure(self, mid: int) -> int:
        """Count one more failure in a row of handling message ``mid``; returns the count."""
        n = self.failures[mid] = self.failures.get(mid, 0) + 1
        return n

    async def give_up(self, mid: int, exc: BaseException, channel: Channel | None = None) -> bool:
        """A message whose handling failed MAX_RESCUES + 1 times in a row: finish it UNKNOWN
        with its receipt (nobody can say whether a device took it), so its channel goes on.
        False when even that could not be stored: the caller takes the message up again later
        (a channel from its stored state, the report tracker on its next pass)."""
        device, ch = (channel.device_name, channel.id) if channel is not None else ("", "")
        detail = f"handling failed {MAX_RESCUES + 1} times in a row: {type(exc).__name__}: {exc}"[:300]
        try:
            await self.finish(mid, Outcome(State.UNKNOWN, "UNKNOWN", 0, None, detail))
        except Exception:
            log.exception(
                "message %s could not be finished after repeated failures; it is taken up again "
                "in %.0f s. Check the disk and the log above.", mid, RESCUE_DELAY,
            )  # fmt: skip
            return False
        self.failures.pop(mid, None)
        self.tracker.forget(mid)
        self.metrics.messages_poisoned.labels(device, ch).inc()
        log.error(
            "message %s given up as UNKNOWN on %s: %s. Its receipt says UNKNOWN; the traceback "
            "above shows the fault: report it as a bug (with the device's answer) and check "
            "with the recipient whether the SMS arrived.",
            mid, f"{device}:{ch}" if channel is not None else "the report tracker", detail,
        )  # fmt: skip
        return True

    async def part_sent(self, mid: int, seq: int, total: int, ref: str | None) -> None:
        """The device took part ``seq`` (its id ``ref``): stored in one transaction with, for the
        first part, an ENROUTE receipt if the ESME asked (bit 4 of registered_delivery) and, for
        the last, the message's move to SENT."""
        await self.store.part_sent(mid, seq, total, ref, intermediate=self._intermediate_rows("ENROUTE") if seq == 1 else None)

    def _intermediate_rows(self, stat: str) -> Callable[[MessageRecord], list[tuple[str, str, str, float]]]:
        """The intermediate receipt rows (``stat``) for a record as the store has it, in the
        transaction that stores what they report; none unless the ESME asked (bit 4)."""

        def rows(rec: MessageRecord) -> list[tuple[str, str, str, float]]:
            if not rec.registered_delivery & 0x10:
                return []
            return self.receipt_rows.rows(rec, Outcome(State.SENT, stat), intermediate=True)

        return rows

    async def network_progress(self, mid: int, device: str, stat: str) -> None:
        """The network's intermediate stat for a SENT message (an upstream SMSC's ENROUTE,
        ACCEPTD): stored as its network_stat (query_sm and the APIs show it) with, when it is
        news to the ESME, its intermediate receipt, in one transaction. The ESME heard ENROUTE
        when the device took the message, so an ENROUTE from the network is shown but not sent
        again."""
        outbox = self._intermediate_rows(stat) if stat != "ENROUTE" else None
        rec = await self.store.note_network_stat(mid, stat, outbox=outbox)
        if rec is not None:
            log.info("message %s: the network says %s (via %s)", rec.message_id, stat, device)


    # -- handset reports followed in the background (tracker.py) --------------------------------

    def track(self, mid: int) -> None:
        """Follow the status of every part of ``mid`` (all with a device that gives handset
        reports) until each is final or its device's status_timeout passes; then finish it."""
        self.tracker.track(mid)

    async def ask_last_ref(self, ch: Any, pre_ref: str | None) -> str | None:
        """The channel's status slot after an ambiguous send. When the slot was readable before
        the call (``pre_ref`` is not None: a device that can tell), it is asked until the device
        answers or its ``status_timeout`` passes: the policy decides only when the device cannot
        tell, not at the first status page it could not read (a device busy restarting answers
        seconds later, and its slot then says whether it took the part). Devices without such a
        slot are asked once."""
        deadline = self.clock() + ch.device.status_timeout
        while True:
            ref = await ch.driver.last_ref(ch.id)
            if ref is not None or pre_ref is None or self.clock() >= deadline:
                return ref
            await trio.sleep(ch.device.status_poll_interval)

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
                if health.starting:
                    # Not heard from yet: wait for its first word, without alarm.
                    ch.take_out(f"waiting for the device: {health.detail}",
                                cooldown=self.config.scheduler.logout_cooldown, quiet=True)
                    ch.back_when = "device_up"
                elif not health.ok:
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
        await recovery.recover(self)

    async def finish_rejected_no_route(self, rec: MessageRecord) -> None:
        """REJECTED for want of a route, with its receipt in the same transaction."""
        outcome = Outcome(State.REJECTED, "REJECTD", 0, None, "no route for this destination")
        await self.store.route_accepted(
            rec.id, None, outcome.detail, outbox=lambda r: self.receipt_rows.rows(r, outcome)
        )
        self.metrics.messages_final.labels(State.REJECTED.value).inc()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.recover()
        async with trio.open_nursery() as nursery:
            self._tasks.bind(nursery)
            for ch in self.channels.values():
                self.metrics.set_channel_state(ch.device_name, ch.id, ch.state)
                self._tasks.start(ch.key, ch.run)
            nursery.start_soon(self._dispatcher)
            nursery.start_soon(self._timer_loop)
            nursery.start_soon(self._expiry_sweeper)
            nursery.start_soon(self.tracker.run)
            task_status.started()

    async def _dispatcher(self) -> None:
        while True:
            self._wake = trio.Event()
            # What is in memory goes out before a page is read (pop never hands out of turn:
            # a level whose head is in the store only stops it), so idle channels do not wait
            # for the read (10-45 ms at 512 lines).
            self.dispatch()
            await self.refill()
            self.dispatch()
            if any(q.wants_refill() for q in self.queues.values()):
                self._wake.set()  # handed out down to the low mark: the next page now
            await self._wake.wait()

    async def refill(self) -> None:
        """Page in the head of every route queue that runs low (queues.py); a store that
        cannot be read now is tried again after RESCUE_DELAY."""
        now = self.clock()
        for q in list(self.queues.values()):
            if not q.wants_refill():
                continue
            try:
                await q.refill(self.store.queued_page, now)
            except Exception as exc:
                log.warning("route %s: could not read its queue from the store (%s); trying again in %.0f s", q.name, exc, RESCUE_DELAY)
                await trio.sleep(RESCUE_DELAY)



    def dispatch(self) -> int:
        """Hand queued messages to idle channels; returns how many were handed out."""
        return routing.dispatch(self)

    async def _timer_loop(self) -> None:
        while True:
            if self.timers.wants_refill():
                try:
                    await self.timers.refill(self.store.timers_page)
                except Exception as exc:
                    log.warning("timers: could not read them from the store (%s); trying again in %.0f s", exc, RESCUE_DELAY)
                    await trio.sleep(RESCUE_DELAY)
                    continue
            now = self.clock()
            while (entry := self.timers.pop_due(now)) is not None:
                try:
                    # Moved only if its stored due time has come: replace_sm may have set a
                    # later one (and with it a timer of its own).
                    await self.store.release_due(entry.id, now, "scheduled time reached" if entry.state is State.SCHEDULED else "retry")
                except (InvalidTransition, KeyError) as exc:  # cancelled or expired meanwhile
                    log.debug("timer for message %s: %s", entry.id, exc)
                except Exception as exc:  # the store cannot write now: try again shortly
                    log.warning("timer for message %s: %s; trying again in %.0f s", entry.id, exc, RESCUE_DELAY)
                    self.timers.push(now + RESCUE_DELAY, entry, hold=True)
                if self.timers.wants_refill():
                    break
            if self.timers.wants_refill():
                continue
            self._timer_wake = trio.Event()
            due = self.timers.next_due()
            delay = due - self.clock() if due is not None else 3600
            with trio.move_on_after(max(0.0, delay)):
                await self._timer_wake.wait()

    async def _expiry_sweeper(self) -> None:
        while True:
            await trio.sleep(self.EXPIRY_SWEEP_SECONDS)
            try:
                now = self.clock()
                outcome = Outcome(State.EXPIRED, "EXPIRED", 0, None, "validity period ended")
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

    def add_device(self, device: Any, driver: Driver) -> list[str]:
        """Run the enabled channels of ``device`` from now on (an upstream connector added or
        changed by a reload). The routes that name them get them with ``update_routes``."""
        self.drivers[device.name] = driver
        self.retired.pop(device.name, None)
        keys = []
        for cid in device.channel_ids():
            if device.channel_enabled(cid):
                ch = Channel(self, device, cid, driver)
                self.channels[ch.key] = ch
                self.metrics.set_channel_state(ch.device_name, ch.id, ch.state)
                self._tasks.start(ch.key, ch.run)
                keys.append(ch.key)
        return keys

    def device_channels(self, name: str) -> list[Channel]:
        return [ch for ch in self.channels.values() if ch.device_name == name]

    async def retire_device(self, name: str, grace: float) -> bool:
        """The channels of ``name`` take no new message (their route's other channels or its
        failover do); wait, at most ``grace`` seconds, until each has finished the message it
        was sending. True when every one did."""
        chans = self.device_channels(name)
        for ch in chans:
            ch.pause()
        with trio.move_on_after(grace):
            while not all(ch.state == "paused" for ch in chans):
                await trio.sleep(0.05)
            return True
        return False

    def drop_device(self, name: str, device: Any) -> None:
        """Stop the channel workers of ``name`` and forget its driver (after retire_device)."""
        driver = self.drivers.get(name)
        for ch in self.device_channels(name):
            self._tasks.cancel(ch.key)
            del self.channels[ch.key]
            for chans in self.route_channels.values():
                if ch in chans:
                    chans.remove(ch)
        self.drivers.pop(name, None)
        if driver is not None:
            self.retired[name] = (device, driver)

    async def update_routes(self, config: Any) -> dict[str, Any]:
        """Apply a reloaded config's routes, scheduler policy and receipt table
        (routing.update_routes)."""
        return await routing.update_routes(self, config)
