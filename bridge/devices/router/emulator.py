"""LTE router "send SMS via URL" emulator (Teltonika RUT style), quirks and faults included.

Wire format (docs/devices/router.md). Every endpoint takes ``username``,
``password`` and its own parameters by GET (query) or POST (form body):

* ``/cgi-bin/sms_send`` (``number``, ``text``[, ``modem``]) -> ``OK`` | ``ERROR`` |
  ``TIMEOUT`` | ``WRONG_NUMBER``; ``%n`` in the decoded text becomes a line break.
* ``/cgi-bin/sms_list`` -> the inbox as ``Index/Date/Sender/Text/Status`` records, each ended
  by 30 dashes; ``NO MESSAGES`` when empty. Listing marks unread messages read.
* ``/cgi-bin/sms_read`` (``number`` = index) -> one record | ``NO MESSAGE``.
* ``/cgi-bin/sms_delete`` (``number`` = index) -> ``OK`` | ``NO MESSAGE``.
* ``/cgi-bin/sms_total`` -> ``Used: <n>`` / ``Total: <capacity>``.
* Any endpoint: ``Disabled`` while the SMS gateway API is switched off.

Answers end in a newline (``trailing_newline``). The router answers sms_send only when its
modem has finished (``send_duration``), and its modem sends one SMS at a time.

Where the sources do not say, the emulator picks and marks it [I]: ``Disabled`` is checked
before the credentials and answered with HTTP 200; refused credentials are HTTP 401 with
``Bad username or password`` (``auth_style="body"``: the same text with HTTP 200, as other
firmware does); a missing or empty ``text`` answers ``ERROR``; a number that is not
``+``/digits (3..20) answers ``WRONG_NUMBER``; a non-numeric index answers ``WRONG_NUMBER``;
deleting an empty index answers ``NO MESSAGE``; SIM indexes start at 0 and a freed index is
reused by the next SMS (lowest free first); dates are ``%a %b %d %H:%M:%S %Y`` in router time.
A multipart SMS whose parts have not all arrived shows `` <part_missing> `` for each missing
part, in place (the shape seen on real routers: ``Text:  <part_missing>  <part_missing> res``).

Faults and test hooks are the shared ones (``bridge/emulators/faults.py``, docs/emulators.md);
endpoints are ``send``, ``list``, ``read``, ``delete``, ``total``. ``POST /emulator/inject``
takes sender, text[, when ISO-8601][, part_missing]; ``POST /emulator/complete`` (index, text)
makes the missing part arrive; ``POST /emulator/faults`` also takes ``enabled`` true/false and
``fail_next`` [count, answer].

Every SMS the emulator "sends" is recorded in ``RouterEmulator.sent``; every request (method,
path, raw target) in ``RouterEmulator.requests``, for tests that check where credentials went.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone, tzinfo
from typing import Any

import attrs
import trio

from bridge.emulators.faults import HttpDeviceEmulator, HttpFaults, form_or_json
from bridge.emulators.http import HttpServer, Request, Response, json_response

__all__ = [
    "RouterEmulator",
    "RouterFaults",
    "RouterRequest",
    "RouterSentSms",
    "StorageFull",
    "run_router_emulator",
]

log = logging.getLogger("bridge.emulators.router")

ENDPOINTS = {
    "/cgi-bin/sms_send": "send",
    "/cgi-bin/sms_list": "list",
    "/cgi-bin/sms_read": "read",
    "/cgi-bin/sms_delete": "delete",
    "/cgi-bin/sms_total": "total",
}
SEPARATOR = "-" * 30
PART_MISSING = " <part_missing> "
AUTH_ERROR = "Bad username or password"
SEND_ANSWERS = ("OK", "ERROR", "TIMEOUT", "WRONG_NUMBER")
_NUMBER = re.compile(r"^\+?\d{3,20}$")
_WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class StorageFull(ValueError):
    """The SIM's SMS storage is full (a real modem refuses the SMS; the network retries)."""


