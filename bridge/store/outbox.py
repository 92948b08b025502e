"""The outbox: deliver_sm (receipts and MO) waiting for their ESME to take them.

Rules
-----
* A row is added in the transaction that decided it (a final state, a completed inbound
  message), so a receipt or an MO is never lost between two commits; the ESME's sender is
  woken (``on_outbox``) after commit.
* A row is pending until the ESME acknowledged it (``delivered_at``), refused it for good
  (``refused_status`` kept, ``delivered_at`` set) or its retention ended (``delivered_at = -1``).
  A transient failure counts an attempt and sets ``next_try_at``; ``pending_outbox`` skips the
  row until then.
* Each row has a ``channel``: ``smpp`` (deliver_sm to the ESME's binds, OutboxDelivery) or
  ``webhook`` (a signed POST, bridge/frontends/http/webhook_delivery.py). ``outbox_channels``
  (set by the app from each ESME's config) says which; an ESME taking both gets one row each,
  each delivered, retried and expired on its own.
* For an MO (kind ``mo``), the inbound rows follow ``lifecycle.INBOUND``: ``delivered`` once
  every deliver_sm of the message was taken, ``refused`` when one was refused, ``expired`` when
  the retention ended first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from .engine import Done
from .inbound import _IN_DELIVERED, _IN_REFUSED, _IN_UNCLAIMED
from .records import OutboxItem


class Outbox:
    """Queueing deliver_sm for ESMEs and recording what became of each.

    Part of ``Store`` (see ``bridge/store/__init__.py``): it relies on the engine's ``write``,
    ``write_nowait``, ``read``, ``after_commit``, ``clock`` and on the other pieces' methods named
    in the module docstring."""

    on_outbox: Callable[[str], None] | None
    # (esme, kind) -> the channels a new row goes to; None: SMPP only.
    outbox_channels: Callable[[str, str], tuple[str, ...]] | None = None

    async def add_outbox(self, esme: str, kind: str, message: int | None, payload: str,
                         expire_at: float) -> None:
        await self.write(lambda conn: self._add_outbox(conn, esme, kind, message, payload, expire_at))

    def _add_outbox(self, conn: sqlite3.Connection, esme: str, kind: str, message: int | None,
                    payload: str, expire_at: float) -> None:
        channels = self.outbox_channels(esme, kind) if self.outbox_channels is not None else ("smpp",)
        for channel in channels:
            conn.execute(
                "INSERT INTO outbox (esme, kind, message, created_at, expire_at, payload, channel) "
                "VALUES (?,?,?,?,?,?,?)",
                (esme, kind, message, self.clock(), expire_at, payload, channel),
            )
        if self.on_outbox is not None:
            hook = self.on_outbox
            self.after_commit(lambda: hook(esme))

    async def pending_outbox(self, esme: str, after_id: int = 0, limit: int = 200) -> list[OutboxItem]:
        def fn(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT id, esme, kind, message, created_at, expire_at, payload, attempts "
                "FROM outbox WHERE esme=? AND channel='smpp' AND delivered_at IS NULL AND id > ? "
                "AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY id LIMIT ?",
                (esme, after_id, self.clock(), limit),
            ).fetchall()
            return [OutboxItem(*r) for r in rows]

        return await self.read(fn)

    async def outbox_esmes(self) -> list[str]:
        def fn(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute("SELECT DISTINCT esme FROM outbox WHERE delivered_at IS NULL AND channel='smpp'")
            return [r[0] for r in rows]

        return await self.read(fn)

    async def outbox_stats(self, channel: str = "smpp") -> dict[tuple[str, str], tuple[int, float | None]]:
        """{(esme, kind): (waiting, oldest created_at)} of one channel, for metrics."""

        def fn(conn: sqlite3.Connection) -> dict[tuple[str, str], tuple[int, float | None]]:
            rows = conn.execute(
                "SELECT esme, kind, count(*), min(created_at) FROM outbox "
                "WHERE delivered_at IS NULL AND channel=? GROUP BY esme, kind", (channel,)
            )
            return {(r[0], r[1]): (r[2], r[3]) for r in rows}

        return await self.read(fn)

    async def pending_webhooks(self, limit: int = 100) -> list[OutboxItem]:
        """Webhook rows due now (every ESME), oldest first."""

        def fn(conn: sqlite3.Connection) -> list[OutboxItem]:
            rows = conn.execute(
                "SELECT id, esme, kind, message, created_at, expire_at, payload, attempts "
                "FROM outbox WHERE channel='webhook' AND delivered_at IS NULL "
                "AND (next_try_at IS NULL OR next_try_at <= ?) ORDER BY id LIMIT ?",
                (self.clock(), limit),
            ).fetchall()
            return [OutboxItem(*r) for r in rows]

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
