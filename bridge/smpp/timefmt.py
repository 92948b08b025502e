"""SMPP time format, §7.1.1: ``YYMMDDhhmmsstnnp`` (schedule_delivery_time, validity_period).

Absolute: ``t`` tenths of a second, ``nn`` the offset from UTC in quarter hours, ``p`` '+'
(local time is ahead of UTC) or '-' (behind). Relative: ``p`` = 'R'; the first twelve digits
are years, months, days, hours, minutes and seconds to add to "now" (``tnn`` should be "000";
other digits there are accepted and ignored).

Choices:
* ``YY`` is 2000 + YY (every time we meet is in this century).
* ``nn`` may be 00-56: the spec says 00-48 (±12 h) but UTC+13 and UTC+14 are real zones.
* Relative years and months are calendar steps (Jan 31 + 1 month = Feb 28/29, clamped);
  days, hours, minutes and seconds are plain durations and may exceed their usual range
  ("000003000000000R" = 3 days, "000000480000000R" = 48 hours).
* Results are timezone-aware UTC. A naive ``now`` or ``dt`` is taken to be UTC.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone

UTC = timezone.utc
MAX_QUARTER_HOURS = 56


def _aware_utc(dt: datetime) -> datetime:
    if dt.tzinfo is None or dt.utcoffset() is None:
        return dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _add_months(dt: datetime, months: int) -> datetime:
    total = dt.year * 12 + (dt.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    if year > 9999:
        raise ValueError("relative time goes past year 9999")
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return dt.replace(year=year, month=month, day=day)


def parse_smpp_time(value: str, now: datetime) -> datetime | None:
    """Parse an SMPP time. "" -> None. ValueError on anything malformed."""
    if value == "":
        return None
    if not isinstance(value, str) or len(value) != 16:
        raise ValueError(f"SMPP time must be 16 characters, got {value!r}")
    digits, p = value[:15], value[15]
    if not (digits.isascii() and digits.isdigit()):
        raise ValueError(f"SMPP time {value!r}: the first 15 characters must be digits")
    yy, mo, dd, hh, mi, ss = (int(digits[i : i + 2]) for i in range(0, 12, 2))
    tenths, nn = int(digits[12]), int(digits[13:15])
    if p == "R":
        start = _aware_utc(now)
        try:
            shifted = _add_months(start, yy * 12 + mo)
            return shifted + timedelta(days=dd, hours=hh, minutes=mi, seconds=ss)
        except OverflowError as exc:
            raise ValueError(f"SMPP time {value!r}: {exc}") from None
    if p not in "+-":
        raise ValueError(f"SMPP time {value!r}: last character must be '+', '-' or 'R'")
    if nn > MAX_QUARTER_HOURS:
        raise ValueError(f"SMPP time {value!r}: UTC offset {nn} quarter hours out of range")
    offset = timedelta(minutes=15 * nn)
    if p == "-":
        offset = -offset
    try:
        local = datetime(2000 + yy, mo, dd, hh, mi, ss, tenths * 100_000,
                         tzinfo=timezone(offset))  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"SMPP time {value!r}: {exc}") from None
    return local.astimezone(UTC)


def format_smpp_time(dt: datetime) -> str:
    """An absolute SMPP time in UTC: ``YYMMDDhhmmsst00+``. A naive ``dt`` is taken as UTC."""
    u = _aware_utc(dt)
    if not 2000 <= u.year <= 2099:
        raise ValueError(f"{u.year} cannot be written as an SMPP time (2000-2099)")
    return f"{u:%y%m%d%H%M%S}{u.microsecond // 100_000}00+"
