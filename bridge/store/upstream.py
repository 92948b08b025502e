"""Receipts from upstream SMSCs, durable before they are answered (docs/connectors.md, Receipts).

Rules
-----
* A receipt a connector takes is committed here before its deliver_sm_resp goes out: one row
  per connector and receipt id (``id_key``: the id's first form, ``connectors.receipts.id_forms``).
  ``matched`` is the submitted id it belongs to, NULL while it waits for its submit_sm_resp (an
  early receipt). A newer receipt for the same id replaces the row unless the row is final: a
  final receipt is never changed by a later one.
* The connector reads the rows back when it starts (``upstream_receipts``), with the SMSC ids
  of its parts still waiting for a receipt (``upstream_refs``): what a crash interrupted is
  matched again, and the report tracker finishes the message from it.
* Nothing lives forever: an early receipt that no resp claimed within the connector's grace is
  deleted (and counted unmatched by the connector); a matched one once its message can no longer
  wait for it (``drop_upstream_receipts`` with the connector's horizon).
* An MO from upstream is keyed by its content and the time it was first seen (the connector's
  ``device_key``, ``name:digest:seconds``); ``upstream_mo_seen`` finds the newest such key of a
  content in the inbound table, so a resend after a restart gets the same key and the inbound
  table's uniqueness makes it a duplicate, within the connector's window.
* The newest intermediate stat of a SENT message (ENROUTE, ACCEPTD ...) is the message's
  ``network_stat``, set by a SENT -> SENT move of the lifecycle authority (``note_network_stat``).
"""

from __future__ import annotations

import sqlite3
from typing import Any

from ..lifecycle import INTERMEDIATE_STATS, State


class UpstreamReceipts:
    """Part of ``Store`` (see ``bridge/store/__init__.py``): it relies on the engine's ``write``,
    ``read`` and ``clock``, and on ``_set_state`` (transitions.py)."""

    async def save_upstream_receipt(
        self, device: str, id_key: str, smsc_id: str, stat: str, error: str | None,
        received_at: float, matched: str | None,
    ) -> None:
        """Commit one receipt (before its deliver_sm_resp). A final row stays as it is."""

        def op(conn: sqlite3.Connection) -> None:
            old = conn.execute(
                "SELECT stat, matched FROM upstream_receipts WHERE device=? AND id_key=?", (device, id_key)
            ).fetchone()
            if old is not None and old[0] not in INTERMEDIATE_STATS:
                return
            # Deleted and inserted again, not updated: the rowid then orders the rows as the
            # receipts came, and a restart replays them in that order.
            conn.execute("DELETE FROM upstream_receipts WHERE device=? AND id_key=?", (device, id_key))
            conn.execute(
                "INSERT INTO upstream_receipts (device, id_key, smsc_id, stat, error, received_at, matched) "
                "VALUES (?,?,?,?,?,?,?)",
                (device, id_key, smsc_id, stat, error, received_at, matched or (old[1] if old else None)),
            )

        await self.write(op)  # type: ignore[attr-defined]

    async def match_upstream_receipt(self, device: str, id_key: str, matched: str) -> None:
        """An early receipt's submit_sm_resp came: note the submitted id it belongs to."""
        await self.write(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "UPDATE upstream_receipts SET matched=? WHERE device=? AND id_key=?", (matched, device, id_key)
        ))

    async def upstream_receipts(self, device: str) -> list[tuple[str, str, str | None, float, str | None]]:
        """(smsc_id, stat, error, received_at, matched) of every receipt kept for ``device``."""
        return await self.read(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "SELECT smsc_id, stat, error, received_at, matched FROM upstream_receipts WHERE device=? "
            "ORDER BY rowid", (device,)
        ).fetchall())

    async def upstream_refs(self, device: str) -> list[str]:
        """The SMSC ids of ``device``'s parts still waiting for their receipt (state sent)."""

        def fn(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT ref FROM parts WHERE device=? AND state='sent' AND ref IS NOT NULL", (device,)
            ).fetchall()
            return [mid for (ref,) in rows for mid in ref.split()]

        return await self.read(fn)  # type: ignore[attr-defined]

    async def upstream_ref_waiting(self, device: str, ref: str) -> bool:
        """True while a part of ``device`` with exactly this ref still waits for its receipt."""
        return bool(await self.read(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "SELECT 1 FROM parts WHERE device=? AND ref=? AND state='sent'", (device, ref)
        ).fetchone()))

    async def expire_upstream_receipts(self, device: str, before: float) -> int:
        """Delete ``device``'s receipts received before ``before`` (no message waits that long)."""
        return await self.write(lambda conn: conn.execute(  # type: ignore[attr-defined]
            "DELETE FROM upstream_receipts WHERE device=? AND received_at < ?", (device, before)
        ).rowcount)

    async def drop_upstream_receipts(self, device: str, id_keys: list[str]) -> None:
        def op(conn: sqlite3.Connection) -> None:
            conn.executemany(
                "DELETE FROM upstream_receipts WHERE device=? AND id_key=?", [(device, k) for k in id_keys]
            )

        await self.write(op)  # type: ignore[attr-defined]

    async def upstream_mo_seen(self, device: str, prefix: str, since: float) -> float | None:
        """When an MO whose device_key starts with ``prefix`` (``name:digest:``) was first seen,
        if at or after ``since``; None if no such MO is stored."""

        def fn(conn: sqlite3.Connection) -> float | None:
            # A range on the unique (device, device_key) index; ';' follows ':' in ASCII.
            rows = conn.execute(
                "SELECT device_key FROM inbound WHERE device=? AND device_key >= ? AND device_key < ?",
                (device, prefix, prefix[:-1] + ";"),
            ).fetchall()
            seen = [float(k[len(prefix):]) for (k,) in rows if k[len(prefix):].isdigit()]
            newest = max(seen, default=None)
            return newest if newest is not None and newest >= since else None

        return await self.read(fn)  # type: ignore[attr-defined]

    async def note_network_stat(self, mid: int, stat: str, *, outbox: Any = None) -> Any:
        """A SENT message's newest intermediate stat from the network (SENT -> SENT, with an
        event), and the rows ``outbox(record)`` returns (its intermediate receipt) in the same
        transaction. Returns the record, or None when the message is not SENT (any more) or
        already shows ``stat``: nothing changes then."""

        def op(conn: sqlite3.Connection) -> Any:
            row = conn.execute("SELECT state, network_stat FROM messages WHERE id=?", (mid,)).fetchone()
            if row is None or row[0] != State.SENT.value or row[1] == stat:
                return None
            self._set_state(conn, mid, State.SENT, State.SENT, f"network: {stat}", network_stat=stat)  # type: ignore[attr-defined]
            rec = self._get_record(conn, mid)  # type: ignore[attr-defined]
            if outbox is not None:
                self._queue_receipts(conn, rec, outbox)  # type: ignore[attr-defined]
            return rec

        return await self.write(op)  # type: ignore[attr-defined]
