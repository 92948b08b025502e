"""GoIP GSM gateway driver, HTTP API (docs/devices/goip.md, part 1).

Long on purpose (~800 lines): one device's whole HTTP protocol - send, the shared status page
and its slot reconciliation, the inbox, health - with the firmware quirks each needs; the
parts share the client and the per-line status cache, so splitting them would scatter one
protocol over several files.

One driver per GoIP; one shared HTTP client (``HttpDevice``: keep-alive, a few pooled connections)
for all its lines. Channels are the line numbers "1".."N".

Wire facts this driver depends on:

* send.html and send_status.xml take credentials as ``u``/``p`` query parameters;
  tools.html (inbox) and status.xml (line status) use HTTP Basic auth.
* send_status.xml keeps one slot per line for the LAST message only. ``status`` therefore
  compares the slot's id with our ref: another id means our message's status is gone
  (UNKNOWN). The scheduler must read the final status before it sends the next message on the
  line (docs/architecture.md, rule 4).
* Real GoIPs end their response headers in bare LF. The HTTP client's parser (h11 >= 0.14, checked
  with h11 0.16) accepts bare LF per RFC 9112 section 2.2, including across TCP segment boundaries;
  the tests run the emulator in bare-LF mode, byte by byte.

Status polls are coalesced per device: concurrent ``status`` calls for different lines share
one send_status.xml request, and an answer up to ``status_max_age`` seconds old is reused - but
never one requested before the last send on the channel in question finished.

Credentials: they travel in query strings, which httpx logs at INFO on the "httpx" logger. The
driver installs a filter there that masks ``u=``/``p=`` values, never logs URLs itself and
passes every string it returns or logs through a ``Redactor``. The application should still
keep the "httpx" and "httpcore" loggers at WARNING.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo

import attrs
import httpx
import trio

from bridge.devices.goip_http import CAPABILITIES
from bridge.devices.base import (
    ChannelHealth,
    DeliveryState,
    DeviceError,
    DeviceHealth,
    DriverBase,
    InboundSms,
    Redactor,
    SendOutcome,
    SendResult,
    StatusResult,
    install_httpx_log_redaction,
)
from bridge.devices.http_common import (
    CallCounters,
    HttpAnswer,
    HttpDevice,
    decode_body,
    encode_pairs,
    snippet,
    validate_base_url,
)

__all__ = [
    "GoipHttpDriver",
    "LineSlot",
    "infer_received_at",
    "judge_slot",
    "parse_health_xml",
    "parse_inbox_entry",
    "parse_inbox_page",
    "parse_send_answer",
    "parse_send_status_xml",
]

log = logging.getLogger("bridge.devices.goip_http")

PREFIX = "/default/en_US"
SEND_PATH = f"{PREFIX}/send.html"
SEND_STATUS_PATH = f"{PREFIX}/send_status.xml"
INBOX_PATH = f"{PREFIX}/tools.html"
HEALTH_PATH = f"{PREFIX}/status.xml"

# ============================================================================================
# Pure parsers (no I/O; unit-tested with literal device answers)

_SENDING = re.compile(r"^Sending\s*,\s*L(?P<line>\d+)\b", re.IGNORECASE)
_SENDING_ID = re.compile(r"\bID\s*:\s*(?P<id>[0-9A-Fa-f]+)\s*$", re.IGNORECASE)
_BUSY = re.compile(r"^ERROR\s*,\s*L(?P<line>\d+)\s+busy\b", re.IGNORECASE)
_LOGOUT = re.compile(r"^ERROR\s*,\s*L(?P<line>\d+)\s+GSM\s*logout\b", re.IGNORECASE)
_AUTH = re.compile(r"^ERROR\s*,\s*user\s+or\s+password\s+error", re.IGNORECASE)
_SLOT_TAG = re.compile(r"^(id|status|error)(\d+)$")
_HEALTH_TAG = re.compile(r"^l(\d+)_(gsm_status|gsm_signal|gsm_cur_oper)$")
_INBOX_BLOCK = re.compile(
    r"sms=\s*\[(.*?)\];\s*pos=(\d+);\s*sms_row_insert\(l(\d+)_sms_store, sms, pos, (\d+)\)",
    re.DOTALL,
)
# Fallback for arrays that are not valid JSON (a raw '"' inside a body): a string runs to the
# first '"' that is followed by ',"' or by the end of the array.
_LOOSE_JS_STRING = re.compile(r'"(.*?)"(?=\s*,\s*"|\s*$)', re.DOTALL)
_STAMP = re.compile(r"^(\d{2})-(\d{2}) (\d{2}):(\d{2}):(\d{2})$")


_decode = decode_body


def _classify_send(
    status: int, body: bytes | str, *, line: int, text: str
) -> tuple[SendResult, bool]:
    """-> (result, the answer was garbage)."""
    answer = _decode(body).strip()
    if status == 500:
        if text.startswith("["):
            return (
                SendResult(
                    SendOutcome.REJECTED,
                    detail="HTTP 500: GoIP firmware fails on texts starting with '[' (known bug)",
                    http_status=status,
                ),
                False,
            )
        return (
            SendResult(SendOutcome.ERROR, detail="HTTP 500 from device", http_status=status),
            False,
        )
    if status in (401, 403):
        return (
            SendResult(SendOutcome.AUTH_FAILED, detail=f"HTTP {status}", http_status=status),
            False,
        )
    if status != 200:
        return (
            SendResult(
                SendOutcome.ERROR, detail=f"HTTP {status}: {snippet(answer)}", http_status=status
            ),
            status not in (502, 503, 504),
        )

    if m := _SENDING.match(answer):
        id_match = _SENDING_ID.search(answer)
        ref = id_match.group("id") if id_match else None
        detail = f"line {m.group('line')} sending"
        if int(m.group("line")) != line:
            detail += f" (asked for line {line})"
        if ref is None:
            detail += "; device gave no message ID"
        return SendResult(SendOutcome.ACCEPTED, ref=ref, detail=detail, http_status=status), False
    if m := _BUSY.match(answer):
        return (
            SendResult(SendOutcome.BUSY, detail=f"line {m.group('line')} busy", http_status=status),
            False,
        )
    if m := _LOGOUT.match(answer):
        return (
            SendResult(
                SendOutcome.CHANNEL_DOWN,
                detail=f"line {m.group('line')} GSM logout",
                http_status=status,
            ),
            False,
        )
    if _AUTH.match(answer):
        return (
            SendResult(
                SendOutcome.AUTH_FAILED, detail="user or password error", http_status=status
            ),
            False,
        )
    if answer.upper().startswith("ERROR"):
        return (
            SendResult(
                SendOutcome.ERROR, detail=f"device error {snippet(answer)}", http_status=status
            ),
            False,
        )
    # HTTP 200 with a body we cannot read: the request reached the device and we cannot tell
    # what it did with it. The scheduler reconciles through the line's status slot.
    return (
        SendResult(
            SendOutcome.AMBIGUOUS,
            detail=f"unrecognised answer {snippet(answer)}",
            http_status=status,
        ),
        True,
    )


def parse_send_answer(status: int, body: bytes | str, *, line: int, text: str) -> SendResult:
    """Turn one send.html answer into a SendResult (``text`` is the SMS text we sent).

    The detail may quote the device's answer: redact it before it leaves the driver.
    """
    return _classify_send(status, body, line=line, text=text)[0]


@attrs.frozen
class LineSlot:
    """One line's slot in send_status.xml: the device's last message on that line."""

    ref: str
    status: str
    error: str


def parse_send_status_xml(body: bytes | str) -> dict[str, LineSlot]:
    """Parse send_status.xml into ``{line: LineSlot}``. Raises ValueError on anything else."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    raw = raw.strip()  # firmware that wraps bodies in newlines would break the XML declaration
    if not raw.startswith(b"<"):
        raise ValueError("not XML")
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from None
    fields: dict[str, dict[str, str]] = {}
    for element in root.iter():
        m = _SLOT_TAG.match(element.tag)
        if m:
            fields.setdefault(str(int(m.group(2))), {})[m.group(1)] = (element.text or "").strip()
    if not fields:
        raise ValueError(f"no idN/statusN/errorN elements under <{root.tag}>")
    return {
        line: LineSlot(ref=f.get("id", ""), status=f.get("status", ""), error=f.get("error", ""))
        for line, f in fields.items()
    }


