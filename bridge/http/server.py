"""A tiny HTTP/1.1 server on trio for the device emulators. The bridge's own HTTP port runs on
hypercorn + Starlette (bridge/frontends/http/); its handlers see this module's `Request` and
`Response` types, so both sides share one small vocabulary.

Small on purpose: GET/POST, query strings, urlencoded and JSON bodies, Basic auth, keep-alive
and pipelining, Content-Length bodies only. What it adds over a normal server is the ability
(used by the emulators only) to misbehave the way cheap GSM hardware does: answer with bare-LF
headers, answer slowly or byte by byte, never answer, or answer bytes that are not HTTP at all.

A handler is ``async def handler(request: Request) -> Response | Hang | RawReply``. A bad
request gets a 400 and the connection is closed; a handler that raises gets a 500; neither
harms the server or other connections.

Nothing here logs a request's query string, headers or body: emulated devices take credentials
there, and admin API clients send their token in a header.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import http
import json
import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio

__all__ = [
    "HANG",
    "Hang",
    "HttpServer",
    "RawReply",
    "Request",
    "Response",
    "json_response",
    "text_response",
    "unauthorized",
]

log = logging.getLogger(__name__)

_HEAD_END_CANDIDATES = (b"\r\n\r\n", b"\n\n", b"\n\r\n")


@attrs.frozen
class Request:
    method: str
    #: The raw request target, e.g. "/default/en_US/send.html?u=admin&p=admin".
    target: str
    #: Decoded path without the query string.
    path: str
    #: Query parameters; for a repeated name the first value wins.
    query: Mapping[str, str]
    #: Header names in lower case; repeated headers joined with ", ".
    headers: Mapping[str, str]
    body: bytes
    http_version: str = "1.1"
    peer: str = ""

    @property
    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded (empty if it is not)."""
        ctype = self.headers.get("content-type", "")
        if not self.body or "application/x-www-form-urlencoded" not in ctype:
            return {}
        return first_values(self.body.decode("utf-8", "replace"))

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not JSON)."""
        return json.loads(self.body.decode("utf-8"))

    @property
    def params(self) -> dict[str, str]:
        """Query parameters and form fields together (query wins)."""
        merged = dict(self.form)
        merged.update(self.query)
        return merged

    def basic_auth(self) -> tuple[str, str] | None:
        value = self.headers.get("authorization", "")
        scheme, _, token = value.partition(" ")
        if scheme.lower() != "basic" or not token:
            return None
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, sep, password = decoded.partition(":")
        if not sep:
            return None
        return user, password

    def check_basic_auth(self, username: str, password: str) -> bool:
        got = self.basic_auth()
        if got is None:
            return False
        return hmac.compare_digest(got[0].encode(), username.encode()) & hmac.compare_digest(
            got[1].encode(), password.encode()
        )


@attrs.define
class Response:
    status: int = 200
    body: bytes | str = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = attrs.Factory(list)
    #: Line ending of the status line and headers. b"\n" imitates firmware with bare-LF headers.
    eol: bytes = b"\r\n"
    #: Close the connection after this response (also sends "Connection: close").
    close: bool = False
    #: Leave out Content-Length; implies close (the body then ends when the connection does,
    #: the way HTTP/1.0 devices answer).
    close_delimited: bool = False
    #: Seconds to wait before answering.
    delay: float = 0.0
    #: Write the answer this many bytes at a time (0: all at once), with ``drip_pause`` between.
    drip: int = 0
    drip_pause: float = 0.0
    #: Status line version.
    http_version: str = "1.1"

    def body_bytes(self) -> bytes:
        return self.body.encode("utf-8") if isinstance(self.body, str) else self.body

    def to_bytes(self) -> bytes:
        body = self.body_bytes()
        reason = _reason(self.status)
        eol = self.eol
        lines = [f"HTTP/{self.http_version} {self.status} {reason}".encode("latin-1")]
        names = {name.lower() for name, _ in self.headers}
        if "content-type" not in names and self.content_type:
            lines.append(f"Content-Type: {self.content_type}".encode("latin-1"))
        if not self.close_delimited and "content-length" not in names:
            lines.append(f"Content-Length: {len(body)}".encode("latin-1"))
        if (self.close or self.close_delimited) and "connection" not in names:
            lines.append(b"Connection: close")
        for name, value in self.headers:
            lines.append(f"{name}: {value}".encode("latin-1"))
        return eol.join(lines) + eol + eol + body


@attrs.frozen
class Hang:
    """Never answer: keep the connection open (reading and discarding) until the client leaves."""


HANG = Hang()


@attrs.frozen
class RawReply:
    """Write these exact bytes (not necessarily HTTP), then close the connection."""

    data: bytes
    delay: float = 0.0


Reply = Response | Hang | RawReply
Handler = Callable[[Request], Awaitable[Reply]]


def text_response(text: str, status: int = 200, **kwargs: Any) -> Response:
    kwargs.setdefault("content_type", "text/plain; charset=utf-8")
    return Response(status=status, body=text, **kwargs)


def json_response(obj: Any, status: int = 200, **kwargs: Any) -> Response:
    kwargs.setdefault("content_type", "application/json")
    return Response(status=status, body=json.dumps(obj), **kwargs)


def unauthorized(realm: str = "device", **kwargs: Any) -> Response:
    headers = [("WWW-Authenticate", f'Basic realm="{realm}"')]
    return Response(status=401, body="401 Unauthorized", headers=headers, **kwargs)


class _BadRequest(Exception):
    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status


@attrs.define
class ServerStats:
    connections_opened: int = 0
    connections_open: int = 0
    requests: int = 0
    bad_requests: int = 0
    handler_errors: int = 0


class HttpServer:
    def __init__(
        self,
        handler: Handler,
        *,
        name: str = "emulator",
        keepalive_timeout: float = 60.0,
        max_head_bytes: int = 16 * 1024,
        max_body_bytes: int = 1024 * 1024,
    ):
        self.handler = handler
        self.name = name
        self.keepalive_timeout = keepalive_timeout
        self.max_head_bytes = max_head_bytes
        self.max_body_bytes = max_body_bytes
        self.stats = ServerStats()
        self.port: int | None = None

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen and serve until cancelled; ``task_status.started(actual_port)``."""
        listeners = await trio.open_tcp_listeners(port, host=host)
        if port == 0 and len(listeners) > 1:
            # Port 0 on a name with several addresses would give each its own random port.
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        self.port = listeners[0].socket.getsockname()[1]
        log.info("%s listening on %s:%d", self.name, host, self.port)
        task_status.started(self.port)
        await trio.serve_listeners(self.handle_stream, listeners)

    async def handle_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection (usable directly with in-memory streams in tests)."""
        self.stats.connections_opened += 1
        self.stats.connections_open += 1
        peer = _peer_name(stream)
        try:
            await self._serve_connection(stream, peer)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # noqa: BLE001 - one bad connection must not kill the server
            log.exception("%s: connection from %s failed", self.name, peer)
        finally:
            self.stats.connections_open -= 1
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                try:
                    await stream.aclose()
                except Exception:  # noqa: BLE001
                    pass

    async def _serve_connection(self, stream: trio.abc.Stream, peer: str) -> None:
        buffer = bytearray()
        while True:
            try:
                with trio.fail_after(self.keepalive_timeout):
                    request = await self._read_request(stream, buffer, peer)
            except trio.TooSlowError:
                return
            except _BadRequest as exc:
                self.stats.bad_requests += 1
                log.info("%s: bad request from %s: %s", self.name, peer, exc)
                await stream.send_all(
                    text_response(f"{exc.status} {exc}\n", status=exc.status, close=True).to_bytes()
                )
                return
            if request is None:
                return
            self.stats.requests += 1
            try:
                reply = await self.handler(request)
            except Exception:  # noqa: BLE001
                self.stats.handler_errors += 1
                log.exception(
                    "%s: handler failed on %s %s", self.name, request.method, request.path
                )
                reply = text_response(f"500 internal error in {self.name}\n", status=500, close=True)

            if isinstance(reply, Hang):
                await _drain_until_eof(stream)
                return
            if isinstance(reply, RawReply):
                if reply.delay:
                    await trio.sleep(reply.delay)
                await stream.send_all(reply.data)
                return
            if reply.delay:
                await trio.sleep(reply.delay)
            data = reply.to_bytes()
            if reply.drip > 0:
                for i in range(0, len(data), reply.drip):
                    await stream.send_all(data[i : i + reply.drip])
                    if reply.drip_pause:
                        await trio.sleep(reply.drip_pause)
            else:
                await stream.send_all(data)
            if reply.close or reply.close_delimited or not _keep_alive(request):
                return

    async def _read_request(
        self, stream: trio.abc.Stream, buffer: bytearray, peer: str
    ) -> Request | None:
        # Skip blank lines between pipelined requests (RFC 9112 2.2 allows it).
        while True:
            leading = len(buffer) - len(buffer.lstrip(b"\r\n"))
            if leading:
                del buffer[:leading]
            end, sep_len = _find_head_end(buffer)
            if end >= 0:
                break
            if len(buffer) > self.max_head_bytes:
                raise _BadRequest(431, "request head too large")
            chunk = await stream.receive_some(65536)
            if not chunk:
                if buffer:
                    raise _BadRequest(400, "connection closed mid-request")
                return None
            buffer += chunk
        head = bytes(buffer[:end])
        del buffer[: end + sep_len]

        lines = head.replace(b"\r\n", b"\n").split(b"\n")
        try:
            method, target, version = lines[0].decode("ascii").split(" ")
        except (UnicodeDecodeError, ValueError):
            raise _BadRequest(400, "malformed request line") from None
        if not version.startswith("HTTP/1.") or not method.isalpha() or not target:
            raise _BadRequest(400, "malformed request line")

        headers: dict[str, str] = {}
        for raw in lines[1:]:
            name, sep, value = raw.partition(b":")
            if not sep or not name or name != name.strip() or b" " in name:
                raise _BadRequest(400, "malformed header line")
            key = name.decode("latin-1").lower()
            val = value.strip().decode("latin-1")
            headers[key] = f"{headers[key]}, {val}" if key in headers else val

        if "chunked" in headers.get("transfer-encoding", "").lower():
            raise _BadRequest(501, "chunked request bodies are not supported")
        try:
            length = int(headers.get("content-length", "0"))
        except ValueError:
            raise _BadRequest(400, "bad Content-Length") from None
        if length < 0 or length > self.max_body_bytes:
            raise _BadRequest(413, "body too large")
        while len(buffer) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise _BadRequest(400, "connection closed mid-body")
            buffer += chunk
        body = bytes(buffer[:length])
        del buffer[:length]

        path_part, _, query_part = target.partition("?")
        return Request(
            method=method.upper(),
            target=target,
            path=urllib.parse.unquote(path_part),
            query=first_values(query_part),
            headers=headers,
            body=body,
            http_version=version[len("HTTP/") :],
            peer=peer,
        )


def _find_head_end(buffer: bytearray) -> tuple[int, int]:
    best, best_len = -1, 0
    for sep in _HEAD_END_CANDIDATES:
        idx = buffer.find(sep)
        if idx >= 0 and (best < 0 or idx < best):
            best, best_len = idx, len(sep)
    return best, best_len


def first_values(qs: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(qs, keep_blank_values=True, errors="replace"):
        out.setdefault(name, value)
    return out


def _keep_alive(request: Request) -> bool:
    connection = request.headers.get("connection", "").lower()
    if request.http_version == "1.0":
        return "keep-alive" in connection
    return "close" not in connection


async def _drain_until_eof(stream: trio.abc.Stream) -> None:
    while await stream.receive_some(65536):
        pass


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "Unknown"


def _peer_name(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    try:
        host, port = sock.getpeername()[:2]  # type: ignore[union-attr]
        return f"{host}:{port}"
    except Exception:  # noqa: BLE001
        return "?"
