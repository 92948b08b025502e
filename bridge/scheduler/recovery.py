"""Recovery after a restart (or a crash): the store is the truth.

Rules
-----
* On start the cap counters are rebuilt from the store, and the queues and timers are told that
  the store holds their messages (``recover``; they page them in, ``queues.py``, so a start
  does not load the backlog): a restart neither loses a waiting message nor resets a day cap.
* A message that was with a channel when the bridge stopped is finished on that same channel
  before it takes anything new (``resume``). A part left ``submitting`` (a crash mid-call) is
  reconciled through the device like an ambiguous send: a new id in the channel's status slot
  means the device took it, the same id means it did not (it is retried, the attempt not
  counted); when the device cannot tell (its status still unreadable after its
  ``status_timeout``: ``Scheduler.ask_last_ref``), ``scheduler.ambiguous`` decides. Parts already with the
  device are polled (or, for devices with handset reports, followed by the report tracker).
* A message whose channel is gone from the config is finished UNKNOWN (nobody can tell whether
  the device took it), with its receipt. One accepted but not yet routed is routed now, or
  REJECTED when no route fits.
* The channel's rescue of a message whose handling failed (``Channel._rescue``) goes through
  ``resume`` too: the stored state says where the message is, so nothing is lost or sent twice.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs

from .. import lifecycle
from ..lifecycle import State
from ..receipts.policy import Outcome
from ..store import QueueEntry
from .parts import part_result

if TYPE_CHECKING:
    from .channel import Channel
    from .facade import Scheduler

log = logging.getLogger(__name__)


async def recover(sched: Scheduler) -> None:
    """Rebuild queues, timers and cap counters from the store (start and crash recovery)."""
    now = sched.clock()
    for device, channel, t in await sched.store.channel_starts(now - 86400):
        ch = sched.channels.get(f"{device}:{channel}")
        if ch is not None:
            ch.caps.record(t, pace=False)
    # What waits for a channel or a timer stays in the store: the queues page it in
    # (queues.py), so a start costs the same with a backlog of a million.
    for q in sched.queues.values():
        q.mark_unknown()
    sched.timers.mark_unknown()
    for route in await sched.store.queued_routes():
        if route not in sched.queues:
            log.error(
                "queued messages have route %r, which the config no longer has; they wait for a "
                "reload whose routes match them (or are rejected by it)", route,
            )  # fmt: skip
    for entry in await sched.store.load_in_progress():
        if entry.state in (State.SUBMITTING, State.SENT):
            ch = sched.channels.get(f"{entry.device}:{entry.channel}")
            if ch is not None and ch.reports and entry.state is State.SENT:
                sched.track(entry.id)
            elif ch is not None:
                ch.recover.append(entry)
            else:
                log.error("message %s was on channel %s:%s, which is gone; applying the ambiguity policy", entry.id, entry.device, entry.channel)
                sched.metrics.ambiguous.labels(entry.device or "gone", "policy_unknown").inc()
                await sched.finish(entry.id, Outcome(State.UNKNOWN, "UNKNOWN", 0, None, "its channel was removed while it was being sent"))
        elif entry.state is State.ACCEPTED:
            rec = await sched.store.record(entry.id)
            if rec is not None:
                route = sched.route_for(rec.esme, rec.destination_addr)
                if route is None:
                    await sched.finish_rejected_no_route(rec)
                else:
                    await sched.store.route_accepted(entry.id, route, "routed")


async def resume(ch: Channel, entry: QueueEntry) -> None:
    """After a restart: finish what this channel was doing when the bridge stopped."""
    sched = ch.sched
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
            now_ref = await sched.ask_last_ref(ch, p.pre_ref)
            resolution = sched.resolve_ambiguity(p.pre_ref, now_ref)
            sched.metrics.ambiguous.labels(ch.device_name, resolution).inc()
            log.warning(
                "recovery: message %s part %d was in a device call when the bridge stopped: %s",
                rec.id, p.seq, resolution,
            )  # fmt: skip
            if resolution == "reconciled_sent":
                await sched.store.update_part(rec.id, p.seq, "sent", ref=now_ref)
                p = _with_ref(p, now_ref)
            elif resolution in ("reconciled_not_sent", "policy_resend"):
                ch.last_ref = now_ref
                await sched.retry_later(rec, f"recovery: {resolution}", count_attempt=False)
                return
            else:
                await sched.store.update_part(rec.id, p.seq, "unknown", error="ambiguous (crash)")
                parts = await sched.store.parts(rec.id)
                await sched.finish(rec.id, sched.receipts.combine(ch.kind, [(x.state, x.error) for x in parts if x.state != "submitting"]), kind=ch.kind)
                return
        if ch.reports:
            continue  # with the device: Scheduler.track follows its report
        status = await ch.poll_status(p.ref)
        result = part_result(status)
        ch.last_ref = p.ref
        await sched.store.update_part(rec.id, p.seq, result[0], error=result[1])
    parts = await sched.store.parts(rec.id)
    if any(p.state in ("failed", "unknown") for p in parts):
        await sched.finish(rec.id, sched.receipts.combine(ch.kind, [(p.state, p.error) for p in parts]), kind=ch.kind)
        return
    # Some parts still to send: continue on this channel.
    await ch._send_parts(rec, parts)


def _with_ref(p: Any, ref: str | None) -> Any:
    return attrs.evolve(p, ref=ref, state="sent")
