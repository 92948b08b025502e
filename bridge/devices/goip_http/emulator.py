"""GoIP GSM gateway emulator: the HTTP API of a GoIP-1..32, quirks and faults included.

Wire format (docs/devices/goip.md, the HTTP API):

* ``GET /default/en_US/send.html?u=&p=&l=<line>&n=<number>&m=<text>`` ->
  ``Sending,L1 Send SMS to:<n>; ID:<8 hex>`` | ``ERROR,L1 busy`` | ``ERROR,L1 GSM logout`` |
  ``ERROR,user or password error``; HTTP 500 for a text starting with ``[``.
* ``GET /default/en_US/send_status.xml?u=&p=`` -> one ``idN/statusN/errorN`` triple per line
  (at least 8, as a GoIP-1 does), for the LAST message of each line only.
* ``GET /default/en_US/tools.html?type=sms_inbox`` (Basic auth) -> the inbox as JavaScript,
  a ring of 20 slots per line; ``&action=del&line=<n|-1>&pos=<n|-1>`` deletes.
* ``GET /default/en_US/status.xml`` (Basic auth) -> ``lN_gsm_status`` & co.

Headers end in bare LF by default, like the real device.

Where the device's documentation does not say, the emulator picks and marks it [I]: ``pos`` in the
inbox script is the ring's write pointer (the slot the next SMS goes to); deleting empties the slot
in place (no compaction); a line number the device does not have answers ``ERROR,L<n> no such
line``; wrong credentials on send_status.xml get the same ``ERROR,user or password error`` text as
send.html.

Faults and test hooks are the shared ones (``bridge/emulators/faults.py``, docs/emulators.md);
endpoints are ``send``, ``status``, ``inbox``, ``health``. ``POST /emulator/inject`` takes
line, sender, text[, when ISO-8601][, mojibake]; ``POST /emulator/faults`` also takes
``logout`` {line: seconds|null}, ``login`` [lines], ``fail_next`` {line: [count, code]} and
``line_errors`` {line: code|null}.

Every SMS the emulator "sends" is recorded in ``GoipEmulator.sent``.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone, tzinfo
from typing import Any
from xml.sax.saxutils import escape as xml_escape

import attrs
import trio

from bridge.emulators.faults import HttpDeviceEmulator, HttpFaults
from bridge.emulators.http import HttpServer, Request, Response

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


def _line_map(value: Mapping[Any, Any] | None) -> dict[int, str]:
    return {int(k): str(v) for k, v in (value or {}).items()}


@attrs.define
class GoipFaults(HttpFaults):
    """The shared switches (``HttpFaults``) and the GoIP's own quirks."""

    ENDPOINTS = frozenset(PAGES.values())
    DEVICE = "GoIP"

    #: send_status.xml answers broken XML.
    malformed_status_xml: bool = False
    #: Status line and headers end in bare LF (what the real device does).
    bare_lf: bool = True
    #: send.html answers are wrapped in newlines ("\nSending,...\n"), as some firmware does.
    wrap_newlines: bool = False
    #: A text starting with '[' gets HTTP 500 (firmware GHSFVT-1.1-67).
    http500_on_bracket: bool = True
    #: Probability that a send ends DONE with ``fail_code``.
    fail_probability: float = 0.0
    fail_code: str = "2172"
    #: Every send on these lines ends DONE with this error code: {line: code}.
    line_errors: dict[int, str] = attrs.field(factory=dict, converter=_line_map)


@attrs.frozen
class SentSms:
    line: int
    destination: str
    text: str
    id: str
    at: datetime
    #: The error code the send ends with ("" = handed to the network).
    error: str = ""
    #: Seconds the line was busy with it (``send_duration``, varied by ``send_jitter``).
    duration: float = 0.0

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


