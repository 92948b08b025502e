"""brevis.one SMS Gateway emulator: its HTTP API (``/api.php``), quirks and faults included.

Wire format (docs/devices/brevis.md): GET or POST ``/api.php`` with
``username``, ``password``, ``to``, ``text`` and the optional ``mode``, ``hexmode``, ``flash``,
``telauto``, ``ring``. Answers (text, with the same HTTP status):

* 400 ``Error. See Gateway logs for more information.`` - wrong number, group or contact not
  existing, hex text that does not decode;
* 400 ``Error: Parameter miss.`` - a required parameter missing or empty;
* 401 ``401 Unauthorized - Username or Password wrong.``;
* 403 ``403 Forbidden - Your User has no right to send SMS over API.``;
* 408 ``FAILED - Timeout or see Gateway logs for more information.``.

Where the vendor's manual does not say, the emulator picks and marks it [I]: success is HTTP 200
with the body ``success_body`` (default ``OK``); credentials are checked before the other
parameters (a request with only username/password answers ``Parameter miss`` when they are right);
``hexmode=true`` text is the hex of UTF-8 bytes; ``flash`` and ``ring`` count when present at all
(the manual: "by adding the parameter"); modes are ``number`` (default; an unknown mode falls back
to it, as documented), ``telnumber``, ``group``, ``contact`` - the emulator knows no groups or
contacts, so those answer the gateway-logs error; a number that is not ``+``/``00``/digits (3..20)
is a wrong number.

The real gateway speaks HTTPS with a self-signed certificate: pass ``ssl_context`` to serve
TLS; without it the emulator serves plain HTTP.

Faults and test hooks are the shared ones (``bridge/emulators/faults.py``, docs/emulators.md);
the one endpoint is ``send``. There is no inbox (no ``/emulator/inject``); ``POST
/emulator/faults`` also takes ``api_access`` true/false and ``fail_next`` [count, answer].

Every SMS the emulator "sends" is recorded in ``BrevisEmulator.sent`` (text decoded from hex
when it came in hex mode); every request (method, path, raw target) in
``BrevisEmulator.requests``.
"""

from __future__ import annotations

import logging
import re
import ssl
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import trio

from bridge.emulators.faults import HttpDeviceEmulator, HttpFaults
from bridge.emulators.http import HttpServer, Request, Response

__all__ = [
    "BrevisEmulator",
    "BrevisFaults",
    "BrevisRequest",
    "BrevisSentSms",
    "run_brevis_emulator",
]

log = logging.getLogger("bridge.emulators.brevis")

API_PATH = "/api.php"
ERR_LOGS = "Error. See Gateway logs for more information."
ERR_PARAM = "Error: Parameter miss."
ERR_AUTH = "401 Unauthorized - Username or Password wrong."
ERR_RIGHT = "403 Forbidden - Your User has no right to send SMS over API."
ERR_TIMEOUT = "FAILED - Timeout or see Gateway logs for more information."
ANSWERS = {
    "error": (400, ERR_LOGS),
    "parameter": (400, ERR_PARAM),
    "unauthorized": (401, ERR_AUTH),
    "forbidden": (403, ERR_RIGHT),
    "timeout": (408, ERR_TIMEOUT),
}
MODES = ("number", "telnumber", "group", "contact")
_NUMBER = re.compile(r"^\+?\d{3,20}$")


def _answer_key(value: str | None) -> str | None:
    if value is None:
        return None
    if value not in ANSWERS:
        raise ValueError(f"answer must be one of {sorted(ANSWERS)}, got {value!r}")
    return value


@attrs.define
class BrevisFaults(HttpFaults):
    """The shared switches (``HttpFaults``; ``delay`` comes on top of ``send_duration``) and
    the gateway's own quirks."""

    ENDPOINTS = frozenset({"send"})
    DEVICE = "brevis"

    #: Every send answers this instead of sending: "error", "parameter", "unauthorized",
    #: "forbidden", "timeout" (see ``ANSWERS``). None: normal.
    answer: str | None = attrs.field(default=None, converter=_answer_key)
    #: A "timeout" answer still sends the SMS (the gateway's modem sent it after all).
    timeout_sends: bool = False
    #: Numbers matching this regular expression (re.search) answer the gateway-logs error.
    wrong_number: str | None = None
    #: Errors come with their HTTP status (as documented); False: always HTTP 200, text only.
    status_codes: bool = True
    #: The body of a successful send [I].
    success_body: str = "OK"
    #: Gateways bought before 2021 ignore ``flash``.
    flash_supported: bool = True


