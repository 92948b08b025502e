"""Admin HTTP: Prometheus metrics, health, and the operations API.

Rules
-----
* Its own listener (``admin.host``/``admin.port``, TLS with ``admin.tls: {cert, key}``),
  loopback by default; the config refuses a non-loopback host without a token.
* ``/metrics``, ``/healthz`` and ``/readyz`` are open (Prometheus and systemd probes carry no
  token). Everything under ``/api/`` needs the token when one is configured, sent as
  ``Authorization: Bearer TOKEN`` or ``X-Admin-Token: TOKEN``, compared in constant time
  (hmac.compare_digest of SHA-256 digests, so not even the length leaks).
* Without a token (loopback only) a request must name a loopback Host (no DNS rebinding), and a
  request from a browser page of another origin (an ``Origin`` header that is not this server)
  is refused, token or not: a web page cannot make a local bridge reload or pause a channel.
* Reads never change anything. Writes: opt-outs, pause/resume/drain of a channel, reload.
* The listener, the wire and the shared rules (body limit, error answers, counting) are
  bridge/frontends/http/; the SMSGate phones' webhooks and the send API are served on the same
  port by their own modules there.
* Every answer is JSON (``/metrics`` and PDU log downloads excepted); errors say what to do next.
  The OpenAPI 3 description is at ``/api/openapi.json`` (`bridge.openapi`).
"""

from __future__ import annotations

import hmac
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from . import __version__
from .frontends.http.asgi import ApiError, Route, secret_digest
from .http.server import Request, Response, json_response
from .status import iso

log = logging.getLogger(__name__)

__all__ = ["AdminApi", "AdminParts", "ApiError"]

NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
DRAIN_DEFAULT_SECONDS = 60.0
DRAIN_MAX_SECONDS = 600.0


@attrs.frozen
class AdminParts:
    """Everything the admin API may touch; bridge/app.py wires it once. Nothing else of the
    running bridge is reachable from a request."""

    token: Any  # Secret | None: fixed at start, like the listener (changing admin needs a restart)
    registry: CollectorRegistry  # what /metrics exposes
    store: Any  # message lookups and the opt-out list
    status: Callable[[], Awaitable[dict[str, Any]]]  # the /api/status document (bridge/status.py)
    readiness: Callable[[], dict[str, str]]  # /readyz checks other than the store's
    channels: Callable[[], Mapping[str, Any] | None]  # running channels by key; None: no scheduler
    reload: Callable[[], Awaitable[dict[str, Any]]]
    pdu_log: Any = None  # bridge.logs.PduLog | None


