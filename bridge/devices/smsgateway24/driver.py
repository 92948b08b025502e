"""Android phone via SmsGateway24 (docs/devices/smsgateway24.md).

Long on purpose (~710 lines): the cloud API's token renewal, send, status, inbox and offline
detection share one client and one token.

SmsGateway24 is a cloud service: the bridge talks to ``<base>/getdata/<method>`` (form POST),
and the SmsGateway24 app on the phone polls the cloud for SMS to send and reports back.
One driver per phone (``device_id``); channels "1".."sims" are the phone's SIM slots 0..sims-1.

Wire facts this driver depends on:

* ``gettoken(email, pass)`` -> ``{"error":0,"token":"…"}``; wrong credentials ->
  ``{"error":1,"message":"Login or password incorrect"}``. The driver keeps the token and
  renews it when an answer says it is bad. The API docs do not say how a bad or expired
  token is signalled (our inference): any ``{"error":1}`` whose message mentions the token, or an HTTP
  401/403, counts as "token bad". The call is then retried ONCE with a fresh token (safe: an
  error answer means the cloud did not act on the call). Concurrent calls that hit the same
  bad token share one renewal.
* ``addsms(token, sendto, body, device_id, sim[, urgent=1])`` -> ``{"error":0,"sms_id":N}``.
* ``getsmsstatus(token, sms_id)`` -> ``{"status":N,"status_description":…}``; see
  ``judge_status`` for the mapping of every status.
* ``getallsms(token, device_id, status=5, begindate, timezone)`` -> ``{"smss": {"<id>": row}}``;
  PHP sends an EMPTY map as ``[]`` - both shapes are accepted. Numbers may arrive as strings.
* ``getdevicestatus(token, device_id)`` -> ``{"online":…,"lastseen":{…},"diffseconds":N}``.
* Dates are PHP DateTime dumps: ``{"date":"2023-11-02 22:44:43.000000","timezone_type":3,
  "timezone":"Europe/Paris"}`` (type 1: an offset like "+02:00", type 2: an abbreviation).

Inbox: SmsGateway24 has no API to delete or mark incoming SMS, so ``inbox()`` returns the
incoming SMS of the last ``inbox_lookback`` seconds on every poll; the bridge de-duplicates by
``device_key`` ("sg24:<sms id>", stable: the cloud's id). No ``DELETE_INBOX`` capability.

Send outcomes: an HTTP/transport failure before the request was written -> ERROR; after
it was written (read timeout, dropped connection) -> AMBIGUOUS; an unreadable 200 answer ->
AMBIGUOUS; ``{"error":1}`` -> ERROR (nothing was saved), except bad login -> AUTH_FAILED.
"Was the request written?" is answered by ``bridge.devices.http_common.HttpDevice``.

Credentials: the email, password and the current token are masked (``Redactor``) in every
detail and log line; they travel only in POST bodies, never in URLs.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import httpx
import trio

from bridge.devices.smsgateway24 import CAPABILITIES
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
    HttpDevice,
    encode_pairs,
    snippet,
    tls_verify_option,
    validate_base_url,
)

__all__ = [
    "STATUS_TEXT",
    "SmsGateway24Driver",
    "judge_status",
    "parse_device_status",
    "parse_inbox_rows",
    "parse_php_datetime",
]

log = logging.getLogger("bridge.devices.smsgateway24")

#: Every status the API documents, in its words (docs/devices/smsgateway24.md, Statuses).
STATUS_TEXT: dict[int, str] = {
    1: "pending on the server",
    2: "taken by the phone",
    3: "queued for sending on the phone",
    5: "incoming SMS",
    6: "sent by the phone",
    7: "delivered",
    8: "not delivered",
    9: "not sent: generic failure",
    10: "not sent: no service",
    11: "not sent: null PDU",
    12: "not sent: radio off",
    100: "not sent: not allowed (the app lacks the SMS permission on the phone)",
    101: "not sent: not allowed (the app lacks the SMS permission on the phone)",
}
_PENDING = frozenset({1, 2, 3})
_NOT_SENT = frozenset({9, 10, 11, 12, 100, 101})

_TOKEN_BAD = re.compile(r"(?i)\btoken\b|not\s+authori[sz]ed|unauthori[sz]ed")
_NOT_FOUND = re.compile(r"(?i)not\s+found|no\s+such\s+sms|unknown\s+sms")
_LOGIN_BAD = re.compile(r"(?i)login|password|credential")


# ============================================================================================
# Pure helpers (no I/O)


def _int(value: Any) -> int | None:
    """PHP JSON: numbers sometimes arrive as strings ("7"). None if not an integer."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def judge_status(status: Any, description: str = "") -> StatusResult:
    """One ``getsmsstatus`` status -> StatusResult.

    * 1 pending, 2 taken by phone, 3 queued on phone -> PENDING
    * 6 sent -> SENT (handed to the network; a delivery report may follow)
    * 7 delivered -> DELIVERED
    * 8 not delivered -> FAILED("8") (the SMS went out; the network/handset refused it)
    * 9 generic failure, 10 no service, 11 null PDU, 12 radio off -> FAILED with that code
      (the SMS was NOT sent at all)
    * 100, 101 not allowed -> FAILED with that code: the SmsGateway24 app has no permission to
      send SMS on the phone; every further SMS on this phone will fail the same way
    * 5 incoming -> UNKNOWN (not an outgoing SMS: the id cannot be ours)
    * anything else -> UNKNOWN with ``poll_failed``: a status we do not know yet, most likely a
      new intermediate state; poll again until the status deadline rather than give up.
    """
    code = _int(status)
    said = f" ({snippet(description, 40)})" if description else ""
    if code in _PENDING:
        return StatusResult(DeliveryState.PENDING, detail=f"status {code}: {STATUS_TEXT[code]}")
    if code == 6:
        return StatusResult(DeliveryState.SENT, detail="status 6: sent by the phone")
    if code == 7:
        return StatusResult(DeliveryState.DELIVERED, detail="status 7: delivered")
    if code == 8 or code in _NOT_SENT:
        return StatusResult(
            DeliveryState.FAILED, error_code=str(code), detail=f"status {code}: {STATUS_TEXT[code]}"
        )
    if code == 5:
        return StatusResult(
            DeliveryState.UNKNOWN, detail="status 5: the id is an incoming SMS, not one we sent"
        )
    shown = code if code is not None else snippet(str(status), 20)
    return StatusResult(
        DeliveryState.UNKNOWN,
        detail=f"unfamiliar status {shown}{said}",
        poll_failed=True,
    )


