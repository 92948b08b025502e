"""What the store takes and hands out: message ids, the submit it stores, the records it returns.

Rules
-----
* Message ids are decimal strings of a counter that never goes back, also across restarts and
  purges (``meta.last_id``), zero-padded to 10 digits: unique, ASCII, at most 64 characters.
  ``format_id`` and ``parse_id`` are the only places that know this; nothing outside the store
  formats or parses an id by hand.
* A ``NewMessage`` is one submit_sm (or one part of a long message) as a front end hands it over;
  ``SUBMIT_FIELDS`` are the message columns it fills, in insert order.
* Records (``MessageRecord``, ``QueueEntry``, ``PartRecord``, ``OutboxItem``, ``Event``) are
  frozen snapshots of rows: changing one changes nothing stored.
* ``summarise`` is what query_sm reports for the messages behind one id (a submit_multi): the
  state of one still under way, else the worst final state.
"""

from __future__ import annotations

import json
import operator
from typing import Any

import attrs

from .. import lifecycle
from ..lifecycle import State

ID_WIDTH = 10


def format_id(n: int) -> str:
    return f"{n:0{ID_WIDTH}d}"


def parse_id(message_id: str) -> int | None:
    """The numeric id behind a message_id string, or None if it cannot be one of ours."""
    if not message_id or len(message_id) > 20 or not (message_id.isascii() and message_id.isdigit()):
        return None
    return int(message_id)


class StoreError(Exception):
    """The store could not commit (disk full, read-only, I/O error). Nothing was acknowledged."""


class StoreUnwritable(StoreError):
    """The store cannot write at all right now (disk full, read-only, I/O error, its file
    deleted or replaced): the fault is the store's, not the operation's. The same operation
    succeeds once the store writes again, so callers wait for that instead of giving up."""


class Superseded(Exception):
    """A channel asked to start sending a message that replace_sm changed after the channel
    read it: what goes out must be what the message says when it is claimed. The message is
    queued again (or waits for its new schedule) with its new content."""

    def __init__(self, mid: int) -> None:
        super().__init__(f"message {mid} was replaced after it was picked up")
        self.mid = mid


class ClaimedElsewhere(Exception):
    """A channel asked to start a device call for a message another channel is sending: one
    message is sent by one channel only (the first to mark it ``submitting`` owns it)."""

    def __init__(self, mid: int, owner: str) -> None:
        super().__init__(f"message {mid} is being sent by {owner}")
        self.mid = mid
        self.owner = owner


# Columns of a message row that a submit fills in, in insert order.
SUBMIT_FIELDS = (
    "service_type",
    "source_addr_ton",
    "source_addr_npi",
    "source_addr",
    "dest_addr_ton",
    "dest_addr_npi",
    "destination_addr",
    "esm_class",
    "protocol_id",
    "priority",
    "data_coding",
    "registered_delivery",
    "schedule_at",
    "expire_at",
    "route",
)


_submit_values = operator.attrgetter(*SUBMIT_FIELDS)
_INSERT_MESSAGE = (
    "INSERT INTO messages (id, esme, state, created_at, updated_at, "
    + ", ".join(SUBMIT_FIELDS)
    + ", body, text, esme_parts, receipt_id, error, final_at) VALUES (?,?,?,?,?,"
    + ",".join("?" * len(SUBMIT_FIELDS))
    + ",?,?,?,?,?,?)"
)
_REG_DLR_INDEX = SUBMIT_FIELDS.index("registered_delivery")


@attrs.define(slots=True)
class NewMessage:
    """One submit_sm (or one part of a long message) as the front end hands it to the store."""

    esme: str
    destination_addr: str
    body: bytes
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    source_addr: str = ""
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    esm_class: int = 0
    protocol_id: int = 0
    priority: int = 0
    data_coding: int = 0
    registered_delivery: int = 0
    schedule_at: float | None = None
    expire_at: float | None = None
    # The route the front end chose; None leaves the message ACCEPTED for later routing.
    route: str | None = None
    # Long-message part: (reference, total, seq, reference bits); None for a whole message.
    concat: tuple[int, int, int, int] | None = None

    def concat_key(self) -> str:
        assert self.concat is not None
        ref, total, _seq, bits = self.concat
        return f"{self.source_addr}|{self.destination_addr}|{bits}:{ref}|{total}"

    def field_values(self) -> tuple[Any, ...]:
        return _submit_values(self)