class AdminApi:
    """The admin routes and their guards (token, Host, Origin)."""

    AUTH_LOG_SECONDS = 10.0

    def __init__(self, parts: AdminParts) -> None:
        self.parts = parts
        self._token_digest = secret_digest(parts.token.reveal()) if parts.token is not None else None
        self._last_auth_log = -math.inf
        self._auth_failures = 0
        r = Route
        open_, guarded = self.check_origin, self.guard
        self.routes: list[Route] = [
            r("GET", "/metrics", self.get_metrics, open_),
            r("GET", "/healthz", self.get_healthz, open_),
            r("GET", "/readyz", self.get_readyz, open_),
            r("GET", "/api/openapi.json", self.get_openapi, guarded),
            r("GET", "/api/status", self.get_status, guarded),
            r("GET", "/api/messages", self.find_messages, guarded),
            r("GET", "/api/messages/{message_id}", self.get_message, guarded),
            r("GET", "/api/optouts", self.list_optouts, guarded),
            r("POST", "/api/optouts", self.add_optout, guarded),
            r("DELETE", "/api/optouts/{number}", self.remove_optout, guarded),
            r("POST", "/api/channels/{channel}/pause", self.pause_channel, guarded),
            r("POST", "/api/channels/{channel}/resume", self.resume_channel, guarded),
            r("POST", "/api/channels/{channel}/drain", self.drain_channel, guarded),
            r("POST", "/api/reload", self.reload, guarded),
            r("GET", "/api/pdu-logs", self.list_pdu_logs, guarded),
            r("GET", "/api/pdu-logs/{esme}/{date}", self.get_pdu_log, guarded),
        ]

    def guard(self, req: Request) -> None:
        """Origin/Host, then the token: the checks of every /api/ route."""
        self.check_origin(req)
        self._check_auth(req)

    def check_origin(self, req: Request) -> None:
        self._check_origin(req)

    def _check_origin(self, req: Request) -> None:
        origin = req.headers.get("origin")
        host = req.headers.get("host", "")
        if origin is not None and (origin == "null" or urllib.parse.urlsplit(origin).netloc.lower() != host.lower()):
            raise ApiError(403, "requests from web pages of another origin are refused",
                           "call the admin API from a script or curl, not from a browser page")
        if self._token_digest is None:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            if host and name.lower() not in LOOPBACK_HOSTS:
                raise ApiError(403, f"Host {host!r} is not a loopback name",
                               "without admin.token the admin API answers only to 127.0.0.1, ::1 or localhost")

    def _check_auth(self, req: Request) -> None:
        if self._token_digest is None:
            return
        given = req.headers.get("x-admin-token")
        if given is None:
            scheme, _, value = req.headers.get("authorization", "").partition(" ")
            given = value.strip() if scheme.lower() == "bearer" else None
        ok = given is not None and hmac.compare_digest(secret_digest(given), self._token_digest)
        if ok:
            return
        self._auth_failures += 1
        now = time.monotonic()
        if now - self._last_auth_log >= self.AUTH_LOG_SECONDS:
            self._last_auth_log = now
            log.warning("admin API: %s token from %s (%d refused so far)",
                        "missing" if given is None else "wrong", req.peer, self._auth_failures)
        raise ApiError(
            401,
            "missing admin token" if given is None else "wrong admin token",
            headers=[("WWW-Authenticate", 'Bearer realm="smpp-bridge admin"')],
            hint=
            "send the admin token (admin.token, token_env or token_file in the bridge's config) "
            "as 'Authorization: Bearer TOKEN' or 'X-Admin-Token: TOKEN'",
        )

    # -- open endpoints -------------------------------------------------------------------------

    async def get_metrics(self, req: Request, _p: dict[str, str]) -> Response:
        body = generate_latest(self.parts.registry)
        return Response(200, body, content_type=CONTENT_TYPE_LATEST)

    async def get_healthz(self, req: Request, _p: dict[str, str]) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def get_readyz(self, req: Request, _p: dict[str, str]) -> Response:
        checks = dict(self.parts.readiness())
        try:
            with trio.fail_after(5):
                await self.parts.store.ping()
            checks["store"] = "ok"
        except Exception as exc:
            checks["store"] = f"cannot read: {type(exc).__name__}: {exc}"
        ready = all(v == "ok" for v in checks.values())
        return json_response({"ready": ready, "checks": checks}, status=200 if ready else 503)

    # -- status ---------------------------------------------------------------------------------

    async def get_openapi(self, req: Request, _p: dict[str, str]) -> Response:
        from .openapi import spec

        return json_response(spec())

    async def get_status(self, req: Request, _p: dict[str, str]) -> Response:
        return json_response(await self.parts.status())

    # -- messages -------------------------------------------------------------------------------

    async def get_message(self, req: Request, p: dict[str, str]) -> Response:
        mid = p["message_id"]
        store = self.parts.store
        rec = await store.get(mid)
        if rec is None:
            raise ApiError(404, f"no message with id {mid!r}",
                           "use the message_id of the submit_sm_resp (10 digits), "
                           "or GET /api/messages?number=+49... to search by number")
        return json_response(await message_document(store, rec))

    async def find_messages(self, req: Request, _p: dict[str, str]) -> Response:
        number = req.query.get("number", "")
        # A '+' in a query string means a space unless written %2B; numbers have no spaces.
        if number.startswith(" "):
            number = "+" + number.lstrip()
        number = number.strip()
        if not NUMBER_RE.match(number):
            raise ApiError(400, f"expected ?number=+4917..., got {number!r}",
                           "give the destination number in international format (write + as %2B)")
        try:
            limit = int(req.query.get("limit", "20"))
        except ValueError:
            raise ApiError(400, "limit must be a whole number from 1 to 200") from None
        if not 1 <= limit <= 200:
            raise ApiError(400, "limit must be a whole number from 1 to 200")
        store = self.parts.store
        found = await store.find_by_number(number, limit)
        out = []
        for rec in found:
            events = await store.events(rec.message_id)
            out.append({**_record(rec), "events": _history(rec, events)})
        return json_response({"number": number, "messages": out})

    # -- opt-outs -------------------------------------------------------------------------------

    def _optout_store(self, method: str) -> Callable[..., Awaitable[Any]]:
        fn = getattr(self.parts.store, method, None)
        if fn is None:
            raise ApiError(501, "opt-outs are not available in this version of the bridge")
        return fn

    async def list_optouts(self, req: Request, _p: dict[str, str]) -> Response:
        rows = await self._optout_store("list_optouts")()
        return json_response({"optouts": [_jsonable(r) for r in rows]})

    async def add_optout(self, req: Request, _p: dict[str, str]) -> Response:
        number = _body_field(req, "number")
        if not NUMBER_RE.match(number):
            raise ApiError(400, f"expected a phone number like +4917012345678, got {number!r}")
        added = await self._optout_store("add_optout")(number)
        if added:
            log.info("opt-out added through the admin API from %s", req.peer)
        return json_response({"number": number, "opted_out": True, "already_listed": not added},
                             status=201 if added else 200)

    async def remove_optout(self, req: Request, p: dict[str, str]) -> Response:
        number = p["number"].strip()
        if number.startswith(" "):
            number = "+" + number.lstrip()
        if not NUMBER_RE.match(number):
            raise ApiError(400, f"expected a phone number like +4917012345678, got {number!r}",
                           "write + as %2B in the path")
        removed = await self._optout_store("remove_optout")(number)
        if removed is False or removed == 0:
            raise ApiError(404, f"{number} is not on the opt-out list", "GET /api/optouts lists it")
        log.info("opt-out removed through the admin API from %s", req.peer)
        return json_response({"number": number, "opted_out": False})

    # -- channels -------------------------------------------------------------------------------

    def _channel(self, key: str) -> Any:
        channels = self.parts.channels()
        if channels is None:
            raise ApiError(404, "this bridge runs no channels (no routes are configured)")
        ch = channels.get(key)
        if ch is None:
            raise ApiError(404, f"no running channel {key!r}",
                           "channels are DEVICE:CHANNEL, e.g. goip1:3; GET /api/status lists them")
        return ch

    @staticmethod
    def _channel_view(ch: Any) -> dict[str, Any]:
        return {"channel": ch.key, "state": ch.state, "paused": ch.paused, "busy": ch.busy}

    async def pause_channel(self, req: Request, p: dict[str, str]) -> Response:
        ch = self._channel(p["channel"])
        ch.pause()
        log.info("channel %s paused through the admin API", ch.key)
        return json_response({**self._channel_view(ch),
                              "note": "a message in progress is finished first; it takes no new ones"})

    async def resume_channel(self, req: Request, p: dict[str, str]) -> Response:
        ch = self._channel(p["channel"])
        ch.resume()
        log.info("channel %s resumed through the admin API", ch.key)
        return json_response(self._channel_view(ch))

    async def drain_channel(self, req: Request, p: dict[str, str]) -> Response:
        """Pause, then wait until the message in progress is done (up to ?timeout= seconds)."""
        ch = self._channel(p["channel"])
        try:
            timeout = float(req.query.get("timeout", DRAIN_DEFAULT_SECONDS))
        except ValueError:
            raise ApiError(400, "timeout must be a number of seconds") from None
        log.info("channel %s draining through the admin API", ch.key)
        drained = await drain(ch, timeout)
        body = {**self._channel_view(ch), "drained": drained}
        if not drained:
            body["hint"] = "a message is still in progress; it takes no new ones. Poll GET /api/status"
        return json_response(body, status=200 if drained else 202)

    # -- reload ---------------------------------------------------------------------------------

    async def reload(self, req: Request, _p: dict[str, str]) -> Response:
        result = await self.parts.reload()
        return json_response(result, status=200 if result.get("ok") else 422)

    # -- PDU logs -------------------------------------------------------------------------------

    async def list_pdu_logs(self, req: Request, _p: dict[str, str]) -> Response:
        pl = self.parts.pdu_log
        if pl is None:
            return json_response({"enabled": False, "files": [],
                                  "hint": "set logging.pdu_log.enabled: true and restart to record PDUs"})
        pl.flush()
        files = await trio.to_thread.run_sync(pl.files)
        return json_response({
            "enabled": True,
            "dir": str(pl.dir),
            "retention_days": pl.retention_days,
            "files": [
                {
                    "esme": f.esme,
                    "date": f.date,
                    "bytes": f.bytes,
                    "url": f"/api/pdu-logs/{urllib.parse.quote(f.esme, safe='')}/{f.date}",
                }
                for f in files
            ],
        })  # fmt: skip

    async def get_pdu_log(self, req: Request, p: dict[str, str]) -> Response:
        pl = self.parts.pdu_log
        if pl is None:
            raise ApiError(404, "PDU logs are off", "set logging.pdu_log.enabled: true and restart")
        path = pl.path_for(p["esme"], p["date"])
        if path is None:
            raise ApiError(404, f"no PDU log for {p['esme']!r} on {p['date']!r}",
                           "GET /api/pdu-logs lists the files (dates are YYYY-MM-DD)")
        pl.flush()

        def read() -> bytes:
            with open(path, "rb") as f:
                return f.read(MAX_DOWNLOAD_BYTES + 1)

        data = await trio.to_thread.run_sync(read)
        if len(data) > MAX_DOWNLOAD_BYTES:
            raise ApiError(413, f"{path} is larger than {MAX_DOWNLOAD_BYTES // 2**20} MiB",
                           "copy it from the bridge's disk instead")
        name = f"{p['esme']}-{p['date']}.jsonl"
        safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)
        return Response(200, data, content_type="application/x-ndjson; charset=utf-8",
                        headers=[("Content-Disposition", f'attachment; filename="{safe}"')])


