"""Long messages: the message body of a submit_sm / deliver_sm / data_sm and its concatenation info.

Clients send long messages three ways, and ``extract`` reads all of them:

1. UDH in the body (esm_class & 0x40, TS 23.040 9.2.3.24.1): IE 0x00 ``00 03 ref total seq``
   (8-bit reference) or IE 0x08 ``08 04 refHi refLo total seq`` (16-bit reference). With
   data_coding 0 the septets after the UDH are *unpacked*, one per octet (Kannel, smpplib and
   aiosmpplib send 6 + 153 = 159 octets), so ``text.decode_short_message(0, body)`` works on the
   body as returned.
2. SAR TLVs (§5.3.2.22-24): sar_msg_ref_num (16-bit), sar_total_segments, sar_segment_seqnum.
3. One big body in the message_payload TLV (§5.3.2.32), no concatenation at all.

Errors are ``ConcatError`` (a ValueError) carrying the command_status to answer with:

* short_message non-empty *and* message_payload present -> ESME_RINVMSGLEN. The spec says
  sm_length must be 0 when message_payload is used, so a non-zero sm_length is an invalid
  message length; it is also what the body-length check of most SMSCs returns.
* UDHI set but the UDH is malformed (empty body, UDHL beyond the body, an IE running past the
  UDH) -> ESME_RINVMSGLEN (the UDH's own length octets are inconsistent with the body).
* Some but not all three SAR TLVs -> ESME_RMISSINGOPTPARAM; a SAR value out of range (total 0,
  seq 0, seq > total, a value wider than its field) -> ESME_RINVOPTPARAMVAL.

A concatenation IE whose values are invalid (total 0, seq 0, seq > total, wrong IE length) is
*ignored*, as TS 23.040 9.2.3.24.1 tells a receiving entity to do: the part is then a single
message. When both a valid UDH concatenation IE and SAR TLVs are present, the UDH wins (it is
what reaches the handset); the SAR TLVs are still validated. When an IE occurs more than once,
the last occurrence counts (TS 23.040 9.2.3.24). ``total == 1`` means a single message: no
Concat is returned.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from bridge.smpp.constants import ESM_UDHI, Status, Tag
from bridge.smpp.text import alphabet, decode_short_message, gsm7_encode, ucs2_encode

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08


class ConcatError(ValueError):
    """A body or concatenation info the SMSC must refuse; ``status`` is the command_status."""

    def __init__(self, status: Status, message: str) -> None:
        super().__init__(message)
        self.status = status


@attrs.frozen
class Concat:
    ref: int
    total: int
    seq: int
    ref_bits: int  # 8 or 16
    source: Literal["udh", "sar"]


def parse_udh(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split ``data`` (UDHL octet first) into its information elements and the rest.

    Returns ``([(iei, value), ...], rest)``. ValueError when the UDH is malformed: no UDHL
    octet, UDHL beyond the data, or an IE (header or value) running past the UDH.
    """
    data = bytes(data)
    if not data:
        raise ValueError("UDH missing: empty user data")
    udhl = data[0]
    end = 1 + udhl
    if end > len(data):
        raise ValueError(f"UDH length {udhl} exceeds the {len(data) - 1} octets that follow")
    ies: list[tuple[int, bytes]] = []
    pos = 1
    while pos < end:
        if pos + 2 > end:
            raise ValueError("UDH ends inside an information element header")
        iei, length = data[pos], data[pos + 1]
        pos += 2
        if pos + length > end:
            raise ValueError(f"information element 0x{iei:02X} runs past the end of the UDH")
        ies.append((iei, data[pos : pos + length]))
        pos += length
    return ies, data[end:]


