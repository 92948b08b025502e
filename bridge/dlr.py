"""Device status -> SMPP delivery receipt, and delivery of every queued deliver_sm to the ESMEs.

Rules
-----
* What a device said about each part is turned into one message outcome by a per-device-kind
  table (``Capabilities.receipt_table``), which config can override per error code (``receipts.map``).
  A long message gets ONE combined receipt: DELIVRD only if every part was delivered. An ESME
  with ``receipts: per_part`` gets one receipt per part id it was given instead (each with the
  message's combined outcome: the bridge re-splits the text for the device, so a device part
  is not an ESME part).
* Every final state gets its receipt in the transaction that stores it, also those the store
  decides itself (cancel_sm: DELETED; parts that never completed: EXPIRED): ``Receipts.final``
  is the store's ``final_receipts``.
* GoIP's HTTP ``DONE`` means the network took the part, not that a handset got it. By default it
  is reported as DELIVRD; ``receipts.goip_done: accepted`` reports ACCEPTD instead (message
  state ACKNOWLEDGED).
* A receipt is queued in the outbox in the same transaction as the final state it reports
  (store.move), so a crash can never lose it or report a state that was not stored.
* registered_delivery is honoured: bits 1-0 = 01 every final outcome, 10 failures only;
  bit 4 (0x10) adds an intermediate ENROUTE receipt when the device takes the message.
* The receipt id is byte-identical to the message_id given in submit_sm_resp (for a long
  message: the id of the first part that asked for a receipt).
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

import base64
import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import trio

from . import lifecycle
from .devices import registry as device_registry
from .devices.base import GENERIC_RECEIPT_TABLE
from .lifecycle import State
from .smpp.constants import (
    ESM_TYPE_INTERMEDIATE,
    ESM_TYPE_RECEIPT,
    REG_DLR_ALWAYS,
    REG_DLR_FAILURE,
    REG_DLR_MASK,
    REG_INTERMEDIATE,
    CommandId,
    MessageState,
    Status,
    Tag,
)
from .smpp.concat import payload_as_udh_parts
from .smpp.pdu import Pdu
from .smpp.receipt import build_receipt_text, receipt_tlvs
from .store import MessageRecord, OutboxItem, Store, format_id

log = logging.getLogger(__name__)

# network_error_code network types (§5.3.2.31)
NET_GSM = 3
NET_SMPP = 7
NET_MC_SPECIFIC = 8

SUCCESS_STATES = frozenset({State.DELIVERED, State.ACKNOWLEDGED})

# Both tables live in the lifecycle authority; these names stay for the code that uses them.
STATE_TO_SMPP = {st: ms for st, ms in lifecycle.SMPP_STATE.items() if st in lifecycle.FINAL}
STAT_TO_STATE = lifecycle.STAT_STATE


@attrs.frozen
class Outcome:
    """The final word on a message: its state, the receipt's stat/err and the TLV code."""

    state: State
    stat: str
    err: int = 0
    network_error: tuple[int, int] | None = None
    detail: str = ""


# Part results as the scheduler records them: "network" (handed to the network),
# "delivered" (handset report), "failed" (with the device's error code), "unknown".
# Each device kind declares its table (Capabilities.receipt_table: part result -> (stat, err)
# where err None means "derive from the code"); this one is every kind's default.
GENERIC_TABLE = GENERIC_RECEIPT_TABLE


def _code_err(code: str | None) -> tuple[int, tuple[int, int] | None]:
    """Device error code -> (receipt err 0..999, network_error_code TLV). GoIP's 2172 -> 172
    in the text and (8, 2172) in the TLV, which carries the whole code."""
    if code and code.isdigit():
        n = int(code)
        return n % 1000, (NET_MC_SPECIFIC, n & 0xFFFF)
    return 0, None


