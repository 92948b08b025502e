"""Inbound SMS: de-duplicated per device, long ones reassembled, queued as MO for ESMEs.

Rules
-----
* One row per device inbox entry, unique per (device, device_key), committed before anything
  is deleted on the device; an entry seen again (every poll, and after a restart) is a duplicate
  and stored once.
* A row is ``pending`` while it waits for the other parts of its long message or for an ESME
  route, ``queued`` once its deliver_sm (one, or one per UDH part) is in the outbox (same
  transaction), ``delivered`` when the ESME acknowledged all of them, ``expired`` when
  ``receipts.retention`` ended the wait (for the ESME to take it, or for a route to an ESME),
  ``duplicate`` for a part number the device handed over twice (while its message waits, or,
  with the same text, within ``INBOUND_RESEND_WINDOW`` after the message was built: never a
  second MO). Every move is one of ``lifecycle.INBOUND``, checked once at import (``_IN_*``).
* ``mo`` names the row a long message is delivered as (its first stored part). What the MO
  looks like on the wire is the caller's business (``InboundPolicy``).
* One entry that cannot be stored (a bug) is rolled back alone (a savepoint) and reported in
  ``InboundResult.failed``; the others of the batch are stored.
* A complete text that is an opt-out keyword changes the opt-out list in the transaction that
  completes its MO.

Uses ``_add_outbox`` (outbox.py) and ``_change_optout`` (optouts.py).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, Protocol

import attrs

from .. import lifecycle

# An inbound part identical (device, channel, sender, reference, total, part number, text) to a
# part of a message already built within this many seconds is the network's resend, not news.
INBOUND_RESEND_WINDOW = 3600.0

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


#: Separates a device key from the entry's position on the device (see ``known_inbound``).
LEGACY_SEP = "#"


def _has_position(key: str) -> bool:
    head, sep, tail = key.rpartition(LEGACY_SEP)
    return bool(sep and head and tail.isdigit())


class Inbound:
    """Storing inbox entries and turning them into MO.

    Part of ``Store`` (see ``bridge/store/__init__.py``): it relies on the engine's ``write``,
    ``write_nowait``, ``read``, ``after_commit``, ``clock`` and on the other pieces' methods named
    in the module docstring."""

    async def known_inbound(self, device: str, keys: list[str]) -> set[str]:
        """The device_keys among ``keys`` that are already stored for ``device``. A key that
        ends in ``#<digits>`` (the device's own position of the entry) is also known when its
        form without that suffix is stored: a row written before the driver added it."""
        legacy = {k: k.rsplit(LEGACY_SEP, 1)[0] for k in keys if _has_position(k)}
        wanted = list(dict.fromkeys([*keys, *legacy.values()]))

        def fn(conn: sqlite3.Connection) -> set[str]:
            found: set[str] = set()
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                rows = conn.execute(
                    "SELECT device_key FROM inbound WHERE device=? AND device_key IN "
                    f"({','.join('?' * len(chunk))})",
                    (device, *chunk),
                )
                found.update(r[0] for r in rows)
            return {k for k in keys if k in found or legacy.get(k) in found}

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
            # A legacy key (stored before the driver added the entry's position) is shown while
            # any visible key has it as its form without the position.
            shown = visible | {k.rsplit(LEGACY_SEP, 1)[0] for k in visible if _has_position(k)}
            gone = [(r[0],) for r in rows if r[1] not in shown]
            conn.executemany("DELETE FROM inbound WHERE id=?", gone)
            return len(gone)

        return await self.write(op)


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
