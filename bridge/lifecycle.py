"""Every state machine of the bridge, each in one table: messages, their device parts, inbound
SMS and channels. The one lifecycle authority (docs/architecture.md, rule 2).

Rules
-----
* Every message, part, inbound SMS and channel is in exactly one state of its machine. The
  states and every allowed move are in the tables below; any move that is not in its table
  raises ``InvalidTransition``. Nothing else in the bridge decides what may follow what: the
  store checks every message and part move here (``check``, ``PART.check``), its set-based
  inbound updates are built from checked moves (``INBOUND.move``), and the scheduler's channels
  change state through ``CHANNEL.check``.
* Config values that name a state are checked against these tables when the config loads
  (``receipts.map``: ``DEVICE_FINAL``).

Messages (``State``, ``TRANSITIONS``)
-------------------------------------
* A message enters the bridge at the moment its row is committed to the store, in the state
  ``initial_state`` gives: ``ACCEPTED`` (no route yet), ``SCHEDULED`` (schedule_delivery_time
  in the future) or ``QUEUED``. Only then does the ESME hear ESME_ROK (docs/architecture.md, rule 1).
* ``SCHEDULED`` waits for schedule_delivery_time, ``QUEUED`` waits for a free channel of its route,
  ``RETRY_WAIT`` waits out a back-off after a transient failure. These and ``ACCEPTED`` are
  ``WAITING``: nothing has gone to a device, so replace_sm and cancel_sm still apply.
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

A long message is one logical message; its parts carry their own device reference and status
(``PartState``), and the message's state summarises them (DELIVERED only if every part was
delivered).

Parts (``PartState``, ``PART``)
-------------------------------
``submitting`` (the device call may be in flight) -> ``sent`` (the device took it, with its
reference) -> ``network`` (handed to the GSM network, no handset report will come) |
``delivered`` | ``failed`` | ``unknown``. ``submitting -> unknown`` is an ambiguous send the
device cannot resolve; ``submitting -> submitting`` the same part sent again after the device
proved it never took it. A part that was sent is never sent again (no silent duplicate).

Inbound SMS (``InboundState``, ``INBOUND``)
-------------------------------------------
``pending`` (stored; waiting for its other parts or for its MO to be built) -> ``queued`` (its
MO waits in the outbox for the ESME) -> ``delivered`` (the ESME answered deliver_sm_resp OK).
``pending -> expired`` when no ESME route was found for it in time (a long SMS whose parts did not
all arrive is not expired: what arrived is queued as one MO marked incomplete); ``queued ->
expired`` when the ESME did not take it within receipts.retention; ``pending -> duplicate`` for a
copy of an SMS already stored; ``queued -> refused`` when the ESME answered one of its
deliver_sm with a permanent error.

Channels (``ChannelState``, ``CHANNEL``)
----------------------------------------
``ready`` (may take a message) -> ``sending`` (a message is in progress, including waiting for
its status) -> ``ready``; ``cooldown`` (resting after a GSM logout or a busy line) and
``quarantine`` (errors; exponential back-off, then a probe) take a channel out of service;
``paused`` by the operator. A channel never ends: it has no final state.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Generic, TypeVar

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

# Nothing has gone to a device yet: the one definition of "waiting". replace_sm may still change
# such a message, cancel_sm remove it, the expiry sweep end it.
WAITING: frozenset[State] = frozenset({S.ACCEPTED, S.SCHEDULED, S.QUEUED, S.RETRY_WAIT})
# Waiting in a route's queue or on a timer: what the scheduler holds in memory.
ROUTED_WAITING: frozenset[State] = WAITING - {S.ACCEPTED}
REPLACEABLE = WAITING
CANCELLABLE = WAITING
# Not final: what counts against limits.queue_depth and what recovery loads.
ACTIVE: frozenset[State] = frozenset(State) - FINAL


def initial_state(routed: bool, schedule_at: float | None, now: float) -> State:
    """Where a new logical message starts: routed at once when the acceptance step found a
    route, scheduled when its schedule_delivery_time is still ahead."""
    if not routed:
        return S.ACCEPTED
    if schedule_at is not None and schedule_at > now:
        return S.SCHEDULED
    return S.QUEUED


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
# receipts.map entry may name (config/receipts.py checks it at load time). DELETED is not one of them:
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
    def __init__(self, current: enum.Enum | None, new: enum.Enum, what: str = "message") -> None:
        cur = "(none)" if current is None else repr(current.value)
        super().__init__(f"a {what} in state {cur} cannot move to {new.value!r}")
        self.current = current
        self.new = new
        self.what = what


def check(current: State | str, new: State | str) -> State:
    """Return ``new`` as a State if ``current -> new`` is in the table, else raise."""
    cur = State(current)
    nxt = State(new)
    if nxt not in TRANSITIONS[cur]:
        raise InvalidTransition(cur, nxt)
    return nxt


E = TypeVar("E", bound=enum.Enum)


class Machine(Generic[E]):
    """One state machine: its states, initial states, transition table and final states."""

    def __init__(
        self, what: str, states: type[E], initial: frozenset[E], table: Mapping[E, frozenset[E]]
    ) -> None:
        missing = set(states) - set(table)
        if missing:
            raise ValueError(f"{what}: no row for {sorted(m.value for m in missing)}")
        self.what = what
        self.states = states
        self.initial = initial
        self.table = dict(table)
        self.final: frozenset[E] = frozenset(s for s, exits in table.items() if not exits)

    def check(self, current: E | str | None, new: E | str) -> E:
        """Return ``new`` if ``current -> new`` is allowed (``current`` None: entering the
        machine), else raise InvalidTransition."""
        nxt = self.states(new)
        if current is None:
            if nxt not in self.initial:
                raise InvalidTransition(None, nxt, self.what)
            return nxt
        cur = self.states(current)
        if nxt not in self.table[cur]:
            raise InvalidTransition(cur, nxt, self.what)
        return nxt

    def move(self, current: E | str, new: E | str) -> tuple[str, str]:
        """Check ``current -> new`` once (at import time, for set-based SQL updates) and return
        the two state values to put in ``... SET state=<new> WHERE state=<current>``."""
        nxt = self.check(current, new)
        return self.states(current).value, nxt.value


MESSAGE: Machine[State] = Machine(
    "message", State, frozenset({S.ACCEPTED, S.SCHEDULED, S.QUEUED}), TRANSITIONS
)


# -- parts --------------------------------------------------------------------------------------


class PartState(enum.StrEnum):
    SUBMITTING = "submitting"
    SENT = "sent"
    NETWORK = "network"
    DELIVERED = "delivered"
    FAILED = "failed"
    UNKNOWN = "unknown"


P = PartState
PART: Machine[PartState] = Machine(
    "part",
    PartState,
    frozenset({P.SUBMITTING}),
    {
        P.SUBMITTING: frozenset({P.SUBMITTING, P.SENT, P.UNKNOWN}),
        P.SENT: frozenset({P.NETWORK, P.DELIVERED, P.FAILED, P.UNKNOWN}),
        P.NETWORK: frozenset(),
        P.DELIVERED: frozenset(),
        P.FAILED: frozenset(),
        P.UNKNOWN: frozenset(),
    },
)


# -- inbound SMS --------------------------------------------------------------------------------


class InboundState(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    DELIVERED = "delivered"
    EXPIRED = "expired"
    DUPLICATE = "duplicate"
    REFUSED = "refused"


I = InboundState  # noqa: E741
INBOUND: Machine[InboundState] = Machine(
    "inbound SMS",
    InboundState,
    frozenset({I.PENDING}),
    {
        I.PENDING: frozenset({I.QUEUED, I.EXPIRED, I.DUPLICATE}),
        I.QUEUED: frozenset({I.DELIVERED, I.EXPIRED, I.REFUSED}),
        I.DELIVERED: frozenset(),
        I.EXPIRED: frozenset(),
        I.DUPLICATE: frozenset(),
        I.REFUSED: frozenset(),
    },
)


# -- channels -----------------------------------------------------------------------------------


class ChannelState(enum.StrEnum):
    READY = "ready"
    SENDING = "sending"
    COOLDOWN = "cooldown"
    QUARANTINE = "quarantine"
    PAUSED = "paused"


CH = ChannelState
# Out of service: a cooldown or quarantine ends with a probe, a pause with resume.
OUT_OF_SERVICE = frozenset({CH.COOLDOWN, CH.QUARANTINE, CH.PAUSED})
CHANNEL: Machine[ChannelState] = Machine(
    "channel",
    ChannelState,
    frozenset({CH.READY}),
    {
        CH.READY: frozenset({CH.SENDING, CH.COOLDOWN, CH.QUARANTINE, CH.PAUSED}),
        CH.SENDING: frozenset({CH.READY, CH.COOLDOWN, CH.QUARANTINE, CH.PAUSED}),
        # -> SENDING: after a restart or a failed attempt, a channel first finishes the message
        # it had (Channel.run), whatever its health; the device call itself then tells.
        CH.COOLDOWN: frozenset({CH.READY, CH.QUARANTINE, CH.PAUSED, CH.SENDING}),
        CH.QUARANTINE: frozenset({CH.READY, CH.COOLDOWN, CH.PAUSED, CH.SENDING}),
        CH.PAUSED: frozenset({CH.READY, CH.COOLDOWN, CH.QUARANTINE, CH.SENDING}),
    },
)


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


# A SENT message's intermediate stat from the network (an upstream SMSC's intermediate receipt,
# kept as the message's ``network_stat``: a sub-status of SENT, not a state of its own, so the
# table above and every rule about final states stay as they are).
# Receipt stats that are not final: the message keeps waiting for the final one.
INTERMEDIATE_STATS: frozenset[str] = frozenset({"ENROUTE", "ACCEPTD", "SCHEDULED", "SKIPPED"})
NETWORK_STAT_STATE: dict[str, MessageState] = {
    "ENROUTE": MessageState.ENROUTE,
    "ACCEPTD": MessageState.ACCEPTED,
}


def smpp_state(state: State | str, network_stat: str | None = None) -> MessageState:
    """What query_sm answers for a message: its state's message_state, or, while it is SENT,
    what the network's newest intermediate receipt said (ACCEPTD -> ACCEPTED)."""
    st = State(state)
    if st is State.SENT and network_stat in NETWORK_STAT_STATE:
        return NETWORK_STAT_STATE[network_stat]
    return SMPP_STATE[st]
