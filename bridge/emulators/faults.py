"""The fault model and test hooks every HTTP device emulator shares.

One vocabulary for all five HTTP emulators (goip, router, brevis, smsgateway24, smsgate); the
UDP GoIP emulator has its own, since nothing there is HTTP. ``docs/emulators.md`` explains how
tests and operators use it. The switches, on ``emulator.faults`` or ``POST /emulator/faults``:

* ``delay`` - seconds to wait before every answer;
* ``hang`` - never answer (the connection stays open until the client gives up);
* ``hang_after_processing`` - with ``hang`` on an endpoint that carries out an order (a send):
  carry it out first, so the answer is lost, not the request (default on);
* ``garbage`` - do the work, then answer HTTP 2xx with a body that is not the device's answer;
* ``raw_garbage`` - answer bytes that are not HTTP at all, then close;
* ``http_error`` - answer this HTTP status (e.g. 500) without doing anything (0: off);
* ``endpoints`` - which endpoints the switches above apply to (names per emulator,
  ``ENDPOINTS``); None: all;
* ``keep_alive`` (False: HTTP/1.0 style, no Content-Length, close) and ``drip`` (write answers
  this many bytes at a time) shape every answer of the device;
* ``idle_close`` - seconds after which the device drops an idle keep-alive connection; a
  request arriving on a connection idle at least that long is dropped unread and unanswered
  (the device's close crossed it on the wire, which a client cannot tell from a device that
  took the request and died). None: off; 0: every request on an already used connection.
  Applies to every endpoint (it is the connection's fate, not the endpoint's); counted in
  ``dropped_idle``.

The order within one request: ``idle_close``, ``raw_garbage``, ``http_error``, the emulator's own early
answers (``early_answer``), ``hang`` before processing, the work, ``hang`` after processing,
``garbage``, ``delay``.

The test hooks (no auth; an emulator listens on 127.0.0.1 by default):

* ``GET /emulator/sent`` - what the device "sent", oldest first;
* ``GET /emulator/state`` - counters, the faults and the device's own state;
* ``GET /emulator/faults`` - the faults now; ``POST /emulator/faults`` (JSON object) - change
  any fault field, and the device's own controls (``apply_control``); ``fail_next`` passes a
  list or an object as the arguments of the device's ``fail_next()``;
* ``POST /emulator/inject`` (form or JSON) - an inbound SMS, on devices that have an inbox;
* anything else an emulator adds through ``control_extra``.

A bad control request answers 400 with what was wrong; an unknown hook 404.
"""

from __future__ import annotations

import http
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import attrs
import trio

from bridge.http.server import (
    HANG,
    HttpServer,
    RawReply,
    Reply,
    Request,
    Response,
    json_response,
)

__all__ = ["HttpDeviceEmulator", "HttpFaults", "RAW_GARBAGE", "form_or_json", "status_phrase"]

RAW_GARBAGE = b"\x16\x03\x01\x00garbage, not HTTP at all\r\n\r\n"

#: Names single emulators used before they shared this model, and what to say instead.
RENAMED = {
    "pages": "endpoints",
    "methods": "endpoints",
    "http500": "http_error=500",
}


def _names(value: Iterable[str] | None) -> frozenset[str] | None:
    return None if value is None else frozenset(value)


def _known_endpoints(instance: HttpFaults, attribute: Any, value: frozenset[str] | None) -> None:
    known = type(instance).ENDPOINTS
    if value is not None and value - known:
        raise ValueError(
            f"unknown {type(instance).DEVICE} endpoints {sorted(value - known)}; "
            f"known: {sorted(known)}"
        )


def _http_status(instance: HttpFaults, attribute: Any, value: int) -> None:
    if value != 0 and not 400 <= value <= 599:
        raise ValueError(f"http_error is 0 (off) or an HTTP error status 400-599, not {value!r}")