def build_concat_udh(ref: int, total: int, seq: int, ref_bits: int = 8) -> bytes:
    """A UDH (UDHL octet included) holding only the concatenation IE."""
    if ref_bits not in (8, 16):
        raise ValueError("ref_bits must be 8 or 16")
    if not 0 <= ref < (1 << ref_bits):
        raise ValueError(f"ref {ref} does not fit in {ref_bits} bits")
    if not 1 <= total <= 255:
        raise ValueError(f"total must be 1-255, not {total}")
    if not 1 <= seq <= total:
        raise ValueError(f"seq must be 1-{total}, not {seq}")
    if ref_bits == 8:
        return bytes((0x05, IEI_CONCAT_8, 0x03, ref, total, seq))
    return bytes((0x06, IEI_CONCAT_16, 0x04, ref >> 8, ref & 0xFF, total, seq))


def reassemble(parts: list[bytes]) -> bytes:
    """Join part bodies (UDH already removed), given in sequence order."""
    return b"".join(bytes(p) for p in parts)


def _concat_from_ies(ies: list[tuple[int, bytes]]) -> Concat | None:
    found: Concat | None = None
    for iei, value in ies:
        if iei == IEI_CONCAT_8 and len(value) == 3:
            ref, total, seq, bits = value[0], value[1], value[2], 8
        elif iei == IEI_CONCAT_16 and len(value) == 4:
            ref, total, seq, bits = (value[0] << 8) | value[1], value[2], value[3], 16
        elif iei in (IEI_CONCAT_8, IEI_CONCAT_16):
            found = None  # wrong length: ignore this IE (TS 23.040), last occurrence counts
            continue
        else:
            continue
        if total == 0 or seq == 0 or seq > total:
            found = None
            continue
        found = Concat(ref=ref, total=total, seq=seq, ref_bits=bits, source="udh")
    return found


def _as_int(value: Any, name: str, width: int) -> int:
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        if len(raw) != width:
            raise ConcatError(Status.RINVOPTPARAMVAL, f"{name} must be {width} octet(s)")
        return int.from_bytes(raw, "big")
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < (1 << (8 * width)):
            raise ConcatError(Status.RINVOPTPARAMVAL, f"{name} {value} out of range")
        return value
    raise ConcatError(Status.RINVOPTPARAMVAL, f"{name} has an unusable value {value!r}")


_SAR_TAGS = (
    (Tag.SAR_MSG_REF_NUM, "sar_msg_ref_num", 2),
    (Tag.SAR_TOTAL_SEGMENTS, "sar_total_segments", 1),
    (Tag.SAR_SEGMENT_SEQNUM, "sar_segment_seqnum", 1),
)


def _concat_from_sar(tlvs: dict[int, Any]) -> Concat | None:
    present = [tag for tag, _, _ in _SAR_TAGS if tag in tlvs]
    if not present:
        return None
    if len(present) != len(_SAR_TAGS):
        missing = ", ".join(name for tag, name, _ in _SAR_TAGS if tag not in tlvs)
        raise ConcatError(Status.RMISSINGOPTPARAM, f"SAR TLVs incomplete: missing {missing}")
    ref, total, seq = (_as_int(tlvs[tag], name, width) for tag, name, width in _SAR_TAGS)
    if total == 0:
        raise ConcatError(Status.RINVOPTPARAMVAL, "sar_total_segments is 0")
    if seq == 0 or seq > total:
        raise ConcatError(
            Status.RINVOPTPARAMVAL, f"sar_segment_seqnum {seq} not in 1-{total}"
        )
    return Concat(ref=ref, total=total, seq=seq, ref_bits=16, source="sar")


def _raw_body(pdu: Any) -> bytes:
    short = pdu.params.get("short_message") or b""
    if isinstance(short, str):  # be lenient with hand-built PDUs
        short = short.encode("latin_1")
    short = bytes(short)
    payload = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
    if payload is None:
        return short
    if isinstance(payload, str):
        payload = payload.encode("latin_1")
    payload = bytes(payload)
    if short:
        raise ConcatError(
            Status.RINVMSGLEN, "short_message and message_payload must not both be used"
        )
    return payload


