"""Receipts from an upstream SMSC, matched to what we submitted (sans-IO: no sockets, no clock).

Providers write the id of a receipt in many ways, and a mismatch is the receipt bug open SMPP
gateways hear about most (docs/connectors.md, Receipts). The same message may come back as:

* the id of the submit_sm_resp, byte for byte;
* that id in another case ("0A1B" / "0a1b") or zero-padded ("0000123");
* the hexadecimal id of the resp written in decimal ("0A1B2C" -> "660268"), or the reverse;
* only in the text (``id:... stat:...``), only in the TLVs (receipted_message_id,
  message_state, network_error_code), or both (the TLVs win: they are typed);
* before the submit_sm_resp that gives us the id (the SMSC is fast, our read is not);
* twice or more (the SMSC did not see our deliver_sm_resp, or just repeats).

``id_forms`` gives the keys an id is known under, most exact first: the text lower-cased
without leading zeros, then its value read as a decimal number, then read as hexadecimal. A
receipt matches the submitted id that shares its first form found (``ReceiptBook``). Receipts
that match no id yet wait ``early_grace`` seconds for their submit_sm_resp, then count as
unmatched (a metric and a log line, never silently dropped).
"""

from __future__ import annotations

import string
from collections import OrderedDict
from typing import Any

import attrs

from ..lifecycle import INTERMEDIATE_STATS
from ..smpp.constants import ESM_TYPE_INTERMEDIATE, ESM_TYPE_RECEIPT, MessageState, Tag
from ..smpp.receipt import parse_receipt_text

_HEX = frozenset(string.hexdigits)

#: Receipt stat -> what it means for our message. Intermediate ones keep it pending.
FINAL_OK = frozenset({"DELIVRD"})
FINAL_FAILED = frozenset({"UNDELIV", "REJECTD", "EXPIRED", "DELETED", "UNKNOWN"})
INTERMEDIATE = INTERMEDIATE_STATS

_STATE_STAT = {
    MessageState.DELIVERED: "DELIVRD",
    MessageState.UNDELIVERABLE: "UNDELIV",
    MessageState.REJECTED: "REJECTD",
    MessageState.EXPIRED: "EXPIRED",
    MessageState.DELETED: "DELETED",
    MessageState.UNKNOWN: "UNKNOWN",
    MessageState.ENROUTE: "ENROUTE",
    MessageState.ACCEPTED: "ACCEPTD",
}


def id_forms(raw: str) -> list[str]:
    """The keys a message id is known under, most exact first ([] for an empty id)."""
    text = raw.strip().strip("\x00").lower()
    if not text:
        return []
    forms = ["t:" + (text.lstrip("0") or "0")]
    if text.isdigit():
        forms.append(f"n:{int(text)}")
    if len(text) <= 32 and all(c in _HEX for c in text):
        n = f"n:{int(text, 16)}"
        if n not in forms:
            forms.append(n)
    return forms


@attrs.frozen
class Receipt:
    """One receipt as the SMSC sent it, in our terms."""

    message_id: str
    stat: str  # DELIVRD, UNDELIV ... (upper case)
    error: str | None  # the provider's error code (digits), for network_error_code
    raw: str = ""

    @property
    def final(self) -> bool:
        return self.stat not in INTERMEDIATE


def parse_receipt(pdu: Any) -> Receipt | None:
    """The receipt a deliver_sm or data_sm carries, or None when it is not one (an MO).

    A PDU is a receipt when its esm_class says so, or when it carries receipted_message_id.
    The TLVs are read first; what they lack comes from the text. A receipt without a readable
    id or state is returned with what it has (the caller counts it unmatched)."""
    esm = int(pdu.params.get("esm_class") or 0)
    tlvs = pdu.tlvs
    is_receipt = esm & (ESM_TYPE_RECEIPT | ESM_TYPE_INTERMEDIATE) or Tag.RECEIPTED_MESSAGE_ID in tlvs
    if not is_receipt:
        return None
    body = pdu.params.get("short_message") or tlvs.get(Tag.MESSAGE_PAYLOAD) or b""
    text = bytes(body).decode("latin-1", "replace")
    fields: dict[str, Any] = {}
    try:
        fields = parse_receipt_text(text)
    except ValueError:
        pass
    mid = tlvs.get(Tag.RECEIPTED_MESSAGE_ID)
    if isinstance(mid, bytes):
        mid = mid.decode("latin-1")
    mid = (mid or fields.get("id") or "").strip("\x00 ")
    stat = fields.get("stat")
    state = tlvs.get(Tag.MESSAGE_STATE)
    if isinstance(state, int):
        try:
            stat = _STATE_STAT.get(MessageState(state), stat)
        except ValueError:
            pass
    error = _error_code(tlvs.get(Tag.NETWORK_ERROR_CODE), fields.get("err"))
    return Receipt(mid, (stat or "UNKNOWN").upper(), error, text)


