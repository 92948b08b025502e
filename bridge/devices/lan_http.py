"""A lean HTTP/1.1 client for LAN devices: h11 on trio streams, a small keep-alive pool.

Why not httpx's client for this: a bridge with 512 lines makes ~150 device requests a second,
and each one through ``httpx.AsyncClient`` cost about 700 us of CPU (building the request,
cookies, URL merging, the auth and redirect generators, then httpcore's pool checking every idle
connection with a ``select``). The same request with h11 (httpx's own HTTP/1.1 parser) on a
pooled trio stream costs about 150 us (measured against the GoIP emulator; README, "Many lines").
The wire protocol stays h11's; this file only keeps connections.

What it keeps identical to the httpx client it replaces (``HttpDevice`` chooses it when no test
transport is given):

* errors are httpx's exception types with the same meaning: ``httpx.ConnectError`` (no
  connection: the request never left), ``httpx.WriteError`` (failed while writing: never
  complete at the device), ``httpx.ReadError`` / ``httpx.RemoteProtocolError`` (the request was
  written; no usable answer). ``HttpDevice`` turns them into ``HttpAnswer`` as before;
* ``phase.request_sent`` becomes true once the request is completely written (httpcore's
  ``send_request_headers.complete`` trace point, which ``RequestPhase`` listens to);
* TLS: the same ``verify`` option (True: system CAs; False: no verification; an SSLContext);
  no redirects, no proxies, no cookies;
* the INFO line httpx logs for each request (``HTTP Request: GET <url> "HTTP/1.1 200 OK"``) on
  the same "httpx" logger, so the drivers' credential filter there (``install_httpx_log_redaction``)
  and an operator's logging settings apply unchanged;
* keep-alive: at most ``max_connections`` per device, an idle connection is dropped after
  ``keepalive_expiry`` seconds, and one the device closed while idle (readable with nothing to
  read) is never used for a request.

Deadlines are the caller's (``HttpDevice`` wraps each request in ``trio.move_on_after``); a
request cancelled half way closes its connection, which never returns to the pool.
"""

from __future__ import annotations

import logging
import ssl
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs
import h11
import httpx
import trio

__all__ = ["LanHttpPool", "basic_auth_header"]

# httpx's logger: its per-request INFO line and the drivers' redaction filter live there.
_httpx_log = logging.getLogger("httpx")

# Big enough for any device page in one read; h11 asks again when it needs more.
READ_SIZE = 65536


def basic_auth_header(auth: httpx.Auth) -> str:
    """The ``Authorization`` value an ``httpx.BasicAuth`` puts on a request."""
    flow = auth.sync_auth_flow(httpx.Request("GET", "http://device/"))
    request = next(flow)
    flow.close()
    return request.headers["Authorization"]


