"""bridge.smpp.timefmt: SMPP §7.1.1 times."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.smpp.timefmt import format_smpp_time, parse_smpp_time

UTC = timezone.utc
NOW = datetime(2024, 1, 31, 12, 0, 0, tzinfo=UTC)


def test_empty_is_none() -> None:
    assert parse_smpp_time("", NOW) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("240315103000000+", datetime(2024, 3, 15, 10, 30, tzinfo=UTC)),
        ("240315103000000-", datetime(2024, 3, 15, 10, 30, tzinfo=UTC)),
        # +1 h (4 quarter hours): local 10:30:45.2 is 09:30:45.2 UTC
        ("240315103045204+", datetime(2024, 3, 15, 9, 30, 45, 200_000, tzinfo=UTC)),
        # -2 h: local 10:30 is 12:30 UTC
        ("240315103000008-", datetime(2024, 3, 15, 12, 30, tzinfo=UTC)),
        # +5:45 (Nepal, 23 quarter hours)
        ("240315120000023+", datetime(2024, 3, 15, 6, 15, tzinfo=UTC)),
        # -3:30 (Newfoundland, 14 quarter hours), crossing midnight forwards
        ("241231230000914-", datetime(2025, 1, 1, 2, 30, 0, 900_000, tzinfo=UTC)),
        # +4 h crossing midnight backwards and a year
        ("250101013000016+", datetime(2024, 12, 31, 21, 30, tzinfo=UTC)),
        # leap day, UTC+14 (56 quarter hours)
        ("240229235959956+", datetime(2024, 2, 29, 9, 59, 59, 900_000, tzinfo=UTC)),
    ],
)
def test_absolute(value: str, expected: datetime) -> None:
    result = parse_smpp_time(value, NOW)
    assert result == expected
    assert result is not None and result.tzinfo == UTC


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("000000000000000R", NOW),
        ("000001000000000R", NOW + timedelta(days=1)),
        ("000000480000000R", NOW + timedelta(hours=48)),
        ("000000001530000R", NOW + timedelta(minutes=15, seconds=30)),
        ("000000000099000R", NOW + timedelta(seconds=99)),
        # Jan 31 + 1 month: clamped to Feb 29 (2024 is a leap year)
        ("000100000000000R", datetime(2024, 2, 29, 12, 0, tzinfo=UTC)),
        ("010000000000000R", datetime(2025, 1, 31, 12, 0, tzinfo=UTC)),
        ("011300000000000R", datetime(2026, 2, 28, 12, 0, tzinfo=UTC)),  # 1 y 13 m
        ("000102030405000R", datetime(2024, 3, 2, 15, 4, 5, tzinfo=UTC)),  # Feb 29 + 2 d 3 h
        ("000001000000123R", NOW + timedelta(days=1)),  # tnn digits ignored
    ],
)
def test_relative(value: str, expected: datetime) -> None:
    assert parse_smpp_time(value, NOW) == expected


def test_relative_with_naive_or_other_zone_now() -> None:
    naive = datetime(2024, 1, 31, 12, 0)
    assert parse_smpp_time("000000010000000R", naive) == datetime(2024, 1, 31, 13, tzinfo=UTC)
    plus2 = datetime(2024, 1, 31, 14, 0, tzinfo=timezone(timedelta(hours=2)))
    result = parse_smpp_time("000000010000000R", plus2)
    assert result == datetime(2024, 1, 31, 13, tzinfo=UTC)
    assert result is not None and result.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "value",
    [
        "24031510300000+",  # 15 characters
        "2403151030000000+",  # 17
        "240315103000000",  # no p
        "240315103000000X",  # bad p
        "240315103000000 ",  # bad p
        "24031510300000X+",  # letter in the digits
        "24-315103000000+",
        "2403151030 0000+",
        "２40315103000000+",  # full-width digit (str.isdigit() is True for it)
        "241315103000000+",  # month 13
        "240015103000000+",  # month 0
        "240230103000000+",  # Feb 30
        "230229103000000+",  # Feb 29 in a non-leap year
        "240300103000000+",  # day 0
        "240315243000000+",  # hour 24
        "240315106000000+",  # minute 60
        "240315103060000+",  # second 60
        "240315103000057+",  # 57 quarter hours
        "240315103000099-",
        "990000000000000r",  # lowercase r
    ],
)
def test_malformed(value: str) -> None:
    with pytest.raises(ValueError):
        parse_smpp_time(value, NOW)


def test_relative_overflow_is_valueerror() -> None:
    with pytest.raises(ValueError):
        parse_smpp_time("990000000000000R", datetime(9950, 1, 1, tzinfo=UTC))


def test_format() -> None:
    assert format_smpp_time(datetime(2024, 3, 15, 10, 30, 45, 200_000, tzinfo=UTC)) == (
        "240315103045200+"
    )
    plus2 = timezone(timedelta(hours=2))
    assert format_smpp_time(datetime(2024, 1, 1, 1, 0, tzinfo=plus2)) == "231231230000000+"
    minus5 = timezone(timedelta(hours=-5))
    assert format_smpp_time(datetime(2024, 1, 1, 22, 0, 0, 999_999, tzinfo=minus5)) == (
        "240102030000900+"
    )
    assert format_smpp_time(datetime(2024, 3, 15, 10, 30)) == "240315103000000+"  # naive = UTC


@pytest.mark.parametrize("year", [1999, 2100])
def test_format_out_of_range(year: int) -> None:
    with pytest.raises(ValueError):
        format_smpp_time(datetime(year, 6, 1, tzinfo=UTC))


@given(
    st.datetimes(
        min_value=datetime(2000, 1, 2),
        max_value=datetime(2099, 12, 30),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=45))]),
    )
)
def test_format_parse_round_trip(dt: datetime) -> None:
    text = format_smpp_time(dt)
    assert len(text) == 16
    parsed = parse_smpp_time(text, NOW)
    expected = dt.astimezone(UTC)
    expected = expected.replace(microsecond=expected.microsecond // 100_000 * 100_000)
    assert parsed == expected


@given(st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99),
       st.integers(0, 99), st.integers(0, 99))  # fmt: skip
def test_relative_is_never_before_now(y: int, mo: int, d: int, h: int, mi: int, s: int) -> None:
    value = f"{y:02d}{mo:02d}{d:02d}{h:02d}{mi:02d}{s:02d}000R"
    result = parse_smpp_time(value, NOW)
    assert result is not None and result >= NOW
    assert result - NOW >= timedelta(days=d, hours=h, minutes=mi, seconds=s)