def _split_udh(pdu: Any, body: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    if not (int(pdu.params.get("esm_class") or 0) & ESM_UDHI):
        return [], body
    try:
        return parse_udh(body)
    except ValueError as exc:
        raise ConcatError(Status.RINVMSGLEN, f"malformed UDH: {exc}") from None


def extract(pdu: Any) -> tuple[bytes, Concat | None]:
    """The message body (UDH removed) and its concatenation info, from a submit_sm,
    deliver_sm or data_sm ``Pdu``. Raises ConcatError (see the module docstring)."""
    if not pdu.tlvs and not int(pdu.params.get("esm_class") or 0) & ESM_UDHI:
        # The common case: one short_message, no UDH, no TLVs.
        return _raw_body(pdu), None
    ies, body = _split_udh(pdu, _raw_body(pdu))
    sar = _concat_from_sar(pdu.tlvs)
    concat = _concat_from_ies(ies) or sar
    if concat is not None and concat.total == 1:
        concat = None
    return body, concat


def udh_ies(pdu: Any) -> list[tuple[int, bytes]]:
    """All UDH information elements of a PDU (concatenation included); [] without UDHI."""
    return _split_udh(pdu, _raw_body(pdu))[0]


# Octets of text per UDH part after a 6-octet concatenation UDH: 153 unpacked GSM septets (one per
# octet, see the module docstring), or 134 octets of anything else (140 - 6).
_UDH_PART_OCTETS_GSM7 = 153
_UDH_PART_OCTETS_8BIT = 134


def payload_as_udh_parts(pdu: Any, ref: int) -> list[Any]:
    """A deliver_sm/submit_sm carrying its body in message_payload, as UDH parts.

    For a peer bound with interface_version 0x33: SMPP 3.3 has no optional parameters, so the
    message_payload TLV cannot reach it (the session drops every TLV), while the UDHI bit of
    esm_class and a UDH in short_message are 3.3-valid (a 3.3 peer reassembles them as a handset
    does). Each part holds whole characters in the PDU's own data_coding (an ESC pair or a UTF-16
    surrogate pair is never split); a binary coding is cut into octet chunks. ``ref`` is the
    8-bit reference (taken modulo 256). At most 255 parts fit a concatenation IE: the rest of a
    longer body is cut. A PDU without message_payload is returned unchanged (as a list of one).
    """
    body = pdu.tlvs.get(Tag.MESSAGE_PAYLOAD)
    if body is None:
        return [pdu]
    body = bytes(body.encode("latin_1") if isinstance(body, str) else body)
    dc = int(pdu.params.get("data_coding") or 0)
    alpha = alphabet(dc)
    text = decode_short_message(dc, body)
    limit = _UDH_PART_OCTETS_GSM7 if alpha == "gsm7" else _UDH_PART_OCTETS_8BIT
    units = [body[i : i + 1] for i in range(len(body))]
    if text is not None and alpha in ("gsm7", "ucs2"):
        try:
            units = [gsm7_encode(ch) if alpha == "gsm7" else ucs2_encode(ch) for ch in text]
        except ValueError:  # octets that are no clean GSM text: cut them as they are
            pass
    chunks: list[bytes] = []
    current = b""
    for unit in units:
        if len(current) + len(unit) > limit:
            chunks.append(current)
            current = b""
        current += unit
    chunks.append(current)
    if len(chunks) == 1:
        params = {**pdu.params, "short_message": chunks[0]}
        return [attrs.evolve(pdu, params=params, tlvs=_without_payload(pdu.tlvs))]
    # A concatenation IE counts 255 parts at most; what does not fit is cut (an inbound SMS
    # came as at most 255 parts, so an MO always fits).
    chunks = chunks[:255]
    esm = int(pdu.params.get("esm_class") or 0) | ESM_UDHI
    return [
        attrs.evolve(
            pdu,
            params={**pdu.params, "esm_class": esm,
                    "short_message": build_concat_udh(ref % 256, len(chunks), seq) + chunk},
            tlvs=_without_payload(pdu.tlvs),
        )
        for seq, chunk in enumerate(chunks, 1)
    ]


def _without_payload(tlvs: dict[int, Any]) -> dict[int, Any]:
    return {k: v for k, v in tlvs.items() if k != Tag.MESSAGE_PAYLOAD}
