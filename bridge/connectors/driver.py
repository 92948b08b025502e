"""An upstream SMSC as a route target: the connector's driver.

A connector looks to the scheduler like a device whose channels are the slots of its window
(docs/connectors.md): ``window`` channels, each carrying at most one message at a time, so at
most ``window`` messages are with the SMSC unanswered. Everything the channel worker does for
devices applies unchanged: the part is durably marked ``submitting`` before the submit_sm
(``store.begin_part``), the SMSC's message id from the submit_sm_resp is stored with the part
(the driver's ``ref``), an ambiguous send follows ``scheduler.ambiguous`` and counts in
``smpp_bridge_ambiguous_sends_total``, and routes fail over between devices and connectors
both ways because a connector's health is a device's health.

Rules
-----
* ``send``: not bound -> CHANNEL_DOWN (AUTH_FAILED when the SMSC refused our credentials);
  each part waits for the pacing (``throughput`` segments per second, all binds together);
  ESME_RTHROTTLED / ESME_RMSGQFUL -> the connector backs off (``throttle_backoff`` doubling up
  to 16 times, reset by an accepted submit) and the message goes back to its queue (BUSY), or,
  after its first part went out, the part is tried again after the back-off (at most
  ``THROTTLE_TRIES`` times). A refusal of the address (ESME_RINVDSTADR ...) -> REJECTED; any
  other refusal -> ERROR (retried later). No resp, or the connection lost after the submit
  was written -> AMBIGUOUS. The ref is the SMSC's ids of all parts, separated by spaces.
* Congestion (SMPP 5.0): a ``congestion_state`` of 80 or more in any response spaces the
  segments at least ``congestion_gap`` seconds apart (0.05 s at 80, 1.05 s at 100), on top of
  ``throughput``; it holds until a response says less, or CONGESTION_HOLD seconds pass.
* ``status``: the newest receipt of each part (``receipts.ReceiptBook``): any final failure ->
  FAILED with the provider's error code (it becomes network_error_code); every part DELIVRD ->
  DELIVERED; else PENDING (ENROUTE, ACCEPTD and no receipt yet).
* Deliveries: a receipt is committed to the store first (``journal.ReceiptJournal``), then
  booked and answered (deliver_sm_resp / data_sm_resp); when the store cannot write it is
  answered ESME_RX_T_APPN, so the SMSC sends it again. A receipt that matches nothing is counted,
  logged and answered. An MO waits in ``inbox()`` and is answered only when the store has it
  (``delete_inbox``, the ACK_INBOX contract): an MO is never acknowledged before it is durable.
  Its key is its content's digest and the wall-clock second it was first seen; the same
  content within ``MO_KEY_WINDOW`` gets the same key, also after a restart (the store is asked
  for the newest key of a content not seen since the start), so a resend is one MO.
* ``status`` of a message still waiting shows the newest intermediate stat of its parts
  (``StatusResult.network_stat``: ENROUTE, ACCEPTD ...); the report tracker stores it on the
  message and sends the ESME its intermediate receipt when asked (docs/connectors.md).
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import random
from collections import OrderedDict
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

import trio

from ..devices.base import (
    DeliveryState,
    DeviceHealth,
    DriverBase,
    InboundSms,
    SendOutcome,
    SendResult,
    StatusResult,
)
from ..smpp.concat import ConcatError, extract
from ..smpp.constants import Status
from ..smpp.pdu import Pdu, make_response
from ..smpp.text import decode_short_message
from . import CAPABILITIES
from .bind import Ambiguous, Bind, NotSent
from .journal import ReceiptJournal
from .outbind import OutbindListener
from .receipts import Receipt, ReceiptBook, parse_receipt
from .submit import build_submits

log = logging.getLogger(__name__)

THROTTLE_STATUSES = frozenset({Status.RTHROTTLED, Status.RMSGQFUL})
REFUSED_MESSAGE = frozenset(
    {Status.RINVDSTADR, Status.RINVSRCADR, Status.RINVDSTTON, Status.RINVDSTNPI, Status.RINVSRCTON,
     Status.RINVSRCNPI, Status.RINVMSGLEN, Status.RINVESMCLASS, Status.RINVDCS}
)  # fmt: skip
THROTTLE_TRIES = 5
CONGESTED = 80  # SMPP 5.0 congestion_state from which the connector slows down
CONGESTION_HOLD = 10.0  # seconds a congestion_state holds without a newer one
MO_KEY_WINDOW = 600.0  # seconds: the same MO content again within this is a redelivery


class ConnectorStats:
    """What ops see per connector (metrics, /api/status): plain counters."""

    def __init__(self) -> None:
        self.submits: dict[str, int] = {}  # by status name ("ESME_ROK", "ambiguous", ...)
        self.receipts: dict[str, int] = {"matched": 0, "unmatched": 0, "duplicate": 0, "early": 0}
        self.intermediate: dict[str, int] = {}  # intermediate receipts by stat (ENROUTE ...)
        self.receipt_commit_failures = 0  # receipts answered with an error: the store could not write
        self.bind_refusals: dict[str, int] = {"auth": 0, "other": 0}
        self.dead_peers = 0
        self.throttled = 0
        self.mo = 0
        self.latency_sum = 0.0
        self.latency_count = 0

    def submit(self, status: str) -> None:
        self.submits[status] = self.submits.get(status, 0) + 1


class ConnectorDriver(DriverBase):
    kind = "smpp"
    declared = CAPABILITIES
    capabilities = CAPABILITIES.flags

    def __init__(self, device: Any, settings: Any) -> None:
        self.name = device.name
        self.channels = device.channel_ids()
        self.settings = settings
        self.stats = ConnectorStats()
        self.book = ReceiptBook(settings.early_grace)
        # Receipts are durable before they are answered once the app gives the store.
        self.journal: ReceiptJournal | None = None
        self._horizon = float(getattr(device, "status_timeout", 172_800.0)) + settings.early_grace
        self.binds = [
            Bind(settings, mode, i + 1, self._on_deliver, self)
            for mode in ("trx", "tx", "rx")
            for i in range(settings.binds.get(mode, 0))
        ]
        self.outbinds: list[Bind] = []  # receiver binds the SMSC asked for (outbind.py)
        self._rr = itertools.count()
        self._refs = itertools.count(random.randrange(256))
        self._next_slot = 0.0  # pacing: when the next segment may go
        self._throttle_level = 0
        self._throttled_until = 0.0
        self.congestion: int | None = None  # the SMSC's last congestion_state (SMPP 5.0)
        self._congestion_at = 0.0
        self._pace_lock = trio.Lock()
        # MO waiting for the store: device_key -> (InboundSms, the bind and PDU to answer).
        self._inbox: OrderedDict[str, tuple[InboundSms, list[tuple[Bind, Pdu]]]] = OrderedDict()
        self._mo_keys: OrderedDict[str, float] = OrderedDict()
        self._nursery: trio.Nursery | None = None
        self._stopped = trio.Event()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------------

    def attach_store(self, store: Any, clock: Any) -> None:
        """Keep receipts in ``store`` (committed before they are answered); ``clock`` is the
        wall clock their ages are measured with (it survives a restart)."""
        self.journal = ReceiptJournal(self.name, self.book, store, clock, self._horizon)

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        self._stopped = trio.Event()
        if self.journal is not None:  # before any bind: what a crash interrupted comes first
            self._unmatched(await self.journal.restore())
        outbind = OutbindListener(self) if self.settings.outbind is not None else None
        try:
            if outbind is not None:
                await outbind.open()  # a port in use: a plain OSError to the caller
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                for bind in self.binds:
                    nursery.start_soon(bind.run)
                if outbind is not None:
                    nursery.start_soon(outbind.serve)
                nursery.start_soon(self._sweep)
                task_status.started(None)
        finally:
            self._stopped.set()

    async def aclose(self) -> None:
        """Unbind every session (each bind's cleanup does it, bounded) and stop."""
        if self._closed:
            return
        self._closed = True
        for bind in [*self.binds, *self.outbinds]:
            await bind.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await self._stopped.wait()

    # -- a config reload (reconfigure.py) ---------------------------------------------------------

    def adopt(self, old: ConnectorDriver) -> None:
        """Take over what the previous driver of this connector knew (a reload changed its
        settings): the receipts book, so receipts for what it sent still match, and the
        counters, so the metrics do not start again from 0; the receipts kept in the store
        are kept by the journal of that same book."""
        self.book, self.stats, self._mo_keys = old.book, old.stats, old._mo_keys
        if old.journal is not None:
            self.journal = old.journal

    def retune(self, settings: Any) -> None:
        """New pacing (throughput, throttle_backoff, receipt_grace) without a rebind."""
        self.settings = settings
        self.book.early_grace = settings.early_grace
        for bind in [*self.binds, *self.outbinds]:
            bind.cfg = settings

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(min(5.0, self.book.early_grace))
            if self.journal is None:
                self._unmatched(self.book.expire(trio.current_time()))
                continue
            try:
                self._unmatched(await self.journal.sweep())
            except Exception as exc:  # noqa: BLE001 - the store's trouble; the next sweep retries
                log.error("connector %s: could not expire kept receipts (%s); trying again", self.name, exc)

    def _unmatched(self, receipts: list[Receipt]) -> None:
        for receipt in receipts:
            self.stats.receipts["unmatched"] += 1
            log.warning(
                "connector %s: receipt for SMSC id %r (stat %s) matches no message we sent; if this "
                "repeats, compare the ids in the provider's receipts with their submit_sm_resp ids",
                self.name, receipt.message_id, receipt.stat,
            )

    # -- events from the binds (state, counts) ----------------------------------------------------

    def state_changed(self, bind: Bind) -> None:
        pass

    def bound(self, bind: Bind) -> None:
        self._throttle_level = 0

    def bind_refused(self, bind: Bind, reason: str) -> None:
        self.stats.bind_refusals[reason] += 1

    def dead_peer(self, bind: Bind) -> None:
        self.stats.dead_peers += 1

    def congestion_state(self, bind: Bind, value: int) -> None:
        if value >= CONGESTED and (self.congestion or 0) < CONGESTED:
            log.warning("connector %s: the SMSC reports congestion %d: slowing down", self.name, value)
        self.congestion, self._congestion_at = min(value, 100), trio.current_time()

    @property
    def mo_waiting(self) -> int:
        return len(self._inbox)

    @property
    def binds_up(self) -> int:
        return sum(1 for b in [*self.binds, *self.outbinds] if b.state == "bound")

    # -- sending ---------------------------------------------------------------------------------

    def _submitter(self) -> Bind | None:
        ready = [b for b in self.binds if b.can_submit]
        if not ready:
            return None
        return ready[next(self._rr) % len(ready)]

    async def _pace(self) -> None:
        async with self._pace_lock:
            now = trio.current_time()
            wait = max(self._next_slot, self._throttled_until) - now
            if wait > 0:
                await trio.sleep(wait)
                now = trio.current_time()
            rate = self.settings.throughput
            if self.congestion is not None and now - self._congestion_at > CONGESTION_HOLD:
                self.congestion = None  # not said again for a while: over
            self._next_slot = now + max(1.0 / rate if rate > 0 else 0.0, congestion_gap(self.congestion))

    def _throttled(self) -> float:
        self.stats.throttled += 1
        self._throttle_level = min(self._throttle_level + 1, 16)
        delay = min(self.settings.throttle_backoff * 2 ** (self._throttle_level - 1), self.settings.throttle_backoff_max)
        self._throttled_until = trio.current_time() + delay
        return delay

    def _down_result(self) -> SendResult:
        if self.binds and all(b.state == "auth_failed" for b in self.binds if b.mode != "rx"):
            return SendResult(SendOutcome.AUTH_FAILED, detail="the SMSC refused our credentials: check system_id and password")
        details = "; ".join(sorted({b.detail for b in self.binds if b.mode != "rx"})) or "no transmitter bind configured"
        return SendResult(SendOutcome.CHANNEL_DOWN, detail=f"not bound: {details}")

    async def send(self, channel: str, destination: str, text: str, *, source: str | None = None, **_: Any) -> SendResult:
        self.check_channel(channel)
        s = self.settings
        if self._submitter() is None:
            return self._down_result()
        # An SMSC that said it speaks 3.3 takes no TLVs: long text as UDH parts there.
        no_tlvs = any(b.sc_version is not None and b.sc_version < 0x34 for b in self.binds if b.can_submit)
        submits = build_submits(
            source or s.source or "", destination, text, encoding=s.encoding, long="udh" if no_tlvs else s.long,
            ref=next(self._refs), source_ton_npi=s.source_ton_npi, dest_ton_npi=s.dest_ton_npi,
        )
        ids: list[str] = []
        for part in submits:
            tries = 0
            while True:
                await self._pace()
                bind = self._submitter()
                if bind is None:
                    if not ids:
                        return self._down_result()
                    return self._partial(ids, len(submits), "the connection went down")
                started = trio.current_time()
                try:
                    resp = await bind.submit(part["params"], part["tlvs"])
                except NotSent as exc:
                    if not ids:
                        return SendResult(SendOutcome.CHANNEL_DOWN, detail=str(exc))
                    return self._partial(ids, len(submits), str(exc))
                except Ambiguous as exc:
                    self.stats.submit("ambiguous")
                    return SendResult(SendOutcome.AMBIGUOUS, ref=" ".join(ids) or None, detail=str(exc))
                st = resp.command_status
                self.stats.submit(_status_name(st))
                self.stats.latency_sum += trio.current_time() - started
                self.stats.latency_count += 1
                if st == 0:
                    mid = str(resp.params.get("message_id") or "")
                    self._throttle_level = 0
                    early = self.book.claim(mid)
                    if early is not None:
                        self.stats.receipts["matched"] += 1  # it had come before the resp
                        if self.journal is not None:
                            await self.journal.claimed(early, mid)
                    ids.append(mid)
                    break
                if st in THROTTLE_STATUSES:
                    delay = self._throttled()
                    log.warning("connector %s: the SMSC answered %s; backing off %.1f s", self.name, _status_name(st), delay)
                    if not ids:
                        return SendResult(SendOutcome.BUSY, detail=f"SMSC answered {_status_name(st)}")
                    tries += 1
                    if tries < THROTTLE_TRIES:
                        continue
                    return self._partial(ids, len(submits), f"SMSC kept answering {_status_name(st)}")
                if ids:
                    return self._partial(ids, len(submits), f"SMSC refused a later part: {_status_name(st)}")
                if st in REFUSED_MESSAGE:
                    return SendResult(SendOutcome.REJECTED, detail=f"SMSC refused the message: {_status_name(st)}")
                return SendResult(SendOutcome.ERROR, detail=f"SMSC answered {_status_name(st)}")
        return SendResult(SendOutcome.ACCEPTED, ref=" ".join(ids))

    def _partial(self, ids: list[str], total: int, why: str) -> SendResult:
        # Some parts are with the SMSC and cannot be taken back; sending again would double
        # them: the ambiguity policy decides.
        return SendResult(SendOutcome.AMBIGUOUS, ref=" ".join(ids), detail=f"{len(ids)} of {total} parts sent, then {why}")

    # -- status (receipts) -----------------------------------------------------------------------

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        if not ref:
            return StatusResult(DeliveryState.UNKNOWN, detail="no SMSC message id")
        pending = False
        progress: str | None = None
        for mid in ref.split():
            r = self.book.latest(mid)
            if r is None or not r.final:
                pending = True
                progress = progress or (r.stat if r is not None else None)
                continue
            if r.stat != "DELIVRD":
                self._reported(ref)
                return StatusResult(DeliveryState.FAILED, error_code=r.error, detail=f"SMSC receipt {r.stat} for {mid}")
        if pending:
            detail = f"the SMSC says {progress}" if progress else "no final receipt yet"
            return StatusResult(DeliveryState.PENDING, detail=detail, network_stat=progress)
        self._reported(ref)
        return StatusResult(DeliveryState.DELIVERED, detail="SMSC receipt DELIVRD")

    def _reported(self, ref: str) -> None:
        if self.journal is not None:
            self.journal.reported(ref)

    # -- deliveries (receipts and MO) --------------------------------------------------------------

    async def _on_deliver(self, bind: Bind, pdu: Pdu) -> Pdu | None:
        receipt = parse_receipt(pdu)
        if receipt is not None:
            return await self._on_receipt(pdu, receipt)
        try:
            body, concat = extract(pdu)
        except ConcatError as exc:
            return Pdu(pdu.command_id | 0x80000000, exc.status, pdu.sequence_number)
        text = decode_short_message(int(pdu.params.get("data_coding") or 0), body)
        if text is None:
            text = body.hex()
        src = str(pdu.params.get("source_addr") or "")
        dst = str(pdu.params.get("destination_addr") or "")
        now = self._wall()
        digest = hashlib.sha256(repr((src, dst, bytes(pdu.params.get("short_message") or b""), sorted(
            (k, v) for k, v in pdu.tlvs.items()))).encode()).hexdigest()[:24]  # fmt: skip
        seen = self._mo_keys.get(digest)
        if seen is None and self.journal is not None:
            # Not seen since the start: the store knows whether it came before a restart.
            try:
                seen = await self.journal.mo_seen(f"{self.name}:{digest}:", now - MO_KEY_WINDOW)
            except Exception as exc:  # noqa: BLE001 - unanswered until stored anyway
                log.warning("connector %s: could not look up an earlier copy of an MO (%s)", self.name, exc)
        if seen is None or now - seen > MO_KEY_WINDOW:
            seen = now
        self._mo_keys[digest] = seen
        while len(self._mo_keys) > 50_000:
            self._mo_keys.popitem(last=False)
        key = f"{self.name}:{digest}:{int(seen)}"
        waiting = self._inbox.get(key)
        if waiting is not None:  # a redelivery before we answered: answer both when stored
            waiting[1].append((bind, pdu))
            return None
        self.stats.mo += 1
        sms = InboundSms(
            channel=self.channels[0], sender=src, text=text, received_at=datetime.now(timezone.utc),
            device_key=key, raw=f"{src}->{dst}: {text[:80]}",
            concat_ref=concat.ref if concat else None, concat_total=concat.total if concat else None,
            concat_seq=concat.seq if concat else None,
        )
        self._inbox[key] = (sms, [(bind, pdu)])
        return None

    def _wall(self) -> float:
        """The time early receipts and MO keys are aged by: the store's wall clock when receipts
        are kept there (it survives a restart), else trio's."""
        return self.journal.clock() if self.journal is not None else trio.current_time()

    async def _on_receipt(self, pdu: Pdu, receipt: Receipt) -> Pdu:
        """Commit, then book, then answer (module rules)."""
        result, ref = self.book.classify(receipt)
        if self.journal is not None and result in ("matched", "early"):
            try:
                await self.journal.commit(receipt, result, ref)
            except Exception as exc:  # noqa: BLE001 - any failure to commit: the SMSC must resend
                self.stats.receipt_commit_failures += 1
                log.error(
                    "connector %s: receipt for SMSC id %r could not be stored (%s); answered "
                    "ESME_RX_T_APPN so the SMSC sends it again. Check the disk and the store's log lines.",
                    self.name, receipt.message_id, exc,
                )  # fmt: skip
                return make_response(pdu, Status.RX_T_APPN)
        now = self._wall()
        result = self.book.arrived(receipt, now)
        if result != "early":
            self.stats.receipts[result] += 1
        if result in ("matched", "early") and not receipt.final:
            self.stats.intermediate[receipt.stat] = self.stats.intermediate.get(receipt.stat, 0) + 1
        if result == "unmatched":
            log.warning("connector %s: a receipt without a message id (%r): counted unmatched", self.name, receipt.raw[:80])
        return make_response(pdu)

    async def inbox(self) -> list[InboundSms]:
        return [sms for sms, _ in self._inbox.values()]

    async def delete_inbox(self, items: Iterable[InboundSms]) -> None:
        """The store has these MO: answer their deliver_sm now."""
        for sms in items:
            entry = self._inbox.pop(sms.device_key, None)
            if entry is None:
                continue
            for bind, pdu in entry[1]:
                await bind.answer(make_response(pdu))

    # -- health ----------------------------------------------------------------------------------

    async def health(self) -> DeviceHealth:
        tx = [b for b in self.binds if b.mode != "rx"]
        up = [b for b in tx if b.state == "bound"]
        auth = bool(tx) and all(b.state == "auth_failed" for b in tx)
        detail = "; ".join(f"{b.name}: {b.state} ({b.detail})" for b in self.binds)
        return DeviceHealth(reachable=bool(up), auth_failed=auth, detail=detail)

    def status_summary(self) -> dict[str, Any]:
        st = self.stats
        return {
            "binds": {b.name: {"state": b.state, "detail": b.detail} for b in [*self.binds, *self.outbinds]},
            "binds_up": self.binds_up,
            "submits": dict(st.submits),
            "receipts": dict(st.receipts),
            "intermediate_receipts": dict(st.intermediate),
            "receipt_commit_failures": st.receipt_commit_failures,
            "bind_refusals": dict(st.bind_refusals),
            "throttled": st.throttled,
            "mo": st.mo,
            "mo_waiting": self.mo_waiting,
            "latency_avg_seconds": st.latency_sum / st.latency_count if st.latency_count else None,
            "congestion": self.congestion,
        }


def congestion_gap(congestion: int | None) -> float:
    """Seconds at least between two segments while the SMSC reports ``congestion`` (SMPP 5.0
    congestion_state): none below 80; from 80, 0.05 s more per point (0.05 s at 80, about 20
    a second; 0.55 s at 90; 1.05 s at 100, under one a second)."""
    if congestion is None or congestion < CONGESTED:
        return 0.0
    return 0.05 * (min(congestion, 100) - CONGESTED + 1)


def _status_name(status: int) -> str:
    try:
        return "ESME_" + Status(status).name
    except ValueError:
        return f"0x{status:08X}"