_PHP_DATE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}:\d{2}:\d{2})(\.\d+)?$")
_OFFSET = re.compile(r"^([+-])(\d{2}):?(\d{2})$")


def _zone(value: Any, kind: Any, default: tzinfo) -> tzinfo:
    name = str(value or "").strip()
    if not name:
        return default
    if name.upper() in ("UTC", "GMT", "Z", "+00:00"):
        return timezone.utc
    m = _OFFSET.match(name)
    if m:
        delta = timedelta(hours=int(m.group(2)), minutes=int(m.group(3)))
        return timezone(-delta if m.group(1) == "-" else delta)
    if _int(kind) == 2:  # an abbreviation such as "CEST": ambiguous, use the configured zone
        return default
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return default


def parse_php_datetime(value: Any, default_tz: tzinfo = timezone.utc) -> datetime:
    """A PHP DateTime dump (or a plain "YYYY-MM-DD HH:MM:SS" string) -> aware UTC datetime.

    Raises ValueError when it is neither.
    """
    zone = default_tz
    if isinstance(value, Mapping):
        zone = _zone(value.get("timezone"), value.get("timezone_type"), default_tz)
        value = value.get("date")
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    m = _PHP_DATE.match(value.strip())
    if not m:
        raise ValueError(f"bad date {value!r}")
    frac = (m.group(3) or ".0")[1:7].ljust(6, "0")
    naive = datetime.strptime(f"{m.group(1)} {m.group(2)}", "%Y-%m-%d %H:%M:%S").replace(
        microsecond=int(frac)
    )
    return naive.replace(tzinfo=zone).astimezone(timezone.utc)


def _rows(smss: Any) -> list[Mapping[str, Any]]:
    """The ``smss`` field: a map id -> row, or ``[]`` (PHP's empty map), or a list of rows."""
    if isinstance(smss, Mapping):
        return [row for row in smss.values() if isinstance(row, Mapping)]
    if isinstance(smss, list):
        return [row for row in smss if isinstance(row, Mapping)]
    if smss is None:
        return []
    raise ValueError(f"smss is a {type(smss).__name__}, not a map")