class ReceiptPolicy:
    """Turns part results into an Outcome, with config overrides."""

    def __init__(self, receipts_config: Any = None) -> None:
        self.goip_done = getattr(receipts_config, "goip_done", "delivered")
        self.no_report = getattr(receipts_config, "no_report", "accepted")
        self.overrides: Mapping[str, Mapping[str, Any]] = getattr(receipts_config, "map", {}) or {}

    def network_stat(self, kind: str) -> str:
        """The receipt for "handed to the network, no handset report": the kind declares which
        policy decides (Capabilities.network_receipt): receipts.goip_done for GoIP HTTP's DONE,
        receipts.no_report for every other kind (router/brevis OK, a phone or GoIP UDP line
        whose report did not come in time)."""
        key = device_registry.capabilities(kind).network_receipt
        policy = self.goip_done if key == "goip_done" else self.no_report
        return "DELIVRD" if policy == "delivered" else "ACCEPTD"

    def part_outcome(self, kind: str, result: str, code: str | None) -> Outcome:
        override = self.overrides.get(kind, {}).get(code or "") if code else None
        err, net = _code_err(code)
        if override is not None:
            stat = override.stat
            return Outcome(STAT_TO_STATE[stat], stat, override.err, net, f"device code {code}")
        table = device_registry.capabilities(kind).receipt_table
        stat, fixed_err = table.get(result, ("UNKNOWN", 0))
        if result == "network":
            stat = self.network_stat(kind)
        detail = f"device code {code}" if code else result
        return Outcome(STAT_TO_STATE[stat], stat, err if fixed_err is None else fixed_err, net, detail)

    def combine(self, kind: str, parts: list[tuple[str, str | None]]) -> Outcome:
        """One outcome for all parts of a message: the worst part decides. DELIVRD only if every
        part was delivered (or handed to the network where that counts as delivered)."""
        outcomes = [self.part_outcome(kind, r, c) for r, c in parts]
        rank = {
            State.UNDELIVERABLE: 0,
            State.REJECTED: 1,
            State.EXPIRED: 2,
            State.UNKNOWN: 3,
            State.DELETED: 4,
            State.ACKNOWLEDGED: 5,
            State.DELIVERED: 6,
        }
        return min(outcomes, key=lambda o: rank[o.state])


def wants_receipt(registered_delivery: int, state: State) -> bool:
    mode = registered_delivery & REG_DLR_MASK
    if mode == REG_DLR_ALWAYS:
        return True
    if mode == REG_DLR_FAILURE:
        return state not in SUCCESS_STATES
    return False


def _ts(t: float | None, clock: Callable[[], float] = time.time) -> dt.datetime:
    return dt.datetime.fromtimestamp(t if t is not None else clock(), dt.UTC)


def receipt_params(
    rec: MessageRecord, outcome: Outcome, *, intermediate: bool = False, part_id: int | None = None,
    clock: Callable[[], float] = time.time,
) -> dict[str, Any]:
    """The deliver_sm (as payload dict) that reports ``outcome`` for ``rec``; with ``part_id``,
    for that one part of a long message (per-part receipts: sub:001)."""
    rid = rec.receipt_message_id if part_id is None else format_id(part_id)
    submitted = rec.esme_parts if part_id is None else 1
    if intermediate:
        stat, smpp_state, err, net = "ENROUTE", MessageState.ENROUTE, 0, None
    else:
        stat, smpp_state = outcome.stat, STATE_TO_SMPP[outcome.state]
        err, net = outcome.err, outcome.network_error
    delivered = submitted if outcome.state in SUCCESS_STATES and not intermediate else 0
    text = build_receipt_text(
        rid,
        submitted=min(submitted, 999),
        delivered=min(delivered, 999),
        submit_date=_ts(rec.created_at, clock),
        done_date=_ts(rec.final_at if rec.final_at is not None else rec.updated_at, clock),
        stat=stat,
        err=err,
        text=rec.text or "",
    )
    return {
        "params": {
            "service_type": rec.service_type,
            "source_addr_ton": 1 if rec.destination_addr.startswith("+") else 0,
            "source_addr_npi": 1,
            "source_addr": rec.destination_addr,
            "dest_addr_ton": 0,
            "dest_addr_npi": 0,
            "destination_addr": rec.source_addr,
            "esm_class": ESM_TYPE_INTERMEDIATE if intermediate else ESM_TYPE_RECEIPT,
            "data_coding": 0,
            "short_message": text.encode("ascii"),
        },
        "tlvs": receipt_tlvs(rid, smpp_state, net),
    }


