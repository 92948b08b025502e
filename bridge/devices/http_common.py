"""Plumbing shared by the HTTP device drivers (GoIP, LTE router, brevis.one).

The one question every HTTP driver must answer after a failed send is *could the device have
received the request?* The answer decides between ``SendOutcome.ERROR`` (certainly not sent:
retry) and ``SendOutcome.AMBIGUOUS`` (maybe sent: the scheduler's ambiguity policy).
``HttpDevice.request`` answers it once for all drivers:

* With httpx's own transport, httpcore's ``trace`` hook reports when the request headers were
  written. A request that failed before that point (waiting for a pooled connection,
  connecting, TLS handshake, failing to write) never reached the device.
* With another transport (``httpx.MockTransport`` in tests) there is no trace: the exception
  type decides (``NOT_SENT_ERRORS`` happen before the request is written); a deadline on such
  a transport counts as "maybe sent".

``HttpDevice`` also owns the device's HTTP client (keep-alive, a few pooled connections, no
environment proxies, no redirects, TLS verification as configured) and passes every error string
through the driver's ``Redactor`` before handing it back. That client is ``lan_http.LanHttpPool``
(h11 on trio streams: about a fifth of httpx's CPU per request, which a device with 32 lines
polled and sent through needs); a test that hands in an httpx transport gets an
``httpx.AsyncClient`` on it instead. Both raise httpx's exception types and mark the moment the
request was written in the same ``RequestPhase``.
"""

from __future__ import annotations

import os
import ssl
import urllib.parse
from collections.abc import Callable, Iterable, Mapping

import attrs
import httpx
import trio

from bridge.devices.base import ChannelHealth, DeviceError, DeviceHealth, SendOutcome, SendResult
from bridge.devices.lan_http import LanHttpPool, basic_auth_header

__all__ = [
    "DETAIL_BODY_LIMIT",
    "CallCounters",
    "NOT_SENT_ERRORS",
    "HttpAnswer",
    "HttpDevice",
    "RequestPhase",
    "decode_body",
    "encode_pairs",
    "quote_value",
    "snippet",
    "tls_verify_option",
    "validate_base_url",
]

DETAIL_BODY_LIMIT = 120


def decode_body(body: bytes | str) -> str:
    """A device answer as text: UTF-8 when it is, else latin-1 (never fails)."""
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return body.decode("latin-1")


def snippet(text: str, limit: int = DETAIL_BODY_LIMIT) -> str:
    """A device answer made safe to quote: printable, one line, bounded. (Not redacted.)"""
    cleaned = "".join(
        ch if ch.isprintable() else "?" for ch in text.replace("\n", " ").replace("\r", " ")
    )
    cleaned = " ".join(cleaned.split())
    if len(cleaned) > limit:
        cleaned = cleaned[: limit - 1] + "\u2026"
    return repr(cleaned)


def quote_value(value: str) -> str:
    """Percent-encode one query/form value: UTF-8, ``%20`` for spaces (not ``+``: embedded CGI
    parsers do not all turn ``+`` into a space), every reserved character escaped."""
    return urllib.parse.quote(value, safe="")


def encode_pairs(pairs: Iterable[tuple[str, str]]) -> str:
    """``k=v&k=v`` with ``quote_value``: usable as a query string and as a form body."""
    return "&".join(f"{quote_value(k)}={quote_value(v)}" for k, v in pairs)


def validate_base_url(name: str, base_url: str) -> str:
    """Check a device's ``base_url`` (http(s)://host[:port][/prefix]) and strip its trailing '/'."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise DeviceError(
            f"device {name!r}: base_url must be http(s)://host[:port], "
            f"got a {parsed.scheme or 'bad'} URL"
        )
    if parsed.username or parsed.password or parsed.query:
        raise DeviceError(f"device {name!r}: put credentials in username/password, not in base_url")
    return base_url.rstrip("/")


def tls_verify_option(name: str, verify_tls: bool | str) -> bool | ssl.SSLContext:
    """``verify_tls`` as httpx wants it: True (system CAs), False (no verification: a LAN device
    with a self-signed certificate), or the path of a CA file / directory that signed the
    device's certificate (host name checking stays on)."""
    if isinstance(verify_tls, bool):
        return verify_tls
    if isinstance(verify_tls, str) and verify_tls:
        try:
            if os.path.isdir(verify_tls):
                return ssl.create_default_context(capath=verify_tls)
            return ssl.create_default_context(cafile=verify_tls)
        except (OSError, ssl.SSLError) as exc:
            raise DeviceError(
                f"device {name!r}: verify_tls: cannot load CA certificates from {verify_tls!r}: {exc}"
            ) from None
    raise DeviceError(
        f"device {name!r}: verify_tls must be true, false or a CA file path, got {verify_tls!r}"
    )