class GoipEmulator(HttpDeviceEmulator):
    GARBAGE = b"\x00\xff\xfe<<GARBAGE>> \x1b[31m$#@!\r\n\x7f not a GoIP answer"

    def __init__(
        self,
        lines: int = 8,
        username: str = "admin",
        password: str = "admin",
        send_duration: float = 2.5,
        *,
        send_jitter: float = 0.0,
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
        self._init_faults(GoipFaults, faults, fault_options)
        self.lines = lines
        self.username = username
        self.password = password
        self.send_duration = send_duration
        # Each send takes send_duration x (1 +- up to send_jitter), drawn from the seeded
        # generator: a real line's send time varies (the network, the signal).
        if not 0.0 <= send_jitter < 1.0:
            raise ValueError("send_jitter is a fraction of send_duration, from 0 to below 1")
        self.send_jitter = send_jitter
        self.inbox_slots = inbox_slots
        self.status_slots = max(status_slots, lines)
        self.device_tz = device_tz
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

    def route(self, request: Request) -> str | None:
        return PAGES.get(request.path)

    async def process(self, endpoint: str, request: Request) -> Response:
        if endpoint == "send":
            return self._send(request)
        if endpoint == "status":
            return self._send_status(request)
        if endpoint == "inbox":
            return self._inbox(request)
        return self._health(request)

    def not_found(self, request: Request) -> Response:
        return self._reply("404 Not Found", status=404)

    def error_page(self, status: int) -> Response:
        return self._reply(f"<html><body>{status} Error</body></html>", status=status)

    def _reply(
        self, body: str | bytes, status: int = 200, content_type: str = "text/html"
    ) -> Response:
        return Response(
            status=status,
            body=body,
            content_type=content_type,
            headers=[("Server", "LibHTTPD/1.0"), ("Cache-Control", "no-cache")],
            eol=b"\n" if self.faults.bare_lf else b"\r\n",
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
        duration = self.send_duration
        if self.send_jitter:
            duration *= 1.0 + self._rng.uniform(-self.send_jitter, self.send_jitter)
        state.done_at = now + duration
        self.sent.append(
            SentSms(
                line=n,
                destination=number,
                text=text,
                id=message_id,
                at=datetime.now(timezone.utc),
                error=error,
                duration=duration,
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

    def inject_from(self, data: Mapping[str, Any]) -> dict[str, Any]:
        when = datetime.fromisoformat(data["when"]) if data.get("when") else None
        slot = self.inject_sms(
            int(data["line"]),
            str(data["sender"]),
            str(data["text"]),
            when,
            mojibake=str(data.get("mojibake", "")).lower() in ("1", "true", "yes"),
        )
        return {"slot": slot}

    def apply_control(self, key: str, value: Any) -> bool:
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
        else:
            return False
        return True

    def device_state(self) -> dict[str, Any]:
        now = self._clock()
        return {
            "lines": self.lines,
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


# ============================================================================================
# `smpp-bridge emulate goip_http` (bridge/cli.py reads these; "goip" is its older name)

#: Other names ``smpp-bridge emulate`` accepts for this kind.
CLI_ALIASES = ("goip",)
DEFAULT_PORT = 8081


def add_arguments(parser: Any) -> None:
    """This kind's options of ``smpp-bridge emulate`` (an ``argparse`` parser)."""
    parser.add_argument("--username", default="admin", help="login [admin]")
    parser.add_argument("--password", default="admin", help="password [admin]")
    parser.add_argument("--send-duration", type=float, default=2.5,
                        help="seconds a line is busy per SMS [2.5]")
    parser.add_argument("--send-jitter", type=float, default=0.0,
                        help="each send takes --send-duration x (1 +- up to this fraction) [0]")
    parser.add_argument("--lines", type=int, default=8, help="GSM lines [8]")


def from_cli(args: Any) -> tuple[GoipEmulator, str]:
    """(emulator, a one-line description) from the parsed options."""
    emu = GoipEmulator(
        lines=args.lines,
        username=args.username,
        password=args.password,
        send_duration=args.send_duration,
        send_jitter=args.send_jitter,
        seed=args.seed,
    )
    return emu, f"{args.lines} lines, user {emu.username!r}"