def parse_inbox_rows(
    answer: Mapping[str, Any],
    *,
    channels: tuple[str, ...] = ("1",),
    now: datetime | None = None,
    server_tz: tzinfo = timezone.utc,
) -> list[InboundSms]:
    """A ``getallsms`` answer -> the incoming (status 5) SMS in it, oldest first.

    The sender is in ``sendto`` (the only phone field the documented row has [I]; ``from``,
    ``phone`` or ``sender`` win when present). The SIM slot (``sim`` 0/1) becomes the channel
    ("1"/"2"); a row without one goes to channel "1". Raises ValueError on a malformed answer.
    """
    now = now or datetime.now(timezone.utc)
    out: list[InboundSms] = []
    for row in _rows(answer.get("smss")):
        if _int(row.get("status")) not in (5, None):
            continue
        sms_id = _int(row.get("id"))
        if sms_id is None:
            continue
        sender = next(
            (str(row[k]) for k in ("from", "phone", "sender", "sendto") if row.get(k)), ""
        )
        sim = _int(row.get("sim"))
        channel = str(sim + 1) if sim is not None and str(sim + 1) in channels else channels[0]
        received_at = now
        for key in ("created", "receivedtime", "senttime"):
            if row.get(key):
                try:
                    received_at = parse_php_datetime(row[key], server_tz)
                    break
                except ValueError:
                    continue
        raw = {k: row.get(k) for k in ("id", "sendto", "status", "sim", "deviceid") if k in row}
        out.append(
            InboundSms(
                channel=channel,
                sender=sender,
                text=str(row.get("body") or ""),
                received_at=received_at,
                device_key=f"sg24:{sms_id}",
                raw=repr(raw),
            )
        )
    out.sort(key=lambda sms: (sms.received_at, sms.device_key))
    return out


@attrs.frozen
class DeviceSeen:
    online: bool | None
    last_seen: datetime | None
    #: Seconds since the phone last called the cloud (the cloud's own count if it gave one).
    seconds_ago: float | None
    title: str = ""


def parse_device_status(
    answer: Mapping[str, Any], *, now: datetime, server_tz: tzinfo = timezone.utc
) -> DeviceSeen:
    """A ``getdevicestatus`` answer -> when the phone was last seen."""
    last_seen = None
    if answer.get("lastseen"):
        try:
            last_seen = parse_php_datetime(answer["lastseen"], server_tz)
        except ValueError:
            last_seen = None
    seconds: float | None = _int(answer.get("diffseconds"))
    if seconds is None and last_seen is not None:
        seconds = max(0.0, (now - last_seen).total_seconds())
    online = answer.get("online")
    if isinstance(online, str):
        online = online.strip().lower() in ("1", "true", "yes")
    elif online is not None:
        online = bool(online)
    if seconds is None and last_seen is None and online is None:
        raise ValueError("no lastseen, diffseconds or online field")
    return DeviceSeen(
        online=online,
        last_seen=last_seen,
        seconds_ago=seconds,
        title=str(answer.get("title") or ""),
    )


# ============================================================================================
# HTTP plumbing


@attrs.define
class _Reply:
    #: The decoded JSON object of a well-formed ``{"error":0}`` answer.
    data: dict[str, Any] | None = None
    #: Why there is no ``data`` (redacted by the caller before it leaves the driver).
    error: str | None = None
    #: "transport" | "http" | "garbage" | "api" | "auth"
    kind: str = ""
    #: For "transport": the request may have reached the server.
    maybe_sent: bool = False
    http_status: int | None = None
    #: For "api": the server's message.
    message: str = ""


# ============================================================================================
# The driver


