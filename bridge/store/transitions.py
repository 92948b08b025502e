"""Message state changes: transitions, cancel_sm / replace_sm, and the scheduler's side.

Rules
-----
* Every state change goes through ``lifecycle.check`` (``_set_state``) and leaves a row in
  ``events``; a message that becomes final leaves ``active_count``.
* A final state and its receipts are committed together or not at all: the caller's
  ``outbox(record)`` rows, or else the store's ``final_receipts``, are queued in the same
  transaction (``_queue_receipts``).
* cancel_sm and replace_sm with a submit_multi's id act on every destination of it; only
  messages in ``lifecycle.CANCELLABLE`` / ``lifecycle.REPLACEABLE`` change.
* A device call is noted (``begin_part``) before it starts, so that a crash leaves an
  ambiguous send that recovery can reconcile through ``pre_ref``; each part's states follow
  ``lifecycle.PART``.
* A message that waits for a channel again (queued, scheduled, retry_wait) is announced to the
  scheduler (``on_new_message``) after commit.

Uses ``_get_record`` and ``_group`` (messages.py) and ``_add_outbox`` (outbox.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .. import lifecycle
from ..lifecycle import State
from ..smpp.text import decode_short_message
from .records import ClaimedElsewhere, MessageRecord, Superseded, PartRecord, QueueEntry, parse_id

# lifecycle.WAITING as the partial index messages_expiry spells it (SQLite uses a partial index
# only for a query that states its condition in the same words).
WAITING_SQL = "state IN ('accepted','scheduled','queued','retry_wait')"
assert {v.strip("'") for v in WAITING_SQL[10:-1].split(",")} == {s.value for s in lifecycle.WAITING}

# What a caller hands in to have a final state's receipts queued with it:
# record -> [(esme, kind, payload, expire_at)].
Outbox = Callable[[MessageRecord], list[tuple[str, str, str, float]]]


class Transitions:
    """Moving messages and their device parts through the lifecycle.

    Part of ``Store`` (see ``bridge/store/__init__.py``): it relies on the engine's ``write``,
    ``write_nowait``, ``read``, ``after_commit``, ``clock`` and on the other pieces' methods named
    in the module docstring."""

    on_new_message: Callable[[QueueEntry], None] | None
    final_receipts: Outbox | None

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
        self, mid: int, seq: int, total: int, device: str, channel: str, pre_ref: str | None,
        *, expect_text: str | None = None,
    ) -> bool:
        """Durably note that a device call for part ``seq`` is about to start. A crash from here
        on leaves an ambiguous send that recovery reconciles through ``pre_ref``.

        False (and no device call may start): the message's validity ran out after the channel
        picked it up (or, for a later part of a long message, while an earlier part was with
        the device). It is finished EXPIRED with its receipt in this same transaction, so no
        device call ever begins after a message's validity.

        Raises ClaimedElsewhere when another channel is already sending the message (it was
        queued twice, e.g. after a replace_sm): one message, one channel. Raises Superseded
        when the message, still waiting, no longer has ``expect_text`` (the text the channel
        read): replace_sm changed it after the pick, and the old text must not go out."""

        def op(conn: sqlite3.Connection) -> bool:
            row = conn.execute(
                "SELECT state, expire_at, device, channel, text FROM messages WHERE id=?", (mid,)
            ).fetchone()
            if row is None:
                raise KeyError(mid)
            state = State(row[0])
            if state is State.SUBMITTING and (row[2], row[3]) != (device, channel):
                raise ClaimedElsewhere(mid, f"{row[2]}:{row[3]}")
            if state in lifecycle.WAITING and expect_text is not None and row[4] != expect_text:
                raise Superseded(mid)
            # A later part of a long message counts too: its earlier parts are with the device,
            # but no device call begins after the validity (the message ends EXPIRED).
            if (state in lifecycle.WAITING or state in (State.SUBMITTING, State.SENT)) and row[1] is not None \
                    and self.clock() > row[1]:
                detail = "validity period ended" if state in lifecycle.WAITING else \
                    f"validity period ended before part {seq}/{total}"
                self._set_state(conn, mid, state, State.EXPIRED, detail)
                self._queue_receipts(conn, self._get_record(conn, mid))
                return False
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
            return True

        return bool(await self.write(op))

    async def update_part(self, mid: int, seq: int, state: str, *, ref: str | None = None,
                          error: str | None = None) -> None:
        """Record what the device said about one part (sent with its ref, or its final status)."""
        await self.write(lambda conn: self._update_part(conn, mid, seq, state, ref, error))

    def _update_part(self, conn: sqlite3.Connection, mid: int, seq: int, state: str,
                     ref: str | None, error: str | None) -> None:
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

    async def part_sent(self, mid: int, seq: int, total: int, ref: str | None, *,
                        intermediate: Outbox | None = None) -> None:
        """The device took part ``seq``: its ``sent`` mark with the device's ``ref``, the rows
        ``intermediate(record)`` returns (an ENROUTE receipt; ``None``: none) and, for the last
        part, the message's move to SENT, in ONE transaction (each used to be a commit of its
        own: three round trips to the writer per send)."""

        def op(conn: sqlite3.Connection) -> None:
            self._update_part(conn, mid, seq, "sent", ref, None)
            if intermediate is not None:
                self._queue_receipts(conn, self._get_record(conn, mid), intermediate)
            if seq == total:
                self._move(conn, mid, State.SENT, f"device took all {total} part(s)", None, {})

        await self.write(op)

    async def parts(self, mid: int) -> list[PartRecord]:
        return await self.read(lambda conn: self._parts(conn, mid))

    async def record_and_parts(self, mid: int) -> tuple[MessageRecord | None, list[PartRecord]]:
        """Message ``mid`` as stored now (None if there is none) and its parts, in one read: a
        channel needs both before it sends, and at 512 lines each read waited about 10 ms for
        its turn (bench/channels.py --many)."""

        def fn(conn: sqlite3.Connection) -> tuple[MessageRecord | None, list[PartRecord]]:
            try:
                rec = self._get_record(conn, mid)
            except KeyError:
                return None, []
            return rec, self._parts(conn, mid)

        return await self.read(fn)

    @staticmethod
    def _parts(conn: sqlite3.Connection, mid: int) -> list[PartRecord]:
        rows = conn.execute(
            "SELECT message, seq, total, state, device, channel, pre_ref, ref, error, "
            "started_at, sent_at, done_at FROM parts WHERE message=? ORDER BY seq",
            (mid,),
        ).fetchall()
        return [PartRecord(*r) for r in rows]

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
        part: tuple[int, str, str | None] | None = None,
        **columns: Any,
    ) -> MessageRecord:
        """Move a message to ``new`` (checked against the lifecycle table). ``outbox(record)``
        may return deliver_sm rows ``(esme, kind, payload, expire_at)`` to queue in the SAME
        transaction: a final state and its receipt are committed together or not at all.
        Without ``outbox``, a final state gets the store's final_receipts. ``part``
        ``(seq, state, error)``: that part's new state (``update_part``), first, in the same
        transaction (a message's last part's status and its final state: one commit)."""

        def op(conn: sqlite3.Connection) -> MessageRecord:
            if part is not None:
                self._update_part(conn, mid, part[0], part[1], None, part[2])
            return self._move(conn, mid, new, detail, outbox, columns)

        return await self.write(op)

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

    async def expire_waiting(self, now: float, outbox: Callable[[MessageRecord], list[tuple[str, str, str, float]]]) -> list[int]:
        """Messages still waiting for a channel past their validity become EXPIRED (with their
        receipts, in the same transaction)."""
        def op(conn: sqlite3.Connection) -> list[int]:
            # The index messages_expiry (schema.py) holds exactly these rows: the sweep costs
            # what it finds, not the size of the backlog (it runs in the writer).
            rows = conn.execute(
                f"SELECT id, state FROM messages INDEXED BY messages_expiry WHERE {WAITING_SQL} "
                "AND expire_at IS NOT NULL AND expire_at < ? LIMIT 1000",
                (now,),
            ).fetchall()
            for mid, state in rows:
                self._set_state(conn, mid, State(state), State.EXPIRED, "validity period ended")
                self._queue_receipts(conn, self._get_record(conn, mid), outbox)
            return [r[0] for r in rows]

        return await self.write(op)

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
