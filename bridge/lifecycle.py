"""The life of one message, in one table.

Rules
-----
* Every message is in exactly one state. The states and every allowed move between them are in
  ``TRANSITIONS`` below; any move that is not in the table raises ``InvalidTransition``. Nothing
  else in the bridge decides what may follow what: the store checks every state change here.
* A message enters the bridge as ``ACCEPTED`` at the moment its row is committed to the store. Only
  then does the ESME hear ESME_ROK (docs/architecture.md, rule 1).
* ``SCHEDULED`` waits for schedule_delivery_time, ``QUEUED`` waits for a free channel of its route,
  ``RETRY_WAIT`` waits out a back-off after a transient failure.
* ``SUBMITTING`` means a device call for one of its parts may be in flight. A crash in this state
  leaves the bridge unsure whether the SMS went out (an *ambiguous send*, rule 6); recovery moves
  it on by the documented policy (reconcile through the device, else ``UNKNOWN``, or resend).
* ``SENT`` means the device took every part; we are waiting for the final status.
* Final states never change again: ``DELIVERED``, ``ACKNOWLEDGED`` (the network took it and the
  device will never say more: receipt ACCEPTD), ``UNDELIVERABLE``, ``EXPIRED``, ``REJECTED``,
  ``UNKNOWN``, ``DELETED`` (cancel_sm). Every final state carries a receipt when one was asked for.
* A move to the state the message is already in is not a transition and is refused, except
  ``SUBMITTING -> SUBMITTING`` (the next part of a long message goes out) and
  ``SENT -> SENT`` (a status update that is not final yet, e.g. a part delivered).

A long message is one logical message; its parts carry their own device reference and status,
and the message's state summarises them (DELIVERED only if every part was delivered).
"""

from __future__ import annotations

import enum

from .smpp.constants import MessageState


class State(enum.StrEnum):
    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    QUEUED = "queued"
    SUBMITTING = "submitting"
    RETRY_WAIT = "retry_wait"
    SENT = "sent"
    DELIVERED = "delivered"
    ACKNOWLEDGED = "acknowledged"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"
    UNKNOWN = "unknown"
    DELETED = "deleted"


S = State

FINAL: frozenset[State] = frozenset(
    {S.DELIVERED, S.ACKNOWLEDGED, S.UNDELIVERABLE, S.EXPIRED, S.REJECTED, S.UNKNOWN, S.DELETED}
)

# Where a message may still be changed by replace_sm or removed by cancel_sm: nothing has gone
# to a device yet.
REPLACEABLE: frozenset[State] = frozenset({S.ACCEPTED, S.SCHEDULED, S.QUEUED, S.RETRY_WAIT})
CANCELLABLE = REPLACEABLE

TRANSITIONS: dict[State, frozenset[State]] = {
    S.ACCEPTED: frozenset({S.SCHEDULED, S.QUEUED, S.REJECTED, S.EXPIRED, S.DELETED}),
    S.SCHEDULED: frozenset({S.QUEUED, S.REJECTED, S.EXPIRED, S.DELETED}),
    # QUEUED -> SCHEDULED: replace_sm gave it a schedule_delivery_time in the future.
    # UNKNOWN from a waiting state: the scheduler gave up on a message whose handling failed
    # MAX_RESCUES times in a row (a bug); it cannot say whether a device ever took it.
    S.QUEUED: frozenset({S.SUBMITTING, S.SCHEDULED, S.REJECTED, S.EXPIRED, S.DELETED, S.UNKNOWN}),
    S.SUBMITTING: frozenset(
        {
            S.SUBMITTING,  # next part of a long message
            S.SENT,
            S.RETRY_WAIT,  # transient failure before the device took the part
            S.QUEUED,  # crash recovery when the device proves it never took the part
            S.UNDELIVERABLE,
            S.REJECTED,
            S.EXPIRED,
            S.UNKNOWN,  # ambiguous send under the default policy
            S.ACKNOWLEDGED,
            S.DELIVERED,
        }
    ),
    S.RETRY_WAIT: frozenset({S.QUEUED, S.UNDELIVERABLE, S.EXPIRED, S.DELETED, S.REJECTED, S.UNKNOWN}),
    S.SENT: frozenset(
        {
            S.SENT,
            S.SUBMITTING,  # the next part of a long message goes out on the same channel
            S.DELIVERED,
            S.ACKNOWLEDGED,
            S.UNDELIVERABLE,
            S.REJECTED,  # the network refused it after the device took it (receipts.map REJECTD)
            S.EXPIRED,
            S.UNKNOWN,
        }
    ),
}
for _final in FINAL:
    TRANSITIONS[_final] = frozenset()
del _final


# The final states a device's status can put a message in once the device took it: what a
# receipts.map entry may name (config.py checks it at load time). DELETED is not one of them:
# only cancel_sm deletes, and never a message a device already has.
DEVICE_FINAL: frozenset[State] = frozenset(TRANSITIONS[S.SENT] & TRANSITIONS[S.SUBMITTING] & FINAL)

# Receipt stat (SMPP 3.4 Appendix B) -> the final state it reports.
STAT_STATE: dict[str, State] = {
    "DELIVRD": S.DELIVERED,
    "ACCEPTD": S.ACKNOWLEDGED,
    "UNDELIV": S.UNDELIVERABLE,
    "EXPIRED": S.EXPIRED,
    "REJECTD": S.REJECTED,
    "UNKNOWN": S.UNKNOWN,
    "DELETED": S.DELETED,
}


class InvalidTransition(Exception):
    def __init__(self, current: State, new: State) -> None:
        super().__init__(f"a message in state {current.value!r} cannot move to {new.value!r}")
        self.current = current
        self.new = new


def check(current: State | str, new: State | str) -> State:
    """Return ``new`` as a State if ``current -> new`` is in the table, else raise."""
    cur = State(current)
    nxt = State(new)
    if nxt not in TRANSITIONS[cur]:
        raise InvalidTransition(cur, nxt)
    return nxt


def is_final(state: State | str) -> bool:
    return State(state) in FINAL


# What query_sm_resp (and the message_state TLV) reports for each state, §5.2.28.
SMPP_STATE: dict[State, MessageState] = {
    S.ACCEPTED: MessageState.ENROUTE,
    S.SCHEDULED: MessageState.ENROUTE,
    S.QUEUED: MessageState.ENROUTE,
    S.SUBMITTING: MessageState.ENROUTE,
    S.RETRY_WAIT: MessageState.ENROUTE,
    S.SENT: MessageState.ENROUTE,
    S.DELIVERED: MessageState.DELIVERED,
    S.ACKNOWLEDGED: MessageState.ACCEPTED,
    S.UNDELIVERABLE: MessageState.UNDELIVERABLE,
    S.EXPIRED: MessageState.EXPIRED,
    S.REJECTED: MessageState.REJECTED,
    S.UNKNOWN: MessageState.UNKNOWN,
    S.DELETED: MessageState.DELETED,
}


def smpp_state(state: State | str) -> MessageState:
    return SMPP_STATE[State(state)]