class SmsGateway24Driver(DriverBase):
    kind = "smsgateway24"
    capabilities = CAPABILITIES.flags
    declared = CAPABILITIES

    def __init__(
        self,
        name: str,
        base_url: str,
        email: str,
        password: str,
        device_id: str | int,
        *,
        sims: int = 1,
        timeout: float = 10.0,
        offline_after: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        inbox_lookback: float = 2 * 86400.0,
        server_tz: tzinfo = timezone.utc,
        verify_tls: bool | str = True,
        max_connections: int = 4,
        now: Callable[[], datetime] | None = None,
    ):
        base_url = validate_base_url(name, base_url)
        if sims not in (1, 2):
            raise DeviceError(f"device {name!r}: sims must be 1 or 2 (SmsGateway24 SIM slots 0/1)")
        if timeout <= 0 or offline_after <= 0:
            raise DeviceError(f"device {name!r}: timeout and offline_after must be > 0")
        if not str(device_id).strip():
            raise DeviceError(f"device {name!r}: device_id is required")
        self.name = name
        self.base_url = base_url
        self.device_id = str(device_id).strip()
        self.sims = sims
        self.channels = tuple(str(n) for n in range(1, sims + 1))
        self.timeout = timeout
        self.offline_after = offline_after
        self.inbox_lookback = inbox_lookback
        self.server_tz = server_tz
        self._email = email
        self._password = password
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._token: str | None = None
        self._token_lock = trio.Lock()
        self._redact = Redactor([password, email])
        install_httpx_log_redaction()
        self._http = HttpDevice(
            timeout=timeout,
            # a lambda: the redactor changes with every new token
            redact=lambda text: self._redact(text),
            transport=transport,
            verify=tls_verify_option(name, verify_tls),
            max_connections=max_connections,
        )
        self._counters = CallCounters()
        #: Token renewals since start (for tests and the admin page).
        self.token_renewals = 0

    def __repr__(self) -> str:
        return f"<SmsGateway24Driver {self.name!r} {self.base_url} device={self.device_id}>"

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._http.closed:
            raise DeviceError(f"device {self.name!r}: driver is closed")

    def _ok(self) -> None:
        self._counters.ok()

    def _failed(self, detail: str, *, protocol: bool = False, auth: bool = False) -> None:
        self._counters.failed(detail, protocol=protocol, auth=auth)

    def _set_token(self, token: str | None) -> None:
        self._token = token
        secrets = [self._password, self._email] + ([token] if token else [])
        self._redact = Redactor(secrets)

    def _sim(self, channel: str) -> str:
        return str(int(channel) - 1)

    async def _raw_post(self, method: str, fields: Mapping[str, str]) -> _Reply:
        """One form POST; classifies transport, HTTP and body problems."""
        self._check_open()
        answer = await self._http.request(
            "POST",
            f"{self.base_url}/getdata/{method}",
            content=encode_pairs(fields.items()).encode("ascii"),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Accept": "application/json",
            },
        )
        if answer.error is not None:
            return _Reply(
                error=f"{method}: {answer.error}", kind="transport", maybe_sent=answer.maybe_sent
            )
        assert answer.status is not None
        return self._decode(method, answer.status, answer.body)

    def _decode(self, method: str, status: int, body: bytes) -> _Reply:
        text = body.decode("utf-8", "replace")
        if status in (401, 403):
            return _Reply(error=f"{method}: HTTP {status}", kind="http", http_status=status)
        if status != 200:
            return _Reply(
                error=self._redact(f"{method}: HTTP {status} {snippet(text, 60)}"),
                kind="http",
                http_status=status,
            )
        try:
            data = json.loads(text)
        except ValueError:
            return _Reply(
                error=self._redact(f"{method}: not JSON: {snippet(text)}"),
                kind="garbage",
                http_status=status,
            )
        if not isinstance(data, dict):
            return _Reply(
                error=self._redact(f"{method}: JSON {type(data).__name__}, not an object"),
                kind="garbage",
                http_status=status,
            )
        if _int(data.get("error")) not in (0, None):
            message = str(data.get("message") or "no message")
            return _Reply(
                error=self._redact(f"{method}: {snippet(message)}"),
                kind="api",
                http_status=status,
                message=self._redact(message),
            )
        return _Reply(data=data, http_status=status)

    @staticmethod
    def _token_bad(reply: _Reply) -> bool:
        if reply.kind == "http" and reply.http_status in (401, 403):
            return True
        return reply.kind == "api" and bool(_TOKEN_BAD.search(reply.message))

    async def _ensure_token(self, bad: str | None = None) -> _Reply | None:
        """Have a token that is not ``bad``. None on success, else the failed gettoken reply."""
        async with self._token_lock:
            if self._token is not None and self._token != bad:
                return None  # someone renewed it meanwhile (or it was never bad)
            if bad is not None:
                self.token_renewals += 1
                log.info("smsgateway24 %s: token rejected, getting a new one", self.name)
            reply = await self._raw_post("gettoken", {"email": self._email, "pass": self._password})
            if reply.data is not None:
                token = reply.data.get("token")
                if isinstance(token, str) and token:
                    self._set_token(token)
                    return None
                reply = _Reply(error="gettoken: answer without a token", kind="garbage")
            if reply.kind == "api" or reply.http_status in (401, 403):
                # {"error":1,"message":"Login or password incorrect"}
                reply = attrs.evolve(reply, kind="auth")
            # Whatever went wrong, the call the token was for was never made.
            reply = attrs.evolve(reply, maybe_sent=False)
            self._set_token(None)
            return reply

    async def _call(self, method: str, fields: Mapping[str, str]) -> _Reply:
        """An authenticated call: get a token if needed, renew it once if it is refused."""
        failed = await self._ensure_token()
        if failed is not None:
            return failed
        token = self._token
        assert token is not None
        reply = await self._raw_post(method, {"token": token, **fields})
        if not self._token_bad(reply):
            return reply
        failed = await self._ensure_token(bad=token)
        if failed is not None:
            return failed
        assert self._token is not None
        reply = await self._raw_post(method, {"token": self._token, **fields})
        if self._token_bad(reply):
            # A fresh token refused at once: the account, not the token, is the problem.
            return attrs.evolve(reply, kind="auth")
        return reply

    def _account(self, reply: _Reply) -> None:
        """Count a failed reply in the health counters."""
        assert reply.error is not None
        self._failed(reply.error, protocol=reply.kind == "garbage", auth=reply.kind == "auth")

    # ---------------------------------------------------------------- send

    async def send(
        self, channel: str, destination: str, text: str, *, urgent: bool = False, **_: Any
    ) -> SendResult:
        """``addsms`` on the SIM of ``channel``. ``urgent`` sets SmsGateway24's priority flag
        (the phone sends it before queued ones; meant for one-time passwords)."""
        self._check_open()
        self.check_channel(channel)
        fields = {
            "sendto": destination,
            "body": text,
            "device_id": self.device_id,
            "sim": self._sim(channel),
        }
        if urgent:
            fields["urgent"] = "1"
        reply = await self._call("addsms", fields)
        result = self._send_result(reply)
        result = attrs.evolve(result, detail=self._redact(result.detail))
        if result.outcome is SendOutcome.ACCEPTED:
            self._ok()
        elif reply.error is not None:
            self._account(reply)
        else:
            self._failed(result.detail, protocol=True)
        log.debug(
            "smsgateway24 %s sim %s send -> %s %s",
            self.name,
            self._sim(channel),
            result.outcome.value,
            result.ref or "",
        )
        if result.outcome is not SendOutcome.ACCEPTED:
            log.warning(
                "smsgateway24 %s channel %s send: %s: %s",
                self.name,
                channel,
                result.outcome.value,
                result.detail,
            )
        return result

    @staticmethod
    def _send_result(reply: _Reply) -> SendResult:
        status = reply.http_status
        if reply.data is not None:
            sms_id = _int(reply.data.get("sms_id"))
            if sms_id is not None and sms_id > 0:
                return SendResult(
                    SendOutcome.ACCEPTED, ref=str(sms_id), detail="saved", http_status=status
                )
            # error 0 without an id: the cloud may have saved it; we cannot track it.
            return SendResult(
                SendOutcome.AMBIGUOUS,
                detail="addsms answered error 0 without an sms_id",
                http_status=status,
            )
        if reply.kind == "auth":
            return SendResult(
                SendOutcome.AUTH_FAILED, detail=reply.error or "login refused", http_status=status
            )
        if reply.kind == "transport":
            if reply.maybe_sent:
                return SendResult(
                    SendOutcome.AMBIGUOUS,
                    detail=f"request sent, no answer ({reply.error}): the SMS may have been saved",
                )
            return SendResult(SendOutcome.ERROR, detail=f"not sent: {reply.error}")
        if reply.kind == "garbage":
            return SendResult(
                SendOutcome.AMBIGUOUS,
                detail=f"unrecognised answer: {reply.error}",
                http_status=status,
            )
        # "api" ({"error":1}: nothing was saved) and HTTP errors
        return SendResult(SendOutcome.ERROR, detail=reply.error or "error", http_status=status)

    # ---------------------------------------------------------------- status

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        self._check_open()
        self.check_channel(channel)
        if not ref:
            return StatusResult(DeliveryState.UNKNOWN, detail="no sms_id to ask about")
        reply = await self._call("getsmsstatus", {"sms_id": str(ref)})
        if reply.data is None:
            assert reply.error is not None
            if reply.kind == "api" and _NOT_FOUND.search(reply.message):
                self._ok()
                return StatusResult(
                    DeliveryState.UNKNOWN, detail=f"the cloud does not know sms {ref}"
                )
            self._account(reply)
            log.warning("smsgateway24 %s status poll failed: %s", self.name, reply.error)
            return StatusResult(
                DeliveryState.UNKNOWN, detail=f"status poll failed: {reply.error}", poll_failed=True
            )
        got_id = _int(reply.data.get("sms_id"))
        if got_id is not None and str(got_id) != str(ref).strip():
            detail = f"asked for sms {ref}, the answer is about sms {got_id}"
            self._failed(detail, protocol=True)
            return StatusResult(DeliveryState.UNKNOWN, detail=detail, poll_failed=True)
        result = judge_status(
            reply.data.get("status"), str(reply.data.get("status_description") or "")
        )
        if result.poll_failed:
            self._failed(result.detail, protocol=True)
        else:
            self._ok()
        return attrs.evolve(result, detail=self._redact(result.detail))

    # ---------------------------------------------------------------- inbox

    async def inbox(self) -> list[InboundSms]:
        self._check_open()
        begin = self._now().astimezone(timezone.utc) - timedelta(seconds=self.inbox_lookback)
        reply = await self._call(
            "getallsms",
            {
                "device_id": self.device_id,
                "status": "5",
                "begindate": begin.strftime("%Y-%m-%d %H:%M:%S"),
                "timezone": "UTC",
            },
        )
        if reply.data is None:
            self._account(reply)
            log.warning("smsgateway24 %s inbox poll failed: %s", self.name, reply.error)
            return []
        try:
            items = parse_inbox_rows(
                reply.data, channels=self.channels, now=self._now(), server_tz=self.server_tz
            )
        except ValueError as exc:
            self._failed(f"inbox: {exc}", protocol=True)
            log.warning("smsgateway24 %s inbox: %s", self.name, exc)
            return []
        self._ok()
        return items

    # ---------------------------------------------------------------- health

    async def health(self) -> DeviceHealth:
        """When the phone last called the cloud (``getdevicestatus``).

        Not seen for ``offline_after`` seconds -> ``reachable`` False and every SIM
        ``registered`` False: the phone is off, asleep or offline, so nothing we queue will go
        out. (``reachable`` is about the *phone*: the cloud API answering is not enough.)
        """
        self._check_open()
        reply = await self._call("getdevicestatus", {"device_id": self.device_id})
        if reply.data is None:
            if reply.kind == "auth":
                self._counters.auth_failed = True
                return self._health(
                    reachable=True, detail=f"cloud refused our login: {reply.error}"
                )
            if reply.kind == "garbage":
                self._counters.protocol_errors += 1
            return self._health(reachable=False, detail=f"cloud API: {reply.error}")
        now = self._now()
        try:
            seen = parse_device_status(reply.data, now=now, server_tz=self.server_tz)
        except ValueError as exc:
            self._counters.protocol_errors += 1
            return self._health(reachable=False, detail=f"getdevicestatus: {exc}")
        self._counters.auth_failed = False
        if seen.seconds_ago is not None:
            online = seen.seconds_ago <= self.offline_after
            when = f"last seen {seen.seconds_ago:.0f} s ago"
        else:
            online = bool(seen.online)
            when = "online" if online else "offline"
        # The cloud does not tell whether a SIM is registered; an unseen phone certainly is not.
        channels = {ch: ChannelHealth(registered=None if online else False) for ch in self.channels}
        parts = [
            f"phone {when}" if online else f"phone offline: {when} (> {self.offline_after:g} s)"
        ]
        if self._counters.consecutive_errors:
            parts.append(self._counters.summary())
        return self._health(reachable=online, detail="; ".join(parts), channels=channels)

    def _health(
        self, *, reachable: bool, detail: str, channels: Mapping[str, ChannelHealth] | None = None
    ) -> DeviceHealth:
        return self._counters.health(
            reachable=reachable, detail=detail, channels=channels or {}, redact=self._redact
        )

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        await self._http.aclose()
