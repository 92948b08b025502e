"""Receipt policy: what a device said about a message -> its outcome, SMPP receipt state, stat
and err, and the receipt rows (deliver_sm text and TLVs) queued in the outbox. Delivery of those
rows to the ESMEs is ``delivery.py``.

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
  bit 4 (0x10) adds an intermediate ENROUTE receipt when the device takes the message, and one
  for each new intermediate stat an upstream SMSC reports later (ACCEPTD: message_state 6).
* The receipt id is byte-identical to the message_id given in submit_sm_resp (for a long
  message: the id of the first part that asked for a receipt).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .. import lifecycle
from ..devices import registry as device_registry
from ..devices.base import GENERIC_RECEIPT_TABLE
from ..lifecycle import State
from ..smpp.constants import (
    ESM_TYPE_INTERMEDIATE,
    ESM_TYPE_RECEIPT,
    REG_DLR_ALWAYS,
    REG_DLR_FAILURE,
    REG_DLR_MASK,
    REG_INTERMEDIATE,
)
from ..smpp.receipt import build_receipt_text, receipt_tlvs
from ..store import MessageRecord, format_id
from .payload import encode_payload

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
        # ENROUTE when the device took it; an upstream SMSC's intermediate stat (ACCEPTD) as is.
        stat = outcome.stat if outcome.stat in lifecycle.NETWORK_STAT_STATE else "ENROUTE"
        smpp_state, err, net = lifecycle.NETWORK_STAT_STATE[stat], 0, None
    else:
        stat, smpp_state = outcome.stat, STATE_TO_SMPP[outcome.state]
        err, net = outcome.err, outcome.network_error
    # dlvrd counts deliveries: ACCEPTD (ACKNOWLEDGED: the network took it, no handset report
    # will ever come) is a success for registered_delivery, but not a delivery - dlvrd:000.
    delivered = submitted if outcome.state is State.DELIVERED and not intermediate else 0
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