def _initial_state(msg: NewMessage, now: float) -> State:
    """Where a new logical message starts (lifecycle.initial_state)."""
    return lifecycle.initial_state(msg.route is not None, msg.schedule_at, now)


@attrs.frozen
class QueueEntry:
    """What the scheduler keeps in memory for a message that waits for a channel."""

    id: int
    route: str | None
    priority: int
    state: State
    schedule_at: float | None = None
    expire_at: float | None = None
    next_attempt_at: float | None = None
    device: str | None = None
    channel: str | None = None
    attempts: int = 0


@attrs.frozen
class PartRecord:
    message: int
    seq: int
    total: int
    state: str  # a lifecycle.PartState value
    device: str
    channel: str
    pre_ref: str | None
    ref: str | None
    error: str | None
    started_at: float
    sent_at: float | None
    done_at: float | None


@attrs.frozen
class OutboxItem:
    id: int
    esme: str
    kind: str  # receipt | mo
    message: int | None
    created_at: float
    expire_at: float
    payload: str
    attempts: int


@attrs.frozen
class Accepted:
    message_id: str
    # True when this submit completed a logical message (always True for a single-part one).
    complete: bool
    # True when this submit was a part already stored (a client's resend): same id, nothing new.
    duplicate: bool = False


@attrs.frozen
class MessageRecord:
    id: int
    message_id: str
    esme: str
    state: State
    created_at: float
    updated_at: float
    source_addr: str
    destination_addr: str
    service_type: str
    data_coding: int
    registered_delivery: int
    priority: int
    schedule_at: float | None
    expire_at: float | None
    text: str | None
    body: bytes
    esme_parts: int
    error: str | None
    final_at: float | None
    receipt_id: int | None
    # The ids the ESME was given for the other parts of a long message (filled in where
    # receipts are built: per-part receipts carry them).
    part_ids: tuple[int, ...] = ()
    # The newest intermediate stat the network reported for a SENT message (ENROUTE, ACCEPTD:
    # an upstream SMSC's intermediate receipts), None when none came.
    network_stat: str | None = None

    @property
    def receipt_message_id(self) -> str:
        return format_id(self.receipt_id if self.receipt_id is not None else self.id)


# How bad each final state is, worst first: a summary of several messages shows the worst.
_WORST_FIRST = (
    State.UNDELIVERABLE, State.REJECTED, State.EXPIRED, State.UNKNOWN, State.DELETED,
    State.ACKNOWLEDGED, State.DELIVERED,
)  # fmt: skip


def summarise(records: list[MessageRecord]) -> tuple[State, float | None]:
    """The state (and final date) that query_sm reports for the messages behind one message id
    (the destinations of a submit_multi): while any is not final, that one's state (ENROUTE
    on the wire) and no final date; once all are final, their state if they agree, else the
    worst of them (one undelivered destination makes the whole submit undelivered), with the
    date the last one became final."""
    for r in records:
        if not lifecycle.is_final(r.state):
            return r.state, None
    states = {r.state for r in records}
    worst = min(states, key=_WORST_FIRST.index)
    finals = [r.final_at for r in records if r.final_at is not None]
    return worst, max(finals) if finals else None


@attrs.frozen
class Event:
    at: float
    state: str
    detail: str


_RECORD_COLUMNS = (
    "id, esme, state, created_at, updated_at, source_addr, destination_addr, service_type, "
    "data_coding, registered_delivery, priority, schedule_at, expire_at, text, body, esme_parts, "
    "error, final_at, receipt_id, network_stat"
)


def _record(row: tuple[Any, ...]) -> MessageRecord:
    return MessageRecord(
        id=row[0],
        message_id=format_id(row[0]),
        esme=row[1],
        state=State(row[2]),
        created_at=row[3],
        updated_at=row[4],
        source_addr=row[5],
        destination_addr=row[6],
        service_type=row[7],
        data_coding=row[8],
        registered_delivery=row[9],
        priority=row[10],
        schedule_at=row[11],
        expire_at=row[12],
        text=row[13],
        body=row[14],
        esme_parts=row[15],
        error=row[16],
        final_at=row[17],
        receipt_id=row[18],
        network_stat=row[19],
    )

def _fields_json(msg: NewMessage) -> str:
    return json.dumps(dict(zip(SUBMIT_FIELDS, msg.field_values())))


def _fields_from_json(s: str) -> dict[str, Any]:
    return json.loads(s)