def _answer_word(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in SEND_ANSWERS:
        raise ValueError(f"send answer must be one of {SEND_ANSWERS}, got {value!r}")
    return value


def _auth_style(value: str) -> str:
    if value not in ("401", "403", "body"):
        raise ValueError(f"auth_style must be '401', '403' or 'body', got {value!r}")
    return value


@attrs.define
class RouterFaults(HttpFaults):
    """The shared switches (``HttpFaults``; ``delay`` comes on top of ``send_duration``) and
    the router's own quirks."""

    ENDPOINTS = frozenset(ENDPOINTS.values())
    DEVICE = "router"

    #: Every send answers this word instead of OK ("ERROR", "TIMEOUT", "WRONG_NUMBER").
    answer: str | None = attrs.field(default=None, converter=_answer_word)
    #: A TIMEOUT answer still sends the SMS (the modem transmitted it after the router gave up).
    timeout_sends: bool = True
    #: Numbers matching this regular expression (re.search) answer WRONG_NUMBER.
    wrong_number: str | None = None
    #: Texts longer than this answer ERROR (old manuals: "maximum 160 characters"). None: no limit.
    max_text_length: int | None = None
    #: How refused credentials look: "401"/"403" (that HTTP status) or "body" (HTTP 200).
    auth_style: str = attrs.field(default="401", converter=_auth_style)
    #: Answers end in a newline ("OK\n"), as the real router's do.
    trailing_newline: bool = True
    #: Firmware that only takes GET: POST answers HTTP 405.
    get_only: bool = False


@attrs.frozen
class RouterSentSms:
    number: str
    #: The text as the modem sends it (``%n`` already turned into line breaks).
    text: str
    at: datetime
    #: "OK", or "TIMEOUT" for a send the router reported as timed out but the modem sent.
    answer: str = "OK"
    modem: str | None = None
    method: str = "GET"

    def as_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "destination": self.number,  # the same, under the GoIP emulator's name
            "text": self.text,
            "at": self.at.isoformat(),
            "answer": self.answer,
            "modem": self.modem,
            "method": self.method,
        }


@attrs.frozen
class RouterRequest:
    """One request as it arrived (kept in memory only, for tests; never logged)."""

    method: str
    path: str
    #: The raw request target, query string included.
    target: str


@attrs.define
class _Entry:
    index: int
    when: datetime  # router local time, naive
    sender: str
    #: The parts of the message; None = a part that has not arrived.
    parts: list[str | None]
    status: str = "unread"

    def text(self) -> str:
        return "".join(PART_MISSING if p is None else p for p in self.parts)


def _router_date(when: datetime) -> str:
    return (
        f"{_WEEKDAYS[when.weekday()]} {_MONTHS[when.month - 1]} {when.day:02d} "
        f"{when:%H:%M:%S} {when.year}"
    )