@attrs.frozen
class BrevisSentSms:
    to: str
    #: The text as sent to the handset (decoded from hex in hex mode).
    text: str
    at: datetime
    hexmode: bool = False
    flash: bool = False
    mode: str = "number"
    telauto: str | None = None
    ring: bool = False
    method: str = "GET"
    #: "OK", or "timeout" for a send the gateway reported as FAILED - Timeout but still made.
    answer: str = "OK"

    def as_json(self) -> dict[str, Any]:
        return {
            "to": self.to,
            "destination": self.to,  # the same, under the GoIP emulator's name
            "text": self.text,
            "at": self.at.isoformat(),
            "hexmode": self.hexmode,
            "flash": self.flash,
            "mode": self.mode,
            "telauto": self.telauto,
            "ring": self.ring,
            "method": self.method,
            "answer": self.answer,
        }


@attrs.frozen
class BrevisRequest:
    """One request as it arrived (kept in memory only, for tests; never logged)."""

    method: str
    path: str
    target: str


def _present(params: Mapping[str, str], name: str) -> bool:
    return name in params


class BrevisEmulator(HttpDeviceEmulator):
    SWITCHES = frozenset({"api_access"})
    GARBAGE = b"\x00\xff\xfe\x1b[31m<<brevis>> $#@!\r\n\x7f not an API answer"

    def __init__(
        self,
        username: str = "apiuser",
        password: str = "secret",
        *,
        api_access: bool = True,
        send_duration: float = 0.0,
        ssl_context: ssl.SSLContext | None = None,
        faults: BrevisFaults | None = None,
        clock: Callable[[], float] = time.monotonic,
        **fault_options: Any,
    ):
        self._init_faults(BrevisFaults, faults, fault_options)
        self.username = username
        self.password = password
        self.api_access = api_access
        self.send_duration = send_duration
        self.ssl_context = ssl_context
        self.sent: list[BrevisSentSms] = []
        self.requests: list[BrevisRequest] = []
        self._clock = clock
        self._fail_next: list[str] = []
        self._modem = trio.Lock()
        self.server = HttpServer(self.handle, name="brevis-emulator")

    # ---------------------------------------------------------------- runtime controls

    def fail_next(self, count: int = 1, answer: str = "error") -> None:
        """The next ``count`` sends answer ``answer`` (a key of ``ANSWERS``)."""
        self._fail_next.extend([_answer_key(answer) or "error"] * count)

    # ---------------------------------------------------------------- serving

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve (HTTPS with ``ssl_context``) until cancelled; ``task_status.started(port)``."""
        if self.ssl_context is None:
            await self.server.serve(host, port, task_status=task_status)
            return
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0 and len(listeners) > 1:
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        self.server.port = listeners[0].socket.getsockname()[1]
        tls = [trio.SSLListener(lst, self.ssl_context, https_compatible=True) for lst in listeners]
        log.info("brevis emulator listening on https://%s:%d", host, self.server.port)
        task_status.started(self.server.port)
        await trio.serve_listeners(self.server.handle_stream, tls)

    def route(self, request: Request) -> str | None:
        self.requests.append(BrevisRequest(request.method, request.path, request.target))
        return "send" if request.path == API_PATH else None

    def not_found(self, request: Request) -> Response:
        return self._reply("404 Not Found", status=404)

    async def process(self, endpoint: str, request: Request) -> Response:
        if request.method not in ("GET", "POST"):
            return self._reply("405 Method Not Allowed", status=405)
        return await self._api(request)

    def _reply(self, body: str | bytes, status: int = 200) -> Response:
        faults = self.faults
        if status >= 400 and not faults.status_codes and status != 404:
            status = 200
        return Response(
            status=status,
            body=body,
            content_type="text/html; charset=UTF-8",
            headers=[("Server", "Apache"), ("X-Powered-By", "PHP")],
        )

    def _error(self, key: str) -> Response:
        status, text = ANSWERS[key]
        return self._reply(text, status=status)

    async def _api(self, request: Request) -> Response:
        params = request.params
        faults = self.faults
        username, password = params.get("username"), params.get("password")
        if not username or password is None:
            return self._error("parameter")
        if username != self.username or password != self.password:
            return self._error("unauthorized")
        if not self.api_access:
            return self._error("forbidden")
        ring = _present(params, "ring")
        to = params.get("to", "").strip()
        text = params.get("text", "")
        if not to or (not text and not ring):
            return self._error("parameter")
        mode = params.get("mode", "number")
        if mode not in MODES:
            mode = "number"  # documented: invalid modes fall back to "number"
        if mode in ("group", "contact"):
            return self._error("error")  # the emulated gateway has no groups or contacts
        hexmode = params.get("hexmode", "").lower() == "true"
        if hexmode:
            try:
                text = bytes.fromhex(text).decode("utf-8")
            except ValueError:
                return self._error("error")
        number_ok = _NUMBER.match(to) is not None
        if not number_ok or (faults.wrong_number is not None and re.search(faults.wrong_number, to)):
            return self._error("error")
        answer = self._fail_next.pop(0) if self._fail_next else (faults.answer or "OK")
        if answer != "OK" and not (answer == "timeout" and faults.timeout_sends):
            if answer == "timeout" and self.send_duration:
                await trio.sleep(self.send_duration)
            return self._error(answer)
        async with self._modem:  # one SMS at a time
            if self.send_duration:
                await trio.sleep(self.send_duration)
            self.sent.append(
                BrevisSentSms(
                    to=to,
                    text="" if ring else text,
                    at=datetime.now(timezone.utc),
                    hexmode=hexmode,
                    flash=_present(params, "flash") and faults.flash_supported,
                    mode=mode,
                    telauto=params.get("telauto"),
                    ring=ring,
                    method=request.method,
                    answer=answer,
                )
            )
        if answer == "timeout":
            return self._error("timeout")
        return self._reply(faults.success_body)

    # ---------------------------------------------------------------- test hooks over HTTP

    def device_state(self) -> dict[str, Any]:
        return {"api_access": self.api_access, "fail_next": list(self._fail_next)}


async def run_brevis_emulator(
    port: int,
    host: str = "127.0.0.1",
    *,
    certfile: str | None = None,
    keyfile: str | None = None,
    **opts: Any,
) -> None:
    """Run a brevis.one emulator until cancelled (``smpp-bridge emulate brevis --port 8443``).

    With ``certfile`` (and ``keyfile`` unless the key is in the same file) it serves HTTPS, as
    the real gateway does; else plain HTTP. ``opts`` are ``BrevisEmulator`` keyword arguments
    (username, password, api_access, send_duration and any ``BrevisFaults`` field).
    """
    if certfile:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(certfile, keyfile)
        opts["ssl_context"] = ctx
    emulator = BrevisEmulator(**opts)
    async with trio.open_nursery() as nursery:
        actual = await nursery.start(emulator.serve, host, port)
        scheme = "https" if certfile else "http"
        log.info(
            "brevis emulator on %s://%s:%d%s (user %r)",
            scheme,
            host,
            actual,
            API_PATH,
            emulator.username,
        )


# ============================================================================================
# `smpp-bridge emulate brevis` (bridge/cli.py reads these)

DEFAULT_PORT = 8083


def add_arguments(parser: Any) -> None:
    """This kind's options of ``smpp-bridge emulate`` (an ``argparse`` parser)."""
    parser.add_argument("--username", default="apiuser", help="login [apiuser]")
    parser.add_argument("--password", default="secret", help="password [secret]")
    parser.add_argument("--send-duration", type=float, default=0.5,
                        help="seconds the gateway is busy per SMS [0.5]")
    parser.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--keyfile", help="its key, unless it is in --certfile")
    parser.add_argument("--no-api-access", action="store_true",
                        help="the user lacks 'Access to the HTTP API' (403)")


def from_cli(args: Any) -> tuple[BrevisEmulator, str]:
    """(emulator, a one-line description) from the parsed options; OSError for a bad cert."""
    ctx = None
    if args.certfile:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.certfile, args.keyfile)
    emu = BrevisEmulator(
        username=args.username,
        password=args.password,
        api_access=not args.no_api_access,
        send_duration=args.send_duration,
        ssl_context=ctx,
    )
    return emu, f"/api.php, user {emu.username!r}" + (" (HTTPS)" if ctx else "")
