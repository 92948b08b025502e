"""Delivery receipts (SMPP 3.4 Appendix B; TLVs §5.3.2.12, .31, .35).

The text we send::

    id:<id> sub:001 dlvrd:001 submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DELIVRD err:000 Text:<20 chars>

Choices and why:

* sub, dlvrd and err are three zero-padded digits and the dates exactly ten digits: aiosmpplib
  parses the dates with ``%y%m%d%H%M`` and the counters with ``int()`` and lets the ValueError
  escape its receive loop on anything else (12-digit dates, non-numeric values; see
  docs/smpp.md, Delivery receipts); fixed-width parsers expect three digits. Values outside 0-999 are refused
  (ValueError) rather than silently clipped: put a wider device error code in the
  network_error_code TLV (2 octets), and a receipt-text err the caller maps to 0-999.
* ``Text:`` with a capital T, as in the spec's example. jSMPP looks for exactly "Text:" (older
  versions only that spelling, newer ones then "text:"); aiosmpplib lower-cases the keys; Kannel
  does not read the text at all. "Text:" is the one spelling every parser we know accepts.
* The text field is the first 20 characters of the original message, each mapped to one
  character that has the same octet in ASCII and in GSM 03.38 (``text.to_ascii_gsm_safe``):
  whitespace -> space, accented letters -> base letter, brackets/backquote/underscore/tilde/bar/
  backslash -> look-alikes, anything else (@ $ ß Cyrillic emoji ...) -> "?". The receipt is sent
  with data_coding 0 and some clients decode it as ASCII, others (aiosmpplib) as strict GSM
  03.38: restricted to that common subset, ``receipt.encode("ascii")`` is right for both.
* Dates: an aware datetime is written in UTC, a naive one as it is.
* The id is written as given; it must equal the submit_sm_resp message_id byte for byte, so it
  must be non-empty printable ASCII without spaces (ValueError otherwise).

``parse_receipt_text`` is tolerant: keys in any case and any order, 10- or 12-digit dates,
missing fields. It is for tests and for receipts coming from upstream gateways.
"""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from bridge.smpp.constants import RECEIPT_STAT, MessageState, Tag
from bridge.smpp.text import to_ascii_gsm_safe

TEXT_CHARS = 20
KNOWN_STATS = frozenset(RECEIPT_STAT.values())


def _date10(dt: datetime) -> str:
    if dt.tzinfo is not None and dt.utcoffset() is not None:
        dt = dt.astimezone(timezone.utc)
    return f"{dt:%y%m%d%H%M}"


def _three_digits(name: str, value: int) -> str:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 999:
        raise ValueError(f"{name} must be an int 0-999, not {value!r}")
    return f"{value:03d}"


def receipt_text_field(text: str) -> str:
    """The ``Text:`` value for an original message text: 20 safe characters at most."""
    return to_ascii_gsm_safe(text[:TEXT_CHARS])


def build_receipt_text(
    message_id: str,
    *,
    submitted: int = 1,
    delivered: int,
    submit_date: datetime,
    done_date: datetime,
    stat: str,
    err: int,
    text: str,
) -> str:
    """The short_message text of a delivery receipt (see the module docstring)."""
    if (
        not message_id
        or not message_id.isascii()
        or not message_id.isprintable()
        or " " in message_id
    ):
        raise ValueError(f"message id {message_id!r} must be printable ASCII without spaces")
    if stat not in KNOWN_STATS:
        raise ValueError(f"stat {stat!r} is not one of {sorted(KNOWN_STATS)}")
    return (
        f"id:{message_id}"
        f" sub:{_three_digits('submitted', submitted)}"
        f" dlvrd:{_three_digits('delivered', delivered)}"
        f" submit date:{_date10(submit_date)}"
        f" done date:{_date10(done_date)}"
        f" stat:{stat}"
        f" err:{_three_digits('err', err)}"
        f" Text:{receipt_text_field(text)}"
    )


_KEY_RE = re.compile(
    r"(?:^|(?<=\s))(id|sub|dlvrd|submit date|done date|stat|err):", re.IGNORECASE
)
_TEXT_RE = re.compile(r"(?:^|(?<=\s))text:", re.IGNORECASE)
_DATE_RE = re.compile(r"\d{12}|\d{10}")


def _parse_date(value: str | None) -> datetime | None:
    if value is None:
        return None
    m = _DATE_RE.match(value)
    if not m or len(value) != len(m.group()):
        return None
    digits = m.group()
    try:
        return datetime(
            2000 + int(digits[0:2]),
            int(digits[2:4]),
            int(digits[4:6]),
            int(digits[6:8]),
            int(digits[8:10]),
            int(digits[10:12]) if len(digits) == 12 else 0,
        )
    except ValueError:
        return None


def _parse_int(value: str | None) -> int | None:
    if value is None or not (value.isascii() and value.isdigit()):
        return None
    return int(value)


def parse_receipt_text(text: str) -> dict[str, Any]:
    """Parse a receipt text. ValueError if ``text`` has no ``id:`` and ``stat:`` fields.

    Returns ``id`` (str), ``sub``/``dlvrd`` (int or None), ``submit_date``/``done_date``
    (naive datetimes, as written, or None when missing or not a valid 10/12-digit date),
    ``stat`` (str, upper-cased), ``err`` (str or None; some SMSCs send hex or letters) and
    ``text`` (str, everything after "text:", or None when there is no text field).
    """
    m = _TEXT_RE.search(text)
    head, body = (text[: m.start()], text[m.end() :]) if m else (text, None)
    fields: dict[str, str] = {}
    keys = list(_KEY_RE.finditer(head))
    for i, key in enumerate(keys):
        end = keys[i + 1].start() if i + 1 < len(keys) else len(head)
        name = key.group(1).lower()
        fields.setdefault(name, head[key.end() : end].strip())
    if not fields.get("id") or not fields.get("stat"):
        raise ValueError(f"not a delivery receipt: {text[:60]!r}")
    return {
        "id": fields["id"].split()[0],
        "sub": _parse_int(fields.get("sub")),
        "dlvrd": _parse_int(fields.get("dlvrd")),
        "submit_date": _parse_date(fields.get("submit date")),
        "done_date": _parse_date(fields.get("done date")),
        "stat": fields["stat"].split()[0].upper(),
        "err": fields["err"].split()[0] if fields.get("err") else None,
        "text": body,
    }


def receipt_tlvs(
    message_id: str, state: MessageState, network_error: tuple[int, int] | None = None
) -> dict[int, object]:
    """TLVs for a receipt deliver_sm: receipted_message_id, message_state and, when given,
    network_error_code = (network type, error code) as 3 octets (type, code big-endian)."""
    tlvs: dict[int, object] = {
        Tag.RECEIPTED_MESSAGE_ID: message_id,
        Tag.MESSAGE_STATE: int(MessageState(state)),
    }
    if network_error is not None:
        net_type, code = network_error
        if not 0 <= net_type <= 0xFF or not 0 <= code <= 0xFFFF:
            raise ValueError(f"network_error {network_error!r}: type 0-255, code 0-65535")
        tlvs[Tag.NETWORK_ERROR_CODE] = bytes((net_type,)) + code.to_bytes(2, "big")
    return tlvs
