"""What goes out to an upstream SMSC for one message: the submit_sm bodies (sans-IO).

* Text: GSM-7 (data_coding 0, one septet per octet as SMPP carries it: 160 characters in one
  SMS, 153 per part) when every character is GSM and the SMSC takes GSM-7 (``encoding:
  gsm7``); Latin-1 (data_coding 3: 140 / 134) when the SMSC takes only 8-bit text (``encoding:
  8bit``); UCS-2 (data_coding 8: 70 / 67) otherwise.
* Long text: ``long: udh`` (default) sends parts with a concatenation UDH (esm_class 0x40);
  ``sar`` sends the same parts with the sar_* TLVs instead; ``payload`` sends one submit_sm
  with the whole text in message_payload (the SMSC splits).
* Addresses: ``ton_npi: auto`` reads TON/NPI from the address ("+4917..." -> 1/1 without the
  "+", letters -> 5/0 alphanumeric, other digits -> 0/1); a fixed pair is used as given.
* Every submit asks for a final receipt (registered_delivery 1).
"""

from __future__ import annotations

from typing import Any

from ..smpp.concat import build_concat_udh
from ..smpp.constants import Tag
from ..smpp.text import gsm7_encode, split_text, ucs2_encode

ESM_UDHI = 0x40
LATIN1_SINGLE, LATIN1_MULTI = 140, 134


def address(addr: str, fixed: tuple[int, int] | None) -> tuple[int, int, str]:
    """(ton, npi, address as sent)."""
    if fixed is not None:
        return fixed[0], fixed[1], addr
    if addr.startswith("+") and addr[1:].isdigit():
        return 1, 1, addr[1:]
    if addr.isdigit():
        return 0, 1, addr
    return 5, 0, addr


def _parts(text: str, encoding: str) -> tuple[int, list[bytes]]:
    """(data_coding, the octets of each part)."""
    if encoding == "8bit":
        try:
            body = text.encode("latin-1")
        except UnicodeEncodeError:
            pass
        else:
            if len(body) <= LATIN1_SINGLE:
                return 3, [body]
            return 3, [body[i : i + LATIN1_MULTI] for i in range(0, len(body), LATIN1_MULTI)]
        return 8, [ucs2_encode(p) for p in _ucs2_parts(text)]
    split = split_text(text)
    if split.encoding == "gsm7":
        return 0, [gsm7_encode(p) for p in split.parts]
    return 8, [ucs2_encode(p) for p in split.parts]


def _ucs2_parts(text: str) -> list[str]:
    """UCS-2 parts: 70 UTF-16 units in one SMS, 67 per part; a character outside the BMP (2
    units) is never cut in two. (For texts split_text would send as GSM-7.)"""
    costs = [2 if ord(ch) > 0xFFFF else 1 for ch in text]
    if sum(costs) <= 70:
        return [text]
    parts, start, used = [], 0, 0
    for i, c in enumerate(costs):
        if used + c > 67:
            parts.append(text[start:i])
            start, used = i, 0
        used += c
    parts.append(text[start:])
    return parts


def build_submits(
    source: str,
    destination: str,
    text: str,
    *,
    encoding: str = "gsm7",
    long: str = "udh",
    ref: int = 0,
    source_ton_npi: tuple[int, int] | None = None,
    dest_ton_npi: tuple[int, int] | None = None,
) -> list[dict[str, Any]]:
    """The (params, tlvs) of each submit_sm for one message, as dicts {"params", "tlvs"}."""
    s_ton, s_npi, src = address(source, source_ton_npi)
    d_ton, d_npi, dst = address(destination, dest_ton_npi)
    coding, parts = _parts(text, encoding)
    base = {
        "service_type": "",
        "source_addr_ton": s_ton,
        "source_addr_npi": s_npi,
        "source_addr": src,
        "dest_addr_ton": d_ton,
        "dest_addr_npi": d_npi,
        "destination_addr": dst,
        "esm_class": 0,
        "protocol_id": 0,
        "priority_flag": 0,
        "schedule_delivery_time": "",
        "validity_period": "",
        "registered_delivery": 1,
        "replace_if_present_flag": 0,
        "data_coding": coding,
        "sm_default_msg_id": 0,
    }
    if len(parts) == 1:
        return [{"params": {**base, "short_message": parts[0]}, "tlvs": {}}]
    if long == "payload":
        whole = b"".join(parts)
        return [{"params": {**base, "short_message": b""}, "tlvs": {Tag.MESSAGE_PAYLOAD: whole}}]
    total = len(parts)
    out = []
    for seq, body in enumerate(parts, 1):
        if long == "sar":
            tlvs = {Tag.SAR_MSG_REF_NUM: ref & 0xFFFF, Tag.SAR_TOTAL_SEGMENTS: total, Tag.SAR_SEGMENT_SEQNUM: seq}
            out.append({"params": {**base, "short_message": body}, "tlvs": tlvs})
        else:
            udh = build_concat_udh(ref & 0xFF, total, seq)
            out.append({"params": {**base, "esm_class": ESM_UDHI, "short_message": udh + body}, "tlvs": {}})
    return out
