"""A connector's receipts, durable before they are answered (docs/connectors.md, Receipts).

The driver asks the ``ReceiptBook`` what a receipt is (``classify``), commits it here, and
only then books it in memory and answers the SMSC. So a deliver_sm_resp (or data_sm_resp) the
SMSC got always stands for a committed row of ``store.upstream_receipts``; a kill -9 after it
loses nothing, and an SMSC whose receipt we could not commit gets an error and sends it again.

Rules
-----
* ``commit``: a matched or early receipt is written (``save_upstream_receipt``) with the
  submitted id it matched (None while early). Duplicates and receipts without an id are not
  written: the first is already there, the second matches nothing (counted, logged, answered).
* ``claimed``: an early receipt's submit_sm_resp came; its row learns the submitted id.
* ``restore`` (when the connector starts): the SMSC ids of the parts still waiting for a
  receipt are submitted to the book again, then every kept row arrives again in the order it
  came: a receipt a crash interrupted finds its message, and the report tracker finishes it.
* Timers, so that nothing is kept forever: an early receipt no resp claimed within
  ``early_grace`` is deleted and returned (the driver counts it unmatched); a final receipt
  the tracker read (``reported``) is deleted once its part no longer waits in the store; and
  any row older than ``horizon`` (the connector's status_timeout plus the grace: no message
  waits longer) is deleted by the sweep.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from .receipts import Receipt, ReceiptBook, id_forms

log = logging.getLogger(__name__)

#: Seconds between looks at the store for receipts whose message is finished.
SWEEP_EVERY = 60.0


class ReceiptJournal:
    def __init__(self, device: str, book: ReceiptBook, store: Any, clock: Callable[[], float], horizon: float) -> None:
        self.device = device
        self.book = book
        self.store = store
        self.clock = clock
        self.horizon = horizon
        self._row_of: dict[str, str] = {}  # submitted id -> id_key of its kept row
        self._reported: dict[str, float] = {}  # part ref whose final receipt the tracker read -> when
        self._last_sweep = clock()

    async def restore(self) -> list[Receipt]:
        """Load what the store kept; returns the early receipts already past their grace."""
        for mid in await self.store.upstream_refs(self.device):
            self.book.submitted(mid)
        rows = await self.store.upstream_receipts(self.device)
        for smsc_id, stat, error, at, matched in rows:
            receipt = Receipt(smsc_id, stat, error)
            result, ref = self.book.classify(receipt)
            self.book.arrived(receipt, at)
            if result == "matched" and ref is not None:
                self._note_row(ref, id_forms(smsc_id)[0])
        if rows:
            log.info("connector %s: %d receipt(s) kept from before the restart", self.device, len(rows))
        return await self.expire()

    async def commit(self, receipt: Receipt, result: str, ref: str | None) -> None:
        """Make a matched or early receipt durable (raises when the store cannot write)."""
        key = id_forms(receipt.message_id)[0]
        await self.store.save_upstream_receipt(
            self.device, key, receipt.message_id, receipt.stat, receipt.error, self.clock(), ref
        )
        if ref is not None:
            self._note_row(ref, key)

    async def claimed(self, receipt: Receipt, ref: str) -> None:
        """An early receipt found its submit_sm_resp: note whose it is (best effort: should this
        fail, the row is matched again from the store's parts after a restart)."""
        key = id_forms(receipt.message_id)[0]
        self._note_row(ref, key)
        try:
            await self.store.match_upstream_receipt(self.device, key, ref)
        except Exception as exc:  # noqa: BLE001 - the receipt stays kept; only its note is missing
            log.warning("connector %s: could not note that receipt %r belongs to %r: %s", self.device, receipt.message_id, ref, exc)

    async def mo_seen(self, prefix: str, since: float) -> float | None:
        """When the same MO content (``name:digest:``) was first stored, if since ``since``."""
        return await self.store.upstream_mo_seen(self.device, prefix, since)

    def _note_row(self, ref: str, key: str) -> None:
        self._row_of.pop(ref, None)
        self._row_of[ref] = key
        while len(self._row_of) > self.book.keep:  # the book forgets as many ids (its keep)
            del self._row_of[next(iter(self._row_of))]

    def reported(self, ref: str) -> None:
        """The tracker read a final status for part ``ref`` (the SMSC ids, space-separated)."""
        self._reported.setdefault(ref, self.clock())

    async def expire(self) -> list[Receipt]:
        """Early receipts past their grace: deleted from the store and returned."""
        gone = self.book.expire(self.clock())
        if gone:
            await self.store.drop_upstream_receipts(self.device, [id_forms(r.message_id)[0] for r in gone])
        return gone

    async def sweep(self) -> list[Receipt]:
        """The timers (see the module's rules); returns the early receipts that expired."""
        gone = await self.expire()
        now = self.clock()
        if now - self._last_sweep < SWEEP_EVERY:
            return gone
        self._last_sweep = now
        for ref, at in list(self._reported.items()):
            if now - at < SWEEP_EVERY:
                continue  # the tracker's commit of the part may not be in yet
            if now - at < self.horizon and await self.store.upstream_ref_waiting(self.device, ref):
                continue
            del self._reported[ref]
            keys = [k for k in (self._row_of.pop(mid, None) for mid in ref.split()) if k is not None]
            if keys:
                await self.store.drop_upstream_receipts(self.device, keys)
        await self.store.expire_upstream_receipts(self.device, now - self.horizon)
        return gone
