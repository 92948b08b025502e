"""GoIP "SMS server" UDP protocol, sans-IO (docs/devices/goip.md, part 2).

What travels on the wire and nothing else: parsing the datagrams a GoIP sends, building the ones
the bridge sends, mapping a device error code to an outcome, the send ref and the inbound
de-duplication key, and the per-line session state the driver keeps between datagrams. No
sockets, no timers, no trio: ``driver.py`` owns the UDP listener and the ``Driver`` interface
and calls into this module. The "Datagrams from the GoIP" and "Sending one SMS" sections of
docs/devices/goip.md part 2 describe the same format for a reader of the docs.

Datagrams the driver understands
--------------------------------
GoIP-initiated, ``KIND:N;key:value;...`` (split on ``;`` then on the FIRST ``:``; values may
hold ``:`` and ``,``; keys are matched case-insensitively):

* ``req:N;id:<id>;pass:<pw>;...`` keepalive -> ``reg:N;status:200;`` (``status:400`` for an
  unknown id or a wrong password - counted, never logged with the password). Its fields feed
  ``health()`` and ``line_info()``: ``signal``, ``gsm_status`` (LOGIN/LOGOUT), ``pro``
  (operator), ``imei``/``imsi``/``iccid``, ``remain_time``, ``CELLINFO``, ...
* ``RECEIVE:N;id:..;password:..;srcnum:..;[smscnum:..;]msg:<text>`` inbound SMS; ``msg`` runs to
  the end of the datagram and may hold ``;`` and ``:``. See "Inbound SMS" in driver.py.
* ``DELIVER:N;id:..;password:..;sms_no:k;state:s;num:..`` handset delivery report ->
  ``DELIVER N OK``.
* ``STATE:N;...;gsm_remain_state:..`` (and RECORD/REMAIN/any other ``KIND:N;id;password``
  push) -> ``KIND N OK``.

Wrong id or password on RECEIVE/DELIVER/STATE -> ``KIND N ERROR not find this id:<id>, or
password error`` (the device's own wording for RECEIVE, used for all kinds).

Sending one SMS (bridge-initiated, to the line's last keepalive address)::

    MSG <sendid> <utf-8 byte length> <text>   -> PASSWORD <sendid>
    PASSWORD <sendid> <password>              -> SEND <sendid>
    SEND <sendid> 1 <number>                  -> OK <sendid> 1 <sms_no> | WAIT <sendid> 1
                                                 | ERROR <sendid> 1 errorstatus:<n>
                                                 | ERROR <sendid> GSM_LOGOUT | ERROR <sendid> SENDID
    DONE <sendid>                             -> DONE <sendid>
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import attrs

from bridge.devices.base import InboundSms, Redactor, SendOutcome

__all__ = [
    "AwaitingReport",
    "KeyedDatagram",
    "LineState",
    "PendingInbound",
    "SEND_NUMBER_RE",
    "MAX_DATAGRAM",
    "MAX_TEXT_BYTES",
    "Reply",
    "SEND_TELID",
    "bounded_put",
    "build_msg",
    "classify_errorstatus",
    "decode_datagram",
    "inbound_device_key",
    "make_ref",
    "parse_keyed",
    "parse_ref",
    "parse_reply",
    "printable",
    "redact_datagram",
    "same_number",
]

#: The GoIP takes at most 3000 bytes of text per MSG.
MAX_TEXT_BYTES = 3000
MAX_DATAGRAM = 65535
SEND_TELID = "1"

# ============================================================================================
# Pure parsing and formatting (no I/O; unit-tested with literal datagrams)

_KIND = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*):")
_SECRET_FIELD = re.compile(r"(?i)((?:^|;)\s*(?:pass|password)\s*:)[^;]*")
_PASSWORD_CMD = re.compile(r"(?i)^(\s*PASSWORD\s+\S+\s+).*$", re.DOTALL)
#: Keyed kinds whose last field (``msg``) runs to the end of the datagram.
_MSG_KINDS = frozenset({"receive"})
SEND_NUMBER_RE = re.compile(r"^\+?[0-9A-Za-z#*]{1,32}$")


@attrs.frozen
class KeyedDatagram:
    """A GoIP-initiated ``KIND:N;key:value;...`` datagram."""

    #: The kind as sent ("req", "RECEIVE", "DELIVER", "STATE", ...).
    kind: str
    #: The sequence number after ``KIND:`` (a string; "" if the firmware sent none).
    seq: str
    #: Fields by lower-cased key; the first occurrence of a key wins.
    fields: Mapping[str, str]

    @property
    def kind_lower(self) -> str:
        return self.kind.lower()

    def get(self, key: str, default: str | None = None) -> str | None:
        return self.fields.get(key.lower(), default)


def decode_datagram(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def parse_keyed(text: str) -> KeyedDatagram | None:
    """Parse ``KIND:N;key:value;...``; None if ``text`` is not of that form.

    Split on ``;``, then each part on its FIRST ``:`` (values keep their ``:`` and ``,``). In a
    RECEIVE, ``msg`` runs to the end of the datagram, ``;`` included.
    """
    text = text.rstrip("\x00")
    m = _KIND.match(text)
    if not m or ";" not in text:
        return None
    kind = m.group(1)
    msg_kind = kind.lower() in _MSG_KINDS
    head, _, rest = text.partition(";")
    seq = head[len(kind) + 1 :].strip()
    fields: dict[str, str] = {}
    if ":" in seq:
        # "RECEIVE:id:1;..." - firmware (or a fixture) without a sequence number.
        key, _, value = seq.partition(":")
        fields[key.strip().lower()] = value.strip()
        seq = ""
    while rest:
        part, sep, after = rest.partition(";")
        key, colon, value = part.partition(":")
        key = key.strip().lower()
        if msg_kind and key == "msg" and colon:
            fields.setdefault("msg", rest[len(part) - len(value) :])
            break
        if key and colon:
            fields.setdefault(key, value.rstrip("\r\n"))
        elif part.strip():
            fields.setdefault(key, "")
        rest = after
    return KeyedDatagram(kind=kind, seq=seq, fields=fields)


@attrs.frozen
class Reply:
    """A device answer in a send exchange: ``VERB <sendid> [args...]``."""

    verb: str
    sendid: int
    args: tuple[str, ...]
    text: str

    @property
    def telid(self) -> str | None:
        return self.args[0] if self.args else None


_REPLY_VERBS = frozenset({"PASSWORD", "SEND", "OK", "WAIT", "ERROR", "DONE", "MSG"})


def parse_reply(text: str) -> Reply | None:
    """Parse ``PASSWORD 8622`` / ``OK 8622 1 3`` / ``ERROR 8622 1 errorstatus:38`` / ...

    None when the text is not a send-exchange answer with a numeric sendid.
    """
    text = text.strip("\x00\r\n ")
    parts = text.split()
    if len(parts) < 2:
        return None
    verb = parts[0].upper()
    if verb not in _REPLY_VERBS or not parts[1].isdigit():
        return None
    return Reply(verb=verb, sendid=int(parts[1]), args=tuple(parts[2:]), text=text)


def redact_datagram(text: str) -> str:
    """Mask ``pass:``/``password:`` field values and the password of ``PASSWORD <id> <pw>``."""
    text = _SECRET_FIELD.sub(lambda m: m.group(1) + Redactor.MASK, text)
    return _PASSWORD_CMD.sub(lambda m: m.group(1) + Redactor.MASK, text)


def build_msg(sendid: int, text: str) -> bytes:
    """``MSG <sendid> <utf-8 byte length> <text>`` as bytes."""
    body = text.encode("utf-8")
    return f"MSG {sendid} {len(body)} ".encode("ascii") + body


# +CMS ERROR codes (3GPP TS 27.005 3.2.5 / 24.011 8.2.5.4) that the GoIP passes on as
# errorstatus (inferred; the vendor document does not list them).
_REJECT_CODES = frozenset({1, 21, 28, 30, 95, 96, 97, 99, 304, 305})
_LINE_CODES = frozenset({8, 10, 50, 310, 311, 312, 313, 315, 316, 317, 330, 331})
_CMS_TEXT = {
    1: "unassigned number",
    8: "operator determined barring",
    10: "call barred",
    21: "short message transfer rejected",
    27: "destination out of service",
    28: "unidentified subscriber",
    29: "facility rejected",
    30: "unknown subscriber",
    38: "network out of order",
    41: "temporary failure",
    42: "congestion",
    47: "resources unavailable",
    50: "requested facility not subscribed",
    95: "invalid message",
    96: "invalid mandatory information",
    97: "message type non-existent",
    99: "information element non-existent",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "SIM not inserted",
    311: "SIM PIN required",
    313: "SIM failure",
    314: "SIM busy",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    500: "unknown error",
}


def classify_errorstatus(code: str) -> tuple[SendOutcome, str]:
    """``errorstatus:<n>`` -> (outcome, human text). The device did not send the SMS."""
    try:
        n = int(code)
    except ValueError:
        return SendOutcome.ERROR, f"errorstatus {code!r}"
    label = f"errorstatus {n}" + (f" ({_CMS_TEXT[n]})" if n in _CMS_TEXT else "")
    if n in _REJECT_CODES:
        return SendOutcome.REJECTED, label
    if n in _LINE_CODES:
        return SendOutcome.CHANNEL_DOWN, label
    return SendOutcome.ERROR, label


def make_ref(channel: str, sms_no: str | None, sendid: int) -> str:
    return f"{channel}:{sms_no or ''}:{sendid}"


def parse_ref(ref: str) -> tuple[str, str, int] | None:
    """``"<channel>:<sms_no>:<sendid>"`` -> (channel, sms_no, sendid); None if malformed."""
    parts = ref.rsplit(":", 2)
    if len(parts) != 3 or not parts[2].isdigit():
        return None
    return parts[0], parts[1], int(parts[2])


def inbound_device_key(line_id: str, seq: str, sender: str, text: str) -> str:
    digest = hashlib.sha1(
        f"{sender}\x00{text}".encode("utf-8", "surrogatepass")
    ).hexdigest()[:12]
    return f"{line_id}|{seq}|{digest}"


def printable(text: str, limit: int = 80) -> str:
    cleaned = "".join(ch if ch.isprintable() else "?" for ch in text)
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "\u2026"
    return cleaned


def _digits(number: str) -> str:
    return "".join(ch for ch in number if ch.isdigit())


def same_number(a: str, b: str) -> bool:
    """Loose match of two renderings of one number (+4917.. vs 017..): last 7 digits."""
    da, db = _digits(a), _digits(b)
    if len(da) < 7 or len(db) < 7:
        return da == db or not da or not db
    return da[-7:] == db[-7:]



# ============================================================================================
# Per-line session state (what the driver remembers between datagrams)


@attrs.define
class LineState:
    channel: str
    line_id: str
    addr: Any = None
    last_seen: float | None = None
    #: Last keepalive's fields (password removed).
    info: dict[str, str] = attrs.Factory(dict)
    gsm_status: str | None = None
    #: Last STATE gsm_remain_state.
    state: str | None = None
    keepalives: int = 0
    #: When a datagram claiming this line id was last refused (wrong password).
    refused_at: float | None = None

    def alive(self, now: float, timeout: float) -> bool:
        return self.last_seen is not None and now - self.last_seen <= timeout


@attrs.define
class AwaitingReport:
    channel: str
    sms_no: str
    destination: str
    sent_at: float


@attrs.define
class PendingInbound:
    sms: InboundSms
    line: LineState
    seq: str
    addr: Any


def bounded_put(d: OrderedDict, key: Any, value: Any, limit: int) -> None:
    d[key] = value
    d.move_to_end(key)
    while len(d) > limit:
        d.popitem(last=False)