class RouterEmulator(HttpDeviceEmulator):
    SWITCHES = frozenset({"enabled"})
    GARBAGE = b"\x00\xff\xfe<html>\x1b[31mrouter says $#@!\r\n\x7f not an SMS API answer"

    def __init__(
        self,
        username: str = "user1",
        password: str = "user_pass",
        *,
        enabled: bool = True,
        send_duration: float = 0.0,
        storage: int = 30,
        first_index: int = 0,
        device_tz: tzinfo = timezone.utc,
        empty_answer: str = "NO MESSAGES",
        faults: RouterFaults | None = None,
        clock: Callable[[], float] = time.monotonic,
        **fault_options: Any,
    ):
        self._init_faults(RouterFaults, faults, fault_options)
        if storage < 1:
            raise ValueError("storage must hold at least one SMS")
        self.username = username
        self.password = password
        self.enabled = enabled
        self.send_duration = send_duration
        self.storage = storage
        self.first_index = first_index
        self.device_tz = device_tz
        self.empty_answer = empty_answer
        self.sent: list[RouterSentSms] = []
        self.deleted: list[int] = []
        self.requests: list[RouterRequest] = []
        self._clock = clock
        self._inbox: dict[int, _Entry] = {}
        self._fail_next: list[str] = []
        self._modem = trio.Lock()
        self.server = HttpServer(self.handle, name="router-emulator")

    # ---------------------------------------------------------------- runtime controls

    def fail_next(self, count: int = 1, answer: str = "ERROR") -> None:
        """The next ``count`` sends answer ``answer`` (ERROR, TIMEOUT, WRONG_NUMBER)."""
        self._fail_next.extend([_answer_word(answer) or "ERROR"] * count)

    def inject_sms(
        self,
        sender: str,
        text: str,
        when: datetime | None = None,
        part_missing: bool = False,
        *,
        parts: Sequence[str | None] | None = None,
        status: str = "unread",
    ) -> int:
        """Store a received SMS; returns its index (the lowest free one).

        ``part_missing`` makes it a two-part SMS whose second part has not arrived
        (``complete_sms`` delivers it); ``parts`` gives the parts explicitly (None = missing)
        and then replaces ``text``. ``when`` is converted to router time (naive = router time).
        """
        when = when or datetime.now(timezone.utc)
        if when.tzinfo is not None:
            when = when.astimezone(self.device_tz).replace(tzinfo=None)
        if parts is None:
            parts = [text, None] if part_missing else [text]
        index = next(
            (i for i in range(self.first_index, self.first_index + self.storage) if i not in self._inbox),
            None,
        )
        if index is None:
            raise StorageFull(f"SMS storage full ({self.storage} messages)")
        self._inbox[index] = _Entry(
            index=index, when=when, sender=sender, parts=list(parts), status=status
        )
        return index

    def complete_sms(self, index: int, *texts: str) -> None:
        """Missing parts of the SMS at ``index`` arrive, in order."""
        entry = self._inbox[int(index)]
        pending = list(texts)
        for i, part in enumerate(entry.parts):
            if part is None and pending:
                entry.parts[i] = pending.pop(0)
        if pending:
            raise ValueError(f"SMS {index} was missing fewer parts than given")

    def delete_sms(self, index: int) -> bool:
        """Remove the SMS at ``index`` as another client (or the router's own UI) would;
        not recorded in ``deleted``. False when the index was empty."""
        return self._inbox.pop(int(index), None) is not None

    def inbox_entries(self) -> dict[int, str]:
        """{index: text as listed} of what the SIM holds now."""
        return {i: e.text() for i, e in sorted(self._inbox.items())}

    # ---------------------------------------------------------------- serving

    def route(self, request: Request) -> str | None:
        self.requests.append(RouterRequest(request.method, request.path, request.target))
        return ENDPOINTS.get(request.path)

    def not_found(self, request: Request) -> Response:
        return self._reply("404 Not Found", status=404, newline=False)

    async def process(self, endpoint: str, request: Request) -> Response:
        if request.method not in ("GET", "POST") or (
            request.method == "POST" and self.faults.get_only
        ):
            return self._reply("405 Method Not Allowed", status=405)
        return await self._dispatch(endpoint, request)

    async def _dispatch(self, endpoint: str, request: Request) -> Response:
        params = request.params
        if not self.enabled:
            return self._reply("Disabled")
        if params.get("username") != self.username or params.get("password") != self.password:
            style = self.faults.auth_style
            return self._reply(AUTH_ERROR, status=200 if style == "body" else int(style))
        if endpoint == "send":
            return await self._send(request, params)
        if endpoint == "list":
            return self._list()
        if endpoint == "read":
            return self._read(params)
        if endpoint == "delete":
            return self._delete(params)
        return self._total()

    def _reply(self, body: str | bytes, status: int = 200, *, newline: bool = True) -> Response:
        faults = self.faults
        if isinstance(body, str) and newline and faults.trailing_newline and not body.endswith("\n"):
            body += "\n"
        return Response(
            status=status,
            body=body,
            content_type="text/plain",
            headers=[("Server", "uhttpd"), ("Cache-Control", "no-cache")],
        )

    # sms_send
    async def _send(self, request: Request, params: Mapping[str, str]) -> Response:
        faults = self.faults
        number = params.get("number", "").strip()
        if "text" not in params or not params["text"]:
            return self._reply("ERROR")
        text = params["text"].replace("%n", "\n")
        if not _NUMBER.match(number) or (
            faults.wrong_number is not None and re.search(faults.wrong_number, number)
        ):
            return self._reply("WRONG_NUMBER")
        if faults.max_text_length is not None and len(text) > faults.max_text_length:
            return self._reply("ERROR")
        answer = self._fail_next.pop(0) if self._fail_next else (faults.answer or "OK")
        if answer in ("ERROR", "WRONG_NUMBER"):
            return self._reply(answer)
        async with self._modem:  # one SMS at a time through the modem
            if self.send_duration:
                await trio.sleep(self.send_duration)
            if answer == "OK" or faults.timeout_sends:
                self.sent.append(
                    RouterSentSms(
                        number=number,
                        text=text,
                        at=datetime.now(timezone.utc),
                        answer=answer,
                        modem=params.get("modem"),
                        method=request.method,
                    )
                )
        return self._reply(answer)

    # sms_list / sms_read
    def _record(self, entry: _Entry) -> str:
        return (
            f"Index: {entry.index}\n"
            f"Date: {_router_date(entry.when)}\n"
            f"Sender: {entry.sender}\n"
            f"Text: {entry.text()}\n"
            f"Status: {entry.status}\n"
            f"{SEPARATOR}\n"
        )

    def _list(self) -> Response:
        if not self._inbox:
            return self._reply(self.empty_answer)
        entries = [self._inbox[i] for i in sorted(self._inbox)]
        body = "".join(self._record(e) for e in entries)
        for entry in entries:
            entry.status = "read"
        return self._reply(body)

    def _index(self, params: Mapping[str, str]) -> int | None:
        try:
            return int(params.get("number", ""))
        except ValueError:
            return None

    def _read(self, params: Mapping[str, str]) -> Response:
        index = self._index(params)
        if index is None:
            return self._reply("WRONG_NUMBER")
        entry = self._inbox.get(index)
        if entry is None:
            return self._reply("NO MESSAGE")
        body = self._record(entry)
        entry.status = "read"
        return self._reply(body)

    def _delete(self, params: Mapping[str, str]) -> Response:
        index = self._index(params)
        if index is None:
            return self._reply("WRONG_NUMBER")
        if self._inbox.pop(index, None) is None:
            return self._reply("NO MESSAGE")
        self.deleted.append(index)
        return self._reply("OK")

    def _total(self) -> Response:
        return self._reply(f"Used: {len(self._inbox)}\nTotal: {self.storage}")

    # ---------------------------------------------------------------- test hooks over HTTP

    def inject_from(self, data: Mapping[str, Any]) -> dict[str, Any]:
        when = datetime.fromisoformat(data["when"]) if data.get("when") else None
        index = self.inject_sms(
            str(data["sender"]),
            str(data["text"]),
            when,
            part_missing=str(data.get("part_missing", "")).lower() in ("1", "true", "yes"),
        )
        return {"index": index}

    def control_extra(self, request: Request) -> Response | None:
        if request.path == "/emulator/complete" and request.method == "POST":
            data = form_or_json(request)
            self.complete_sms(int(data["index"]), str(data["text"]))
            return json_response({"ok": True})
        return None

    def device_state(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "inbox": {str(i): text for i, text in self.inbox_entries().items()},
            "fail_next": list(self._fail_next),
        }