# -- helpers ------------------------------------------------------------------------------------


async def drain(ch: Any, timeout: float) -> bool:
    """Pause a channel, then wait (at most ``timeout`` s, capped) until the message in progress
    is done; True when it is. The admin API and the web console both drain with this."""
    timeout = min(max(timeout, 0.0), DRAIN_MAX_SECONDS)
    ch.pause()
    with trio.move_on_after(timeout):
        while ch.state != "paused":
            await trio.sleep(0.1)
    return bool(ch.state == "paused")


async def message_document(store: Any, rec: Any) -> dict[str, Any]:
    """One message as the APIs show it: the record, its history and its device parts."""
    events = await store.events(rec.message_id)
    parts = await store.parts(rec.id)
    return {
        "message": _record(rec),
        "events": _history(rec, events),
        "parts": [_part(x) for x in parts],
    }


def _record(rec: Any) -> dict[str, Any]:
    return {
        "id": rec.message_id,
        "esme": rec.esme,
        "state": rec.state.value,
        # The network's newest intermediate receipt while SENT (an upstream SMSC's ENROUTE,
        # ACCEPTD ...), else null.
        "network_stat": rec.network_stat,
        "source_addr": rec.source_addr,
        "destination_addr": rec.destination_addr,
        "service_type": rec.service_type,
        "data_coding": rec.data_coding,
        "registered_delivery": rec.registered_delivery,
        "priority": rec.priority,
        "text": rec.text,
        "body_octets": len(rec.body or b""),
        "esme_parts": rec.esme_parts,
        "error": rec.error,
        "created_at": iso(rec.created_at),
        "updated_at": iso(rec.updated_at),
        "schedule_at": iso(rec.schedule_at),
        "expire_at": iso(rec.expire_at),
        "final_at": iso(rec.final_at),
        "receipt_id": rec.receipt_message_id,
    }