def _same_ref(a: str, b: str) -> bool:
    try:
        return int(a, 16) == int(b, 16)
    except ValueError:
        return a.strip().lower() == b.strip().lower()


def judge_slot(line: str, slot: LineSlot | None, ref: str | None) -> StatusResult:
    """What a line's slot says about our message ``ref``."""
    if slot is None:
        return StatusResult(
            DeliveryState.UNKNOWN, detail=f"send_status.xml has no slot for line {line}"
        )
    if not slot.ref:
        return StatusResult(
            DeliveryState.UNKNOWN, detail=f"line {line} shows no message (device reset?)"
        )
    unverified = ""
    if ref is None:
        unverified = " (unverified: the device gave no ID at send time)"
    elif not _same_ref(slot.ref, ref):
        return StatusResult(
            DeliveryState.UNKNOWN,
            detail=f"line {line} now shows message {slot.ref}, not {ref} (slot overwritten)",
        )
    status = slot.status.upper()
    if status == "DONE":
        if slot.error:
            return StatusResult(
                DeliveryState.FAILED,
                error_code=slot.error,
                detail=f"DONE with error {slot.error}{unverified}",
            )
        return StatusResult(DeliveryState.SENT, detail=f"DONE{unverified}")
    if status in ("STARTED", "SENDING", ""):
        return StatusResult(
            DeliveryState.PENDING, detail=f"{status or 'no status yet'}{unverified}"
        )
    if slot.error:
        return StatusResult(
            DeliveryState.FAILED,
            error_code=slot.error,
            detail=f"status {slot.status!r} with error {slot.error}{unverified}",
        )
    return StatusResult(
        DeliveryState.PENDING, detail=f"unfamiliar status {snippet(slot.status, 40)}{unverified}"
    )