async def run_router_emulator(port: int, host: str = "127.0.0.1", **opts: Any) -> None:
    """Run a router emulator until cancelled (``smpp-bridge emulate router --port 8082``).

    ``opts`` are ``RouterEmulator`` keyword arguments (username, password, enabled,
    send_duration, storage, and any ``RouterFaults`` field such as auth_style="body").
    """
    emulator = RouterEmulator(**opts)
    async with trio.open_nursery() as nursery:
        actual = await nursery.start(emulator.serve, host, port)
        log.info(
            "router emulator on http://%s:%d/cgi-bin/ (user %r)", host, actual, emulator.username
        )


# ============================================================================================
# `smpp-bridge emulate router` (bridge/cli.py reads these)

DEFAULT_PORT = 8082


def add_arguments(parser: Any) -> None:
    """This kind's options of ``smpp-bridge emulate`` (an ``argparse`` parser)."""
    parser.add_argument("--username", default="user1", help="login [user1]")
    parser.add_argument("--password", default="user_pass", help="password [user_pass]")
    parser.add_argument("--send-duration", type=float, default=0.5,
                        help="seconds the modem is busy per SMS [0.5]")
    parser.add_argument("--disabled", action="store_true", help="start with the SMS gateway API switched off")
    parser.add_argument("--auth-style", default="401", choices=["401", "403", "body"],
                        help="how refused credentials look [401]")


def from_cli(args: Any) -> tuple[RouterEmulator, str]:
    """(emulator, a one-line description) from the parsed options."""
    emu = RouterEmulator(
        username=args.username,
        password=args.password,
        enabled=not args.disabled,
        send_duration=args.send_duration,
        auth_style=args.auth_style,
    )
    return emu, f"SMS via URL at /cgi-bin/sms_send, user {emu.username!r}"