def _tls_context(verify: bool | ssl.SSLContext) -> ssl.SSLContext:
    """``verify`` as httpx reads it: an SSLContext as given, True = system CAs, False = none."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


@attrs.define(eq=False)
class _Conn:
    stream: trio.abc.Stream
    socket: Any  # the trio socket under it (readability check of an idle connection)
    h11: h11.Connection = attrs.Factory(lambda: h11.Connection(h11.CLIENT))
    idle_since: float = 0.0


class LanHttpPool:
    """Keep-alive connections to the origins of one device; see the module docstring."""

    def __init__(
        self,
        *,
        verify: bool | ssl.SSLContext = True,
        max_connections: int = 4,
        keepalive_expiry: float = 5.0,
        user_agent: str = "smpp-bridge",
    ) -> None:
        self._verify = verify
        self._ssl: ssl.SSLContext | None = None  # made on the first https request
        self._slots = trio.Semaphore(max_connections)
        self._expiry = keepalive_expiry
        self._user_agent = user_agent
        self._idle: dict[tuple[str, str, int], list[_Conn]] = {}
        self._origins: dict[str, tuple[tuple[str, str, int], list[tuple[bytes, bytes]]]] = {}
        self.closed = False

    def _origin(self, scheme: str, netloc: str) -> tuple[tuple[str, str, int], list[tuple[bytes, bytes]]]:
        key = f"{scheme}://{netloc}"
        known = self._origins.get(key)
        if known is None:
            url = httpx.URL(key)
            if url.scheme not in ("http", "https") or not url.host:
                raise httpx.UnsupportedProtocol(f"cannot send to {scheme}://...")
            port = url.port or (443 if url.scheme == "https" else 80)
            host = url.raw_host.decode("ascii")
            host_header = url.netloc.decode("ascii")
            base = [
                (b"Host", host_header.encode("ascii")),
                (b"Accept", b"*/*"),
                (b"Connection", b"keep-alive"),
                (b"User-Agent", self._user_agent.encode("latin-1")),
            ]
            known = self._origins[key] = ((url.scheme, host, port), base)
        return known

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        authorization: str | None,
        phase: Any,
        fresh: bool = False,
    ) -> tuple[int, bytes]:
        """(status, body) of one request. ``fresh``: on a new connection, closed afterwards."""
        if self.closed:
            raise httpx.ConnectError("the device's HTTP client is closed")
        scheme, netloc, path, query, _ = urllib.parse.urlsplit(url)
        origin, base = self._origin(scheme, netloc)
        target = (path or "/") + (f"?{query}" if query else "")
        if not target.isascii() or " " in target:
            target = httpx.URL(url).raw_path.decode("ascii")
        if headers:  # the caller's own headers replace the defaults of the same name, as in httpx
            own = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
            names = {k.lower() for k, _ in own}
            head = [h for h in base if h[0].lower() not in names] + own
        else:
            head = list(base)
        if authorization is not None:
            head.append((b"Authorization", authorization.encode("latin-1")))
        if content is not None or method in ("POST", "PUT", "PATCH"):
            head.append((b"Content-Length", str(len(content or b"")).encode("ascii")))
        request = h11.Request(method=method, target=target, headers=head)
        if fresh:  # its own connection, outside the pool's limit (the pooled ones may be stuck)
            status, reason, body = await self._on_connection(origin, request, content, phase, fresh=True)
        else:
            async with self._slots:
                status, reason, body = await self._on_connection(origin, request, content, phase, fresh=False)
        if _httpx_log.isEnabledFor(logging.INFO):
            _httpx_log.info(
                'HTTP Request: %s %s "%s %d %s"', method, url, "HTTP/1.1", status,
                reason.decode("latin-1"),
            )  # fmt: skip
        return status, body

    async def _on_connection(
        self, origin: tuple[str, str, int], request: h11.Request, content: bytes | None, phase: Any,
        *, fresh: bool,
    ) -> tuple[int, bytes, bytes]:
        """One exchange on an idle pooled connection (or a new one); the connection goes back
        to the pool only after a complete exchange that leaves it reusable."""
        conn = None if fresh else self._take_idle(origin)
        if conn is None:
            conn = await self._connect(origin)
        ok = False
        try:
            answer = await self._exchange(conn, request, content, phase)
            ok = True
        finally:
            h = conn.h11
            if ok and not fresh and h.our_state is h11.DONE and h.their_state is h11.DONE:
                h.start_next_cycle()
                conn.idle_since = trio.current_time()
                self._idle.setdefault(origin, []).append(conn)
            else:
                await trio.aclose_forcefully(conn.stream)
        return answer

    def _take_idle(self, origin: tuple[str, str, int]) -> _Conn | None:
        idle = self._idle.get(origin)
        now = trio.current_time()
        while idle:
            conn = idle.pop()  # the most recently used first
            if now - conn.idle_since <= self._expiry and not conn.socket.is_readable():
                return conn
            # Expired, or the device closed it (or sent something unasked): not usable.
            conn.socket.close()
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> _Conn:
        scheme, host, port = origin
        try:
            tcp = await trio.open_tcp_stream(host, port)
        except OSError as exc:
            raise httpx.ConnectError(str(exc)) from exc
        stream: trio.abc.Stream = tcp
        if scheme == "https":
            if self._ssl is None:
                self._ssl = _tls_context(self._verify)
            tls = trio.SSLStream(tcp, self._ssl, server_hostname=host, https_compatible=True)
            try:
                await tls.do_handshake()
            except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
                await trio.aclose_forcefully(tcp)
                cause = exc.__cause__ if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ else exc
                raise httpx.ConnectError(str(cause)) from exc
            except BaseException:
                await trio.aclose_forcefully(tcp)
                raise
            stream = tls
        return _Conn(stream, tcp.socket)

    async def _exchange(
        self, conn: _Conn, request: h11.Request, content: bytes | None, phase: Any
    ) -> tuple[int, bytes, bytes]:
        """(status, reason phrase, body)."""
        h = conn.h11
        try:
            data = h.send(request) or b""
            if content:
                data += h.send(h11.Data(data=content)) or b""
            data += h.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError as exc:
            raise httpx.LocalProtocolError(str(exc)) from exc
        phase.traced = True
        try:
            await conn.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise httpx.WriteError(str(exc.__cause__ or exc) or type(exc).__name__) from exc
        phase.request_sent = True
        status, reason = 0, b""
        chunks: list[bytes] = []
        while True:
            try:
                event = h.next_event()
            except h11.RemoteProtocolError as exc:
                raise httpx.RemoteProtocolError(str(exc)) from exc
            if event is h11.NEED_DATA:
                try:
                    got = await conn.stream.receive_some(READ_SIZE)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    raise httpx.ReadError(str(exc.__cause__ or exc) or type(exc).__name__) from exc
                if not got and h.their_state is h11.SEND_RESPONSE:
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
                try:
                    h.receive_data(got)
                except h11.RemoteProtocolError as exc:
                    raise httpx.RemoteProtocolError(str(exc)) from exc
                continue
            kind = type(event)
            if kind is h11.Response:
                status, reason = event.status_code, event.reason
            elif kind is h11.Data:
                chunks.append(bytes(event.data))
            elif kind is h11.EndOfMessage:
                return status, reason, b"".join(chunks)
            elif kind is h11.ConnectionClosed:
                raise httpx.RemoteProtocolError("Server disconnected without sending a response.")
            # InformationalResponse (1xx): wait for the final answer.

    async def aclose(self) -> None:
        self.closed = True
        idle, self._idle = self._idle, {}
        for conns in idle.values():
            for conn in conns:
                await trio.aclose_forcefully(conn.stream)