def receipt_rows(
    rec: MessageRecord, outcome: Outcome, retention: float, *, intermediate: bool = False,
    per_part: bool = False, clock: Callable[[], float] = time.time,
) -> list[tuple[str, str, str, float]]:
    """Outbox rows for store.move(outbox=...): none unless the ESME asked. ``per_part``: one
    row per part id of a long message (the record's part_ids, filled in by the store).
    ``clock`` is the wall clock (the app's, so tests can move it) for dates and the expiry."""
    if intermediate:
        if not rec.registered_delivery & REG_INTERMEDIATE:
            return []
    elif not wants_receipt(rec.registered_delivery, outcome.state):
        return []
    expire_at = clock() + retention
    if per_part and rec.esme_parts > 1 and rec.part_ids:
        return [
            (rec.esme, "receipt",
             encode_payload(receipt_params(rec, outcome, intermediate=intermediate, part_id=p, clock=clock)), expire_at)
            for p in sorted((rec.id, *rec.part_ids))
        ]  # fmt: skip
    payload = encode_payload(receipt_params(rec, outcome, intermediate=intermediate, clock=clock))
    return [(rec.esme, "receipt", payload, expire_at)]


SMPP_STAT = {state: stat for stat, state in STAT_TO_STATE.items()}


def final_outcome(rec: MessageRecord) -> Outcome:
    """The outcome a final state the store decided on reports (no device code behind it)."""
    return Outcome(rec.state, SMPP_STAT[rec.state], 0, None, rec.error or "")


class Receipts:
    """Builds receipt rows with the config in force (``config()`` is read on every call, so a
    reload applies at once): receipts.retention, and each ESME's ``receipts`` mode."""

    def __init__(self, config: Callable[[], Any], clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._clock = clock

    def per_part(self, esme: str) -> bool:
        found = self._config().esme(esme)
        return found is not None and getattr(found, "receipts", "combined") == "per_part"

    def rows(self, rec: MessageRecord, outcome: Outcome, *, intermediate: bool = False) -> list[tuple[str, str, str, float]]:
        return receipt_rows(
            rec, outcome, self._config().receipts.retention, intermediate=intermediate,
            per_part=self.per_part(rec.esme), clock=self._clock,
        )  # fmt: skip

    def final(self, rec: MessageRecord) -> list[tuple[str, str, str, float]]:
        """Store.final_receipts: the receipt for a final state the store itself decided."""
        return self.rows(rec, final_outcome(rec))


# -- outbox payloads: deliver_sm params + TLVs as JSON --------------------------------------------


def _enc(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"b64": base64.b64encode(v).decode("ascii")}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict) and "b64" in v:
        return base64.b64decode(v["b64"])
    return v


def encode_payload(p: dict[str, Any]) -> str:
    return json.dumps(
        {
            "params": {k: _enc(v) for k, v in p["params"].items()},
            "tlvs": {str(int(k)): _enc(v) for k, v in p.get("tlvs", {}).items()},
        },
        separators=(",", ":"),
    )


def decode_payload(payload: str) -> Pdu:
    d = json.loads(payload)
    return Pdu(
        CommandId.DELIVER_SM,
        params={k: _dec(v) for k, v in d["params"].items()},
        tlvs={int(k): _dec(v) for k, v in d.get("tlvs", {}).items()},
    )


# -- delivery to ESMEs ----------------------------------------------------------------------------


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


class Dispatcher:
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