def _history(rec: Any, events: list[Any]) -> list[dict[str, Any]]:
    """The store's events, after the acceptance itself (the store records no event for it:
    the message row's created_at is that moment)."""
    first = {"at": iso(rec.created_at), "state": "accepted", "detail": f"submitted by {rec.esme}, stored"}
    return [first] + [{"at": iso(e.at), "state": e.state, "detail": e.detail} for e in events]


def _part(p: Any) -> dict[str, Any]:
    return {
        "seq": p.seq,
        "total": p.total,
        "state": p.state,
        "channel": f"{p.device}:{p.channel}",
        "device_ref": p.ref,
        "error": p.error,
        "started_at": iso(p.started_at),
        "sent_at": iso(p.sent_at),
        "done_at": iso(p.done_at),
    }


def _jsonable(value: Any) -> Any:
    """Store results (attrs classes, tuples, enums) as JSON-ready values."""
    import enum

    import attrs

    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    if isinstance(value, dict):
        return {
            str(k): iso(v) if str(k).endswith("at") and isinstance(v, float) else _jsonable(v)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    return value


def _body_field(req: Request, name: str) -> str:
    if req.body and "json" in req.headers.get("content-type", "json"):
        try:
            data = req.json()
        except ValueError:
            raise ApiError(400, "the body is not JSON", f'send {{"{name}": "..."}}') from None
        if not isinstance(data, dict) or not isinstance(data.get(name), str):
            raise ApiError(400, f"expected a JSON object with a string {name!r}", f'send {{"{name}": "..."}}')
        return data[name].strip()
    value = req.params.get(name)
    if not value:
        raise ApiError(400, f"missing {name!r}", f'send a JSON body {{"{name}": "..."}}')
    return value.strip()