def _error_code(net: Any, err: str | None) -> str | None:
    """The provider's error: network_error_code's code when given, else the text's err."""
    if isinstance(net, bytes) and len(net) == 3:
        code = int.from_bytes(net[1:], "big")
        return str(code) if code else None
    if err and err.isdigit() and int(err):
        return str(int(err))
    return None


@attrs.define
class _Early:
    receipt: Receipt
    at: float


class ReceiptBook:
    """What was submitted, and the receipts that came back for it.

    ``submitted(ref)`` after each submit_sm_resp; ``arrived(receipt, now)`` for each receipt:
    "matched", "early" (no such id yet: it waits), "duplicate" (the same final receipt again)
    or "unmatched" (no id at all). ``expire(now)`` ends the wait of early receipts and returns
    them (unmatched). ``latest(ref)`` is the newest receipt for a submitted id.
    """

    def __init__(self, early_grace: float = 120.0, keep: int = 200_000) -> None:
        self.early_grace = early_grace
        self.keep = keep
        self._index: dict[str, str] = {}  # form -> submitted id
        self._latest: OrderedDict[str, Receipt] = OrderedDict()  # submitted id -> receipt
        self._submitted: OrderedDict[str, None] = OrderedDict()
        self._early: dict[str, _Early] = {}  # first form -> receipt waiting for its resp

    def submitted(self, ref: str) -> str | None:
        """Note a submitted id; returns "matched" when a receipt for it had come early."""
        return "matched" if self.claim(ref) is not None else None

    def claim(self, ref: str) -> Receipt | None:
        """Note a submitted id; returns the early receipt it claimed, if one had come."""
        if ref in self._submitted:
            return None
        self._submitted[ref] = None
        for form in id_forms(ref):
            self._index.setdefault(form, ref)
        self._trim()
        for form in id_forms(ref):
            early = self._early.get(form)
            if early is not None:
                self._drop_early(early)
                self._latest[ref] = early.receipt
                return early.receipt
        return None

    def _find(self, message_id: str) -> str | None:
        """The submitted id a receipt's id means. A short number reads two ways ("10" is ten,
        or sixteen in hexadecimal), so one receipt id can fit two submitted ids: the most exact
        form wins among those still waiting for their final receipt, and one whose final
        receipt came is chosen only when no waiting one fits (then the receipt is its duplicate)."""
        found: list[str] = []
        for form in id_forms(message_id):
            ref = self._index.get(form)
            if ref is None or ref in found:
                continue
            latest = self._latest.get(ref)
            if latest is None or not latest.final:
                return ref
            found.append(ref)
        return found[0] if found else None

    def classify(self, receipt: Receipt) -> tuple[str, str | None]:
        """What ``arrived`` would say, changing nothing: (result, the submitted id it matches).
        The connector commits a receipt to the store between the two."""
        forms = id_forms(receipt.message_id)
        if not forms:
            return "unmatched", None
        ref = self._find(receipt.message_id)
        old = self._latest.get(ref) if ref is not None else None
        if old is not None and old.final and id_forms(old.message_id)[0] != forms[0]:
            # Only a finished message fits, and its receipt wrote the id otherwise: a repeat
            # would write it the same way, so this is another message's receipt, come early.
            ref = None
        if ref is None:
            waiting = next((self._early[f] for f in forms if f in self._early), None)
            if waiting is not None and (waiting.receipt.final or waiting.receipt == receipt):
                return "duplicate", None  # an early final one is not changed either
            return "early", None
        old = self._latest.get(ref)
        if old is not None and (old.final or old == receipt):
            return "duplicate", ref  # a final state is never changed by a later receipt
        return "matched", ref

    def arrived(self, receipt: Receipt, now: float) -> str:
        result, ref = self.classify(receipt)
        if result == "early":
            for form in id_forms(receipt.message_id):  # a newer one replaces an intermediate
                if form in self._early:
                    self._drop_early(self._early[form])
            early = _Early(receipt, now)
            for form in id_forms(receipt.message_id):  # its resp may write the id in any of them
                self._early[form] = early
        elif result == "matched" and ref is not None:
            self._latest[ref] = receipt
        return result

    def expire(self, now: float) -> list[Receipt]:
        gone = {id(e): e for e in self._early.values() if now - e.at >= self.early_grace}
        for early in gone.values():
            self._drop_early(early)
        return [e.receipt for e in gone.values()]

    def _drop_early(self, early: _Early) -> None:
        for form in id_forms(early.receipt.message_id):
            if self._early.get(form) is early:
                del self._early[form]

    def latest(self, ref: str) -> Receipt | None:
        return self._latest.get(ref)

    def _trim(self) -> None:
        while len(self._submitted) > self.keep:
            old, _ = self._submitted.popitem(last=False)
            self._latest.pop(old, None)
            for form in id_forms(old):
                if self._index.get(form) == old:
                    del self._index[form]
