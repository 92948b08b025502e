"""bridge.smpp.concat: UDH, SAR TLVs and message_payload."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.smpp.concat import (
    Concat,
    ConcatError,
    build_concat_udh,
    extract,
    parse_udh,
    reassemble,
    udh_ies,
)
from bridge.smpp.constants import CommandId, Status, Tag
from bridge.smpp.pdu import Pdu
from bridge.smpp.text import decode_short_message, encode_for_esme, split_text

UDH8 = bytes.fromhex("0500032A0301")  # ref 0x2A, 3 parts, part 1
UDH16 = bytes.fromhex("06080412340302")  # ref 0x1234, 3 parts, part 2


def submit(
    short_message: bytes = b"",
    *,
    esm_class: int = 0,
    data_coding: int = 0,
    tlvs: dict[int, Any] | None = None,
    command_id: int = CommandId.SUBMIT_SM,
) -> Pdu:
    params: dict[str, Any] = {"esm_class": esm_class, "data_coding": data_coding}
    if command_id != CommandId.DATA_SM:
        params["short_message"] = short_message
    return Pdu(command_id=command_id, sequence_number=7, params=params, tlvs=dict(tlvs or {}))


def sar(ref: Any = 0x1234, total: Any = 3, seq: Any = 2) -> dict[int, Any]:
    return {Tag.SAR_MSG_REF_NUM: ref, Tag.SAR_TOTAL_SEGMENTS: total, Tag.SAR_SEGMENT_SEQNUM: seq}


# --- parse_udh -------------------------------------------------------------------------------


def test_parse_udh_concat8() -> None:
    assert parse_udh(UDH8 + b"hello") == ([(0x00, b"\x2a\x03\x01")], b"hello")


def test_parse_udh_several_ies() -> None:
    # 16-bit port addressing (IE 0x05) + concat
    data = bytes.fromhex("0B05040B8423F00003AB0201") + b"body"
    ies, rest = parse_udh(data)
    assert ies == [(0x05, bytes.fromhex("0B8423F0")), (0x00, bytes.fromhex("AB0201"))]
    assert rest == b"body"


def test_parse_udh_empty_header_and_zero_length_ie() -> None:
    assert parse_udh(b"\x00abc") == ([], b"abc")
    assert parse_udh(b"\x02\x70\x00x") == ([(0x70, b"")], b"x")
    assert parse_udh(UDH8) == ([(0x00, b"\x2a\x03\x01")], b"")


@pytest.mark.parametrize(
    "data",
    [
        b"",  # no UDHL at all
        bytes.fromhex("0600032A0301"),  # UDHL 6 but only 5 octets follow
        bytes.fromhex("03000301"),  # IE says 3 octets, UDH has room for 1
        bytes.fromhex("0100") + b"abc",  # IE header cut by the UDH end
        bytes.fromhex("05000401020304"),  # IE length 4 runs past UDHL 5
    ],
)
def test_parse_udh_malformed(data: bytes) -> None:
    with pytest.raises(ValueError):
        parse_udh(data)


@given(st.binary(max_size=40))
def test_parse_udh_never_raises_anything_but_valueerror(data: bytes) -> None:
    try:
        ies, rest = parse_udh(data)
    except ValueError:
        return
    assert 1 + sum(2 + len(v) for _, v in ies) + len(rest) == len(data)


# --- build_concat_udh ------------------------------------------------------------------------


def test_build_concat_udh() -> None:
    assert build_concat_udh(0x2A, 3, 1) == UDH8
    assert build_concat_udh(0x1234, 3, 2, ref_bits=16) == UDH16
    assert build_concat_udh(0, 1, 1) == bytes.fromhex("050003000101")
    assert build_concat_udh(255, 255, 255) == bytes.fromhex("050003FFFFFF")


@pytest.mark.parametrize(
    "args",
    [(256, 2, 1, 8), (65536, 2, 1, 16), (-1, 2, 1, 8), (1, 0, 1, 8), (1, 256, 1, 8),
     (1, 2, 0, 8), (1, 2, 3, 8), (1, 2, 1, 7)],
)  # fmt: skip
def test_build_concat_udh_rejects(args: tuple[int, int, int, int]) -> None:
    with pytest.raises(ValueError):
        build_concat_udh(*args)


# --- extract: UDH ----------------------------------------------------------------------------


def test_kannel_style_gsm_part_is_udh_plus_unpacked_septets() -> None:
    text = "€ and {braces} " + "x" * 135  # 153 septets: € and braces cost 2 each
    dc, septets = encode_for_esme(text)
    assert (dc, len(septets)) == (0, 153)
    pdu = submit(UDH8 + septets, esm_class=0x43, data_coding=0)  # Kannel's esm_class
    assert len(pdu.params["short_message"]) == 159
    body, concat = extract(pdu)
    assert body == septets
    assert concat == Concat(ref=0x2A, total=3, seq=1, ref_bits=8, source="udh")
    assert decode_short_message(0, body) == text


def test_udh_16bit_reference() -> None:
    body, concat = extract(submit(UDH16 + b"\x00\x01", esm_class=0x40))
    assert body == b"\x00\x01"
    assert concat == Concat(ref=0x1234, total=3, seq=2, ref_bits=16, source="udh")


def test_ucs2_part() -> None:
    data = "Привет".encode("utf-16-be")
    body, concat = extract(submit(UDH8 + data, esm_class=0x40, data_coding=8))
    assert decode_short_message(8, body) == "Привет"
    assert concat is not None and concat.seq == 1


def test_without_udhi_the_body_is_untouched() -> None:
    assert extract(submit(UDH8 + b"abc", esm_class=0x03)) == (UDH8 + b"abc", None)


def test_udh_without_concat_ie() -> None:
    data = bytes.fromhex("060504 0B84 23F0".replace(" ", "")) + b"wap"
    pdu = submit(data, esm_class=0x40, data_coding=4)
    assert extract(pdu) == (b"wap", None)
    assert udh_ies(pdu) == [(0x05, bytes.fromhex("0B8423F0"))]


def test_udh_ies_returns_all_ies() -> None:
    data = bytes.fromhex("0B05040B8423F00003AB0201") + b"body"
    pdu = submit(data, esm_class=0x40)
    assert udh_ies(pdu) == [(0x05, bytes.fromhex("0B8423F0")), (0x00, bytes.fromhex("AB0201"))]
    assert extract(pdu) == (b"body", Concat(0xAB, 2, 1, 8, "udh"))
    assert udh_ies(submit(b"plain")) == []


def test_single_part_concat_is_no_concat() -> None:
    assert extract(submit(build_concat_udh(9, 1, 1) + b"x", esm_class=0x40)) == (b"x", None)


@pytest.mark.parametrize(
    "udh",
    [
        bytes.fromhex("0500032A0000"),  # total 0
        bytes.fromhex("0500032A0300"),  # seq 0
        bytes.fromhex("0500032A0304"),  # seq > total
        bytes.fromhex("0400022A03"),  # IE 00 with length 2
        bytes.fromhex("0600042A030101"),  # IE 00 with length 4
    ],
)
def test_invalid_concat_ie_is_ignored(udh: bytes) -> None:
    # TS 23.040 9.2.3.24.1: the receiving entity ignores such an IE.
    assert extract(submit(udh + b"text", esm_class=0x40)) == (b"text", None)


def test_last_concat_ie_wins() -> None:
    udh = bytes.fromhex("0A 0003010201 00030203 02".replace(" ", ""))
    assert extract(submit(udh + b"t", esm_class=0x40))[1] == Concat(2, 3, 2, 8, "udh")


@pytest.mark.parametrize(
    "short_message",
    [b"", bytes.fromhex("0600032A0301"), bytes.fromhex("03000301"), b"\xff" + b"x" * 10],
)
def test_malformed_udh_is_rinvmsglen(short_message: bytes) -> None:
    with pytest.raises(ConcatError) as info:
        extract(submit(short_message, esm_class=0x40))
    assert info.value.status == Status.RINVMSGLEN
    assert isinstance(info.value, ValueError)


# --- extract: SAR ----------------------------------------------------------------------------


def test_sar() -> None:
    body, concat = extract(submit(b"part two", tlvs=sar()))
    assert body == b"part two"
    assert concat == Concat(ref=0x1234, total=3, seq=2, ref_bits=16, source="sar")


def test_sar_values_as_bytes() -> None:
    body, concat = extract(submit(b"p", tlvs=sar(b"\x12\x34", b"\x03", b"\x03")))
    assert concat == Concat(0x1234, 3, 3, 16, "sar")


def test_sar_single_segment_is_no_concat() -> None:
    assert extract(submit(b"x", tlvs=sar(5, 1, 1))) == (b"x", None)


@pytest.mark.parametrize(
    "missing", [Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS, Tag.SAR_SEGMENT_SEQNUM]
)
def test_sar_incomplete(missing: int) -> None:
    tlvs = sar()
    del tlvs[missing]
    with pytest.raises(ConcatError) as info:
        extract(submit(b"x", tlvs=tlvs))
    assert info.value.status == Status.RMISSINGOPTPARAM


@pytest.mark.parametrize(
    "values",
    [(1, 0, 1), (1, 3, 0), (1, 3, 4), (70000, 3, 1), (1, 256, 1), (1, b"\x03\x00", 1),
     (1, "3", 1), (1, True, 1), (-1, 3, 1)],
)  # fmt: skip
def test_sar_invalid_values(values: tuple[Any, Any, Any]) -> None:
    with pytest.raises(ConcatError) as info:
        extract(submit(b"x", tlvs=sar(*values)))
    assert info.value.status == Status.RINVOPTPARAMVAL


def test_udh_wins_over_sar_but_sar_is_still_checked() -> None:
    pdu = submit(UDH8 + b"x", esm_class=0x40, tlvs=sar(0x9999, 2, 2))
    assert extract(pdu) == (b"x", Concat(0x2A, 3, 1, 8, "udh"))
    broken = sar()
    del broken[Tag.SAR_SEGMENT_SEQNUM]
    with pytest.raises(ConcatError):
        extract(submit(UDH8 + b"x", esm_class=0x40, tlvs=broken))


# --- extract: message_payload ------------------------------------------------------------------


def test_message_payload() -> None:
    long = "y" * 400
    pdu = submit(b"", tlvs={Tag.MESSAGE_PAYLOAD: long.encode()})
    body, concat = extract(pdu)
    assert (body, concat) == (long.encode(), None)
    assert decode_short_message(0, body) == long


def test_message_payload_on_data_sm() -> None:
    pdu = submit(command_id=CommandId.DATA_SM, tlvs={Tag.MESSAGE_PAYLOAD: b"hi"})
    assert extract(pdu) == (b"hi", None)


def test_data_sm_without_payload_is_empty() -> None:
    assert extract(submit(command_id=CommandId.DATA_SM)) == (b"", None)


def test_message_payload_with_udh_and_sar() -> None:
    pdu = submit(b"", esm_class=0x40, tlvs={Tag.MESSAGE_PAYLOAD: UDH16 + b"abc"})
    assert extract(pdu) == (b"abc", Concat(0x1234, 3, 2, 16, "udh"))
    pdu = submit(b"", tlvs={Tag.MESSAGE_PAYLOAD: b"abc", **sar()})
    assert extract(pdu) == (b"abc", Concat(0x1234, 3, 2, 16, "sar"))


def test_short_message_and_message_payload_together_is_rinvmsglen() -> None:
    with pytest.raises(ConcatError) as info:
        extract(submit(b"short", tlvs={Tag.MESSAGE_PAYLOAD: b"long"}))
    assert info.value.status == Status.RINVMSGLEN


def test_empty_payload_with_empty_short_message() -> None:
    assert extract(submit(b"", tlvs={Tag.MESSAGE_PAYLOAD: b""})) == (b"", None)


# --- reassembly --------------------------------------------------------------------------------


def test_reassemble() -> None:
    assert reassemble([b"ab", b"", b"cd"]) == b"abcd"
    assert reassemble([]) == b""


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox {jumps} over the lazy dog € " * 9,
        "Съешь же ещё этих мягких французских булок 😀 " * 4,
    ],
)
@pytest.mark.parametrize("ref_bits", [8, 16])
def test_split_send_extract_reassemble(text: str, ref_bits: int) -> None:
    split = split_text(text, ref_bits=ref_bits)
    assert len(split.parts) > 1
    pdus = []
    for seq, part in enumerate(split.parts, start=1):
        dc, data = encode_for_esme(part)
        udh = build_concat_udh(200, len(split.parts), seq, ref_bits=ref_bits)
        assert len(udh + data) <= 159
        pdus.append(submit(udh + data, esm_class=0x40, data_coding=dc))
    got = [extract(p) for p in reversed(pdus)]
    got.sort(key=lambda item: item[1].seq if item[1] else 0)
    assert [c.seq for _, c in got if c] == list(range(1, len(split.parts) + 1))
    assert {(c.ref, c.total, c.ref_bits) for _, c in got if c} == {
        (200, len(split.parts), ref_bits)
    }
    body = reassemble([b for b, _ in got])
    assert decode_short_message(pdus[0].params["data_coding"], body) == text
