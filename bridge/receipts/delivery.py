"""Delivery of the outbox (receipts and MO) to the ESMEs' receiver binds.

Rules
-----
* Delivery: per ESME, in outbox order, over its RX/TRX binds in turn, within each bind's window,
  until deliver_sm_resp says ESME_ROK. Nothing is dropped after a few tries: an ESME that is not
  bound gets its backlog on its next bind; only ``receipts.retention`` ends a wait (counted).
* An answer that can never turn into ESME_ROK for this deliver_sm (``PERMANENT_REFUSALS``)
  ends it: the row is marked refused with the status, counted in
  ``smpp_bridge_outbox_refused_total{esme,kind,status}`` and logged once. Any other error (or
  no answer) is retried with a back-off per row, doubling up to ``RETRY_MAX`` seconds, until
  the retention ends it. Receipts and MO go the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from ..smpp.concat import payload_as_udh_parts
from ..smpp.constants import CommandId, Status, Tag
from ..store import OutboxItem, Store
from .payload import decode_payload

log = logging.getLogger(__name__)

# deliver_sm_resp statuses that can never become ESME_ROK for the deliver_sm they answer: the
# ESME says the PDU itself is wrong or unwanted (its address, its coding, a TLV, its length),
# or its application refuses this message for good (RX_P_APPN, RX_R_APPN). Sending the same
# bytes again cannot help, so the row ends, refused. Everything else is transient and
# retried with a back-off until receipts.retention: RSYSERR (the ESME's own trouble),
# RX_T_APPN (temporary by definition), RMSGQFUL, RTHROTTLED, RINVBNDSTS (a bind mix-up), no
# answer within the response timer, and any vendor code we do not know.
PERMANENT_REFUSALS: dict[int, str] = {
    Status.RINVMSGLEN: "message length invalid",
    Status.RINVCMDLEN: "command length invalid",
    Status.RINVCMDID: "the ESME does not take deliver_sm",
    Status.RINVSRCADR: "source address invalid",
    Status.RINVDSTADR: "destination address invalid",
    Status.RINVESMCLASS: "esm_class invalid",
    Status.RINVSRCTON: "source TON invalid",
    Status.RINVSRCNPI: "source NPI invalid",
    Status.RINVDSTTON: "destination TON invalid",
    Status.RINVDSTNPI: "destination NPI invalid",
    Status.RX_P_APPN: "permanent application error",
    Status.RX_R_APPN: "the ESME rejects this message",
    Status.RINVOPTPARSTREAM: "TLV stream invalid",
    Status.ROPTPARNOTALLWD: "TLV not allowed",
    Status.RINVPARLEN: "TLV length invalid",
    Status.RMISSINGOPTPARAM: "TLV missing",
    Status.RINVOPTPARAMVAL: "TLV value invalid",
    Status.RINVDCS: "data_coding invalid",
}


def is_permanent_refusal(status: int) -> bool:
    return status in PERMANENT_REFUSALS


class OutboxDelivery:
    """Delivers outbox rows (receipts and MO messages) to bound ESMEs."""

    RESCAN_SECONDS = 5.0
    STATS_SECONDS = 5.0
    RETRY_BASE = 1.0  # seconds before a row the ESME did not take is offered again, doubling
    RETRY_MAX = 300.0

    def __init__(self, store: Store, server: Any, metrics: Any, config: Any) -> None:
        self.store = store
        self.server = server
        self.metrics = metrics
        self.config = config
        self._dirty: set[str] = set()
        self._wake = trio.Event()
        self._workers: set[str] = set()
        # Rows being sent, or acknowledged by the ESME with their delivered mark not yet
        # committed: a rescan must not send them again.
        self._settling: set[int] = set()
        # A row's new mark (delivered, refused, retry later) committed while a read of the
        # outbox was under way may be missing from that read: per ESME, each such row with the
        # count of settlements when it settled, so a read that began earlier skips it.
        self._settle_count = 0
        self._recently_settled: dict[str, dict[int, int]] = {}
        self._failures: dict[str, int] = {}
        self._events: dict[str, trio.Event] = {}  # wakes an idle worker
        self._nursery: trio.Nursery | None = None
        self.stats: dict[tuple[str, str], tuple[int, float | None]] = {}

    def update_config(self, config: Any) -> None:
        """A reload: retention and the ESMEs' settings apply from now on."""
        self.config = config

    def wake(self, esme: str) -> None:
        """New rows for ``esme`` (store hook), or ``esme`` just bound a receiver (server hook)."""
        self._dirty.add(esme)
        self._wake.set()
        event = self._events.get(esme)
        if event is not None:
            event.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        for esme in await self.store.outbox_esmes():
            self._dirty.add(esme)
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._housekeeping)
            task_status.started()
            while True:
                if not self._dirty:
                    self._wake = trio.Event()
                    with trio.move_on_after(self.RESCAN_SECONDS):
                        await self._wake.wait()
                    if not self._dirty:
                        # Periodic rescan: retries rows whose delivery failed earlier.
                        self._dirty.update(e for e, _k in self.stats)
                dirty, self._dirty = self._dirty, set()
                for esme in dirty:
                    if esme not in self._workers and self.server.receivers(esme):
                        self._workers.add(esme)
                        nursery.start_soon(self._worker, esme)

    async def _worker(self, esme: str) -> None:
        try:
            await self._deliver_backlog(esme)
        finally:
            self._workers.discard(esme)

    async def _deliver_backlog(self, esme: str) -> None:
        last_id = 0
        async with trio.open_nursery() as nursery:
            while True:
                receivers = self.server.receivers(esme)
                if not receivers:
                    return
                mark = self._settle_count
                items = await self.store.pending_outbox(esme, after_id=last_id, limit=200)
                recent = self._recently_settled.setdefault(esme, {})
                items = [i for i in items if i.id not in self._settling and recent.get(i.id, -1) <= mark]
                for item_id in [k for k, n in recent.items() if n <= mark]:
                    del recent[item_id]  # settled before this read began: the read shows it
                if not items:
                    if self._failures.get(esme):
                        # Some rows were not accepted: another pass from the start, backing off.
                        last_id = 0
                        await trio.sleep(min(self.RESCAN_SECONDS, 0.2 * 2 ** min(self._failures[esme], 5)))
                        continue
                    # Idle: wait for new rows; a periodic full pass catches anything left behind.
                    event = self._events[esme] = trio.Event()
                    with trio.move_on_after(self.RESCAN_SECONDS) as idle:
                        await event.wait()
                    if idle.cancelled_caught:
                        last_id = 0
                    continue
                window = sum(c.server.config.smpp.window for c in receivers) or 1
                limiter = trio.Semaphore(window)
                for item in items:
                    if not self.server.receivers(esme):
                        return
                    await limiter.acquire()
                    self._settling.add(item.id)
                    nursery.start_soon(self._send_one, esme, item, limiter)
                last_id = items[-1].id
                # Wait for this batch before fetching more, so order is kept batch by batch.
                for _ in range(window):
                    await limiter.acquire()

    async def _send_one(self, esme: str, item: OutboxItem, limiter: trio.Semaphore) -> None:
        ok = settled = False
        try:
            conn = self.server.next_receiver(esme)  # one turn per item: an even spread over binds
            if conn is None:
                return
            pdu = decode_payload(item.payload)
            pdus = [pdu]
            if getattr(conn, "interface_version", 0x34) < 0x34 and Tag.MESSAGE_PAYLOAD in pdu.tlvs:
                # SMPP 3.3 has no TLVs: a long MO goes as UDH parts instead (concat.py).
                pdus = payload_as_udh_parts(pdu, ref=item.id)
            for pdu in pdus:
                resp = await conn.request(pdu)
                ok = resp is not None and resp.command_status == Status.ROK and resp.command_id == CommandId.DELIVER_SM_RESP
                if not ok:
                    break
            if ok:
                self.metrics.outbox_delivered.labels(esme, item.kind).inc()
                self._failures[esme] = 0

                self.store.outbox_delivered_nowait(item.id, self._settled(esme, item.id))
            elif resp is not None and is_permanent_refusal(resp.command_status):
                self._refused(esme, item, resp.command_status)
                settled = True
            else:
                why = "no answer" if resp is None else f"status 0x{resp.command_status:08x}"
                self._failures[esme] = self._failures.get(esme, 0) + 1
                self.metrics.outbox_retries.labels(esme, item.kind).inc()
                delay = min(self.RETRY_MAX, self.RETRY_BASE * 2 ** min(item.attempts, 20))
                log.info("deliver_sm %s to %s not accepted (%s); will retry in %.0f s", item.kind, esme, why, delay)
                self.store.outbox_retry_nowait(item.id, self.store.clock() + delay, self._settled(esme, item.id))
                settled = True
        finally:
            if not ok and not settled:
                self._settling.discard(item.id)
            limiter.release()

    def _settled(self, esme: str, item_id: int) -> Callable[[Any, BaseException | None], None]:
        """Keeps the row out of rescans until its new mark is committed, and out of any read
        that began before the commit."""

        def done(_r: Any, _error: BaseException | None) -> None:
            self._settling.discard(item_id)
            self._settle_count += 1
            self._recently_settled.setdefault(esme, {})[item_id] = self._settle_count

        return done

    def _refused(self, esme: str, item: OutboxItem, status: int) -> None:
        label = f"0x{status:08x}"
        self.metrics.outbox_refused.labels(esme, item.kind, label).inc()
        what = f"message {item.message}" if item.kind == "receipt" else f"inbound message {item.message}"
        log.warning(
            "ESME %s refused the deliver_sm (%s for %s) for good: status %s (%s); it is not sent "
            "again. Check why the ESME refuses it (its logs, its address or coding rules); the "
            "row stays in the store as refused",
            esme, item.kind, what, label, PERMANENT_REFUSALS.get(status, "unknown"),
        )  # fmt: skip
        self.store.outbox_refused_nowait(item.id, status, self._settled(esme, item.id))

    async def _housekeeping(self) -> None:
        while True:
            try:
                dropped = await self.store.expire_outbox()
                if dropped:
                    self.metrics.outbox_expired.inc(dropped)
                    log.warning(
                        "%d deliver_sm waited longer than receipts.retention for their ESME and "
                        "were dropped; bind the ESME or raise the retention",
                        dropped,
                    )
                self.stats = await self.store.outbox_stats()
            except Exception:
                log.exception("outbox housekeeping failed; will retry")
            await trio.sleep(self.STATS_SECONDS)
