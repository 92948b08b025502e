"""GoIP GSM gateway emulator: the HTTP API of a GoIP-1..32, quirks and faults included.

Wire format (reference/devices.md section 1):

* ``GET /default/en_US/send.html?u=&p=&l=<line>&n=<number>&m=<text>`` ->
  ``Sending,L1 Send SMS to:<n>; ID:<8 hex>`` | ``ERROR,L1 busy`` | ``ERROR,L1 GSM logout`` |
  ``ERROR,user or password error``; HTTP 500 for a text starting with ``[``.
* ``GET /default/en_US/send_status.xml?u=&p=`` -> one ``idN/statusN/errorN`` triple per line
  (at least 8, as a GoIP-1 does), for the LAST message of each line only.
* ``GET /default/en_US/tools.html?type=sms_inbox`` (Basic auth) -> the inbox as JavaScript,
  a ring of 20 slots per line; ``&action=del&line=<n|-1>&pos=<n|-1>`` deletes.
* ``GET /default/en_US/status.xml`` (Basic auth) -> ``lN_gsm_status`` & co.

Headers end in bare LF by default, like the real device.

Where the reference does not say, the emulator picks and marks it [I]: ``pos`` in the inbox
script is the ring's write pointer (the slot the next SMS goes to); deleting empties the slot
in place (no compaction); a line number the device does not have answers
``ERROR,L<n> no such line``; wrong credentials on send_status.xml get the same
``ERROR,user or password error`` text as send.html.

Test hooks (not on the real device; no auth; the emulator listens on 127.0.0.1 by default):
``GET /emulator/sent``, ``GET /emulator/state``, ``POST /emulator/inject`` (form or JSON:
line, sender, text[, when ISO-8601][, mojibake]) and ``POST /emulator/faults`` (JSON: any
``GoipFaults`` field, plus ``logout`` {line: seconds|null}, ``login`` [lines],
``fail_next`` {line: [count, code]}, ``line_errors`` {line: code|null}).

Every SMS the emulator "sends" is recorded in ``GoipEmulator.sent``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import attrs
import trio

from bridge.emulators.http import (
    HANG,
    HttpServer,
    RawReply,
    Reply,
    Request,
    Response,
    json_response,
)

__all__ = ["GoipEmulator", "GoipFaults", "SentSms", "run_goip_emulator"]

log = logging.getLogger("bridge.emulators.goip")

PREFIX = "/default/en_US"
PAGES = {
    f"{PREFIX}/send.html": "send",
    f"{PREFIX}/send_status.xml": "status",
    f"{PREFIX}/tools.html": "inbox",
    f"{PREFIX}/status.xml": "health",
}
AUTH_ERROR = "ERROR,user or password error"
GARBAGE = b"\x00\xff\xfe<<GARBAGE>> \x1b[31m$#@!\r\n\x7f not a GoIP answer"
RAW_GARBAGE = b"\x16\x03\x01\x00garbage, not HTTP at all\r\n\r\n"


def _page_set(value: Iterable[str] | None) -> frozenset[str] | None:
    if value is None:
        return None
    pages = frozenset(value)
    unknown = pages - set(PAGES.values())
    if unknown:
        raise ValueError(f"unknown GoIP pages {sorted(unknown)}; known: {sorted(PAGES.values())}")
    return pages


def _line_map(value: Mapping[Any, Any] | None) -> dict[int, str]:
    return {int(k): str(v) for k, v in (value or {}).items()}


@attrs.define
class GoipFaults:
    """Misbehaviour switches; change them at any time (``emulator.faults.hang = True``)."""

    #: Seconds to wait before every answer.
    delay: float = 0.0
    #: Never answer (the connection stays open until the client gives up).
    hang: bool = False
    #: With ``hang`` on send.html: still send the SMS (the answer is lost, not the request).
    hang_after_processing: bool = True
    #: Answer HTTP 200 with a garbage body.
    garbage: bool = False
    #: Answer bytes that are not HTTP at all, then close.
    raw_garbage: bool = False
    #: Answer this HTTP status (e.g. 500) with an error page instead of doing anything (0: off).
    http_error: int = 0
    #: send_status.xml answers broken XML.
    malformed_status_xml: bool = False
    #: Status line and headers end in bare LF (what the real device does).
    bare_lf: bool = True
    #: send.html answers are wrapped in newlines ("\nSending,...\n"), as some firmware does.
    wrap_newlines: bool = False
    #: Keep connections open; False answers HTTP/1.0 style (no Content-Length, close).
    keep_alive: bool = True
    #: Write answers this many bytes at a time (0: at once); tests TCP segment boundaries.
    drip: int = 0
    #: A text starting with '[' gets HTTP 500 (firmware GHSFVT-1.1-67).
    http500_on_bracket: bool = True
    #: Probability that a send ends DONE with ``fail_code``.
    fail_probability: float = 0.0
    fail_code: str = "2172"
    #: Every send on these lines ends DONE with this error code: {line: code}.
    line_errors: dict[int, str] = attrs.field(factory=dict, converter=_line_map)
    #: Which pages delay/hang/garbage/raw_garbage/http_error apply to ("send", "status", "inbox",
    #: "health"); None = all.
    pages: frozenset[str] | None = attrs.field(default=None, converter=_page_set)

    def applies_to(self, page: str) -> bool:
        return self.pages is None or page in self.pages


@attrs.frozen
class SentSms:
    line: int
    destination: str
    text: str
    id: str
    at: datetime
    #: The error code the send ends with ("" = handed to the network).
    error: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "line": self.line,
            "destination": self.destination,
            "text": self.text,
            "id": self.id,
            "at": self.at.isoformat(),
            "error": self.error,
        }


@attrs.define
class _Line:
    number: int
    inbox: list[str]
    signal: int
    operator: str
    pos: int = 0
    slot_id: str = ""
    slot_error: str = ""
    done_at: float = 0.0
    logout_until: float | None = None
    fail_next: list[str] = attrs.Factory(list)

    def busy(self, now: float) -> bool:
        return bool(self.slot_id) and now < self.done_at

    def logged_out(self, now: float) -> bool:
        if self.logout_until is None:
            return False
        if now < self.logout_until:
            return True
        self.logout_until = None
        return False

    def slot(self, now: float) -> tuple[str, str, str]:
        if not self.slot_id:
            return "", "", ""
        if now < self.done_at:
            return self.slot_id, "STARTED", ""
        return self.slot_id, "DONE", self.slot_error


class GoipEmulator:
    def __init__(
        self,
        lines: int = 8,
        username: str = "admin",
        password: str = "admin",
        send_duration: float = 2.5,
        *,
        inbox_slots: int = 20,
        status_slots: int = 8,
        operator: str = "EMU GSM",
        signal: int = 25,
        device_tz: tzinfo = timezone.utc,
        seed: int | None = None,
        first_id: int | None = None,
        logged_out: Mapping[int, float | None] | None = None,
        fail_next: Mapping[int, tuple[int, str]] | None = None,
        faults: GoipFaults | None = None,
        clock: Callable[[], float] = time.monotonic,
        **fault_options: Any,
    ):
        if lines < 1:
            raise ValueError("a GoIP has at least one line")
        if faults is not None and fault_options:
            raise TypeError("pass either faults= or fault options, not both")
        self.lines = lines
        self.username = username
        self.password = password
        self.send_duration = send_duration
        self.inbox_slots = inbox_slots
        self.status_slots = max(status_slots, lines)
        self.device_tz = device_tz
        self.faults = faults if faults is not None else GoipFaults(**fault_options)
        self.sent: list[SentSms] = []
        self.deleted: list[tuple[int, int]] = []
        self._clock = clock
        self._rng = random.Random(seed)
        self._next_id = first_id if first_id is not None else self._rng.randrange(0x100, 0x10000)
        self._lines = {
            n: _Line(number=n, inbox=[""] * inbox_slots, signal=signal, operator=operator)
            for n in range(1, lines + 1)
        }
        for line, seconds in (logged_out or {}).items():
            self.logout(line, seconds)
        for line, (count, code) in (fail_next or {}).items():
            self.fail_next(line, count, code)
        self.server = HttpServer(self.handle, name=f"goip-emulator({lines})")

    # ---------------------------------------------------------------- runtime controls

    @property
    def connections_opened(self) -> int:
        return self.server.stats.connections_opened

    @property
    def port(self) -> int | None:
        return self.server.port

    def _line(self, line: int) -> _Line:
        try:
            return self._lines[int(line)]
        except (KeyError, ValueError):
            raise ValueError(f"the emulated GoIP has lines 1..{self.lines}, not {line!r}") from None

    def logout(self, line: int, seconds: float | None = None) -> None:
        """GSM logout on ``line`` for ``seconds`` (None: until ``login``)."""
        self._line(line).logout_until = (
            float("inf") if seconds is None else self._clock() + float(seconds)
        )

    def login(self, line: int) -> None:
        self._line(line).logout_until = None

    def fail_next(self, line: int, count: int = 1, code: str = "2172") -> None:
        """The next ``count`` sends on ``line`` end DONE with error ``code``."""
        self._line(line).fail_next.extend([str(code)] * count)

    def set_line_error(self, line: int, code: str | None) -> None:
        """Every send on ``line`` ends with ``code`` (None: stop)."""
        self._line(line)
        if code is None:
            self.faults.line_errors.pop(int(line), None)
        else:
            self.faults.line_errors[int(line)] = str(code)

    def set_signal(self, line: int, signal: int, operator: str | None = None) -> None:
        state = self._line(line)
        state.signal = signal
        if operator is not None:
            state.operator = operator

    def busy(self, line: int) -> bool:
        return self._line(line).busy(self._clock())

    def inject_sms(
        self,
        line: int,
        sender: str,
        text: str,
        when: datetime | None = None,
        *,
        mojibake: bool = False,
    ) -> int:
        """Put an inbound SMS in ``line``'s inbox ring; returns the slot it went to.

        ``when`` is converted to the device's clock (naive = already device time).
        ``mojibake`` stores the text as latin-1-decoded UTF-8, as some firmware does.
        """
        state = self._line(line)
        when = when or datetime.now(timezone.utc)
        if when.tzinfo is not None:
            when = when.astimezone(self.device_tz)
        if mojibake:
            text = text.encode("utf-8").decode("latin-1")
        slot = state.pos
        state.inbox[slot] = f"{when:%m-%d %H:%M:%S},{sender},{text}"
        state.pos = (slot + 1) % self.inbox_slots
        return slot

    def inbox_entries(self, line: int) -> list[str]:
        return list(self._line(line).inbox)

    # ---------------------------------------------------------------- serving

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started(actual_port)``."""
        await self.server.serve(host, port, task_status=task_status)

    async def handle(self, request: Request) -> Reply:
        if request.path.startswith("/emulator/"):
            return self._control(request)
        page = PAGES.get(request.path)
        if page is None:
            return self._reply("404 Not Found", status=404)
        faults = self.faults
        affected = faults.applies_to(page)
        if affected and faults.raw_garbage:
            return RawReply(RAW_GARBAGE, delay=faults.delay)
        if affected and faults.http_error:
            reply = self._reply(f"<html><body>{faults.http_error} Error</body></html>", status=faults.http_error)
            reply.delay = faults.delay
            return reply
        if affected and faults.hang and not (page == "send" and faults.hang_after_processing):
            return HANG

        if page == "send":
            reply = self._send(request)
        elif page == "status":
            reply = self._send_status(request)
        elif page == "inbox":
            reply = self._inbox(request)
        else:
            reply = self._health(request)

        if affected and faults.hang:
            return HANG
        if affected and faults.garbage and reply.status == 200:
            reply.body = GARBAGE
        if affected:
            reply.delay = faults.delay
        return reply

    def _reply(
        self, body: str | bytes, status: int = 200, content_type: str = "text/html"
    ) -> Response:
        faults = self.faults
        return Response(
            status=status,
            body=body,
            content_type=content_type,
            headers=[("Server", "LibHTTPD/1.0"), ("Cache-Control", "no-cache")],
            eol=b"\n" if faults.bare_lf else b"\r\n",
            close_delimited=not faults.keep_alive,
            http_version="1.1" if faults.keep_alive else "1.0",
            drip=faults.drip,
        )

    def _credentials_ok(self, params: Mapping[str, str]) -> bool:
        return params.get("u") == self.username and params.get("p") == self.password

    # send.html
    def _send(self, request: Request) -> Response:
        params = request.params
        if not self._credentials_ok(params):
            return self._send_answer(AUTH_ERROR)
        raw_line = params.get("l", "1")
        try:
            state = self._lines[int(raw_line)]
        except (KeyError, ValueError):
            return self._send_answer(f"ERROR,L{raw_line} no such line")
        text = params.get("m", "")
        number = params.get("n", "")
        if self.faults.http500_on_bracket and text.startswith("["):
            return self._reply("<html><body>500 Internal Server Error</body></html>", status=500)
        now = self._clock()
        n = state.number
        if state.logged_out(now):
            return self._send_answer(f"ERROR,L{n} GSM logout")
        if state.busy(now):
            return self._send_answer(f"ERROR,L{n} busy")

        if state.fail_next:
            error = state.fail_next.pop(0)
        elif n in self.faults.line_errors:
            error = self.faults.line_errors[n]
        elif self.faults.fail_probability and self._rng.random() < self.faults.fail_probability:
            error = self.faults.fail_code
        else:
            error = ""
        message_id = f"{self._next_id & 0xFFFFFFFF:08x}"
        self._next_id += 1
        state.slot_id = message_id
        state.slot_error = error
        state.done_at = now + self.send_duration
        self.sent.append(
            SentSms(
                line=n,
                destination=number,
                text=text,
                id=message_id,
                at=datetime.now(timezone.utc),
                error=error,
            )
        )
        return self._send_answer(f"Sending,L{n} Send SMS to:{number}; ID:{message_id}")

    def _send_answer(self, text: str) -> Response:
        if self.faults.wrap_newlines:
            text = f"\n{text}\n"
        return self._reply(text)

    # send_status.xml
    def _send_status(self, request: Request) -> Response:
        if not self._credentials_ok(request.params):
            return self._reply(AUTH_ERROR)
        if self.faults.malformed_status_xml:
            return self._reply(
                '<?xml version="1.0" encoding="utf-8"?>\n<send-sms-status>\n'
                " <id1>0000<status1>DONE</id1><error1>&</error\n",
                content_type="text/xml",
            )
        now = self._clock()
        rows = []
        for n in range(1, self.status_slots + 1):
            state = self._lines.get(n)
            slot_id, status, error = state.slot(now) if state else ("", "", "")
            rows.append(
                f" <id{n}>{slot_id}</id{n}><status{n}>{status}</status{n}>"
                f"<error{n}>{xml_escape(error)}</error{n}>"
            )
        body = (
            '<?xml version="1.0" encoding="utf-8"?>\n<send-sms-status>\n'
            + "\n".join(rows)
            + "\n</send-sms-status>\n"
        )
        return self._reply(body, content_type="text/xml")

    # tools.html?type=sms_inbox
    def _inbox(self, request: Request) -> Response:
        if not request.check_basic_auth(self.username, self.password):
            return self._auth_required()
        params = request.params
        if params.get("type") != "sms_inbox":
            return self._reply("<html><body>tools</body></html>")
        if params.get("action") == "del":
            try:
                self._delete(int(params.get("line", "-1")), int(params.get("pos", "-1")))
            except ValueError:
                return self._reply("<html><body>bad line or pos</body></html>", status=400)
        parts = [
            "<html><head><title>SMS Inbox</title>",
            '<script type="text/javascript">',
            "var sms, pos;",
        ]
        for n, state in self._lines.items():
            parts.append(
                "sms= " + json.dumps(state.inbox, ensure_ascii=False, separators=(",", ":")) + ";"
            )
            parts.append(f"pos={state.pos};")
            parts.append(f"sms_row_insert(l{n}_sms_store, sms, pos, {n});")
        parts.append("</script></head><body></body></html>")
        return self._reply("\n".join(parts) + "\n")

    def _delete(self, line: int, pos: int) -> None:
        lines = list(self._lines.values()) if line == -1 else [self._line(line)]
        for state in lines:
            positions = range(self.inbox_slots) if pos == -1 else [pos]
            for p in positions:
                if 0 <= p < self.inbox_slots and state.inbox[p]:
                    state.inbox[p] = ""
                    self.deleted.append((state.number, p))

    # status.xml
    def _health(self, request: Request) -> Response:
        if not request.check_basic_auth(self.username, self.password):
            return self._auth_required()
        now = self._clock()
        rows = []
        for n, state in self._lines.items():
            up = not state.logged_out(now)
            rows += [
                f"<l{n}_gsm_sim>Y</l{n}_gsm_sim>",
                f"<l{n}_gsm_status>{'Y' if up else 'N'}</l{n}_gsm_status>",
                f"<l{n}_gsm_signal>{state.signal if up else 0}</l{n}_gsm_signal>",
                f"<l{n}_gsm_cur_oper>{xml_escape(state.operator) if up else ''}</l{n}_gsm_cur_oper>",
                f"<l{n}_status_line>{'Y' if up else 'N'}</l{n}_status_line>",
                f"<l{n}_line_state>{'SMS' if state.busy(now) else 'IDLE'}</l{n}_line_state>",
            ]
        body = (
            '<?xml version="1.0" encoding="utf-8"?>\n<status>\n' + "\n".join(rows) + "\n</status>\n"
        )
        return self._reply(body, content_type="text/xml")

    def _auth_required(self) -> Response:
        reply = self._reply("401 Unauthorized", status=401)
        reply.headers.append(("WWW-Authenticate", 'Basic realm="Please Login"'))
        return reply

    # ---------------------------------------------------------------- test hooks over HTTP

    def _control(self, request: Request) -> Response:
        try:
            if request.path == "/emulator/sent" and request.method == "GET":
                return json_response([s.as_json() for s in self.sent])
            if request.path == "/emulator/state" and request.method == "GET":
                return json_response(self._state_json())
            if request.path == "/emulator/inject" and request.method == "POST":
                data = (
                    request.json()
                    if "json" in request.headers.get("content-type", "")
                    else request.params
                )
                when = datetime.fromisoformat(data["when"]) if data.get("when") else None
                slot = self.inject_sms(
                    int(data["line"]),
                    str(data["sender"]),
                    str(data["text"]),
                    when,
                    mojibake=str(data.get("mojibake", "")).lower() in ("1", "true", "yes"),
                )
                return json_response({"ok": True, "slot": slot})
            if request.path == "/emulator/faults" and request.method == "POST":
                self._apply_faults(request.json())
                return json_response(self._state_json())
        except (KeyError, ValueError, TypeError) as exc:
            return json_response({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, status=400)
        return json_response({"ok": False, "error": "no such emulator endpoint"}, status=404)

    def _apply_faults(self, data: Mapping[str, Any]) -> None:
        if not isinstance(data, Mapping):
            raise TypeError("expected a JSON object")
        fields = {f.name for f in attrs.fields(GoipFaults)}
        for key, value in data.items():
            if key == "logout":
                for line, seconds in value.items():
                    self.logout(int(line), seconds)
            elif key == "login":
                for line in value:
                    self.login(int(line))
            elif key == "fail_next":
                for line, (count, code) in value.items():
                    self.fail_next(int(line), int(count), str(code))
            elif key == "line_errors":
                for line, code in value.items():
                    self.set_line_error(int(line), code)
            elif key in fields:
                setattr(self.faults, key, value)  # attrs runs the field's converter
            else:
                raise KeyError(f"unknown fault {key!r}")

    def _state_json(self) -> dict[str, Any]:
        now = self._clock()
        faults = attrs.asdict(self.faults)
        faults["pages"] = sorted(self.faults.pages) if self.faults.pages is not None else None
        return {
            "lines": self.lines,
            "sent": len(self.sent),
            "connections_opened": self.connections_opened,
            "requests": self.server.stats.requests,
            "faults": faults,
            "line_state": {
                str(n): {
                    "busy": s.busy(now),
                    "logged_out": s.logged_out(now),
                    "slot": list(s.slot(now)),
                    "fail_next": list(s.fail_next),
                    "inbox_used": sum(1 for e in s.inbox if e),
                }
                for n, s in self._lines.items()
            },
        }


async def run_goip_emulator(port: int, lines: int, host: str = "127.0.0.1", **opts: Any) -> None:
    """Run a GoIP emulator until cancelled (``smpp-bridge emulate goip --port 8081 --lines 8``).

    ``opts`` are ``GoipEmulator`` keyword arguments (username, password, send_duration, seed,
    and any ``GoipFaults`` field such as bare_lf=False or fail_probability=0.1).
    """
    emulator = GoipEmulator(lines=lines, **opts)
    async with trio.open_nursery() as nursery:
        actual = await nursery.start(emulator.serve, host, port)
        log.info(
            "GoIP emulator with %d lines on http://%s:%d%s/ (user %r)",
            lines,
            host,
            actual,
            PREFIX,
            emulator.username,
        )