def infer_received_at(stamp: str, now: datetime, device_tz: tzinfo = timezone.utc) -> datetime:
    """A GoIP inbox stamp "MM-DD HH:MM:SS" (device clock, no year) -> aware UTC datetime.

    The year is ``now``'s year in the device's zone, unless that puts the stamp more than a day
    in the future: then the year before (an SMS from 31 December read on 1 January). 29 February
    goes back to the last leap year. Raises ValueError for a malformed stamp.
    """
    m = _STAMP.match(stamp.strip())
    if not m:
        raise ValueError(f"bad inbox timestamp {stamp!r}")
    month, day, hour, minute, second = (int(g) for g in m.groups())
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    local_now = now.astimezone(device_tz)
    year = local_now.year
    for _ in range(9):
        try:
            candidate = datetime(year, month, day, hour, minute, second, tzinfo=device_tz)
        except ValueError:
            if month == 2 and day == 29:
                year -= 1
                continue
            raise ValueError(f"bad inbox timestamp {stamp!r}") from None
        if candidate - local_now > timedelta(days=1):
            year -= 1
            continue
        return candidate.astimezone(timezone.utc)
    raise ValueError(f"bad inbox timestamp {stamp!r}")


def _repair_mojibake(text: str) -> str:
    """Undo UTF-8 that was decoded as latin-1 ("GrÃ¼ÃŸe" -> "Grüße"); else keep the text."""
    if not any("\x80" <= ch <= "\xff" for ch in text):
        return text
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def parse_inbox_entry(entry: str) -> tuple[str, str, str] | None:
    """ "MM-DD HH:MM:SS,sender,body" -> (stamp, sender, body); the body may hold commas.

    None for an empty slot or an entry without two commas.
    """
    if not entry.strip():
        return None
    parts = entry.split(",", 2)
    if len(parts) < 3:
        return None
    stamp, sender, body = parts
    return stamp.strip(), sender.strip(), body