@attrs.define
class HttpFaults:
    """Misbehaviour switches; change them at any time (``emulator.faults.hang = True``).

    Each emulator subclasses this with its ``ENDPOINTS`` and its device's own quirks."""

    #: The endpoint names ``endpoints`` may hold, and the device's name for error messages.
    ENDPOINTS: ClassVar[frozenset[str]] = frozenset()
    DEVICE: ClassVar[str] = "device"

    #: Seconds to wait before every answer.
    delay: float = 0.0
    #: Never answer (the connection stays open until the client gives up).
    hang: bool = False
    #: With ``hang`` on an endpoint that carries out an order: still carry it out (the answer
    #: is lost, not the request).
    hang_after_processing: bool = True
    #: Do the work, then answer HTTP 2xx with a garbage body.
    garbage: bool = False
    #: Answer bytes that are not HTTP at all, then close.
    raw_garbage: bool = False
    #: Answer this HTTP status (e.g. 500) with an error page instead of doing anything (0: off).
    http_error: int = attrs.field(default=0, converter=int, validator=_http_status)
    #: Which endpoints delay/hang/garbage/raw_garbage/http_error apply to; None = all.
    endpoints: frozenset[str] | None = attrs.field(
        default=None, converter=_names, validator=_known_endpoints
    )
    #: Keep connections open; False answers HTTP/1.0 style (no Content-Length, close).
    keep_alive: bool = True
    #: Write answers this many bytes at a time (0: at once); tests TCP segment boundaries.
    drip: int = 0
    #: Seconds of idleness after which a kept-alive connection is dropped, seen by the next
    #: request on it (dropped unanswered); None: off.
    idle_close: float | None = attrs.field(
        default=None, converter=attrs.converters.optional(float)
    )

    def applies_to(self, endpoint: str) -> bool:
        return self.endpoints is None or endpoint in self.endpoints

    def as_json(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["endpoints"] = sorted(self.endpoints) if self.endpoints is not None else None
        return out


class HttpDeviceEmulator:
    """What every HTTP device emulator does the same way: the fault pipeline around the
    device's own work, the wire shape of its answers, and the ``/emulator/*`` hooks.

    A subclass sets ``server`` (an ``HttpServer`` on ``self.handle``) and ``sent`` (records
    with ``as_json()``), calls ``_init_faults`` and implements ``route`` and ``process``."""

    #: Endpoints that carry out an order, where ``hang_after_processing`` applies.
    PROCESSING: ClassVar[frozenset[str]] = frozenset({"send"})
    #: Boolean attributes of the device that ``POST /emulator/faults`` may switch
    #: (the router's ``enabled``, the brevis user's ``api_access``).
    SWITCHES: ClassVar[frozenset[str]] = frozenset()
    #: The body a ``garbage`` answer carries.
    GARBAGE: ClassVar[bytes] = b"\x00\xff\xfe\x1b[31m$#@!\r\n\x7f not a device answer"

    faults: HttpFaults
    server: HttpServer
    sent: list[Any]

    def _init_faults(
        self, cls: type[HttpFaults], faults: HttpFaults | None, options: Mapping[str, Any]
    ) -> None:
        if faults is not None and options:
            raise TypeError("pass either faults= or fault options, not both")
        renamed = sorted(options.keys() & RENAMED.keys())
        if renamed:
            old = renamed[0]
            raise TypeError(f"fault option {old!r} is now {RENAMED[old]!r} (docs/emulators.md)")
        self.faults = faults if faults is not None else cls(**options)
        self.dropped_idle = 0  # requests dropped by idle_close
        self._last_request: dict[str, float] = {}  # connection (peer address) -> last request

    @property
    def port(self) -> int | None:
        return self.server.port

    @property
    def connections_opened(self) -> int:
        return self.server.stats.connections_opened

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``task_status.started(actual_port)``."""
        await self.server.serve(host, port, task_status=task_status)

    # ---------------------------------------------------------------- what a device supplies

    def route(self, request: Request) -> str | None:
        """The endpoint name of a device request (None: not one). Called once per request,
        so it may count or record it."""
        raise NotImplementedError

    async def process(self, endpoint: str, request: Request) -> Response:
        """The device's own answer to a request on ``endpoint``."""
        raise NotImplementedError

    def not_found(self, request: Request) -> Response:
        return Response(status=404, body="<html><body>404 Not Found</body></html>")

    def error_page(self, status: int) -> Response:
        """The answer for ``http_error``."""
        page = f"<html><body>{status} {status_phrase(status)}</body></html>"
        return Response(status=status, body=page)

    def early_answer(self, endpoint: str, request: Request) -> Response | None:
        """A device-specific fault that answers before any work is done (None: none)."""
        return None

    def apply_control(self, key: str, value: Any) -> bool:
        """Handle a device control in ``POST /emulator/faults`` that is not a fault field;
        True when ``key`` was one."""
        return False

    def inject_from(self, data: Mapping[str, Any]) -> dict[str, Any] | None:
        """``POST /emulator/inject``: put an inbound SMS on the device; None: no inbox."""
        return None

    def control_extra(self, request: Request) -> Response | None:
        """Further ``/emulator/*`` hooks of one device (None: not one of them)."""
        return None

    def device_state(self) -> dict[str, Any]:
        """The device's own part of ``GET /emulator/state``."""
        return {}

    # ---------------------------------------------------------------- the fault pipeline

    async def handle(self, request: Request) -> Reply:
        if request.path.startswith("/emulator/"):
            return self._control(request)
        faults = self.faults
        if self._closed_while_idle(request):
            return RawReply(b"")
        endpoint = self.route(request)
        if endpoint is None:
            return self._shape(self.not_found(request))
        affected = faults.applies_to(endpoint)
        if affected:
            if faults.raw_garbage:
                return RawReply(RAW_GARBAGE, delay=faults.delay)
            early = (
                self.error_page(faults.http_error)
                if faults.http_error
                else self.early_answer(endpoint, request)
            )
            if early is not None:
                early.delay = faults.delay
                return self._shape(early)
            if faults.hang and not (endpoint in self.PROCESSING and faults.hang_after_processing):
                return HANG
        reply = await self.process(endpoint, request)
        if affected:
            if faults.hang:
                return HANG
            if faults.garbage and 200 <= reply.status < 300:
                reply.body = self.GARBAGE
            reply.delay = faults.delay
        return self._shape(reply)

    def _closed_while_idle(self, request: Request) -> bool:
        """``idle_close``: did the device drop this request's connection while it was idle?"""
        now = trio.current_time()
        last = self._last_request.pop(request.peer, None)
        limit = self.faults.idle_close
        if limit is not None and last is not None and now - last >= limit:
            self.dropped_idle += 1
            return True
        if len(self._last_request) >= 1000:  # connections long gone: forget them
            self._last_request.clear()
        self._last_request[request.peer] = now
        return False

    def _shape(self, reply: Response) -> Response:
        faults = self.faults
        reply.close_delimited = reply.close_delimited or not faults.keep_alive
        if not faults.keep_alive:
            reply.http_version = "1.0"
        reply.drip = faults.drip
        return reply

    # ---------------------------------------------------------------- the test hooks

    def _control(self, request: Request) -> Response:
        path, method = request.path, request.method
        try:
            if path == "/emulator/sent" and method == "GET":
                return json_response([s.as_json() for s in self.sent])
            if path == "/emulator/state" and method == "GET":
                return json_response(self.state_json())
            if path == "/emulator/faults" and method == "GET":
                return json_response(self.faults.as_json())
            if path == "/emulator/faults" and method == "POST":
                self.apply_faults(request.json())
                return json_response(self.state_json())
            if path == "/emulator/inject" and method == "POST":
                done = self.inject_from(form_or_json(request))
                if done is not None:
                    return json_response({"ok": True, **done})
            extra = self.control_extra(request)
            if extra is not None:
                return extra
        except (KeyError, ValueError, TypeError, UnicodeDecodeError) as exc:
            return json_response({"ok": False, "error": f"{type(exc).__name__}: {exc}"}, status=400)
        return json_response({"ok": False, "error": "no such emulator endpoint"}, status=404)

    def apply_faults(self, data: Any) -> None:
        """Apply a ``POST /emulator/faults`` body: fault fields and device controls."""
        if not isinstance(data, Mapping):
            raise TypeError("expected a JSON object")
        fields = {f.name for f in attrs.fields(type(self.faults))}
        for key, value in data.items():
            if self.apply_control(key, value):
                continue
            if key in self.SWITCHES:
                setattr(self, key, bool(value))
                continue
            if key == "fail_next" and hasattr(self, "fail_next"):
                # [count, what...] or {"count": n, ...}: the device's own fail_next() arguments
                if isinstance(value, Mapping):
                    self.fail_next(**value)
                else:
                    self.fail_next(*value)
                continue
            if key in RENAMED:
                raise KeyError(f"fault {key!r} is now {RENAMED[key]!r} (docs/emulators.md)")
            if key not in fields:
                raise KeyError(f"unknown fault {key!r}; fault fields: {sorted(fields)}")
            setattr(self.faults, key, value)  # attrs runs the field's converter and validator

    def state_json(self) -> dict[str, Any]:
        return {
            "sent": len(self.sent),
            "connections_opened": self.connections_opened,
            "requests": self.server.stats.requests,
            "dropped_idle": self.dropped_idle,
            "faults": self.faults.as_json(),
            **self.device_state(),
        }


def form_or_json(request: Request) -> Mapping[str, Any]:
    if "json" not in request.headers.get("content-type", ""):
        return request.params
    data = request.json()
    if not isinstance(data, Mapping):
        raise TypeError("expected a JSON object")
    return data


def status_phrase(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Error"
