"""bridge.smpp.receipt: receipt text, its parser, receipt TLVs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.smpp.constants import RECEIPT_STAT, MessageState, Tag
from bridge.smpp.receipt import (
    build_receipt_text,
    parse_receipt_text,
    receipt_text_field,
    receipt_tlvs,
)

UTC = timezone.utc
SUBMITTED = datetime(2024, 3, 15, 10, 30, 12, tzinfo=UTC)
DONE = datetime(2024, 3, 15, 10, 31, 5, tzinfo=UTC)


def build(**overrides: Any) -> str:
    kwargs: dict[str, Any] = {
        "delivered": 1,
        "submit_date": SUBMITTED,
        "done_date": DONE,
        "stat": "DELIVRD",
        "err": 0,
        "text": "Hello world, this is a long message",
    }
    kwargs.update(overrides)
    message_id = kwargs.pop("message_id", "0a1b2c3d")
    return build_receipt_text(message_id, **kwargs)


def test_exact_delivered_receipt() -> None:
    assert build() == (
        "id:0a1b2c3d sub:001 dlvrd:001 submit date:2403151030 done date:2403151031"
        " stat:DELIVRD err:000 Text:Hello world, this is"
    )


def test_exact_failed_receipt() -> None:
    text = build(message_id="42", delivered=0, stat="UNDELIV", err=5, text="hi")
    assert text == (
        "id:42 sub:001 dlvrd:000 submit date:2403151030 done date:2403151031"
        " stat:UNDELIV err:005 Text:hi"
    )


def test_counts_and_empty_text() -> None:
    text = build(submitted=3, delivered=2, err=999, text="")
    assert " sub:003 dlvrd:002 " in text
    assert text.endswith(" err:999 Text:")


def test_dates_aware_are_utc_naive_as_is() -> None:
    plus2 = timezone(timedelta(hours=2))
    text = build(submit_date=datetime(2024, 3, 15, 12, 30, tzinfo=plus2),
                 done_date=datetime(2024, 12, 31, 23, 59, 59))  # fmt: skip
    assert "submit date:2403151030 done date:2412312359 " in text


def test_text_field_is_safe_for_ascii_and_gsm_readers() -> None:
    text = build(text="Grüße @ 5$ [ok]\nПривет 😀")
    assert text.endswith(" Text:Gru?e ? 5? (ok) ????")
    assert text.encode("ascii") == text.encode("gsm03.38")
    assert receipt_text_field("😀" * 30) == "?" * 20
    assert receipt_text_field("a\tb\r\nc") == "a b  c"


@pytest.mark.parametrize("stat", sorted(RECEIPT_STAT.values()))
def test_every_stat_word(stat: str) -> None:
    assert f" stat:{stat} err:" in build(stat=stat)
    assert parse_receipt_text(build(stat=stat))["stat"] == stat


@pytest.mark.parametrize(
    "overrides",
    [
        {"err": 1000},
        {"err": -1},
        {"err": "000"},
        {"delivered": 1000},
        {"submitted": -1},
        {"delivered": True},
        {"stat": "DELIVERED"},
        {"stat": "delivrd"},
        {"message_id": ""},
        {"message_id": "ab cd"},
        {"message_id": "abc\x00"},
        {"message_id": "идент"},
    ],
)
def test_build_rejects(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        build(**overrides)


# --- parser --------------------------------------------------------------------------------


def test_parse_round_trip() -> None:
    assert parse_receipt_text(build()) == {
        "id": "0a1b2c3d",
        "sub": 1,
        "dlvrd": 1,
        "submit_date": datetime(2024, 3, 15, 10, 30),
        "done_date": datetime(2024, 3, 15, 10, 31),
        "stat": "DELIVRD",
        "err": "000",
        "text": "Hello world, this is",
    }


def test_parse_spec_style_short_counts_lowercase_text() -> None:
    r = parse_receipt_text(
        "id:1234567890 sub:1 dlvrd:1 submit date:0610191018 done date:0610191019"
        " stat:DELIVRD err:0 text:Test message"
    )
    assert (r["id"], r["sub"], r["dlvrd"], r["err"], r["text"]) == (
        "1234567890", 1, 1, "0", "Test message"
    )
    assert r["submit_date"] == datetime(2006, 10, 19, 10, 18)
    assert r["done_date"] == datetime(2006, 10, 19, 10, 19)


def test_parse_twelve_digit_dates_and_upper_case_keys() -> None:
    r = parse_receipt_text(
        "ID:abc SUB:001 DLVRD:000 SUBMIT DATE:240315103045 DONE DATE:240315103112"
        " STAT:undeliv ERR:0x1F TEXT:x"
    )
    assert r["submit_date"] == datetime(2024, 3, 15, 10, 30, 45)
    assert r["done_date"] == datetime(2024, 3, 15, 10, 31, 12)
    assert (r["stat"], r["err"], r["text"]) == ("UNDELIV", "0x1F", "x")


def test_parse_missing_fields() -> None:
    r = parse_receipt_text("id:abc stat:DELIVRD")
    assert r == {
        "id": "abc",
        "sub": None,
        "dlvrd": None,
        "submit_date": None,
        "done_date": None,
        "stat": "DELIVRD",
        "err": None,
        "text": None,
    }


def test_parse_any_order_and_bad_dates() -> None:
    r = parse_receipt_text("stat:EXPIRED err:012 id:9 submit date:2413011200 done date:12ab")
    assert (r["id"], r["stat"], r["err"]) == ("9", "EXPIRED", "012")
    assert r["submit_date"] is None  # month 13
    assert r["done_date"] is None


def test_parse_text_may_contain_keys_and_colons() -> None:
    r = parse_receipt_text(build(text="stat:UNDELIV id:x"))
    assert (r["id"], r["stat"]) == ("0a1b2c3d", "DELIVRD")
    assert r["text"] == "stat:UNDELIV id:x"


@pytest.mark.parametrize("text", ["", "hello world", "id:abc", "stat:DELIVRD", "text:id:1 stat:x"])
def test_parse_rejects_non_receipts(text: str) -> None:
    with pytest.raises(ValueError):
        parse_receipt_text(text)


@given(
    message_id=st.text(alphabet="0123456789abcdefABCDEF-", min_size=1, max_size=64),
    submitted=st.integers(0, 999),
    delivered=st.integers(0, 999),
    err=st.integers(0, 999),
    stat=st.sampled_from(sorted(RECEIPT_STAT.values())),
    dates=st.tuples(
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
        st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    ),
    text=st.text(max_size=40),
)
def test_build_parse_property(
    message_id: str,
    submitted: int,
    delivered: int,
    err: int,
    stat: str,
    dates: tuple[datetime, datetime],
    text: str,
) -> None:
    receipt = build_receipt_text(
        message_id, submitted=submitted, delivered=delivered, submit_date=dates[0],
        done_date=dates[1], stat=stat, err=err, text=text,
    )  # fmt: skip
    receipt.encode("ascii")
    r = parse_receipt_text(receipt)
    assert r["id"] == message_id
    assert (r["sub"], r["dlvrd"], r["err"], r["stat"]) == (submitted, delivered, f"{err:03d}", stat)
    assert r["submit_date"] == dates[0].replace(second=0, microsecond=0)
    assert r["done_date"] == dates[1].replace(second=0, microsecond=0)
    assert r["text"] == receipt_text_field(text)
    assert len(r["text"]) == min(len(text), 20)


# --- TLVs ----------------------------------------------------------------------------------


def test_receipt_tlvs() -> None:
    assert receipt_tlvs("abc", MessageState.DELIVERED, None) == {
        0x001E: "abc",
        0x0427: 2,
    }
    tlvs = receipt_tlvs("abc", MessageState.UNDELIVERABLE, (3, 0x0102))
    assert tlvs == {
        Tag.RECEIPTED_MESSAGE_ID: "abc",
        Tag.MESSAGE_STATE: 5,
        Tag.NETWORK_ERROR_CODE: b"\x03\x01\x02",
    }
    assert type(tlvs[Tag.MESSAGE_STATE]) is int
    assert receipt_tlvs("x", MessageState.REJECTED, (8, 2172))[Tag.NETWORK_ERROR_CODE] == (
        b"\x08\x08\x7c"
    )
    assert receipt_tlvs("x", 3, None)[Tag.MESSAGE_STATE] == 3  # plain int accepted


@pytest.mark.parametrize("err", [(256, 1), (-1, 1), (3, 65536), (3, -1)])
def test_receipt_tlvs_rejects(err: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        receipt_tlvs("x", MessageState.DELIVERED, err)


def test_receipt_tlvs_rejects_unknown_state() -> None:
    with pytest.raises(ValueError):
        receipt_tlvs("x", 42, None)  # type: ignore[arg-type]