def _js_array(text: str) -> list[str]:
    try:
        value = json.loads(f"[{text}]")
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    except ValueError:
        pass
    out = []
    for m in _LOOSE_JS_STRING.finditer(text.strip()):
        try:
            out.append(json.loads(f'"{m.group(1)}"'))
        except ValueError:
            out.append(m.group(1).replace('\\"', '"').replace("\\\\", "\\"))
    return out


def device_key(line: str, stamp: str, sender: str, body: str, slot: int) -> str:
    """The entry's identity: line, stamp, sender, a hash of the text, and its slot in the ring.
    The stamp has one-second resolution, so two identical SMS from one sender on one line within
    a second differ only by their slot; the ring fills forward and a slot is reused only when the
    ring comes round, so the slot keeps them apart without merging anything it should not. The
    slot goes last, after ``#``: keys stored before it was added (``bridge/store/inbound.py``,
    ``LEGACY_SEP``) are still recognised."""
    digest = hashlib.sha1(body.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{line}|{stamp}|{sender}|{digest}#{slot}"


def parse_inbox_page(
    page: str, *, now: datetime, device_tz: tzinfo = timezone.utc
) -> list[InboundSms]:
    """Parse tools.html?type=sms_inbox into InboundSms, oldest first.

    Raises ValueError when the page holds no inbox blocks at all (not an inbox page).
    """
    blocks = _INBOX_BLOCK.findall(page)
    if not blocks:
        raise ValueError("no sms_row_insert blocks in the inbox page")
    out: list[InboundSms] = []
    for array_text, _pos, store_line, line in blocks:
        channel = str(int(line))
        for slot, entry in enumerate(_js_array(array_text)):
            parsed = parse_inbox_entry(entry)
            if parsed is None:
                if entry.strip():
                    log.warning(
                        "GoIP inbox line %s slot %d: unparseable entry skipped", channel, slot
                    )
                continue
            stamp, sender, body = parsed
            try:
                received_at = infer_received_at(stamp, now, device_tz)
            except ValueError:
                log.warning("GoIP inbox line %s slot %d: bad timestamp, using now", channel, slot)
                received_at = now.astimezone(timezone.utc)
            out.append(
                InboundSms(
                    channel=channel,
                    sender=_repair_mojibake(sender),
                    text=_repair_mojibake(body),
                    received_at=received_at,
                    device_key=device_key(channel, stamp, sender, body, slot),
                    raw=entry,
                    slot=slot,
                )
            )
    out.sort(key=lambda sms: (sms.received_at, int(sms.channel), sms.slot or 0))
    return out


def parse_health_xml(body: bytes | str, lines: int) -> dict[str, ChannelHealth]:
    """Parse status.xml into ``{line: ChannelHealth}`` for lines 1..``lines``. ValueError if bad."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    try:
        root = ET.fromstring(raw.strip())
    except ET.ParseError as exc:
        raise ValueError(f"malformed XML: {exc}") from None
    values: dict[str, dict[str, str]] = {}
    for element in root.iter():
        m = _HEALTH_TAG.match(element.tag)
        if m:
            values.setdefault(str(int(m.group(1))), {})[m.group(2)] = (element.text or "").strip()
    out = {}
    for n in range(1, lines + 1):
        v = values.get(str(n), {})
        status = v.get("gsm_status", "").upper()
        registered = (
            True if status in ("Y", "LOGIN") else False if status in ("N", "LOGOUT") else None
        )
        try:
            signal = int(v["gsm_signal"]) if v.get("gsm_signal") else None
        except ValueError:
            signal = None
        out[str(n)] = ChannelHealth(
            registered=registered, signal=signal, operator=v.get("gsm_cur_oper") or None
        )
    return out


# ============================================================================================
# The driver


_Answer = HttpAnswer


@attrs.define
class _Snapshot:
    requested_at: float
    slots: dict[str, LineSlot] | None = None
    error: str | None = None


@attrs.define
class _Inflight:
    #: None while it gathers callers (its request has not left yet: any caller may join).
    requested_at: float | None
    done: trio.Event = attrs.Factory(trio.Event)
    result: _Snapshot | None = None


class GoipHttpDriver(DriverBase):
    kind = "goip_http"
    capabilities = CAPABILITIES.flags
    declared = CAPABILITIES
    # The firmware answers HTTP 500 to a text starting with "[" (docs/devices/goip.md).

    def __init__(
        self,
        name: str,
        base_url: str,
        username: str,
        password: str,
        lines: int,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        device_tz: tzinfo = timezone.utc,
        status_max_age: float = 1.0,
        max_connections: int = 4,
        keepalive_expiry: float = 5.0,
        now: Callable[[], datetime] | None = None,
    ):
        base_url = validate_base_url(name, base_url)
        if lines < 1:
            raise DeviceError(f"device {name!r}: lines must be >= 1")
        if timeout <= 0:
            raise DeviceError(f"device {name!r}: timeout must be > 0")
        self.name = name
        self.base_url = base_url
        self.username = username
        self._password = password
        self.lines = lines
        self.channels = tuple(str(n) for n in range(1, lines + 1))
        self.timeout = timeout
        self.device_tz = device_tz
        self.status_max_age = status_max_age
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._redact = Redactor([password], basic_auth=[(username, password)])
        install_httpx_log_redaction()
        self._http = HttpDevice(
            timeout=timeout,
            redact=self._redact,
            transport=transport,
            max_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        self._basic = httpx.BasicAuth(username, password)
        self._closed = False
        self._sent_at: dict[str, float] = {}
        self._snapshot: _Snapshot | None = None
        self._inflight: _Inflight | None = None
        self._counters = CallCounters()

    def __repr__(self) -> str:
        return f"<GoipHttpDriver {self.name!r} {self.base_url} lines={self.lines}>"

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._closed:
            raise DeviceError(f"device {self.name!r}: driver is closed")

    def _url(self, path: str, query: list[tuple[str, str]] | None) -> str:
        if not query:
            return self.base_url + path
        return f"{self.base_url}{path}?{encode_pairs(query)}"

    async def _get(
        self,
        path: str,
        query: list[tuple[str, str]] | None = None,
        *,
        basic: bool = False,
        read: bool = False,
    ) -> _Answer:
        """``read``: the request only reads the device (status, inbox, health): asked again once
        on a fresh connection when the device had closed the pooled one (HttpDevice.request);
        a send or a delete is never repeated blind."""
        self._check_open()
        return await self._http.request(
            "GET", self._url(path, query), auth=self._basic if basic else None, idempotent=read
        )

    # ---------------------------------------------------------------- send

    async def send(self, channel: str, destination: str, text: str) -> SendResult:
        self._check_open()
        self.check_channel(channel)
        query = [
            ("u", self.username),
            ("p", self._password),
            ("l", channel),
            ("n", destination),
            ("m", text),
        ]
        try:
            answer = await self._get(SEND_PATH, query)
        finally:
            # A status snapshot requested before this point cannot show this send.
            self._sent_at[channel] = trio.current_time()
        result = self._counters.judge_send(
            answer,
            lambda status, body: _classify_send(status, body, line=int(channel), text=text),
            self._redact,
        )
        log.debug(
            "goip %s line %s send -> %s %s",
            self.name,
            channel,
            result.outcome.value,
            result.ref or "",
        )
        if result.outcome in (SendOutcome.ERROR, SendOutcome.AMBIGUOUS, SendOutcome.AUTH_FAILED):
            log.warning(
                "goip %s line %s send: %s: %s",
                self.name,
                channel,
                result.outcome.value,
                result.detail,
            )
        return result

    # ---------------------------------------------------------------- status

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        return (await self.status_many({channel: ref}))[channel]

    async def status_many(self, refs: Mapping[str, str | None]) -> dict[str, StatusResult]:
        self._check_open()
        for channel in refs:
            self.check_channel(channel)
        if not refs:
            return {}
        not_before = max(self._sent_at.get(ch, -math.inf) for ch in refs)
        snap = await self._status_snapshot(not_before, self.status_max_age)
        results = {}
        for channel, ref in refs.items():
            if snap.slots is None:
                results[channel] = StatusResult(
                    DeliveryState.UNKNOWN,
                    detail=snap.error or "status unreadable",
                    poll_failed=True,
                )
                continue
            result = judge_slot(channel, snap.slots.get(channel), ref)
            if result.state is DeliveryState.UNKNOWN and ref:
                # The device answered on another line than we asked for? IDs are per device.
                for other, slot in snap.slots.items():
                    if other != channel and slot.ref and _same_ref(slot.ref, ref):
                        result = judge_slot(other, slot, ref)
                        result = attrs.evolve(
                            result, detail=f"{result.detail} (found on line {other})"
                        )
                        break
            results[channel] = result
        return results

    async def last_ref(self, channel: str) -> str | None:
        """The id in the line's send_status slot right now ("" when empty; None if unreadable)."""
        self.check_channel(channel)
        self._check_open()
        # Only an answer requested from now on will do: never one already in flight.
        snap = await self._status_snapshot(trio.current_time(), 0.0)
        if snap.slots is None:
            return None
        slot = snap.slots.get(channel)
        return slot.ref.lower() if slot is not None and slot.ref else ""

    async def status_all(self, max_age: float | None = None) -> dict[str, LineSlot] | None:
        """Every line's send_status slot from one request (None if the device can't be read)."""
        self._check_open()
        snap = await self._status_snapshot(
            -math.inf, self.status_max_age if max_age is None else max_age
        )
        return None if snap.slots is None else dict(snap.slots)

    async def _status_snapshot(self, not_before: float, max_age: float) -> _Snapshot:
        while True:
            now = trio.current_time()
            snap = self._snapshot
            if (
                snap is not None
                and snap.requested_at > not_before
                and now - snap.requested_at <= max_age
            ):
                return snap
            inflight = self._inflight
            if inflight is not None and (inflight.requested_at is None or inflight.requested_at > not_before):
                await inflight.done.wait()
                if inflight.result is not None:
                    return inflight.result
                continue  # its owner was cancelled: fetch ourselves
            inflight = _Inflight(requested_at=None)
            self._inflight = inflight
            try:
                # Callers of this same moment join before the request leaves (e.g. every line's
                # last_ref when the lines start sending: one request per device, not per line).
                await trio.lowlevel.checkpoint()
                inflight.requested_at = trio.current_time()
                result = await self._fetch_snapshot(inflight.requested_at)
                inflight.result = result
                if self._snapshot is None or self._snapshot.requested_at <= result.requested_at:
                    self._snapshot = result
                return result
            finally:
                inflight.done.set()
                if self._inflight is inflight:
                    self._inflight = None

    async def _fetch_snapshot(self, requested_at: float) -> _Snapshot:
        answer = await self._get(
            SEND_STATUS_PATH, [("u", self.username), ("p", self._password)], read=True
        )
        if answer.error is not None:
            self._counters.failed(answer.error)
            log.warning("goip %s status poll failed: %s", self.name, answer.error)
            return _Snapshot(requested_at, error=f"status poll failed: {answer.error}")
        text = _decode(answer.body).strip()
        if answer.status in (401, 403) or _AUTH.match(text):
            self._counters.failed("status poll: user or password error", auth=True)
            return _Snapshot(requested_at, error="status poll: device rejected credentials")
        if answer.status != 200:
            detail = f"status poll: HTTP {answer.status}"
            self._counters.failed(detail)
            return _Snapshot(requested_at, error=detail)
        try:
            slots = parse_send_status_xml(answer.body)
        except ValueError as exc:
            detail = self._redact(f"malformed status XML ({exc}): {snippet(text)}")
            self._counters.failed(detail, protocol=True)
            log.warning("goip %s: %s", self.name, detail)
            return _Snapshot(requested_at, error="malformed status XML")
        self._counters.ok()
        return _Snapshot(requested_at, slots=slots)

    # ---------------------------------------------------------------- inbox

    async def inbox(self) -> list[InboundSms]:
        self._check_open()
        answer = await self._get(INBOX_PATH, [("type", "sms_inbox")], basic=True, read=True)
        return self._inbox_from(answer)

    def _inbox_from(self, answer: _Answer) -> list[InboundSms]:
        if answer.error is not None:
            self._counters.failed(answer.error)
            log.warning("goip %s inbox poll failed: %s", self.name, answer.error)
            return []
        if answer.status in (401, 403):
            self._counters.failed("inbox: device rejected credentials", auth=True)
            log.warning(
                "goip %s inbox: device rejected credentials (HTTP %s)", self.name, answer.status
            )
            return []
        if answer.status != 200:
            self._counters.failed(f"inbox: HTTP {answer.status}")
            log.warning("goip %s inbox: HTTP %s", self.name, answer.status)
            return []
        try:
            items = parse_inbox_page(
                _decode(answer.body), now=self._now(), device_tz=self.device_tz
            )
        except ValueError as exc:
            self._counters.failed(f"inbox: {exc}", protocol=True)
            log.warning("goip %s inbox: %s", self.name, exc)
            return []
        self._counters.ok()
        return items

    async def delete_inbox(self, items: Iterable[InboundSms]) -> None:
        """Delete entries, re-checking first that each slot still holds the same SMS.

        The inbox is a ring: a slot read earlier may have been overwritten since. Entries whose
        slot now holds something else are left alone (deleted already, or ring moved on).
        Deletes run highest position first, so a firmware that compacts the ring on delete
        cannot shift an entry we are about to delete.
        """
        self._check_open()
        wanted = [item for item in items if item.slot is not None]
        for item in wanted:
            self.check_channel(item.channel)
        if not wanted:
            return
        current = {(i.channel, i.slot): i.device_key for i in await self.inbox()}
        for item in sorted(wanted, key=lambda i: (int(i.channel), -(i.slot or 0))):
            if current.get((item.channel, item.slot)) != item.device_key:
                log.debug(
                    "goip %s inbox line %s slot %s changed; not deleting",
                    self.name,
                    item.channel,
                    item.slot,
                )
                continue
            answer = await self._get(
                INBOX_PATH,
                [
                    ("type", "sms_inbox"),
                    ("action", "del"),
                    ("line", item.channel),
                    ("pos", str(item.slot)),
                ],
                basic=True,
            )
            if answer.error is not None or answer.status != 200:
                detail = answer.error or f"HTTP {answer.status}"
                self._counters.failed(f"inbox delete: {detail}", auth=answer.status in (401, 403))
                log.warning(
                    "goip %s inbox delete line %s slot %s failed: %s",
                    self.name,
                    item.channel,
                    item.slot,
                    detail,
                )
            else:
                self._counters.ok()

    # ---------------------------------------------------------------- health

    async def health(self) -> DeviceHealth:
        """Line status from status.xml, plus the driver's error counters.

        The health request itself does not move ``consecutive_errors`` (that counts the
        operational calls: send, status, inbox), so a device whose status page works while
        send.html answers garbage still shows its failures.
        """
        self._check_open()
        answer = await self._get(HEALTH_PATH, basic=True, read=True)
        counters = self._counters
        if answer.error is not None:
            return self._health(reachable=False, detail=f"unreachable: {answer.error}")
        if answer.status in (401, 403):
            counters.auth_failed = True
            return self._health(reachable=True, detail="device rejected credentials")
        if answer.status != 200:
            return self._health(reachable=True, detail=f"status.xml: HTTP {answer.status}")
        try:
            channels = parse_health_xml(answer.body, self.lines)
        except ValueError as exc:
            counters.protocol_errors += 1
            return self._health(reachable=True, detail=f"malformed status.xml: {exc}")
        counters.auth_failed = False
        down = [ch for ch, h in channels.items() if h.registered is False]
        parts = ["ok" if not down else f"GSM logout on line(s) {', '.join(down)}"]
        if counters.summary():
            parts.append(counters.summary())
        return self._health(reachable=True, detail="; ".join(parts), channels=channels)

    def _health(
        self, *, reachable: bool, detail: str, channels: Mapping[str, ChannelHealth] | None = None
    ) -> DeviceHealth:
        return self._counters.health(
            reachable=reachable, detail=detail, channels=channels or {}, redact=self._redact
        )

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await self._http.aclose()
