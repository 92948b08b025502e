"""The durable store: SQLite in WAL mode, written through group commits.

Rules
-----
* Durable before acknowledged: ``accept()`` returns a message id only after the transaction that
  holds the message has been committed (and, with ``synchronous=full``, fsynced).
* Group commit: one writer task owns the write connection. Every write is an *operation* (a
  function run inside a transaction on the writer thread). Everything that arrives while one
  commit runs goes into the next one, so a busy bridge pays one fsync for many messages.
* If one operation in a batch fails with a bug-type error, the batch is rolled back and its
  operations are retried one transaction each, so a bad operation harms no other. If the commit
  itself fails (disk full, read-only file system), every operation of the batch fails with
  ``StoreError`` and nothing of it is acknowledged.
* Every state change goes through ``lifecycle.check`` and leaves a row in ``events``.
* Message ids are decimal strings of a counter that never goes back, also across restarts and
  purges (``meta.last_id``), zero-padded to 10 digits: unique, ASCII, at most 64 characters.
* A long message sent as several submit_sm is stored part by part in ``partials`` (each part gets
  its own id and ESME_ROK once stored); when the last part arrives, the same transaction builds ONE
  logical message whose id is the id of part 1; the other parts' ids become aliases, so query_sm,
  cancel_sm and receipts work with any of them. Parts whose siblings never come expire after
  ``partial_timeout`` into one EXPIRED message holding what arrived, its receipt queued in the
  same transaction (``final_receipts``).
* A submit_multi stores one message per destination, each with ``receipt_id`` = the first's
  id (the one id its ESME was given); cancel_sm, query_sm and replace_sm with that id act on
  every destination (``_group``).
* A part is known by (ESME, concatenation key, seq) and its content (data_coding and octets). The
  same part again -- a client that lost the submit_sm_resp resends it -- is answered with the id
  it got the first time and stored nowhere: while its group waits (``partials``) and for
  ``partial_timeout`` after the group was assembled or expired (``assembled_parts``). Other
  content under the same key and seq is a new message that reuses the reference (8-bit
  references wrap after 256 long messages): after assembly it starts a new group; while the old
  group still waits, the old group is ended at once as EXPIRED ("superseded") and the new part
  starts a new group, so that two messages are never joined. Counted in ``resent_parts`` and
  ``superseded_groups``.
* Parts with different data_coding are decoded each with its own coding and the texts joined;
  the message is then stored as if submitted in one coding (GSM 7-bit when the whole text allows,
  else UCS2). Parts with the same data_coding are joined as octets first, so that a character
  split across two parts (a UCS2 surrogate pair) survives.
* Inbound SMS (``inbound``): one row per device inbox entry, unique per (device, device_key),
  committed before anything is deleted on the device; an entry seen again (every poll, and after
  a restart) is a duplicate and stored once. A row is ``pending`` while it waits for the other
  parts of its long message or for an ESME route, ``queued`` once its deliver_sm (one, or one
  per UDH part) is in the outbox (same transaction), ``delivered`` when the ESME acknowledged
  all of them, ``expired`` when ``receipts.retention`` ended the wait (for the ESME to take it,
  or for a route to an ESME), ``duplicate`` for a part number the device handed over twice
  (while its message waits, or, with the same text, within ``INBOUND_RESEND_WINDOW`` after the
  message was built: never a second MO).
  ``mo`` names the row a long message is delivered as (its first stored part). What the MO
  looks like on the wire is the caller's business (``InboundPolicy``).
* Opt-outs (``optouts``): one row per number, matched by ``optout_key`` (digits, without ``+``
  or ``00``). A STOP/START keyword changes the list in the transaction that completes its MO.
  ``is_opted_out`` reads an in-memory copy that is updated after each commit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from . import lifecycle
from .lifecycle import State
from .smpp.text import decode_short_message, encode_for_esme

log = logging.getLogger(__name__)

ID_WIDTH = 10
# An inbound part identical (device, channel, sender, reference, total, part number, text) to a
# part of a message already built within this many seconds is the network's resend, not news.
INBOUND_RESEND_WINDOW = 3600.0


def format_id(n: int) -> str:
    return f"{n:0{ID_WIDTH}d}"


def parse_id(message_id: str) -> int | None:
    """The numeric id behind a message_id string, or None if it cannot be one of ours."""
    if not message_id or len(message_id) > 20 or not message_id.isdigit():
        return None
    return int(message_id)


class StoreError(Exception):
    """The store could not commit (disk full, read-only, I/O error). Nothing was acknowledged."""


# ---------------------------------------------------------------------------------------------
# Schema and migrations. Each entry moves the schema from version i to i+1 (PRAGMA user_version).
# Never edit a migration that has shipped: add a new one.

MIGRATIONS: list[str] = [
    # 1: messages, aliases, partial parts, events, meta
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        service_type TEXT NOT NULL DEFAULT '',
        source_addr_ton INTEGER NOT NULL DEFAULT 0,
        source_addr_npi INTEGER NOT NULL DEFAULT 0,
        source_addr TEXT NOT NULL DEFAULT '',
        dest_addr_ton INTEGER NOT NULL DEFAULT 0,
        dest_addr_npi INTEGER NOT NULL DEFAULT 0,
        destination_addr TEXT NOT NULL,
        esm_class INTEGER NOT NULL DEFAULT 0,
        protocol_id INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 0,
        data_coding INTEGER NOT NULL DEFAULT 0,
        registered_delivery INTEGER NOT NULL DEFAULT 0,
        receipt_id INTEGER,
        schedule_at REAL,
        expire_at REAL,
        body BLOB NOT NULL,
        text TEXT,
        esme_parts INTEGER NOT NULL DEFAULT 1,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        route TEXT,
        channel TEXT,
        error TEXT,
        final_at REAL
    );
    CREATE INDEX messages_active ON messages(state, priority, id)
        WHERE state NOT IN ('delivered','acknowledged','undeliverable','expired','rejected',
                            'unknown','deleted');
    CREATE INDEX messages_dest ON messages(destination_addr);
    CREATE TABLE aliases (alias INTEGER PRIMARY KEY, message INTEGER NOT NULL);
    CREATE TABLE partials (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        concat_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        total INTEGER NOT NULL,
        received_at REAL NOT NULL,
        fields TEXT NOT NULL,
        body BLOB NOT NULL,
        UNIQUE (esme, concat_key, seq)
    );
    CREATE INDEX partials_age ON partials(received_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        message INTEGER NOT NULL,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_message ON events(message);
    """,
    # 2: device parts of each message, and the outbox of deliver_sm waiting for ESMEs
    """
    CREATE TABLE parts (
        message INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        total INTEGER NOT NULL,
        state TEXT NOT NULL,
        device TEXT NOT NULL,
        channel TEXT NOT NULL,
        pre_ref TEXT,
        ref TEXT,
        error TEXT,
        started_at REAL NOT NULL,
        sent_at REAL,
        done_at REAL,
        PRIMARY KEY (message, seq)
    );
    CREATE INDEX parts_channel ON parts(device, channel, started_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        kind TEXT NOT NULL,
        message INTEGER,
        created_at REAL NOT NULL,
        expire_at REAL NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL
    );
    CREATE INDEX outbox_pending ON outbox(esme, id) WHERE delivered_at IS NULL;
    ALTER TABLE messages ADD COLUMN device TEXT;
    """,
    # 3: inbound SMS (de-duplicated per device, long ones reassembled) and the opt-out list
    """
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        channel TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT,
        text TEXT NOT NULL,
        received_at REAL NOT NULL,
        device_key TEXT NOT NULL,
        concat_ref INTEGER,
        concat_total INTEGER,
        concat_seq INTEGER,
        esme TEXT,
        state TEXT NOT NULL,
        mo INTEGER,
        incomplete INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        done_at REAL,
        UNIQUE (device, device_key)
    );
    CREATE INDEX inbound_pending ON inbound(created_at) WHERE state = 'pending';
    CREATE INDEX inbound_mo ON inbound(mo);
    CREATE TABLE optouts (
        number TEXT PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        keyword TEXT,
        at REAL NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX outbox_message ON outbox(kind, message);
    """,
    # 4: deliver_sm an ESME refused for good (with its status), a back-off per outbox row, and
    # the destinations of a submit_multi found by the one id the ESME was given (receipt_id)
    """
    ALTER TABLE outbox ADD COLUMN refused_status INTEGER;
    ALTER TABLE outbox ADD COLUMN next_try_at REAL;
    CREATE INDEX messages_receipt ON messages(receipt_id) WHERE receipt_id IS NOT NULL;
    """,
    # 5: the parts of assembled long messages, remembered for partial_timeout so that a part the
    # client sends again (its submit_sm_resp was lost) is recognised instead of opening a group;
    # inbound parts by sender and reference (the network's resends of a part are found by them)
    """
    CREATE TABLE assembled_parts (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        concat_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        assembled_at REAL NOT NULL
    );
    CREATE INDEX assembled_parts_key ON assembled_parts(esme, concat_key, seq);
    CREATE INDEX assembled_parts_age ON assembled_parts(assembled_at);
    CREATE INDEX inbound_concat ON inbound(sender, concat_ref, concat_seq) WHERE concat_ref IS NOT NULL;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

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


INBOUND_STATES = tuple(s.value for s in lifecycle.InboundState)
# The inbound moves the SQL below makes, each checked against lifecycle.INBOUND once, here.
_IN = lifecycle.InboundState
_IN_QUEUE = lifecycle.INBOUND.move(_IN.PENDING, _IN.QUEUED)
_IN_DUPLICATE = lifecycle.INBOUND.move(_IN.PENDING, _IN.DUPLICATE)
_IN_UNROUTED = lifecycle.INBOUND.move(_IN.PENDING, _IN.EXPIRED)
_IN_DELIVERED = lifecycle.INBOUND.move(_IN.QUEUED, _IN.DELIVERED)
_IN_UNCLAIMED = lifecycle.INBOUND.move(_IN.QUEUED, _IN.EXPIRED)
_IN_REFUSED = lifecycle.INBOUND.move(_IN.QUEUED, _IN.REFUSED)
_IN_FINAL = tuple(sorted(s.value for s in lifecycle.INBOUND.final))
# Where the parts of an incomplete long inbound message are missing, its text shows this.
MISSING_PART = "(...)"


def canonical_number(number: str) -> str:
    """A phone number as the opt-out list shows it: separators dropped, ``00`` -> ``+``."""
    s = "".join(ch for ch in number.strip() if ch not in " -./()\t")
    if s.startswith("00") and s[2:].isdigit():
        return "+" + s[2:]
    return s


def optout_key(number: str) -> str:
    """What opt-out matching compares: ``+491701234567``, ``00491701234567`` and
    ``491701234567`` (an ESME writing an international number without ``+``) are one number.
    A national number (``01701234567``) is not matched to its international form."""
    return canonical_number(number).removeprefix("+")


@attrs.frozen
class MoMessage:
    """One inbound message, complete or given up on, as it is delivered to an ESME."""

    id: int  # the inbound row it is delivered as (outbox.message for kind 'mo')
    device: str
    channel: str
    sender: str
    recipient: str | None
    text: str
    received_at: float
    esme: str | None
    parts: int = 1
    incomplete: bool = False


class InboundPolicy(Protocol):
    """What the store asks the inbound side while it commits inbound SMS (on the writer
    thread: no I/O, no awaiting)."""

    def recipient(self, device: str, channel: str) -> str | None: ...

    def route(self, device: str, channel: str, recipient: str | None) -> str | None: ...

    def rows(self, mo: MoMessage) -> list[tuple[str, float]]:
        """(deliver_sm payload, expire_at) for each deliver_sm that carries ``mo``."""
        ...

    def keyword(self, text: str) -> str | None:
        """"optout", "optin" or None for a complete inbound text."""
        ...


@attrs.define
class InboundResult:
    stored: list[int] = attrs.Factory(list)  # new inbound rows
    duplicates: int = 0  # entries already stored, and part numbers handed over twice
    queued: list[MoMessage] = attrs.Factory(list)  # MO whose deliver_sm went to the outbox
    unrouted: list[MoMessage] = attrs.Factory(list)  # complete, but no ESME to deliver to
    incomplete: list[MoMessage] = attrs.Factory(list)  # given up waiting for parts
    optouts: list[tuple[str, str]] = attrs.Factory(list)  # (action, number) that changed
    failed: list[tuple[str, str]] = attrs.Factory(list)  # (device_key, error): not stored
    expired: int = 0  # rows that waited for a route longer than the retention

    def merge(self, other: InboundResult) -> None:
        for f in attrs.fields(InboundResult):
            mine = getattr(self, f.name)
            if isinstance(mine, list):
                mine.extend(getattr(other, f.name))
            else:
                setattr(self, f.name, mine + getattr(other, f.name))


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
    "error, final_at, receipt_id"
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
    )


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=30.0
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; return the version found before."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {found}, newer than this bridge knows "
            f"({SCHEMA_VERSION}); upgrade smpp-bridge or restore a matching backup"
        )
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        for statement in _split_sql(MIGRATIONS[version]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version + 1}")
        conn.execute("COMMIT")
        log.info("store schema migrated to version %d", version + 1)
    return found


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


Op = Callable[[sqlite3.Connection], Any]


Done = Callable[[Any, "BaseException | None"], None]


class _Waiter:
    """One pending write: either awaited (``event``) or answered through a callback."""

    __slots__ = ("op", "event", "done", "result", "error", "hooks")

    def __init__(self, op: Op, done: Done | None = None) -> None:
        self.op = op
        # Functions the operation asked to run after its commit (see Store.after_commit).
        self.hooks: list[Callable[[], None]] = []
        self.done = done
        self.event = trio.Event() if done is None else None
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        if self.done is not None:
            self.done(self.result, self.error)
        else:
            assert self.event is not None
            self.event.set()


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=False)


async def run_inline(fn: Callable[..., Any], *args: Any) -> Any:
    """A ``run_sync`` for tests: SQLite work on the event loop itself (see Store)."""
    return fn(*args)


class Store:
    """The bridge's SQLite store. Create, then start ``store.run`` (the writer) in a nursery."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        partial_timeout: float = 600.0,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[int, float], None] | None = None,
        run_sync: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        """``run_sync(fn, *args)`` runs SQLite work away from the event loop (default: a worker
        thread). Tests on trio's autojump MockClock pass one that runs ``fn`` inline, so the
        clock never jumps while a commit is under way."""
        self.path = Path(path)
        self._run_sync = run_sync or _in_thread
        self.synchronous = synchronous
        self.partial_timeout = partial_timeout
        self.clock = clock
        self._on_commit = on_commit
        self._pending: list[_Waiter] = []
        self._wakeup = trio.Event()
        self._closed = False
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._rlock = threading.Lock()
        self._last_id = 0
        # Messages that are not final, plus stored parts still waiting for siblings. The front
        # end compares this with limits.queue_depth (ESME_RMSGQFUL).
        self.active_count = 0
        self.commits = 0
        self._op_hooks: list[Callable[[], None]] = []
        # Told about every new logical message that is waiting for a device (the scheduler),
        # and about every ESME that has a new deliver_sm in the outbox (the dlr dispatcher).
        self.on_new_message: Callable[[QueueEntry], None] | None = None
        self.on_outbox: Callable[[str], None] | None = None
        # Builds the receipt rows (esme, kind, payload, expire_at) for a message the store
        # itself makes final (cancel_sm, parts that never completed, a transition() to a final
        # state): queued in the same transaction as the state (dlr.Receipts.final).
        self.final_receipts: Callable[[MessageRecord], list[tuple[str, str, str, float]]] | None = None
        # Told about every change of the opt-out list: ("optout" | "optin", number).
        self.on_optout: Callable[[str, str], None] | None = None
        # optout_key of every opted-out number (the submit and send paths read this).
        self._optout_keys: set[str] = set()
        # Parts a client sent again (answered with their first id), and waiting groups ended
        # because a new message reused their reference (module docstring). Read by metrics.
        self.resent_parts = 0
        self.superseded_groups = 0

    # -- life -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) and migrate. Synchronous: call before starting tasks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = _connect(self.path, self.synchronous)
        migrate(self._wconn)
        self._rconn = _connect(self.path, self.synchronous)
        self._rconn.execute("PRAGMA query_only=ON")
        c = self._wconn
        max_msg = c.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
        max_part = c.execute("SELECT coalesce(max(id), 0) FROM partials").fetchone()[0]
        row = c.execute("SELECT value FROM meta WHERE key='last_id'").fetchone()
        self._last_id = max(max_msg, max_part, int(row[0]) if row else 0)
        self.active_count = self._count_active(c)
        self._optout_keys = {r[0] for r in c.execute("SELECT key FROM optouts")}

    @staticmethod
    def _count_active(c: sqlite3.Connection) -> int:
        finals = tuple(s.value for s in lifecycle.FINAL)
        marks = ",".join("?" * len(finals))
        (n,) = c.execute(
            f"SELECT count(*) FROM messages WHERE state NOT IN ({marks})", finals
        ).fetchone()
        (p,) = c.execute("SELECT count(*) FROM partials").fetchone()
        return n + p

    def close(self) -> None:
        self._closed = True
        for conn in (self._wconn, self._rconn):
            if conn is not None:
                conn.close()
        self._wconn = self._rconn = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: runs group commits until cancelled."""
        task_status.started()
        while True:
            if not self._pending:
                self._wakeup = trio.Event()
                await self._wakeup.wait()
            batch, self._pending = self._pending, []
            started = time.perf_counter()
            await self._run_sync(self._commit_batch, batch)
            self.commits += 1
            if self._on_commit is not None:
                self._on_commit(len(batch), time.perf_counter() - started)
            for w in batch:
                try:
                    if w.error is None:
                        for hook in w.hooks:
                            hook()
                    w.finish()
                except Exception:  # a callback's bug must not stop the writer
                    log.exception("store completion callback failed")

    def write_nowait(self, op: Op, done: Done) -> None:
        """Queue ``op`` for the next group commit; ``done(result, error)`` is called (in the
        writer task, after the commit) instead of making the caller wait. The SMPP front end
        uses this so that one connection can have many submits in one commit."""
        if self._closed or self._wconn is None:
            raise StoreError("the store is closed")
        self._pending.append(_Waiter(op, done))
        self._wakeup.set()

    async def write(self, op: Op) -> Any:
        """Run ``op(conn)`` inside the next group commit; return its result once committed."""
        if self._closed or self._wconn is None:
            raise StoreError("the store is closed")
        w = _Waiter(op)
        self._pending.append(w)
        self._wakeup.set()
        assert w.event is not None
        await w.event.wait()
        if w.error is not None:
            raise w.error
        return w.result

    def _commit_batch(self, batch: list[_Waiter]) -> None:
        conn = self._wconn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._fail_all(batch, exc)
            return
        last_id, active = self._last_id, self.active_count
        try:
            for w in batch:
                self._op_hooks = w.hooks = []
                w.result = w.op(conn)
            if self._last_id != last_id:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('last_id', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(self._last_id),),
                )
            conn.execute("COMMIT")
            return
        except sqlite3.Error as exc:
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            if _is_fatal(exc):
                self._fail_all(batch, exc)
                return
            first_error: BaseException = exc
        except Exception as exc:  # a bug in one operation: isolate it below
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            first_error = exc
        for w in batch:
            w.hooks = []
        log.debug("group commit failed (%s); retrying %d operations one by one", first_error, len(batch))
        for w in batch:
            w.result = None
            self._commit_one(conn, w)

    def _commit_one(self, conn: sqlite3.Connection, w: _Waiter) -> None:
        last_id, active = self._last_id, self.active_count
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._op_hooks = w.hooks = []
            w.result = w.op(conn)
            if self._last_id != last_id:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('last_id', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(self._last_id),),
                )
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            w.hooks = []
            w.error = StoreError(f"could not write to {self.path}: {exc}")
        except Exception as exc:
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            w.hooks = []
            w.error = exc

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Called by an operation (on the writer thread): run ``hook`` in the trio task once the
        operation's transaction has committed. Dropped if it rolls back."""
        self._op_hooks.append(hook)

    def _fail_all(self, batch: list[_Waiter], exc: BaseException) -> None:
        log.error(
            "store commit failed: %s. Free disk space or fix permissions on %s; "
            "submits are answered with an error meanwhile",
            exc,
            self.path,
        )
        for w in batch:
            w.hooks = []
            w.error = StoreError(f"could not commit to {self.path}: {exc}")

    def _next_id(self) -> int:
        self._last_id += 1
        return self._last_id

    # -- reads (separate connection; WAL lets them run beside the writer) ------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def run() -> Any:
            with self._rlock:
                assert self._rconn is not None
                return fn(self._rconn)

        return await self._run_sync(run)

    # -- accepting messages ---------------------------------------------------------------------

    def _accept_op(self, msg: NewMessage) -> Op:
        if msg.concat is None:
            return lambda conn: self._insert_whole(conn, msg)
        return lambda conn: self._insert_part(conn, msg)

    async def accept(self, msg: NewMessage) -> Accepted:
        """Store one submit (or one part of a long message). Returns after the commit."""
        return await self.write(self._accept_op(msg))

    def accept_nowait(self, msg: NewMessage, done: Done) -> None:
        """Like accept(), answering through ``done(Accepted | None, error)`` after the commit."""
        self.write_nowait(self._accept_op(msg), done)

    def _insert_message(
        self,
        conn: sqlite3.Connection,
        mid: int,
        msg: NewMessage,
        body: bytes,
        esme_parts: int,
        receipt_id: int | None,
        registered_delivery: int,
        state: State | None = None,
        error: str | None = None,
    ) -> None:
        now = self.clock()
        if state is None:
            state = _initial_state(msg, now)
        text = decode_short_message(msg.data_coding, body)
        values = list(msg.field_values())
        values[_REG_DLR_INDEX] = registered_delivery
        final_at = now if lifecycle.is_final(state) else None
        conn.execute(
            _INSERT_MESSAGE,
            (mid, msg.esme, state.value, now, now, *values, body, text, esme_parts, receipt_id,
             error, final_at),
        )
        if not lifecycle.is_final(state):
            self.active_count += 1
            if self.on_new_message is not None and state is not State.ACCEPTED:
                entry = QueueEntry(
                    id=mid, route=msg.route, priority=msg.priority, state=state,
                    schedule_at=msg.schedule_at, expire_at=msg.expire_at,
                )  # fmt: skip
                hook = self.on_new_message
                self.after_commit(lambda: hook(entry))
        else:
            conn.execute(
                "INSERT INTO events (message, at, state, detail) VALUES (?,?,?,?)",
                (mid, now, state.value, error or ""),
            )

    def accept_multi_nowait(
        self, msgs: list[NewMessage], unsuccess: list[dict[str, Any]], done: Done
    ) -> None:
        """submit_multi: one message per destination, all answering to the id of the first
        (the one message_id the ESME is given, and so the id of every receipt)."""

        def op(conn: sqlite3.Connection) -> tuple[str, list[dict[str, Any]]]:
            first = self._next_id()
            self._insert_message(conn, first, msgs[0], msgs[0].body, 1, first, msgs[0].registered_delivery)
            for m in msgs[1:]:
                self._insert_message(conn, self._next_id(), m, m.body, 1, first, m.registered_delivery)
            return format_id(first), unsuccess

        self.write_nowait(op, done)

    def _insert_whole(self, conn: sqlite3.Connection, msg: NewMessage) -> Accepted:
        mid = self._next_id()
        self._insert_message(conn, mid, msg, msg.body, 1, None, msg.registered_delivery)
        return Accepted(format_id(mid), True)

    def _insert_part(self, conn: sqlite3.Connection, msg: NewMessage) -> Accepted:
        assert msg.concat is not None
        _ref, total, seq, _bits = msg.concat
        key = msg.concat_key()
        digest = _part_digest(msg.data_coding, msg.body)
        held = conn.execute(
            "SELECT id, fields, body FROM partials WHERE esme=? AND concat_key=? AND seq=?",
            (msg.esme, key, seq),
        ).fetchone()
        if held is not None and _part_digest(_fields_from_json(held[1])["data_coding"], held[2]) == digest:
            # The same part again (a client retry after a lost resp): same id, stored once.
            self.resent_parts += 1
            return Accepted(format_id(held[0]), False, duplicate=True)
        seen = conn.execute(
            "SELECT id FROM assembled_parts WHERE esme=? AND concat_key=? AND seq=? "
            "AND digest=? AND assembled_at>=? ORDER BY assembled_at DESC, id DESC LIMIT 1",
            (msg.esme, key, seq, digest, self.clock() - self.partial_timeout),
        ).fetchone()
        if seen is not None:
            # A resend of a part of a message already assembled (even when the next message
            # with this reference has begun): answer as the first time.
            self.resent_parts += 1
            return Accepted(format_id(seen[0]), False, duplicate=True)
        if held is not None:
            # Other content under a waiting group's key and seq: a new message reused the
            # reference while the old one still misses parts. End the old one now rather than
            # join two messages (or drop this one as a "duplicate").
            self._expire_group(conn, msg.esme, key, "superseded: a new message reused its "
                               "concatenation reference before the missing parts came")
            self.superseded_groups += 1
        pid = self._next_id()
        conn.execute(
            "INSERT INTO partials (id, esme, concat_key, seq, total, received_at, fields, body) "
            "VALUES (?,?,?,?,?,?,?,?)",
            (pid, msg.esme, key, seq, total, self.clock(), _fields_json(msg), msg.body),
        )
        self.active_count += 1
        rows = conn.execute(
            "SELECT id, seq, fields, body FROM partials WHERE esme=? AND concat_key=? ORDER BY seq",
            (msg.esme, key),
        ).fetchall()
        if len(rows) < total:
            return Accepted(format_id(pid), False)
        self._assemble(conn, msg.esme, key, rows, total, complete=True)
        return Accepted(format_id(pid), True)

    def _expire_group(self, conn: sqlite3.Connection, esme: str, key: str, why: str) -> int:
        """End a waiting group now as one EXPIRED message holding what arrived."""
        rows = conn.execute(
            "SELECT id, seq, fields, body, total FROM partials "
            "WHERE esme=? AND concat_key=? ORDER BY seq",
            (esme, key),
        ).fetchall()
        mid = self._assemble(conn, esme, key, [r[:4] for r in rows], rows[0][4], complete=False, why=why)
        # Every part id the ESME was given now ends EXPIRED: its receipt goes with it.
        self._queue_receipts(conn, self._get_record(conn, mid))
        return mid

    def _assemble(
        self,
        conn: sqlite3.Connection,
        esme: str,
        key: str,
        rows: list[tuple[Any, ...]],
        total: int,
        *,
        complete: bool,
        why: str = "",
    ) -> int:
        """Turn stored parts into one logical message (in the caller's transaction)."""
        first = _fields_from_json(rows[0][2])
        fields = [_fields_from_json(r[2]) for r in rows]
        base = NewMessage(esme=esme, body=b"", **first)
        body = _joined_body(base, [(f["data_coding"], r[3]) for f, r in zip(fields, rows)])
        # The logical id is the id of the lowest part present (part 1 when complete).
        mid = rows[0][0]
        reg = 0
        receipt_id = None
        for r, f in zip(rows, fields):
            if f["registered_delivery"] and receipt_id is None:
                receipt_id = r[0]
            reg |= f["registered_delivery"]
        state = None if complete else State.EXPIRED
        error = None
        if not complete:
            error = f"incomplete: {len(rows)} of {total} parts arrived" + (f"; {why}" if why else "")
        self._insert_message(conn, mid, base, body, total, receipt_id, reg, state, error)
        conn.executemany(
            "INSERT INTO aliases (alias, message) VALUES (?, ?)",
            [(r[0], mid) for r in rows[1:]],
        )
        now = self.clock()
        conn.executemany(
            "INSERT INTO assembled_parts (id, esme, concat_key, seq, digest, assembled_at) "
            "VALUES (?,?,?,?,?,?)",
            [(r[0], esme, key, r[1], _part_digest(f["data_coding"], r[3]), now) for r, f in zip(rows, fields)],
        )
        conn.execute("DELETE FROM partials WHERE esme=? AND concat_key=?", (esme, key))
        self.active_count -= len(rows)
        return mid

    async def expire_partials(self) -> int:
        """Parts whose siblings did not arrive within partial_timeout become EXPIRED messages."""
        cutoff = self.clock() - self.partial_timeout

        def op(conn: sqlite3.Connection) -> int:
            groups = conn.execute(
                "SELECT DISTINCT esme, concat_key FROM partials WHERE received_at < ?", (cutoff,)
            ).fetchall()
            for esme, key in groups:
                self._expire_group(conn, esme, key, "")
            # Resent parts are recognised for partial_timeout after their group was assembled.
            conn.execute("DELETE FROM assembled_parts WHERE assembled_at < ?", (cutoff,))
            return len(groups)

        n = await self.write(op)
        if n:
            log.warning("%d long messages expired waiting for missing parts", n)
        return n

    # -- lookups --------------------------------------------------------------------------------

    @staticmethod
    def _resolve(conn: sqlite3.Connection, n: int) -> int:
        row = conn.execute("SELECT message FROM aliases WHERE alias=?", (n,)).fetchone()
        return row[0] if row else n

    async def get(self, message_id: str, esme: str | None = None) -> MessageRecord | None:
        """The logical message behind a message id (any part's id works); None if unknown or
        owned by another ESME."""
        n = parse_id(message_id)
        if n is None:
            return None

        def fn(conn: sqlite3.Connection) -> MessageRecord | None:
            mid = self._resolve(conn, n)
            row = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM messages WHERE id=?", (mid,)
            ).fetchone()
            if row is None:
                # A part still waiting for its siblings: report it as accepted.
                part = conn.execute(
                    "SELECT id, esme, received_at, fields, body FROM partials WHERE id=?", (n,)
                ).fetchone()
                if part is None:
                    return None
                f = _fields_from_json(part[3])
                return MessageRecord(
                    id=part[0], message_id=format_id(part[0]), esme=part[1],
                    state=State.ACCEPTED, created_at=part[2], updated_at=part[2],
                    source_addr=f["source_addr"], destination_addr=f["destination_addr"],
                    service_type=f["service_type"], data_coding=f["data_coding"],
                    registered_delivery=f["registered_delivery"], priority=f["priority"],
                    schedule_at=f["schedule_at"], expire_at=f["expire_at"], text=None,
                    body=part[4], esme_parts=1, error="waiting for the other parts",
                    final_at=None, receipt_id=None,
                )  # fmt: skip
            return _record(row)

        rec = await self.read(fn)
        if rec is None or (esme is not None and rec.esme != esme):
            return None
        return rec

    async def part_ids(self, mid: int) -> tuple[int, ...]:
        """The ids the ESME was given for the other parts of long message ``mid``."""

        def fn(conn: sqlite3.Connection) -> tuple[int, ...]:
            rows = conn.execute("SELECT alias FROM aliases WHERE message=? ORDER BY alias", (mid,))
            return tuple(r[0] for r in rows)

        return await self.read(fn)

    async def events(self, message_id: str) -> list[Event]:
        n = parse_id(message_id)
        if n is None:
            return []

        def fn(conn: sqlite3.Connection) -> list[Event]:
            mid = self._resolve(conn, n)
            rows = conn.execute(
                "SELECT at, state, detail FROM events WHERE message=? ORDER BY id", (mid,)
            ).fetchall()
            return [Event(*r) for r in rows]

        return await self.read(fn)

    # -- state changes --------------------------------------------------------------------------

    def _set_state(
        self,
        conn: sqlite3.Connection,
        mid: int,
        current: State,
        new: State,
        detail: str = "",
        **columns: Any,
    ) -> None:
        lifecycle.check(current, new)
        now = self.clock()
        sets = ["state=?", "updated_at=?"]
        values: list[Any] = [new.value, now]
        if lifecycle.is_final(new):
            sets.append("final_at=?")
            values.append(now)
        for k, v in columns.items():
            sets.append(f"{k}=?")
            values.append(v)
        values.append(mid)
        conn.execute(f"UPDATE messages SET {', '.join(sets)} WHERE id=?", values)
        conn.execute(
            "INSERT INTO events (message, at, state, detail) VALUES (?,?,?,?)",
            (mid, now, new.value, detail),
        )
        if lifecycle.is_final(new) and not lifecycle.is_final(current):
            self.active_count -= 1

    async def transition(
        self, message_id: str, new: State, detail: str = "", **columns: Any
    ) -> MessageRecord:
        """Move a message to a new state (checked against the lifecycle table) and commit."""
        n = parse_id(message_id)
        if n is None:
            raise KeyError(message_id)

        def op(conn: sqlite3.Connection) -> MessageRecord:
            mid = self._resolve(conn, n)
            row = conn.execute("SELECT state FROM messages WHERE id=?", (mid,)).fetchone()
            if row is None:
                raise KeyError(message_id)
            self._set_state(conn, mid, State(row[0]), new, detail, **columns)
            rec = self._get_record(conn, mid)
            if lifecycle.is_final(new):
                self._queue_receipts(conn, rec)
            return rec

        return await self.write(op)

    async def cancel(
        self,
        esme: str,
        *,
        message_id: str = "",
        source_addr: str = "",
        destination_addr: str = "",
        service_type: str = "",
    ) -> int:
        """cancel_sm: returns how many messages were cancelled (0 -> the caller answers
        ESME_RCANCELFAIL). Raises KeyError for an unknown message id."""

        def op(conn: sqlite3.Connection) -> int:
            if message_id:
                n = parse_id(message_id)
                if n is None:
                    raise KeyError(message_id)
                mid = self._resolve(conn, n)
                row = conn.execute(
                    "SELECT id, state, source_addr, esme FROM messages WHERE id=?", (mid,)
                ).fetchone()
                if row is None:
                    if conn.execute("SELECT 1 FROM partials WHERE id=? AND esme=?", (n, esme)).fetchone():
                        return 0  # a part of an incomplete long message cannot be cancelled alone
                    raise KeyError(message_id)
                if row[3] != esme:
                    raise KeyError(message_id)
                # A submit_multi's id stands for every destination of it.
                candidates = [
                    (r[0], r[1])
                    for r in self._group(conn, mid, esme, "id, state, source_addr")
                    if not source_addr or r[2] == source_addr
                ]
            else:
                q = "SELECT id, state FROM messages WHERE esme=? AND destination_addr=?"
                args: list[Any] = [esme, destination_addr]
                if source_addr:
                    q += " AND source_addr=?"
                    args.append(source_addr)
                if service_type:
                    q += " AND service_type=?"
                    args.append(service_type)
                candidates = conn.execute(q, args).fetchall()
            done = 0
            for mid, state in candidates:
                if State(state) in lifecycle.CANCELLABLE:
                    self._set_state(conn, mid, State(state), State.DELETED, "cancel_sm")
                    # DELETED is final: its receipt (stat DELETED) commits with it.
                    self._queue_receipts(conn, self._get_record(conn, mid))
                    done += 1
            return done

        return await self.write(op)

    async def replace(
        self,
        esme: str,
        message_id: str,
        *,
        source_addr: str,
        body: bytes,
        schedule_at: float | None,
        expire_at: float | None,
        registered_delivery: int,
    ) -> bool:
        """replace_sm: True if replaced; False if the message can no longer be replaced.
        Raises KeyError for an unknown id."""
        n = parse_id(message_id)
        if n is None:
            raise KeyError(message_id)

        def op(conn: sqlite3.Connection) -> bool:
            mid = self._resolve(conn, n)
            owner = conn.execute("SELECT esme FROM messages WHERE id=?", (mid,)).fetchone()
            if owner is None or owner[0] != esme:
                raise KeyError(message_id)
            replaced = False
            # A submit_multi's id stands for every destination: each one still waiting is
            # replaced (those already with a device keep what they were sent).
            for row in self._group(
                conn, mid, esme,
                "id, state, source_addr, data_coding, esme_parts, schedule_at, expire_at, "
                "next_attempt_at, route, priority",
            ):  # fmt: skip
                if self._replace_one(conn, row, source_addr, body, schedule_at, expire_at, registered_delivery):
                    replaced = True
            return replaced

        return await self.write(op)

    def _replace_one(
        self, conn: sqlite3.Connection, row: tuple[Any, ...], source_addr: str, body: bytes,
        schedule_at: float | None, expire_at: float | None, registered_delivery: int,
    ) -> bool:
        mid, state, src, coding, esme_parts, old_schedule, old_expire, next_attempt, route, priority = row
        state = State(state)
        if state not in lifecycle.REPLACEABLE or esme_parts != 1:
            return False
        if source_addr and src != source_addr:
            return False
        now = self.clock()
        schedule = schedule_at if schedule_at is not None else old_schedule
        expire = expire_at if expire_at is not None else old_expire
        if state is State.RETRY_WAIT and schedule is not None and next_attempt is not None:
            next_attempt = max(next_attempt, schedule)
        conn.execute(
            "UPDATE messages SET body=?, text=?, schedule_at=?, expire_at=?, registered_delivery=?, "
            "next_attempt_at=?, updated_at=? WHERE id=?",
            (body, decode_short_message(coding, body), schedule, expire, registered_delivery,
             next_attempt, now, mid),
        )  # fmt: skip
        # A new schedule_delivery_time decides whether it waits (again) or may go now.
        new = state
        if state is State.QUEUED and schedule is not None and schedule > now:
            new = State.SCHEDULED
        elif state is State.SCHEDULED and (schedule is None or schedule <= now):
            new = State.QUEUED
        if new is not state:
            self._set_state(conn, mid, state, new, "replace_sm")
        else:
            conn.execute(
                "INSERT INTO events (message, at, state, detail) VALUES (?,?,?,?)",
                (mid, now, state.value, "replace_sm"),
            )
        if new is not State.ACCEPTED and self.on_new_message is not None:
            # The scheduler learns the new due time (a timer set for the old one finds the
            # message not due yet and leaves it: release_due).
            entry = QueueEntry(mid, route, priority, new, schedule, expire, next_attempt)
            hook = self.on_new_message
            self.after_commit(lambda: hook(entry))
        return True

    @staticmethod
    def _group(conn: sqlite3.Connection, mid: int, esme: str, columns: str) -> list[tuple[Any, ...]]:
        """``columns`` of message ``mid`` and, when it is the first destination of a
        submit_multi (the id its ESME was given), of every other destination too."""
        return conn.execute(
            f"SELECT {columns} FROM messages WHERE (id=? OR receipt_id=?) AND esme=? ORDER BY id",
            (mid, mid, esme),
        ).fetchall()

    async def get_group(self, message_id: str, esme: str) -> list[MessageRecord]:
        """Every message a message id given to ``esme`` stands for: one, or each destination
        of a submit_multi (empty if unknown or another ESME's). A part still waiting for its
        siblings is reported as get() does."""
        n = parse_id(message_id)
        if n is None:
            return []

        def fn(conn: sqlite3.Connection) -> list[MessageRecord]:
            mid = self._resolve(conn, n)
            return [_record(r) for r in self._group(conn, mid, esme, _RECORD_COLUMNS)]

        found = await self.read(fn)
        if found:
            return found
        one = await self.get(message_id, esme)
        return [one] if one is not None else []

    # -- the device side (scheduler) ------------------------------------------------------------

    async def load_active(self) -> list[QueueEntry]:
        """Every message that is not final, for the scheduler's start (crash recovery too)."""
        finals = tuple(s.value for s in lifecycle.FINAL)
        marks = ",".join("?" * len(finals))

        def fn(conn: sqlite3.Connection) -> list[QueueEntry]:
            rows = conn.execute(
                "SELECT id, route, priority, state, schedule_at, expire_at, next_attempt_at, "
                f"device, channel, attempts FROM messages WHERE state NOT IN ({marks}) ORDER BY id",
                finals,
            ).fetchall()
            return [
                QueueEntry(r[0], r[1], r[2], State(r[3]), r[4], r[5], r[6], r[7], r[8], r[9])
                for r in rows
            ]

        return await self.read(fn)

    async def route_accepted(
        self, mid: int, route: str | None, detail: str = "", *,
        outbox: Callable[[MessageRecord], list[tuple[str, str, str, float]]] | None = None,
    ) -> MessageRecord:
        """Route a message that was stored without one: QUEUED/SCHEDULED, or REJECTED (with its
        receipt, ``outbox(record)`` or the store's final_receipts, in the same transaction)."""

        def op(conn: sqlite3.Connection) -> MessageRecord:
            row = conn.execute(
                "SELECT state, schedule_at, priority, expire_at FROM messages WHERE id=?", (mid,)
            ).fetchone()
            if row is None:
                raise KeyError(mid)
            now = self.clock()
            if route is None:
                new = State.REJECTED
            elif row[1] is not None and row[1] > now:
                new = State.SCHEDULED
            else:
                new = State.QUEUED
            self._set_state(conn, mid, State(row[0]), new, detail, route=route)
            if new is not State.REJECTED and self.on_new_message is not None:
                entry = QueueEntry(mid, route, row[2], new, row[1], row[3])
                hook = self.on_new_message
                self.after_commit(lambda: hook(entry))
            rec = self._get_record(conn, mid)
            if new is State.REJECTED:
                self._queue_receipts(conn, rec, outbox)
            return rec

        return await self.write(op)

    def _get_record(self, conn: sqlite3.Connection, mid: int) -> MessageRecord:
        row = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM messages WHERE id=?", (mid,)).fetchone()
        if row is None:
            raise KeyError(mid)
        rec = _record(row)
        if rec.esme_parts > 1:
            parts = conn.execute("SELECT alias FROM aliases WHERE message=? ORDER BY alias", (mid,))
            rec = attrs.evolve(rec, part_ids=tuple(r[0] for r in parts))
        return rec

    def _queue_receipts(
        self, conn: sqlite3.Connection, rec: MessageRecord,
        outbox: Callable[[MessageRecord], list[tuple[str, str, str, float]]] | None = None,
    ) -> None:
        """Queue the receipts for ``rec`` in the caller's transaction: ``outbox(rec)`` when the
        caller knows the outcome, else (for a final state) the store's final_receipts."""
        if outbox is None:
            if self.final_receipts is None or not lifecycle.is_final(rec.state):
                return
            outbox = self.final_receipts
        for esme, kind, payload, expire_at in outbox(rec):
            self._add_outbox(conn, esme, kind, rec.id, payload, expire_at)

    async def begin_part(
        self, mid: int, seq: int, total: int, device: str, channel: str, pre_ref: str | None
    ) -> None:
        """Durably note that a device call for part ``seq`` is about to start. A crash from here
        on leaves an ambiguous send that recovery reconciles through ``pre_ref``."""

        def op(conn: sqlite3.Connection) -> None:
            row = conn.execute("SELECT state FROM messages WHERE id=?", (mid,)).fetchone()
            if row is None:
                raise KeyError(mid)
            state = State(row[0])
            columns = {"device": device, "channel": channel}
            if state is State.SUBMITTING:
                conn.execute(
                    "UPDATE messages SET device=?, channel=?, updated_at=? WHERE id=?",
                    (device, channel, self.clock(), mid),
                )
            else:
                self._set_state(conn, mid, state, State.SUBMITTING, f"part {seq}/{total} on {device}:{channel}", **columns)
            was = conn.execute("SELECT state FROM parts WHERE message=? AND seq=?", (mid, seq)).fetchone()
            lifecycle.PART.check(was[0] if was else None, lifecycle.PartState.SUBMITTING)
            conn.execute(
                "INSERT OR REPLACE INTO parts (message, seq, total, state, device, channel, pre_ref, "
                "ref, error, started_at) VALUES (?,?,?,?,?,?,?,NULL,NULL,?)",
                (mid, seq, total, "submitting", device, channel, pre_ref, self.clock()),
            )

        await self.write(op)

    async def update_part(self, mid: int, seq: int, state: str, *, ref: str | None = None,
                          error: str | None = None) -> None:
        """Record what the device said about one part (sent with its ref, or its final status)."""

        def op(conn: sqlite3.Connection) -> None:
            now = self.clock()
            was = conn.execute("SELECT state FROM parts WHERE message=? AND seq=?", (mid, seq)).fetchone()
            if was is None:
                raise KeyError((mid, seq))
            lifecycle.PART.check(was[0], state)
            if state == "sent":
                conn.execute(
                    "UPDATE parts SET state=?, ref=?, sent_at=? WHERE message=? AND seq=?",
                    (state, ref, now, mid, seq),
                )
            else:
                conn.execute(
                    "UPDATE parts SET state=?, error=coalesce(?, error), ref=coalesce(?, ref), "
                    "done_at=? WHERE message=? AND seq=?",
                    (state, error, ref, now, mid, seq),
                )

        await self.write(op)

    async def parts(self, mid: int) -> list[PartRecord]:
        def fn(conn: sqlite3.Connection) -> list[PartRecord]:
            rows = conn.execute(
                "SELECT message, seq, total, state, device, channel, pre_ref, ref, error, "
                "started_at, sent_at, done_at FROM parts WHERE message=? ORDER BY seq",
                (mid,),
            ).fetchall()
            return [PartRecord(*r) for r in rows]

        return await self.read(fn)

    async def channel_starts(self, since: float) -> list[tuple[str, str, float]]:
        """(device, channel, started_at) of every device call since ``since``: the scheduler
        rebuilds its per-channel cap counters from this after a restart."""

        def fn(conn: sqlite3.Connection) -> list[tuple[str, str, float]]:
            return conn.execute(
                "SELECT device, channel, started_at FROM parts WHERE started_at >= ? "
                "ORDER BY started_at",
                (since,),
            ).fetchall()

        return await self.read(fn)

    async def move(
        self,
        mid: int,
        new: State,
        detail: str = "",
        *,
        outbox: Callable[[MessageRecord], list[tuple[str, str, str, float]]] | None = None,
        **columns: Any,
    ) -> MessageRecord:
        """Move a message to ``new`` (checked against the lifecycle table). ``outbox(record)``
        may return deliver_sm rows ``(esme, kind, payload, expire_at)`` to queue in the SAME
        transaction: a final state and its receipt are committed together or not at all.
        Without ``outbox``, a final state gets the store's final_receipts."""
        return await self.write(lambda conn: self._move(conn, mid, new, detail, outbox, columns))

    def _move(
        self, conn: sqlite3.Connection, mid: int, new: State, detail: str,
        outbox: Callable[[MessageRecord], list[tuple[str, str, str, float]]] | None,
        columns: dict[str, Any],
    ) -> MessageRecord:
        row = conn.execute("SELECT state FROM messages WHERE id=?", (mid,)).fetchone()
        if row is None:
            raise KeyError(mid)
        self._set_state(conn, mid, State(row[0]), new, detail, **columns)
        rec = self._get_record(conn, mid)
        self._queue_receipts(conn, rec, outbox)
        if new in lifecycle.ROUTED_WAITING and self.on_new_message:
            r = conn.execute(
                "SELECT route, priority, schedule_at, expire_at, next_attempt_at, device, "
                "channel, attempts FROM messages WHERE id=?",
                (mid,),
            ).fetchone()
            entry = QueueEntry(mid, r[0], r[1], new, r[2], r[3], r[4], r[5], r[6], r[7])
            hook = self.on_new_message
            self.after_commit(lambda: hook(entry))
        return rec

    async def release_due(self, mid: int, now: float, detail: str) -> MessageRecord | None:
        """A timer fired: a SCHEDULED or RETRY_WAIT message becomes QUEUED, unless its stored
        due time is later than ``now`` (replace_sm moved it; a timer for the new time is set),
        then None and nothing changes."""

        def op(conn: sqlite3.Connection) -> MessageRecord | None:
            row = conn.execute(
                "SELECT state, schedule_at, next_attempt_at FROM messages WHERE id=?", (mid,)
            ).fetchone()
            if row is None:
                raise KeyError(mid)
            due = {State.SCHEDULED.value: row[1], State.RETRY_WAIT.value: row[2]}.get(row[0])
            if due is not None and due > now:
                return None
            return self._move(conn, mid, State.QUEUED, detail, None, {})

        return await self.write(op)

    async def add_outbox(self, esme: str, kind: str, message: int | None, payload: str,
                         expire_at: float) -> None:
        await self.write(lambda conn: self._add_outbox(conn, esme, kind, message, payload, expire_at))

    def _add_outbox(self, conn: sqlite3.Connection, esme: str, kind: str, message: int | None,
                    payload: str, expire_at: float) -> None:
        conn.execute(
            "INSERT INTO outbox (esme, kind, message, created_at, expire_at, payload) "
            "VALUES (?,?,?,?,?,?)",
            (esme, kind, message, self.clock(), expire_at, payload),
        )
        if self.on_outbox is not None:
            hook = self.on_outbox
            self.after_commit(lambda: hook(esme))

    async def pending_outbox(self, esme: str, after_id: int = 0, limit: int = 200) -> list[OutboxItem]:
        def fn(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT id, esme, kind, message, created_at, expire_at, payload, attempts "
                "FROM outbox WHERE esme=? AND delivered_at IS NULL AND id > ? "
                "AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY id LIMIT ?",
                (esme, after_id, self.clock(), limit),
            ).fetchall()
            return [OutboxItem(*r) for r in rows]

        return await self.read(fn)

    async def outbox_esmes(self) -> list[str]:
        def fn(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT esme FROM outbox WHERE delivered_at IS NULL")
            return [r[0] for r in rows]

        return await self.read(fn)

    async def outbox_stats(self) -> dict[tuple[str, str], tuple[int, float | None]]:
        """{(esme, kind): (waiting, oldest created_at)} for metrics."""

        def fn(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[int, float | None]]:
            rows = conn.execute(
                "SELECT esme, kind, count(*), min(created_at) FROM outbox "
                "WHERE delivered_at IS NULL GROUP BY esme, kind"
            )
            return {(r[0], r[1]): (r[2], r[3]) for r in rows}

        return await self.read(fn)

    def outbox_delivered_nowait(self, item_id: int, done: Done) -> None:
        def op(conn: sqlite3.Connection) -> None:
            now = self.clock()
            conn.execute(
                "UPDATE outbox SET delivered_at=?, attempts=attempts+1 WHERE id=?",
                (now, item_id),
            )
            row = conn.execute("SELECT kind, message FROM outbox WHERE id=?", (item_id,)).fetchone()
            if row is not None and row[0] == "mo" and row[1] is not None:
                # An inbound message is delivered once the ESME took every one of its parts.
                conn.execute(
                    f"UPDATE inbound SET state='{_IN_DELIVERED[1]}', done_at=? WHERE mo=? AND state='{_IN_DELIVERED[0]}' "
                    "AND NOT EXISTS (SELECT 1 FROM outbox WHERE kind='mo' AND message=? "
                    "AND delivered_at IS NULL)",
                    (now, row[1], row[1]),
                )

        self.write_nowait(op, done)

    def outbox_retry_nowait(self, item_id: int, next_try_at: float, done: Done) -> None:
        """The ESME did not take the deliver_sm (no answer, or a transient error): one more
        attempt counted, the next not before ``next_try_at``."""
        self.write_nowait(
            lambda conn: conn.execute(
                "UPDATE outbox SET attempts=attempts+1, next_try_at=? WHERE id=?", (next_try_at, item_id)
            ),
            done,
        )

    def outbox_refused_nowait(self, item_id: int, status: int, done: Done) -> None:
        """The ESME refused the deliver_sm for good (``status``): the row is done, with the
        status kept; an inbound message one of whose deliver_sm was refused ends ``refused``."""

        def op(conn: sqlite3.Connection) -> None:
            now = self.clock()
            conn.execute(
                "UPDATE outbox SET delivered_at=?, refused_status=?, attempts=attempts+1 WHERE id=?",
                (now, status, item_id),
            )
            row = conn.execute("SELECT kind, message FROM outbox WHERE id=?", (item_id,)).fetchone()
            if row is not None and row[0] == "mo" and row[1] is not None:
                conn.execute(
                    f"UPDATE inbound SET state='{_IN_REFUSED[1]}', done_at=? WHERE mo=? AND state='{_IN_REFUSED[0]}'",
                    (now, row[1]),
                )

        self.write_nowait(op, done)

    async def refused_outbox(self, esme: str | None = None) -> list[tuple[OutboxItem, int]]:
        """Deliver_sm refused for good, with the status the ESME answered (admin, tests)."""

        def fn(conn: sqlite3.Connection) -> list[tuple[OutboxItem, int]]:
            rows = conn.execute(
                "SELECT id, esme, kind, message, created_at, expire_at, payload, attempts, "
                "refused_status FROM outbox WHERE refused_status IS NOT NULL "
                "AND (? IS NULL OR esme=?) ORDER BY id",
                (esme, esme),
            ).fetchall()
            return [(OutboxItem(*r[:8]), r[8]) for r in rows]

        return await self.read(fn)

    def outbox_attempt_nowait(self, item_id: int, done: Done) -> None:
        self.write_nowait(
            lambda conn: conn.execute("UPDATE outbox SET attempts=attempts+1 WHERE id=?", (item_id,)),
            done,
        )

    async def expire_outbox(self) -> int:
        """Drop deliver_sm that waited longer than their retention (counted by the caller)."""

        def op(conn: sqlite3.Connection) -> int:
            now = self.clock()
            mos = [
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT message FROM outbox WHERE kind='mo' AND delivered_at IS NULL "
                    "AND expire_at < ?",
                    (now,),
                )
            ]
            cur = conn.execute(
                "UPDATE outbox SET delivered_at=-1 WHERE delivered_at IS NULL AND expire_at < ?",
                (now,),
            )
            for mo in mos:
                conn.execute(
                    f"UPDATE inbound SET state='{_IN_UNCLAIMED[1]}', done_at=? WHERE mo=? AND state='{_IN_UNCLAIMED[0]}'",
                    (now, mo),
                )
            return cur.rowcount

        return await self.write(op)

    async def expire_waiting(self, now: float, outbox: Callable[[MessageRecord], list[tuple[str, str, str, float]]]) -> list[int]:
        """Messages still waiting for a channel past their validity become EXPIRED (with their
        receipts, in the same transaction)."""
        waiting = tuple(s.value for s in lifecycle.WAITING)

        def op(conn: sqlite3.Connection) -> list[int]:
            rows = conn.execute(
                f"SELECT id, state FROM messages WHERE state IN ({','.join('?' * len(waiting))}) "
                "AND expire_at IS NOT NULL AND expire_at < ? LIMIT 1000",
                (*waiting, now),
            ).fetchall()
            for mid, state in rows:
                self._set_state(conn, mid, State(state), State.EXPIRED, "validity period ended")
                self._queue_receipts(conn, self._get_record(conn, mid), outbox)
            return [r[0] for r in rows]

        return await self.write(op)

    async def ids_in_state(self, state: State, limit: int = 1000) -> list[str]:
        def fn(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT id FROM messages WHERE state=? ORDER BY id LIMIT ?", (state.value, limit)
            ).fetchall()
            return [format_id(r[0]) for r in rows]

        return await self.read(fn)

    async def count_by_state(self) -> dict[str, int]:
        def fn(conn: sqlite3.Connection) -> dict[str, int]:
            return dict(conn.execute("SELECT state, count(*) FROM messages GROUP BY state"))

        return await self.read(fn)

    async def find_by_number(self, number: str, limit: int = 50) -> list[MessageRecord]:
        """Messages to ``number``, newest first (admin lookup). ``+4917...``, ``4917...`` and
        ``004917...`` find each other: the ESME's spelling of a number is kept as it was sent."""
        digits = number.strip().lstrip("+")
        if digits.startswith("00"):
            digits = digits[2:]
        spellings = (number.strip(), digits, "+" + digits, "00" + digits)

        def fn(conn: sqlite3.Connection) -> list[MessageRecord]:
            rows = conn.execute(
                f"SELECT {_RECORD_COLUMNS} FROM messages WHERE destination_addr IN (?,?,?,?) "
                "ORDER BY id DESC LIMIT ?",
                (*spellings, limit),
            ).fetchall()
            return [_record(r) for r in rows]

        return await self.read(fn)

    async def reroute_waiting(
        self, routes: set[str], route_for: Callable[[str, str], str | None]
    ) -> list[tuple[int, str | None, str | None]]:
        """After a config reload: every message waiting for a channel (queued, scheduled,
        retry_wait) whose route is not in ``routes`` gets ``route_for(esme, destination)``,
        with an event saying so. Returns (id, old route, new route) for each; a new route of
        None (nothing matches) is left for the caller to reject."""
        waiting = tuple(s.value for s in lifecycle.ROUTED_WAITING)

        def op(conn: sqlite3.Connection) -> list[tuple[int, str | None, str | None]]:
            now = self.clock()
            out: list[tuple[int, str | None, str | None]] = []
            rows = conn.execute(
                "SELECT id, esme, destination_addr, route, state FROM messages WHERE state IN (?,?,?)",
                waiting,
            ).fetchall()
            for mid, esme, dest, old, state in rows:
                if old in routes:
                    continue
                new = route_for(esme, dest)
                out.append((mid, old, new))
                if new is not None:
                    conn.execute("UPDATE messages SET route=?, updated_at=? WHERE id=?", (new, now, mid))
                    conn.execute(
                        "INSERT INTO events (message, at, state, detail) VALUES (?,?,?,?)",
                        (mid, now, state, f"route {old!r} removed by a config reload; now route {new!r}"),
                    )
            return out

        return await self.write(op)

    # -- inbound SMS ----------------------------------------------------------------------------

    async def known_inbound(self, device: str, keys: list[str]) -> set[str]:
        """The device_keys among ``keys`` that are already stored for ``device``."""

        def fn(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                rows = conn.execute(
                    "SELECT device_key FROM inbound WHERE device=? AND device_key IN "
                    f"({','.join('?' * len(chunk))})",
                    (device, *chunk),
                )
                found.update(r[0] for r in rows)
            return found

        return await self.read(fn)

    async def add_inbound(self, device: str, items: list[Any], policy: InboundPolicy) -> InboundResult:
        """Commit inbox entries of ``device`` (``InboundSms``-shaped). Entries already stored are
        counted as duplicates; a complete message (a single SMS, or the last missing part of a
        long one) has its deliver_sm queued in the same transaction."""

        def op(conn: sqlite3.Connection) -> InboundResult:
            res = InboundResult()
            now = self.clock()
            for sms in items:
                # One entry that cannot be stored (a bug) must not keep the others out.
                hooks = len(self._op_hooks)
                conn.execute("SAVEPOINT inbound_entry")
                one = InboundResult()
                try:
                    self._insert_inbound(conn, device, sms, now, policy, one)
                    res.merge(one)
                except Exception as exc:
                    conn.execute("ROLLBACK TO inbound_entry")
                    del self._op_hooks[hooks:]
                    res.failed.append((sms.device_key, f"{type(exc).__name__}: {exc}"))
                conn.execute("RELEASE inbound_entry")
            return res

        return await self.write(op)

    def _insert_inbound(
        self, conn: sqlite3.Connection, device: str, sms: Any, now: float, policy: InboundPolicy,
        res: InboundResult,
    ) -> None:
        recipient = policy.recipient(device, sms.channel)
        concat = _inbound_concat(sms)
        ref, total, seq = concat if concat is not None else (None, None, None)
        cur = conn.execute(
            "INSERT OR IGNORE INTO inbound (device, channel, sender, recipient, text, received_at, "
            "device_key, concat_ref, concat_total, concat_seq, esme, state, created_at) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?,'pending',?)",
            (
                device, sms.channel, sms.sender, recipient, sms.text,
                sms.received_at.timestamp(), sms.device_key, ref, total, seq,
                policy.route(device, sms.channel, recipient), now,
            ),
        )  # fmt: skip
        if cur.rowcount == 0:
            res.duplicates += 1
            return
        iid = cur.lastrowid
        assert iid is not None
        res.stored.append(iid)
        if concat is None:
            self._complete_mo(conn, [iid], 1, False, policy, res)
            return
        if conn.execute(
            "SELECT 1 FROM inbound WHERE device=? AND channel=? AND sender=? AND concat_ref=? "
            "AND concat_total=? AND concat_seq=? AND text=? AND mo IS NOT NULL AND id<>? "
            "AND created_at>=? LIMIT 1",
            (device, sms.channel, sms.sender, ref, total, seq, sms.text, iid, now - INBOUND_RESEND_WINDOW),
        ).fetchone():
            # A part of a message already built, handed over again (the network resent it):
            # delivering it would give the ESME a second, incomplete copy.
            conn.execute("UPDATE inbound SET state='duplicate', done_at=? WHERE id=?", (now, iid))
            res.duplicates += 1
            return
        group = self._group_rows(conn, iid)
        if any(r[1] == seq and r[0] != iid for r in group):
            # The same part number again under another inbox entry (the network resent it).
            conn.execute(f"UPDATE inbound SET state='{_IN_DUPLICATE[1]}', done_at=? WHERE id=?", (now, iid))
            res.duplicates += 1
            return
        if len({r[1] for r in group}) >= (total or 1):
            self._complete_mo(conn, [r[0] for r in group], total or 1, False, policy, res)

    @staticmethod
    def _group_rows(conn: sqlite3.Connection, iid: int) -> list[tuple[int, int]]:
        """(id, seq) of the parts waiting together with row ``iid`` (itself included)."""
        return conn.execute(
            "SELECT g.id, g.concat_seq FROM inbound g JOIN inbound me ON me.id=? "
            "WHERE g.device=me.device AND g.channel=me.channel AND g.sender=me.sender "
            "AND g.concat_ref=me.concat_ref AND g.concat_total=me.concat_total "
            "AND g.state='pending' AND g.mo IS NULL ORDER BY g.concat_seq, g.id",
            (iid,),
        ).fetchall()

    def _complete_mo(
        self, conn: sqlite3.Connection, ids: list[int], total: int, incomplete: bool,
        policy: InboundPolicy, res: InboundResult,
    ) -> None:
        """Rows ``ids`` (all parts that arrived) become one MO: opt-out keywords apply, and it is
        queued for its ESME (or waits for a route)."""
        marks = ",".join("?" * len(ids))
        rows = conn.execute(
            "SELECT id, device, channel, sender, recipient, text, received_at, esme, concat_seq "
            f"FROM inbound WHERE id IN ({marks}) ORDER BY concat_seq, id",
            ids,
        ).fetchall()
        head = min(r[0] for r in rows)
        first = next(r for r in rows if r[0] == head)
        mo = MoMessage(
            id=head, device=first[1], channel=first[2], sender=first[3], recipient=first[4],
            text=_join_parts([(r[8] or 1, r[5]) for r in rows], total, incomplete),
            received_at=min(r[6] for r in rows), esme=first[7], parts=len(rows),
            incomplete=incomplete,
        )  # fmt: skip
        conn.execute(
            f"UPDATE inbound SET mo=?, incomplete=? WHERE id IN ({marks})",
            (head, int(incomplete), *ids),
        )
        if incomplete:
            res.incomplete.append(mo)
        action = policy.keyword(mo.text)  # an incomplete text (with MISSING_PART) is no keyword
        if action is not None:
            self._change_optout(conn, mo.sender, action, "keyword", mo.text.strip().upper()[:20], res)
        if mo.esme is None:
            res.unrouted.append(mo)
            return
        self._queue_mo(conn, mo, policy, res)

    def _queue_mo(self, conn: sqlite3.Connection, mo: MoMessage, policy: InboundPolicy, res: InboundResult) -> None:
        assert mo.esme is not None
        rows = policy.rows(mo)
        if not rows:
            raise ValueError(f"no deliver_sm built for inbound message {mo.id}")
        for payload, expire_at in rows:
            self._add_outbox(conn, mo.esme, "mo", mo.id, payload, expire_at)
        conn.execute(
            f"UPDATE inbound SET state='{_IN_QUEUE[1]}', esme=? WHERE mo=? AND state='{_IN_QUEUE[0]}'",
            (mo.esme, mo.id),
        )
        res.queued.append(mo)

    async def rewrite_pending_mo(
        self, rewrite: Callable[[str, str, str, str | None], str | None]
    ) -> int:
        """Give MO deliver_sm still waiting in the outbox a new payload:
        ``rewrite(payload, device, channel, recipient)`` returns it, or None to keep the row as
        it is. Returns how many rows changed."""

        def op(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT o.id, o.payload, i.device, i.channel, i.recipient FROM outbox o "
                "JOIN inbound i ON i.id = o.message "
                "WHERE o.kind='mo' AND o.delivered_at IS NULL"
            ).fetchall()
            changed = [(new, oid) for oid, payload, dev, ch, rcpt in rows
                       if (new := rewrite(payload, dev, ch, rcpt)) is not None]  # fmt: skip
            conn.executemany("UPDATE outbox SET payload=? WHERE id=?", changed)
            return len(changed)

        return await self.write(op)

    async def flush_inbound(
        self, older_than: float, policy: InboundPolicy, unrouted_before: float | None = None
    ) -> InboundResult:
        """Long messages whose parts started arriving before ``older_than`` and are still
        incomplete are delivered with what arrived (marked incomplete); complete messages that
        had no ESME route are routed again (the config may have changed), or, stored before
        ``unrouted_before``, given up on (``expired``, counted in ``InboundResult.expired``)."""

        def op(conn: sqlite3.Connection) -> InboundResult:
            res = InboundResult()
            if unrouted_before is not None:
                res.expired = conn.execute(
                    f"UPDATE inbound SET state='{_IN_UNROUTED[1]}', done_at=? WHERE state='{_IN_UNROUTED[0]}' "
                    "AND mo IS NOT NULL AND esme IS NULL AND created_at < ?",
                    (self.clock(), unrouted_before),
                ).rowcount
            stale = conn.execute(
                "SELECT min(id), concat_total FROM inbound WHERE state='pending' AND mo IS NULL "
                "AND created_at < ? GROUP BY device, channel, sender, concat_ref, concat_total",
                (older_than,),
            ).fetchall()
            for iid, total in stale:
                ids = [r[0] for r in self._group_rows(conn, iid)]
                if ids:
                    self._complete_mo(conn, ids, total or 1, True, policy, res)
            waiting = conn.execute(
                "SELECT DISTINCT mo FROM inbound WHERE state='pending' AND mo IS NOT NULL "
                "AND esme IS NULL"
            ).fetchall()
            for (head,) in waiting:
                mo = self._load_mo(conn, head)
                esme = policy.route(mo.device, mo.channel, mo.recipient)
                if esme is None:
                    continue
                conn.execute("UPDATE inbound SET esme=? WHERE mo=?", (esme, head))
                self._queue_mo(conn, attrs.evolve(mo, esme=esme), policy, res)
            return res

        return await self.write(op)

    @staticmethod
    def _load_mo(conn: sqlite3.Connection, head: int) -> MoMessage:
        rows = conn.execute(
            "SELECT id, device, channel, sender, recipient, text, received_at, esme, concat_seq, "
            "concat_total, incomplete FROM inbound WHERE mo=? ORDER BY concat_seq, id",
            (head,),
        ).fetchall()
        first = next(r for r in rows if r[0] == head)
        incomplete = bool(first[10])
        return MoMessage(
            id=head, device=first[1], channel=first[2], sender=first[3], recipient=first[4],
            text=_join_parts([(r[8] or 1, r[5]) for r in rows], first[9] or 1, incomplete),
            received_at=min(r[6] for r in rows), esme=first[7], parts=len(rows),
            incomplete=incomplete,
        )  # fmt: skip

    async def prune_inbound(self, device: str, visible: set[str], before: float) -> int:
        """Forget finished inbound rows older than ``before`` whose entry the device no longer
        shows (while it shows one, its row is what keeps it from being delivered again)."""

        def op(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, device_key FROM inbound WHERE device=? AND created_at < ? "
                f"AND state IN {_IN_FINAL!r}",
                (device, before),
            ).fetchall()
            gone = [(r[0],) for r in rows if r[1] not in visible]
            conn.executemany("DELETE FROM inbound WHERE id=?", gone)
            return len(gone)

        return await self.write(op)

    # -- opt-outs -------------------------------------------------------------------------------

    def is_opted_out(self, number: str) -> bool:
        """True if ``number`` (as an ESME or a device writes it) is on the opt-out list."""
        return bool(self._optout_keys) and optout_key(number) in self._optout_keys

    @property
    def optout_count(self) -> int:
        return len(self._optout_keys)

    async def list_optouts(self) -> list[dict[str, Any]]:
        """Every opted-out number, oldest first: {number, keyword, at, source}."""

        def fn(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT number, keyword, at, source FROM optouts ORDER BY at, number")
            return [{"number": r[0], "keyword": r[1], "at": r[2], "source": r[3]} for r in rows]

        return await self.read(fn)

    async def add_optout(self, number: str, source: str = "admin", keyword: str | None = None) -> bool:
        """Put ``number`` on the opt-out list; False if it was already there."""
        if not optout_key(number):
            raise ValueError("expected a phone number, got an empty one")

        def op(conn: sqlite3.Connection) -> bool:
            res = InboundResult()
            self._change_optout(conn, number, "optout", source, keyword, res)
            return bool(res.optouts)

        return await self.write(op)

    async def remove_optout(self, number: str) -> bool:
        """Take ``number`` off the opt-out list; False if it was not on it."""

        def op(conn: sqlite3.Connection) -> bool:
            res = InboundResult()
            self._change_optout(conn, number, "optin", "admin", None, res)
            return bool(res.optouts)

        return await self.write(op)

    def _change_optout(
        self, conn: sqlite3.Connection, number: str, action: str, source: str, keyword: str | None,
        res: InboundResult,
    ) -> None:
        key = optout_key(number)
        if not key:
            return
        if action == "optout":
            cur = conn.execute(
                "INSERT OR IGNORE INTO optouts (number, key, keyword, at, source) VALUES (?,?,?,?,?)",
                (canonical_number(number), key, keyword, self.clock(), source),
            )
        else:
            cur = conn.execute("DELETE FROM optouts WHERE key=?", (key,))
        if cur.rowcount == 0:
            return
        res.optouts.append((action, canonical_number(number)))
        keys = self._optout_keys
        hook = self.on_optout

        def apply() -> None:
            if action == "optout":
                keys.add(key)
            else:
                keys.discard(key)
            if hook is not None:
                hook(action, canonical_number(number))

        self.after_commit(apply)

    def database_size(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(str(self.path) + suffix).st_size
            except OSError:
                pass
        return total


def _is_fatal(exc: sqlite3.Error) -> bool:
    """Errors that no retry of the same batch can fix (the disk, not an operation)."""
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        s in msg for s in ("disk", "full", "readonly", "read-only", "i/o", "locked", "corrupt")
    )


def _inbound_concat(sms: Any) -> tuple[int, int, int] | None:
    """(ref, total, seq) of a part of a long inbound message; None for a whole SMS (also for
    concat info that cannot be right, which is better delivered as it is than held back)."""
    ref, total, seq = sms.concat_ref, sms.concat_total, sms.concat_seq
    if ref is None or total is None or seq is None or total < 2 or not 1 <= seq <= total:
        return None
    return ref, total, seq


def _join_parts(parts: list[tuple[int, str]], total: int, incomplete: bool) -> str:
    """Texts of (seq, text) parts in order; each run of missing parts shows MISSING_PART."""
    if not incomplete:
        return "".join(t for _seq, t in parts)
    by_seq = {}
    for seq, t in parts:
        by_seq.setdefault(seq, t)
    out: list[str] = []
    for seq in range(1, max(total, max(by_seq, default=0)) + 1):
        if seq in by_seq:
            out.append(by_seq[seq])
        elif not out or out[-1] != MISSING_PART:
            out.append(MISSING_PART)
    return "".join(out)


def _part_digest(data_coding: int, body: bytes) -> str:
    """What makes two submits of one (ESME, concatenation key, seq) the same part."""
    return hashlib.sha256(bytes((data_coding & 0xFF,)) + bytes(body)).hexdigest()


def _joined_body(base: NewMessage, parts: list[tuple[int, bytes]]) -> bytes:
    """The octets of a long message from its parts (``(data_coding, body)`` in seq order).

    One coding: the octets joined (a UCS2 surrogate pair split across parts stays whole).
    Mixed codings: each part decoded with its own, the texts joined, and ``base.data_coding``
    set to the coding of the result (0 when the whole text is GSM-encodable, else 8). A part
    in a binary coding cannot be decoded: then the octets are joined as they are.
    """
    codings = {dc for dc, _ in parts}
    if len(codings) > 1:
        texts = [decode_short_message(dc, body) for dc, body in parts]
        if all(t is not None for t in texts):
            base.data_coding, joined = encode_for_esme("".join(t for t in texts if t is not None))
            return joined
    return b"".join(bytes(body) for _, body in parts)


def _fields_json(msg: NewMessage) -> str:
    return json.dumps(dict(zip(SUBMIT_FIELDS, msg.field_values())))


def _fields_from_json(s: str) -> dict[str, Any]:
    return json.loads(s)


__all__ = [
    "Accepted",
    "Event",
    "InboundPolicy",
    "InboundResult",
    "MessageRecord",
    "MoMessage",
    "NewMessage",
    "Store",
    "StoreError",
    "canonical_number",
    "format_id",
    "optout_key",
    "parse_id",
]
