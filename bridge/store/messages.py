"""Messages from ESMEs: accepting submits, assembling long messages, submit_multi, lookups.

Rules
-----
* A whole submit is one message row with a new id, in the state ``lifecycle.initial_state``
  gives it; a message that waits for a device is announced (``on_new_message``) after commit.
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
* Lookups take the id an ESME was given (any part's id, a submit_multi's id) and resolve it
  through ``aliases``; the scheduler's lookups take the numeric id (``record``, ``queue_entry``).

Uses ``_queue_receipts`` and ``_set_state`` (transitions.py).
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
from typing import Any

import attrs

from .. import lifecycle
from ..lifecycle import State
from ..smpp.text import decode_short_message, encode_for_esme
from .engine import Done, Op
from .schema import NOT_FINAL
from .records import (
    _INSERT_MESSAGE,
    _RECORD_COLUMNS,
    _REG_DLR_INDEX,
    Accepted,
    Event,
    MessageRecord,
    NewMessage,
    QueueEntry,
    _fields_from_json,
    _fields_json,
    _initial_state,
    _record,
    format_id,
    parse_id,
)

log = logging.getLogger("bridge.store")

# When a SCHEDULED or RETRY_WAIT message is due: the expression of the index messages_timer
# (schema.py); the same text here, or SQLite does not use the index.
_DUE = "coalesce(CASE state WHEN 'scheduled' THEN schedule_at ELSE next_attempt_at END, 0)"


class Messages:
    """Accepting submits and looking messages up.

    Part of ``Store`` (see ``bridge/store/__init__.py``): it relies on the engine's ``write``,
    ``write_nowait``, ``read``, ``after_commit``, ``clock`` and on the other pieces' methods named
    in the module docstring."""

    partial_timeout: float
    resent_parts: int
    superseded_groups: int

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

    def _get_record(self, conn: sqlite3.Connection, mid: int) -> MessageRecord:
        row = conn.execute(f"SELECT {_RECORD_COLUMNS} FROM messages WHERE id=?", (mid,)).fetchone()
        if row is None:
            raise KeyError(mid)
        rec = _record(row)
        if rec.esme_parts > 1:
            parts = conn.execute("SELECT alias FROM aliases WHERE message=? ORDER BY alias", (mid,))
            rec = attrs.evolve(rec, part_ids=tuple(r[0] for r in parts))
        return rec

    async def record(self, mid: int) -> MessageRecord | None:
        """The message with numeric id ``mid`` (as ``get`` finds it by the id its ESME was
        given); None if there is none."""
        return await self.get(format_id(mid))

    async def queue_entry(self, mid: int) -> QueueEntry | None:
        """What the scheduler keeps of message ``mid`` (route, due times, attempts) as stored
        now; None if there is no such message."""

        def fn(conn: sqlite3.Connection) -> QueueEntry | None:
            r = conn.execute(
                "SELECT id, route, priority, state, schedule_at, expire_at, next_attempt_at, "
                "device, channel, attempts FROM messages WHERE id=?",
                (mid,),
            ).fetchone()
            if r is None:
                return None
            return QueueEntry(r[0], r[1], r[2], State(r[3]), r[4], r[5], r[6], r[7], r[8], r[9])

        return await self.read(fn)

    # -- the scheduler's pages (bridge/scheduler/queues.py) ----------------------------------

    async def queued_page(
        self, route: str, discover: bool, after: dict[int, int], limit: int
    ) -> tuple[dict[int, int] | None, dict[int, list[tuple[int, str | None, str | None]]]]:
        """The next QUEUED messages of ``route``: for each priority level in ``after``, up to
        ``limit`` (id, device, channel) with ids above ``after[level]``, oldest first. With
        ``discover``, also every level that has queued messages (paged from its first id) and
        how many each has. Read in the writer (a read-only operation of the next group commit):
        every commit it sees has announced its messages (``on_new_message``) before this
        returns, so the caller can merge what was announced meanwhile without a gap."""

        def op(conn: sqlite3.Connection) -> tuple[dict[int, int] | None, dict[int, list[tuple[int, str | None, str | None]]]]:
            counts: dict[int, int] | None = None
            levels = dict(after)
            if discover:
                counts = dict(conn.execute(
                    "SELECT priority, count(*) FROM messages INDEXED BY messages_queue "
                    "WHERE state='queued' AND route=? GROUP BY priority", (route,),
                ).fetchall())  # fmt: skip
                for p in counts:
                    levels.setdefault(p, 0)
            pages = {
                p: conn.execute(
                    "SELECT id, device, channel FROM messages INDEXED BY messages_queue "
                    "WHERE state='queued' AND route=? AND priority=? AND id>? ORDER BY id LIMIT ?",
                    (route, p, cursor, limit),
                ).fetchall()
                for p, cursor in levels.items()
            }
            return counts, pages

        return await self.write(op)

    async def timers_page(self, after: tuple[float, int] | None, limit: int) -> list[tuple[float, QueueEntry]]:
        """The next SCHEDULED and RETRY_WAIT messages by due time (schedule_at, next_attempt_at;
        none: due at once) and id, after ``after``: (due, entry). Read in the writer, like
        ``queued_page``."""
        due, mid = after if after is not None else (-1.0, 0)  # before every due time (>= 0)

        def op(conn: sqlite3.Connection) -> list[tuple[float, QueueEntry]]:
            rows = conn.execute(
                f"SELECT {_DUE}, id, route, priority, state, schedule_at, expire_at, next_attempt_at, "
                "device, channel, attempts FROM messages INDEXED BY messages_timer "
                f"WHERE state IN ('scheduled','retry_wait') AND {_DUE} >= ? AND ({_DUE} > ? OR id > ?) "
                f"ORDER BY {_DUE}, id LIMIT ?",
                (due, due, mid, limit),
            ).fetchall()
            return [
                (r[0], QueueEntry(r[1], r[2], r[3], State(r[4]), r[5], r[6], r[7], r[8], r[9], r[10]))
                for r in rows
            ]

        return await self.write(op)

    async def load_in_progress(self) -> list[QueueEntry]:
        """Messages not final and not waiting for a channel or a timer (accepted but not routed,
        or with a device): what the scheduler's start looks at one by one. The waiting ones are
        paged by ``queued_page`` and ``timers_page``."""
        def fn(conn: sqlite3.Connection) -> list[QueueEntry]:
            # NOT_FINAL lets SQLite find them in the index of active messages.
            rows = conn.execute(
                "SELECT id, route, priority, state, schedule_at, expire_at, next_attempt_at, "
                f"device, channel, attempts FROM messages WHERE {NOT_FINAL} "
                "AND state IN ('accepted','submitting','sent') ORDER BY id"
            ).fetchall()
            return [QueueEntry(r[0], r[1], r[2], State(r[3]), r[4], r[5], r[6], r[7], r[8], r[9]) for r in rows]

        return await self.read(fn)

    async def queued_routes(self) -> set[str | None]:
        """The routes that have QUEUED messages (a walk over the index: one lookup per route,
        however many messages)."""

        def fn(conn: sqlite3.Connection) -> set[str | None]:
            found: set[str | None] = set()
            if conn.execute(
                "SELECT 1 FROM messages INDEXED BY messages_queue WHERE state='queued' AND route IS NULL LIMIT 1"
            ).fetchone():
                found.add(None)
            route = ""
            while True:
                row = conn.execute(
                    "SELECT min(route) FROM messages INDEXED BY messages_queue WHERE state='queued' AND route>?",
                    (route,),
                ).fetchone()
                if row is None or row[0] is None:
                    return found
                route = row[0]
                found.add(route)

        return await self.read(fn)

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

