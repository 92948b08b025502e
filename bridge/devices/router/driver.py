"""LTE router "send SMS via URL" driver (Teltonika RUT style; docs/devices/router.md).

Long on purpose (~750 lines): the vendors' URL dialects (GET/POST, answers in text, JSON or
XML), the inbox pages and health of one kind of device, sharing one client and one parser.
Config kind ``router``.

One driver per router; one channel, "1" (the router's one modem / SIM).

Wire facts this driver depends on:

* ``/cgi-bin/sms_send`` with ``username``, ``password``, ``number``, ``text`` (and ``modem``
  when configured, for dual-modem routers). Every endpoint takes the same parameters by GET
  (query string) or POST (``application/x-www-form-urlencoded`` body). The driver uses POST by
  default: the credentials then never appear in a URL, so not in the router's, a proxy's or
  httpx's logs. ``method="get"`` is for firmware that refuses POST.
* The answer is one word, maybe followed by a newline: ``OK``, ``ERROR``, ``TIMEOUT``,
  ``WRONG_NUMBER``, or ``Disabled`` when the SMS gateway's Post/Get API is switched off.
  Refused credentials: HTTP 401/403 or a 200 body such as ``Bad username or password``,
  depending on the firmware; both are recognised.
* ``%n`` inside ``text`` is a line break (the router manual). The driver sends each line break as the
  two raw characters ``%n`` - exactly as the manual's example URL does - and percent-encodes
  everything else (a literal ``%`` goes out as ``%25``). ``%n`` is never a valid
  percent-escape (``n`` is not a hex digit), so a lenient CGI decoder leaves it alone and the
  router turns it into a line break whether it converts before or after URL-decoding.
  Caveat: on firmware that converts *after* decoding, a text that itself contains the two
  characters ``%n`` (``"50%nice"``) arrives with a line break there; no encoding avoids that.
* ``/cgi-bin/sms_list`` answers the inbox as text records, each ended by a line of 30 dashes::

      Index: 4
      Date: Sat Oct 26 19:04:11 2024
      Sender: +491775280961
      Text: Test
      Status: read
      ------------------------------

  ``NO MESSAGES`` (or an empty body) means an empty inbox. ``Date`` is the router's local
  time (``device_tz``). A text may end in a space (kept), may span several lines (kept, joined
  with ``\\n``), and the router joins the parts of a concatenated SMS itself, writing
  ``<part_missing>`` where a part has not arrived (yet).
* ``/cgi-bin/sms_delete?number=<index>`` deletes one entry; ``/cgi-bin/sms_total`` counts them
  (the health probe).

Decisions (see also ``parse_send_answer``):

* ``OK`` -> ACCEPTED with ``ref=None``: the router gives no message id.
* ``ERROR`` -> ERROR: the router/modem reported a failure of the command, nothing was sent.
* ``TIMEOUT`` -> AMBIGUOUS: "no response from the module" means the router stopped waiting
  for the modem's answer to the send command; the modem may still have transmitted the SMS (a
  CMGS answer can take a long time on a slow network). Resending blindly could duplicate it,
  so the scheduler's ambiguity policy decides.
* ``WRONG_NUMBER`` -> REJECTED: the number's format is refused; retrying cannot help.
* ``Disabled`` -> AUTH_FAILED: like refused credentials it concerns the whole device, no
  message can go until ops act, and the message must go back to the queue (not fail). The
  detail says what to do: enable Services > SMS > SMS Gateway.
* HTTP 504 (the router's web server gave up waiting for the SMS script) -> AMBIGUOUS; any
  other non-200 -> ERROR; a 200 answer the driver cannot read -> AMBIGUOUS (it reached the
  router) and counts as a protocol error.
* No delivery status at all: ``status`` returns SENT for an accepted send (the bridge's receipt
  policy maps it to DELIVRD or ACCEPTD); ``last_ref`` stays None (the router shows no message
  ids), so an ambiguous send cannot be reconciled and always goes to the ambiguity policy.
* Incomplete multipart SMS (``<part_missing>``) are held back for ``part_missing_grace``
  seconds from the poll that first saw them, waiting for the missing parts. After that they
  are handed over with every ``<part_missing>`` replaced by ``part_missing_placeholder``
  (default ``[...]``), so a reader sees that something is missing. The entry's ``device_key``
  hashes the text as the router shows it: should the missing part still arrive later, the
  completed message gets a new key and is delivered again, complete (no loss; a visible
  partial duplicate in that rare case).
* ``device_key`` is channel|date|sender|hash(text), never the index: the SIM reuses indexes
  after a delete. ``delete_inbox`` re-reads the list first and deletes an index only if it
  still holds the same message.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone, tzinfo

import attrs
import httpx
import trio

from bridge.devices.router import CAPABILITIES
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
    quote_value,
    snippet,
    tls_verify_option,
    validate_base_url,
)

__all__ = [
    "PART_MISSING",
    "RouterDriver",
    "RouterSms",
    "encode_text",
    "parse_router_date",
    "parse_send_answer",
    "parse_sms_list",
    "parse_sms_total",
    "router_device_key",
]

log = logging.getLogger("bridge.devices.router")

SEND_PATH = "/cgi-bin/sms_send"
LIST_PATH = "/cgi-bin/sms_list"
READ_PATH = "/cgi-bin/sms_read"
DELETE_PATH = "/cgi-bin/sms_delete"
TOTAL_PATH = "/cgi-bin/sms_total"

SEPARATOR = "-" * 30
PART_MISSING = "<part_missing>"
CHANNEL = "1"

ENABLE_HINT = (
    "the router's SMS gateway API is disabled: enable it in the router WebUI under "
    "Services > SMS > SMS Gateway (tick Enable, Save and Apply)"
)
CREDENTIALS_HINT = (
    "check username/password against Services > SMS > SMS Gateway "
    "(they are not the WebUI admin credentials)"
)

# ============================================================================================
# Pure functions (no I/O; unit-tested with literal router answers)

_AUTH_BODY = re.compile(
    r"(?i)\b(?:bad|wrong|invalid|incorrect)\s(?:[\w ]{0,12}\s)?"
    r"(?:user(?:name)?|password|credentials?|login)\b"
    r"|\bunauthori[sz]ed\b|\bauthentication\s+failed\b|\baccess\s+denied\b|\bforbidden\b"
)
_DIGITS = re.compile(r"\d+")
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"), 1
    )
}


def encode_text(text: str) -> str:
    """The wire form of ``text`` for the ``text`` parameter: line breaks as raw ``%n``,
    everything else percent-encoded UTF-8."""
    lines = text.replace("\r\n", "\n").split("\n")
    return "%n".join(quote_value(line) for line in lines)


def _refusal(status: int, answer: str) -> str | None:
    """The detail when an answer (to any endpoint) says the API refuses us, else None."""
    if answer.strip().lower() == "disabled":
        return ENABLE_HINT
    if status in (401, 403):
        return f"router refused the credentials (HTTP {status}): {CREDENTIALS_HINT}"
    # Only a short one-line answer can be a refusal: an inbox listing may quote any text.
    one_line = answer.strip()
    if "\n" not in one_line and len(one_line) <= 200 and _AUTH_BODY.search(one_line):
        return f"router refused the credentials ({snippet(one_line, 60)}): {CREDENTIALS_HINT}"
    return None


def _classify_send(status: int, body: bytes | str) -> tuple[SendResult, bool]:
    """-> (result, the answer was garbage)."""
    answer = decode_body(body).strip()
    refusal = _refusal(status, answer)
    if refusal is not None:
        return SendResult(SendOutcome.AUTH_FAILED, detail=refusal, http_status=status), False
    if status == 504:
        return (
            SendResult(
                SendOutcome.AMBIGUOUS,
                detail="HTTP 504: the router's web server stopped waiting for the SMS script; "
                "the SMS may or may not have gone out",
                http_status=status,
            ),
            False,
        )
    if status == 404:
        return (
            SendResult(
                SendOutcome.ERROR,
                detail=f"HTTP 404: no {SEND_PATH} on this device (wrong base_url, or firmware "
                "without SMS via URL)",
                http_status=status,
            ),
            False,
        )
    if status != 200:
        return (
            SendResult(
                SendOutcome.ERROR, detail=f"HTTP {status}: {snippet(answer)}", http_status=status
            ),
            False,
        )
    word = answer.upper()
    if word == "OK":
        return (
            SendResult(
                SendOutcome.ACCEPTED,
                detail="router answered OK (it gives no message id and no delivery status)",
                http_status=status,
            ),
            False,
        )
    if word == "TIMEOUT":
        return (
            SendResult(
                SendOutcome.AMBIGUOUS,
                detail="router answered TIMEOUT (no answer from its modem): "
                "the SMS may or may not have gone out",
                http_status=status,
            ),
            False,
        )
    if word == "WRONG_NUMBER":
        return (
            SendResult(
                SendOutcome.REJECTED,
                detail="router answered WRONG_NUMBER: it refuses this number's format "
                "(Teltonika expects 00<country code><number>)",
                http_status=status,
            ),
            False,
        )
    if word == "ERROR" or word.startswith("ERROR"):
        return (
            SendResult(
                SendOutcome.ERROR,
                detail=f"router answered {snippet(answer, 40)}: the modem refused the send "
                "(not sent)",
                http_status=status,
            ),
            False,
        )
    # HTTP 200 with a body we cannot read: the request reached the router and we cannot tell
    # what it did with it.
    return (
        SendResult(
            SendOutcome.AMBIGUOUS,
            detail=f"unrecognised answer {snippet(answer)}",
            http_status=status,
        ),
        True,
    )


def parse_send_answer(status: int, body: bytes | str) -> SendResult:
    """Turn one sms_send answer into a SendResult.

    The detail may quote the router's answer: redact it before it leaves the driver.
    """
    return _classify_send(status, body)[0]


@attrs.frozen
class RouterSms:
    """One record of sms_list, as the router shows it."""

    index: int
    date: str
    sender: str
    #: The text as shown: line breaks kept, trailing spaces kept, ``<part_missing>`` included.
    text: str
    status: str
    #: The record's lines as received.
    raw: str

    @property
    def incomplete(self) -> bool:
        return PART_MISSING in self.text


def _is_separator(line: str) -> bool:
    stripped = line.strip()
    return len(stripped) >= 10 and set(stripped) == {"-"}


def _field(line: str, name: str) -> str | None:
    """The value of a ``Name: value`` line (one space after the colon is part of the syntax;
    anything after it, trailing spaces included, is the value)."""
    prefix = name + ":"
    if not line.startswith(prefix):
        return None
    value = line[len(prefix) :]
    return value[1:] if value.startswith(" ") else value


def _parse_block(lines: list[str]) -> RouterSms:
    while lines and not lines[0].strip():
        lines = lines[1:]
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    if not lines:
        raise ValueError("empty record")
    raw = "\n".join(lines)
    status = _field(lines[-1], "Status")
    if status is None:
        raise ValueError("record does not end in a Status line")
    fields: dict[str, str] = {}
    text_at = None
    for i, line in enumerate(lines[:-1]):
        value = _field(line, "Text")
        if value is not None:
            text_at = i
            fields["Text"] = value
            break
        for name in ("Index", "Date", "Sender"):
            value = _field(line, name)
            if value is not None:
                fields[name] = value.strip()
                break
        else:
            raise ValueError(f"unexpected line {snippet(line, 40)} in a record")
    if text_at is None:
        raise ValueError("record without a Text line")
    missing = {"Index", "Date", "Sender"} - fields.keys()
    if missing:
        raise ValueError(f"record without {', '.join(sorted(missing))}")
    try:
        index = int(fields["Index"])
    except ValueError:
        raise ValueError(f"bad Index {snippet(fields['Index'], 20)}") from None
    text = "\n".join([fields["Text"], *lines[text_at + 1 : -1]])
    return RouterSms(
        index=index,
        date=fields["Date"],
        sender=fields["Sender"],
        text=text,
        status=status.strip(),
        raw=raw,
    )


def parse_sms_list(body: bytes | str) -> tuple[list[RouterSms], int]:
    """Parse an sms_list answer -> (records in the router's order, records skipped as bad).

    A record ends at a line of dashes that follows its ``Status:`` line and precedes the next
    ``Index:`` line (or the end), so text lines made of dashes - even a ``Status:`` line
    followed by dashes - cannot split a record. Raises ValueError when the answer is not an inbox listing at
    all (garbage, an HTML page).
    """
    text = decode_body(body).replace("\r\n", "\n")
    stripped = text.strip()
    if not stripped or stripped.upper() in ("NO MESSAGES", "NO MESSAGE"):
        return [], 0
    lines = text.split("\n")
    blocks: list[list[str]] = []
    current: list[str] = []
    for i, line in enumerate(lines):
        if _is_separator(line) and current and _field(current[-1], "Status") is not None:
            following = next((ln for ln in lines[i + 1 :] if ln.strip()), None)
            if following is None or _field(following, "Index") is not None:
                blocks.append(current)
                current = []
                continue
        if _is_separator(line) and not any(c.strip() for c in current):
            current = []  # a stray separator between records
            continue
        current.append(line)
    if any(line.strip() for line in current):
        blocks.append(current)
    records: list[RouterSms] = []
    bad = 0
    for block in blocks:
        try:
            records.append(_parse_block(block))
        except ValueError as exc:
            bad += 1
            log.debug("router sms_list: record skipped: %s", exc)
    if not records and bad:
        raise ValueError(f"no readable record in the sms_list answer {snippet(stripped, 60)}")
    return records, bad


def parse_router_date(date: str, device_tz: tzinfo = timezone.utc) -> datetime:
    """"Sat Oct 26 19:04:11 2024" (router local time) -> aware UTC datetime. ValueError if bad."""
    parts = date.split()
    if len(parts) == 4:  # no weekday
        parts = ["", *parts]
    if len(parts) != 5:
        raise ValueError(f"bad router date {date!r}")
    _weekday, month_name, day, clock, year = parts
    month = _MONTHS.get(month_name[:3].lower())
    if month is None:
        raise ValueError(f"bad router date {date!r}")
    try:
        hour, minute, second = (int(x) for x in clock.split(":"))
        local = datetime(int(year), month, int(day), hour, minute, second, tzinfo=device_tz)
    except ValueError:
        raise ValueError(f"bad router date {date!r}") from None
    return local.astimezone(timezone.utc)


def router_device_key(channel: str, sms: RouterSms) -> str:
    """Stable key of an inbox entry: the same on every poll, never based on the SIM index."""
    digest = hashlib.sha1(sms.text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{channel}|{sms.date}|{sms.sender}|{digest}"


def parse_sms_total(body: bytes | str) -> tuple[int | None, int | None]:
    """sms_total -> (messages stored, capacity). Firmware answers "Used: 3\\nTotal: 30",
    "Total: 7" or a bare number; None where it does not say. ValueError for garbage."""
    text = decode_body(body).strip()
    if text.upper() in ("NO MESSAGES", "NO MESSAGE"):
        return 0, None
    values: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep and _DIGITS.fullmatch(value.strip()):
            values[name.strip().lower()] = int(value.strip())
    if "used" in values:
        return values["used"], values.get("total")
    if "total" in values:
        return values["total"], None
    if _DIGITS.fullmatch(text):
        return int(text), None
    raise ValueError(f"unrecognised sms_total answer {snippet(text, 60)}")


# ============================================================================================
# The driver


class RouterDriver(DriverBase):
    kind = "router"
    capabilities = CAPABILITIES.flags
    declared = CAPABILITIES

    def __init__(
        self,
        name: str,
        base_url: str,
        username: str,
        password: str,
        *,
        method: str = "post",
        timeout: float = 10.0,
        modem: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        verify_tls: bool | str = True,
        device_tz: tzinfo = timezone.utc,
        part_missing_grace: float = 600.0,
        part_missing_placeholder: str = "[...]",
        max_connections: int = 2,
        keepalive_expiry: float = 5.0,
        now: Callable[[], datetime] | None = None,
        clock: Callable[[], float] | None = None,
    ):
        base_url = validate_base_url(name, base_url)
        method = method.lower()
        if method not in ("post", "get"):
            raise DeviceError(f"device {name!r}: method must be 'post' or 'get', got {method!r}")
        if timeout <= 0:
            raise DeviceError(f"device {name!r}: timeout must be > 0")
        if part_missing_grace < 0:
            raise DeviceError(f"device {name!r}: part_missing_grace must be >= 0")
        self.name = name
        self.base_url = base_url
        self.username = username
        self._password = password
        self.method = method
        self.modem = modem or None
        self.timeout = timeout
        self.device_tz = device_tz
        self.part_missing_grace = part_missing_grace
        self.part_missing_placeholder = part_missing_placeholder
        self.channels = (CHANNEL,)
        self._now = now or (lambda: datetime.now(timezone.utc))
        self._clock = clock or trio.current_time
        self._redact = Redactor([password])
        install_httpx_log_redaction()
        self._http = HttpDevice(
            timeout=timeout,
            redact=self._redact,
            transport=transport,
            verify=tls_verify_option(name, verify_tls),
            max_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
        )
        self._counters = CallCounters()
        #: Incomplete inbox entries (index|date|sender) -> when a poll first saw them.
        self._incomplete_since: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"<RouterDriver {self.name!r} {self.base_url} method={self.method}>"

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._http.closed:
            raise DeviceError(f"device {self.name!r}: driver is closed")

    async def _call(
        self, path: str, params: Iterable[tuple[str, str]] = (), *, text: str | None = None
    ) -> HttpAnswer:
        self._check_open()
        pairs = [("username", self.username), ("password", self._password), *params]
        if self.modem is not None:
            pairs.append(("modem", self.modem))
        encoded = encode_pairs(pairs)
        if text is not None:
            encoded += "&text=" + encode_text(text)
        url = self.base_url + path
        if self.method == "post":
            return await self._http.request(
                "POST",
                url,
                content=encoded.encode("ascii"),
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
        return await self._http.request("GET", f"{url}?{encoded}")

    # ---------------------------------------------------------------- send

    async def send(
        self, channel: str, destination: str, text: str, *, flash: bool = False
    ) -> SendResult:
        """Send one SMS. ``flash`` (class 0) is accepted for a uniform call but the router API
        cannot send class-0 messages: the SMS goes out as a normal one."""
        self._check_open()
        self.check_channel(channel)
        answer = await self._call(SEND_PATH, [("number", destination)], text=text)
        result = self._counters.judge_send(answer, _classify_send, self._redact)
        log.debug(
            "router %s send -> %s%s",
            self.name,
            result.outcome.value,
            " (flash requested; sent as a normal SMS)" if flash else "",
        )
        if result.outcome in (SendOutcome.ERROR, SendOutcome.AMBIGUOUS, SendOutcome.AUTH_FAILED):
            log.warning("router %s send: %s: %s", self.name, result.outcome.value, result.detail)
        return result

    # ---------------------------------------------------------------- status

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        """Always SENT: the router reports nothing after its OK (no ids, no delivery reports).

        The scheduler asks only about sends the router accepted, so SENT is the honest final
        answer; the receipt policy decides whether SENT reads as DELIVRD or ACCEPTD.
        """
        self._check_open()
        self.check_channel(channel)
        return StatusResult(
            DeliveryState.SENT,
            detail="router accepted it; routers report no delivery status",
        )

    async def status_many(self, refs: Mapping[str, str | None]) -> dict[str, StatusResult]:
        return {channel: await self.status(channel, ref) for channel, ref in refs.items()}

    # ---------------------------------------------------------------- inbox

    async def _list(self, what: str) -> list[RouterSms] | None:
        """The router's inbox records, or None when it cannot be read (counted, logged)."""
        answer = await self._call(LIST_PATH)
        if answer.error is not None:
            self._counters.failed(answer.error)
            log.warning("router %s %s failed: %s", self.name, what, answer.error)
            return None
        assert answer.status is not None
        refusal = _refusal(answer.status, answer.text)
        if refusal is not None:
            self._counters.failed(f"{what}: {refusal}", auth=True)
            log.warning("router %s %s: %s", self.name, what, refusal)
            return None
        if answer.status != 200:
            self._counters.failed(f"{what}: HTTP {answer.status}")
            log.warning("router %s %s: HTTP %s", self.name, what, answer.status)
            return None
        word = answer.text.strip().upper()
        if word in ("ERROR", "TIMEOUT"):
            self._counters.failed(f"{what}: router answered {word}")
            log.warning("router %s %s: router answered %s", self.name, what, word)
            return None
        try:
            records, bad = parse_sms_list(answer.body)
        except ValueError as exc:
            detail = self._redact(f"{what}: {exc}")
            self._counters.failed(detail, protocol=True)
            log.warning("router %s %s", self.name, detail)
            return None
        if bad:
            self._counters.protocol_errors += bad
            log.warning("router %s %s: %d unreadable record(s) skipped", self.name, what, bad)
        self._counters.ok()
        return records

    async def inbox(self) -> list[InboundSms]:
        """Received SMS, oldest first. Incomplete multipart SMS wait ``part_missing_grace``."""
        self._check_open()
        records = await self._list("inbox")
        if records is None:
            return []
        now = self._now()
        clock = self._clock()
        seen_incomplete: set[str] = set()
        out: list[InboundSms] = []
        for sms in records:
            if sms.incomplete:
                key = f"{sms.index}|{sms.date}|{sms.sender}"
                seen_incomplete.add(key)
                since = self._incomplete_since.setdefault(key, clock)
                if clock - since < self.part_missing_grace:
                    log.debug(
                        "router %s inbox index %d: parts missing; waiting for them",
                        self.name,
                        sms.index,
                    )
                    continue
            out.append(self._inbound(sms, now))
        # Forget incomplete entries that completed or left the inbox.
        for key in set(self._incomplete_since) - seen_incomplete:
            del self._incomplete_since[key]
        out.sort(key=lambda item: (item.received_at, item.slot or 0))
        return out

    def _inbound(self, sms: RouterSms, now: datetime) -> InboundSms:
        try:
            received_at = parse_router_date(sms.date, self.device_tz)
        except ValueError:
            log.warning(
                "router %s inbox index %d: bad date, using now", self.name, sms.index
            )
            received_at = now.astimezone(timezone.utc)
        text = sms.text
        if sms.incomplete:
            text = text.replace(PART_MISSING, self.part_missing_placeholder)
        return InboundSms(
            channel=CHANNEL,
            sender=sms.sender,
            text=text,
            received_at=received_at,
            device_key=router_device_key(CHANNEL, sms),
            raw=sms.raw,
            slot=sms.index,
        )

    async def delete_inbox(self, items: Iterable[InboundSms]) -> None:
        """Delete entries, re-reading the inbox first: an index is deleted only while it still
        holds the same message (the SIM hands a freed index to the next SMS). Highest index
        first, in case a firmware renumbers on delete."""
        self._check_open()
        wanted = [item for item in items if item.slot is not None]
        for item in wanted:
            self.check_channel(item.channel)
        if not wanted:
            return
        records = await self._list("inbox delete (re-read)")
        if records is None:
            return  # cannot verify: delete nothing, the next poll tries again
        current = {sms.index: router_device_key(CHANNEL, sms) for sms in records}
        for item in sorted(wanted, key=lambda i: -(i.slot or 0)):
            if current.get(item.slot) != item.device_key:
                log.debug(
                    "router %s inbox index %s now holds another message; not deleting",
                    self.name,
                    item.slot,
                )
                continue
            answer = await self._call(DELETE_PATH, [("number", str(item.slot))])
            word = answer.text.strip().upper() if answer.error is None else ""
            if answer.error is None and answer.status == 200 and word in (
                "OK",
                "NO MESSAGE",
                "NO MESSAGES",
            ):
                self._counters.ok()
                continue
            if answer.error is not None:
                detail = answer.error
                refused = False
            else:
                assert answer.status is not None
                refusal = _refusal(answer.status, answer.text)
                refused = refusal is not None
                detail = refusal or self._redact(
                    f"HTTP {answer.status}: {snippet(answer.text, 60)}"
                )
            self._counters.failed(f"inbox delete: {detail}", auth=refused)
            log.warning(
                "router %s inbox delete index %s failed: %s", self.name, item.slot, detail
            )

    # ---------------------------------------------------------------- health

    async def health(self) -> DeviceHealth:
        """Reachability and credentials from sms_total (a cheap call), plus the error tally.

        Like the GoIP driver, the probe itself does not move ``consecutive_errors`` (that counts
        the operational calls); it does set or clear ``auth_failed``.
        """
        self._check_open()
        answer = await self._call(TOTAL_PATH)
        counters = self._counters
        if answer.error is not None:
            return self._health(reachable=False, detail=f"unreachable: {answer.error}")
        assert answer.status is not None
        refusal = _refusal(answer.status, answer.text)
        if refusal is not None:
            counters.auth_failed = True
            return self._health(reachable=True, detail=refusal)
        if answer.status != 200:
            return self._health(reachable=True, detail=f"sms_total: HTTP {answer.status}")
        try:
            used, total = parse_sms_total(answer.body)
        except ValueError as exc:
            counters.protocol_errors += 1
            return self._health(reachable=True, detail=f"sms_total: {exc}")
        counters.auth_failed = False
        parts = ["ok"]
        if used is not None:
            parts[0] += f", {used} SMS stored" + (f" of {total}" if total else "")
        if summary := counters.summary():
            parts.append(summary)
        return self._health(reachable=True, detail="; ".join(parts))

    def _health(self, *, reachable: bool, detail: str) -> DeviceHealth:
        # The router's SMS API says nothing about registration or signal.
        return self._counters.health(
            reachable=reachable, detail=detail, channels={CHANNEL: ChannelHealth()}, redact=self._redact
        )

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        await self._http.aclose()
