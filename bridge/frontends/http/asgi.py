"""Assembles the bridge's HTTP routes into one Starlette (ASGI) app.

Every route is declared as a `Route` (method, path template, handler, guard) by the module that
owns it: bridge/admin.py (operations), bridge/frontends/http/api.py (the send API) and
bridge/frontends/http/webhooks.py (SMSGate phones). This module only turns that table into
Starlette routes, so that route matching, HEAD, 405 with ``Allow`` and the wire (hypercorn) are
the framework's; and it keeps the rules every route shares:

* a handler sees a `Request` (bridge/http/server.py: method, path, first-wins query, lower-case
  headers, the whole body, the peer) and returns a `Response`; the body is read with a limit
  (413 beyond it), so no handler buffers an unbounded upload;
* a route's guard runs before its handler (token, Origin, Host checks; bridge/admin.py);
* an `ApiError` becomes a JSON answer naming the error and what to do next; any other exception
  a 500 that points at the log (the log gets the traceback, the client does not);
* every answer carries ``Cache-Control: no-store`` and is counted by endpoint template and status.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request as StarletteRequest
from starlette.responses import Response as StarletteResponse
from starlette.routing import BaseRoute, Route as StarletteRoute

from ...http.server import Request, Response, first_values, json_response

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


class ApiError(Exception):
    """An answer other than success: status, what went wrong, what to do next."""

    def __init__(self, status: int, error: str, hint: str = "", *,
                 headers: Sequence[tuple[str, str]] = (), **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint
        self.headers = list(headers)
        self.extra = extra

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.error}
        if self.hint:
            body["hint"] = self.hint
        body.update(self.extra)
        return json_response(body, status=self.status, headers=list(self.headers))


Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]
Guard = Callable[[Request], None]


@attrs.frozen
class Route:
    method: str
    template: str  # Starlette path syntax: /api/messages/{message_id}
    handler: Handler
    guard: Guard | None = None


async def read_body(request: StarletteRequest, limit: int) -> bytes:
    """The request body (Content-Length or chunked), refusing more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"the body is {declared} bytes; at most {limit} are taken",
                       "send a smaller body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, f"the body is over {limit} bytes", "send a smaller body")
        chunks.append(chunk)
    return b"".join(chunks)


def _peer(request: StarletteRequest) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client is not None else ""


async def to_request(request: StarletteRequest, limit: int) -> Request:
    body = b"" if request.method in ("GET", "HEAD") else await read_body(request, limit)
    headers: dict[str, str] = {}
    for name, value in request.headers.items():
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    raw_target = request.scope.get("raw_path", b"") or request.url.path.encode()
    query_string = request.scope.get("query_string", b"").decode("latin-1")
    target = raw_target.decode("latin-1") + (f"?{query_string}" if query_string else "")
    return Request(request.method, target, request.url.path, first_values(query_string), headers, body,
                   peer=_peer(request))


def to_starlette(resp: Response) -> StarletteResponse:
    out = StarletteResponse(resp.body_bytes(), status_code=resp.status, media_type=None)
    names = {n.lower() for n, _ in resp.headers}
    if resp.content_type and "content-type" not in names:
        out.raw_headers.append((b"content-type", resp.content_type.encode("latin-1")))
    for name, value in resp.headers:
        out.raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return out


def build_app(routes: Sequence[Route], *, on_answer: Callable[[str, int], None] | None = None,
              max_body_bytes: int = MAX_BODY_BYTES, mounts: Sequence[BaseRoute] = ()) -> Starlette:
    """One Starlette app serving ``routes``; ``on_answer(template, status)`` counts each answer.
    ``mounts`` are whole sub-apps with rules of their own (the web console at /console)."""
    by_template: dict[str, dict[str, Route]] = {}
    for r in routes:
        methods = by_template.setdefault(r.template, {})
        if r.method in methods:
            raise ValueError(f"two routes for {r.method} {r.template}")
        methods[r.method] = r

    def counted(template: str, resp: Response) -> StarletteResponse:
        resp.headers.append(("Cache-Control", "no-store"))
        if on_answer is not None:
            on_answer(template, resp.status)
        return to_starlette(resp)

    def endpoint_for(template: str, methods: dict[str, Route]) -> Callable[..., Awaitable[StarletteResponse]]:
        async def endpoint(request: StarletteRequest) -> StarletteResponse:
            method = "GET" if request.method == "HEAD" else request.method
            route = methods[method]
            try:
                req = await to_request(request, max_body_bytes)
                if route.guard is not None:
                    route.guard(req)
                resp = await route.handler(req, {k: str(v) for k, v in request.path_params.items()})
            except ApiError as exc:
                resp = exc.response()
            except Exception:
                log.exception("HTTP: %s %s failed", request.method, template)
                resp = ApiError(500, "internal error", "the bridge's log has the details").response()
            return counted(template, resp)

        return endpoint

    starlette_routes: list[BaseRoute] = []
    for template, methods in by_template.items():
        starlette_routes.append(StarletteRoute(template, endpoint_for(template, methods), methods=list(methods)))

    async def not_found(request: StarletteRequest, exc: Exception) -> StarletteResponse:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            err = ApiError(405, f"{request.method} is not allowed on {request.url.path}", f"use {allowed}",
                           headers=[("Allow", allowed)], allowed=allowed.split(", "))
        elif exc.status_code == 404:
            err = ApiError(404, f"no such endpoint: {request.url.path}",
                           "GET /api/openapi.json lists every endpoint")
        else:
            err = ApiError(exc.status_code, str(exc.detail))
        return counted("other", err.response())

    starlette_routes.extend(mounts)
    app = Starlette(routes=starlette_routes, exception_handlers={404: not_found, 405: not_found})
    app.state.routes = list(routes)
    return app


def secret_digest(text: str) -> bytes:
    """SHA-256 of a secret: compare digests with hmac.compare_digest, so not even the length leaks."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def json_body(req: Request) -> Any:
    """The body as JSON, or a 400 that says so."""
    try:
        return json.loads(req.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "the body is not JSON", "send a JSON object with Content-Type: application/json") from None