@attrs.define
class HttpAnswer:
    """One device call: an HTTP answer, or why none came back."""

    status: int | None = None
    body: bytes = b""
    #: Set when no HTTP answer came back (redacted description).
    error: str | None = None
    #: With ``error``: the request may have reached the device.
    maybe_sent: bool = False

    @property
    def text(self) -> str:
        return decode_body(self.body)


@attrs.define
class RequestPhase:
    """Tracks, through httpcore's trace hook, whether the request left for the device."""

    traced: bool = False
    request_sent: bool = False

    async def trace(self, name: str, info: Mapping[str, object]) -> None:
        self.traced = True
        if name.endswith("send_request_headers.complete"):
            self.request_sent = True


# Exceptions raised before the request was written (used when no trace info is available,
# e.g. with a custom transport): the device cannot have seen the request.
NOT_SENT_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.UnsupportedProtocol,
)


# The connection was there but the device had closed it (or closed it under the request).
CONNECTION_CLOSED_ERRORS = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)


class _Borrowed:
    """``async with`` around a client that is not ours to close."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        return None


class HttpDevice:
    """The HTTP client of one device, and the "did it reach the device?" bookkeeping."""

    def __init__(
        self,
        *,
        timeout: float,
        redact: Callable[[str], str],
        transport: httpx.AsyncBaseTransport | None = None,
        verify: bool | ssl.SSLContext = True,
        max_connections: int = 4,
        keepalive_expiry: float = 5.0,
        user_agent: str = "smpp-bridge",
    ):
        self.timeout = timeout
        self._redact = redact
        self._user_agent = user_agent
        # httpcore's trace hook tells whether the request was written; other transports
        # (httpx.MockTransport in tests) do not call it.
        self._traceable = transport is None or isinstance(transport, httpx.AsyncHTTPTransport)
        # Without a test transport: the lean client for LAN devices (lan_http.py), ~5x less
        # CPU per request than httpx.AsyncClient, same errors, deadlines and "was it sent?".
        self._lan: LanHttpPool | None = None
        self._client: httpx.AsyncClient | None = None
        if transport is None:
            self._lan = LanHttpPool(
                verify=verify,
                max_connections=max_connections,
                keepalive_expiry=keepalive_expiry,
                user_agent=user_agent,
            )
        else:
            self._client = self._new_client(transport)
        self._auth_headers: dict[int, tuple[httpx.Auth, str]] = {}
        self.closed = False
        self.fresh_retries = 0  # reads asked again on a fresh connection (see request)

    def _new_client(self, transport: httpx.AsyncBaseTransport) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(self.timeout),
            follow_redirects=False,
            trust_env=False,  # a LAN device: never through an environment proxy
            headers={"User-Agent": self._user_agent},
        )

    async def request(
        self,
        method: str,
        url: str,
        *,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        idempotent: bool = False,
    ) -> HttpAnswer:
        """One request with an overall deadline of ``timeout`` seconds. Never raises for
        network trouble: that comes back as ``HttpAnswer.error`` with ``maybe_sent``.

        Devices close idle keep-alive connections; when the close crosses our next request on
        the pooled connection, that request fails with the connection gone, which cannot be
        told from a device that took it and died. An ``idempotent`` request (a read: a status
        poll, an inbox page) is then asked once more, on a fresh connection (the other pooled
        ones may be as stale), within the same deadline. Anything else (a send) is never
        repeated blind: its answer says it may have reached the device."""
        started = trio.current_time()
        request = (method, url, content, headers, auth)
        answer, closed = await self._request_once(self._client, *request, timeout=self.timeout)
        left = started + self.timeout - trio.current_time()
        if closed and idempotent and left > 0:
            self.fresh_retries += 1
            if self._lan is not None:
                answer, _ = await self._request_once(None, *request, timeout=left, fresh=True)
            else:
                async with self._fresh_client() as client:
                    answer, _ = await self._request_once(client, *request, timeout=left)
        return answer

    def _fresh_client(self) -> httpx.AsyncClient:
        """With a transport given for tests: that one (no other connection to open)."""
        return _Borrowed(self._client)  # type: ignore[arg-type, return-value]

    def _authorization(self, auth: httpx.Auth | None) -> str | None:
        """The Authorization header of ``auth`` (an ``httpx.BasicAuth``), worked out once."""
        if auth is None:
            return None
        known = self._auth_headers.get(id(auth))
        if known is None or known[0] is not auth:
            known = self._auth_headers[id(auth)] = (auth, basic_auth_header(auth))
        return known[1]

    async def _request_once(
        self,
        client: httpx.AsyncClient | None,
        method: str,
        url: str,
        content: bytes | None,
        headers: Mapping[str, str] | None,
        auth: httpx.Auth | None,
        *,
        timeout: float,
        fresh: bool = False,
    ) -> tuple[HttpAnswer, bool]:
        """(the answer, whether the connection was found closed by the device). ``client``
        None: the lean pool (``fresh``: on a new connection)."""
        phase = RequestPhase()
        try:
            with trio.move_on_after(timeout):
                if client is None:
                    assert self._lan is not None
                    status, body = await self._lan.request(
                        method, url, content=content, headers=headers,
                        authorization=self._authorization(auth), phase=phase, fresh=fresh,
                    )  # fmt: skip
                    return HttpAnswer(status=status, body=body), False
                response = await client.request(
                    method,
                    url,
                    content=content,
                    headers=headers,
                    auth=auth,
                    extensions={"trace": phase.trace},
                )
                return HttpAnswer(status=response.status_code, body=response.content), False
            return HttpAnswer(
                error=f"no answer within {self.timeout:g}s",
                maybe_sent=self.maybe_sent(phase, None),
            ), False
        except httpx.RequestError as exc:
            text = str(exc) or "no details"
            closed = isinstance(exc, CONNECTION_CLOSED_ERRORS)
            return HttpAnswer(
                error=self._redact(f"{type(exc).__name__}: {text}"),
                maybe_sent=self.maybe_sent(phase, exc),
            ), closed

    def maybe_sent(self, phase: RequestPhase, exc: Exception | None) -> bool:
        """Could the device have received the request that failed?"""
        if self._traceable or phase.traced:
            # Waiting for a pooled connection, connecting, or failing to write: not sent.
            return phase.request_sent
        if exc is None:
            return True  # deadline on an opaque transport: assume the worst
        return not isinstance(exc, NOT_SENT_ERRORS)

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            if self._lan is not None:
                await self._lan.aclose()
            if self._client is not None:
                await self._client.aclose()


@attrs.define
class CallCounters:
    """A driver's running tally of failed device calls, behind ``DeviceHealth``.

    ``ok`` after a good authenticated answer; ``failed`` after anything else (transport error,
    garbage, refusal). ``protocol`` marks answers the driver could not understand; ``auth``
    marks a device that refused our credentials (or, for a router, has its API switched off).
    """

    protocol_errors: int = 0
    consecutive_errors: int = 0
    last_error: str = ""
    auth_failed: bool = False

    def ok(self) -> None:
        self.consecutive_errors = 0
        self.auth_failed = False

    def health(
        self, *, reachable: bool, detail: str, channels: Mapping[str, ChannelHealth],
        redact: Callable[[str], str],
    ) -> DeviceHealth:
        """What a health check reports, with these counters behind it (``detail`` redacted)."""
        return DeviceHealth(
            reachable=reachable,
            detail=redact(detail),
            channels=dict(channels),
            auth_failed=self.auth_failed,
            protocol_errors=self.protocol_errors,
            consecutive_errors=self.consecutive_errors,
        )

    def failed(self, detail: str, *, protocol: bool = False, auth: bool = False) -> None:
        self.consecutive_errors += 1
        self.last_error = detail
        if protocol:
            self.protocol_errors += 1
        if auth:
            self.auth_failed = True

    def judge_send(
        self,
        answer: HttpAnswer,
        classify: Callable[[int, bytes | str], tuple[SendResult, bool]],
        redact: Callable[[str], str],
    ) -> SendResult:
        """The SendResult for one send call's answer, counted here: a transport failure is
        ERROR (the request never left) or AMBIGUOUS (it may have reached the device); a device
        answer goes through ``classify(status, body) -> (result, was_garbage)``; every detail
        is redacted."""
        if answer.error is not None:
            self.failed(answer.error)
            if answer.maybe_sent:
                return SendResult(
                    SendOutcome.AMBIGUOUS,
                    detail=f"request sent, no answer ({answer.error}): the SMS may or may not have gone out",
                )
            return SendResult(SendOutcome.ERROR, detail=f"not sent: {answer.error}")
        assert answer.status is not None
        result, garbage = classify(answer.status, answer.body)
        result = attrs.evolve(result, detail=redact(result.detail))
        if result.outcome is SendOutcome.AUTH_FAILED:
            self.failed(result.detail, auth=True)
        elif result.outcome in (SendOutcome.ERROR, SendOutcome.AMBIGUOUS):
            self.failed(result.detail, protocol=garbage)
        else:
            self.ok()
        return result

    def summary(self) -> str:
        """"" or "N failed call(s) in a row, last: ..." for a health detail."""
        if not self.consecutive_errors:
            return ""
        return f"{self.consecutive_errors} failed call(s) in a row, last: {self.last_error}"
