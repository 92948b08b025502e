"""Admin HTTP: Prometheus metrics, health, and the operations API.

Rules
-----
* Its own listener (``admin.host``/``admin.port``), loopback by default; the config refuses a
  non-loopback host without a token.
* ``/metrics``, ``/healthz`` and ``/readyz`` are open (Prometheus and systemd probes carry no
  token). Everything under ``/api/`` needs the token when one is configured, sent as
  ``Authorization: Bearer TOKEN`` or ``X-Admin-Token: TOKEN``, compared in constant time
  (hmac.compare_digest of SHA-256 digests, so not even the length leaks).
* Without a token (loopback only) a request must name a loopback Host (no DNS rebinding), and a
  request from a browser page of another origin (an ``Origin`` header that is not this server)
  is refused, token or not: a web page cannot make a local bridge reload or pause a channel.
* Reads never change anything. Writes: opt-outs, pause/resume/drain of a channel, reload.
* ``POST /webhooks/smsgate/<device>`` takes an SMSGate phone's webhooks (inbound SMS, handset
  reports). The phone sends no token and calls from the LAN, so this one route skips the token
  and the loopback-Host/Origin checks: the HMAC signature over body and timestamp, made with the
  device's ``webhook_secret``, authenticates it (the driver checks it; 401 when it is wrong or
  stale). Bodies are small (the server's 64 KiB limit). This is why SMSGate webhooks need the
  admin port (admin.port not 0, on an address the phone reaches).
* Every answer is JSON (``/metrics`` and PDU log downloads excepted); errors say what to do next.
  The OpenAPI 3 description is at ``/api/openapi.json`` (`bridge.openapi`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .connectors.metrics import status as connector_status
from .http.server import HttpServer, Request, Response, json_response

log = logging.getLogger(__name__)

NUMBER_RE = re.compile(r"^\+?[0-9]{3,20}$")
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})
MAX_DOWNLOAD_BYTES = 256 * 1024 * 1024
DRAIN_DEFAULT_SECONDS = 60.0
DRAIN_MAX_SECONDS = 600.0


class ApiError(Exception):
    def __init__(self, status: int, error: str, hint: str = "", **extra: Any) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.hint = hint
        self.extra = extra

    def response(self) -> Response:
        body: dict[str, Any] = {"error": self.error}
        if self.hint:
            body["hint"] = self.hint
        body.update(self.extra)
        return json_response(body, status=self.status)


Handler = Callable[[Request, dict[str, str]], Awaitable[Response]]


class _Route:
    def __init__(self, method: str, template: str, handler: Handler, *, open: bool = False,
                 any_host: bool = False) -> None:
        self.method = method
        self.template = template
        self.handler = handler
        self.open = open
        # Called by devices, not people: no Host/Origin checks (it authenticates itself).
        self.any_host = any_host
        pattern = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template)
        self.regex = re.compile(f"^{pattern}$")


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


class AdminServer:
    """The admin HTTP server of one running `App`."""

    AUTH_LOG_SECONDS = 10.0

    def __init__(self, app: Any) -> None:
        self.app = app
        token = app.config.admin.token
        # Fixed at start, like the listener (changing admin needs a restart).
        self._token_digest = _digest(token.reveal()) if token is not None else None
        self.http = HttpServer(self.handle, name="admin API", keepalive_timeout=30.0,
                               max_body_bytes=64 * 1024)
        self.port: int | None = None
        self._last_auth_log = -math.inf
        self._auth_failures = 0
        r = _Route
        self.routes: list[_Route] = [
            r("GET", "/metrics", self.get_metrics, open=True),
            r("GET", "/healthz", self.get_healthz, open=True),
            r("GET", "/readyz", self.get_readyz, open=True),
            r("GET", "/api/openapi.json", self.get_openapi),
            r("GET", "/api/status", self.get_status),
            r("GET", "/api/messages", self.find_messages),
            r("GET", "/api/messages/{message_id}", self.get_message),
            r("GET", "/api/optouts", self.list_optouts),
            r("POST", "/api/optouts", self.add_optout),
            r("DELETE", "/api/optouts/{number}", self.remove_optout),
            r("POST", "/api/channels/{channel}/pause", self.pause_channel),
            r("POST", "/api/channels/{channel}/resume", self.resume_channel),
            r("POST", "/api/channels/{channel}/drain", self.drain_channel),
            r("POST", "/api/reload", self.reload),
            r("GET", "/api/pdu-logs", self.list_pdu_logs),
            r("GET", "/api/pdu-logs/{esme}/{date}", self.get_pdu_log),
            r("POST", "/webhooks/smsgate/{device}", self.smsgate_webhook, open=True, any_host=True),
        ]

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        cfg = self.app.config.admin
        try:
            listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"admin HTTP cannot listen on {cfg.host}:{cfg.port}: {exc.strerror}. "
                "Set admin.port to a free port, or to 0 to turn the admin HTTP server off",
            ) from None
        if cfg.port == 0:
            for extra in listeners[1:]:
                await extra.aclose()
            listeners = listeners[:1]
        self.port = listeners[0].socket.getsockname()[1]
        log.info("admin HTTP on %s:%d (token %s)", cfg.host, self.port,
                 "required for /api/" if self._token_digest else "not configured: loopback only")
        task_status.started(self.port)
        await trio.serve_listeners(self.http.handle_stream, listeners)

    # -- dispatch -------------------------------------------------------------------------------

    async def handle(self, req: Request) -> Response:
        endpoint = "other"
        try:
            route, params, endpoint = self._match(req)
            if not route.any_host:
                self._check_origin(req)
            if not route.open:
                self._check_auth(req)
            resp = await route.handler(req, params)
        except ApiError as exc:
            resp = exc.response()
            if exc.status == 401:
                resp.headers.append(("WWW-Authenticate", 'Bearer realm="smpp-bridge admin"'))
            if exc.status == 405:
                resp.headers.append(("Allow", ", ".join(exc.extra.get("allowed", []))))
        except Exception:
            log.exception("admin API: %s %s failed", req.method, endpoint)
            resp = ApiError(500, "internal error", "the bridge's log has the details").response()
        resp.headers.append(("Cache-Control", "no-store"))
        self.app.metrics.admin_requests.labels(endpoint, str(resp.status)).inc()
        return resp

    def _match(self, req: Request) -> tuple[_Route, dict[str, str], str]:
        allowed: list[str] = []
        for route in self.routes:
            m = route.regex.match(req.path)
            if m is None:
                continue
            if route.method == req.method:
                return route, m.groupdict(), route.template
            allowed.append(route.method)
        if allowed:
            raise ApiError(405, f"{req.method} is not allowed on {req.path}", f"use {', '.join(allowed)}",
                           allowed=allowed)
        raise ApiError(404, f"no such endpoint: {req.path}", "GET /api/openapi.json lists every endpoint")

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
        ok = given is not None and hmac.compare_digest(_digest(given), self._token_digest)
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
            "send the admin token (admin.token, token_env or token_file in the bridge's config) "
            "as 'Authorization: Bearer TOKEN' or 'X-Admin-Token: TOKEN'",
        )

    # -- open endpoints -------------------------------------------------------------------------

    async def get_metrics(self, req: Request, _p: dict[str, str]) -> Response:
        body = generate_latest(self.app.metrics.registry)
        return Response(200, body, content_type=CONTENT_TYPE_LATEST)

    async def get_healthz(self, req: Request, _p: dict[str, str]) -> Response:
        return json_response({"status": "ok", "version": __version__})

    async def get_readyz(self, req: Request, _p: dict[str, str]) -> Response:
        app = self.app
        checks: dict[str, str] = {}
        checks["started"] = "ok" if app.ready else "starting"
        checks["smpp"] = "ok" if app.smpp_ports else "not listening"
        if getattr(app, "_stopping", False):
            checks["started"] = "stopping"
        try:
            with trio.fail_after(5):
                await app.store.ping()
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
        # The monitor recounts every COUNT_SECONDS; a person asking wants today's numbers
        # (right after a start there were none yet). One GROUP BY per request, at human pace.
        monitor = self.app.monitor
        if not monitor.counted_at or time.time() - monitor.counted_at > 1.0:
            try:
                await monitor.count()
            except Exception:
                log.exception("counting messages by state for /api/status failed; showing the last count")
        return json_response(self.status())

    def status(self) -> dict[str, Any]:
        app = self.app
        now = time.time()
        mono = trio.current_time()  # the clock of Connection.connected_at
        stats = dict(app.delivery.stats)
        esmes = []
        for e in app.config.esmes:
            conns = app.server.binds.get(e.system_id, [])
            outbox = {}
            for kind in ("receipt", "mo"):
                n, created = stats.get((e.system_id, kind), (0, None))
                outbox[kind] = {"waiting": n, "oldest_seconds": round(now - created, 1) if created else 0.0}
            esmes.append({
                "system_id": e.system_id,
                "enabled": e.enabled,
                "max_binds": e.max_binds,
                "throughput": e.throughput,
                "binds": [
                    {
                        "bind_type": c.bind_type,
                        "peer": c.peer,
                        "listener": c.listener,
                        "connected_seconds": round(mono - c.connected_at, 1),
                    }
                    for c in conns
                ],
                "outbox": outbox,
            })  # fmt: skip
        sched = app.scheduler
        monitor = app.monitor
        devices = []
        for name, driver in app.drivers.items():
            dcfg = monitor.config.device(name)
            health, checked = monitor.health.get(name, (None, None))
            chans = []
            for ch_id in monitor.channels_of(name):
                ch = sched.channels.get(f"{name}:{ch_id}") if sched is not None else None
                h = health.channels.get(ch_id) if health is not None else None
                entry: dict[str, Any] = {
                    "id": ch_id,
                    "key": f"{name}:{ch_id}",
                    "state": ch.state if ch is not None else "not running",
                    "paused": ch.paused if ch is not None else False,
                    "busy": ch.busy if ch is not None else False,
                    "inflight": ch.inflight if ch is not None else 0,
                    "routes": list(ch.routes) if ch is not None else [],
                    "caps_remaining": (
                        {k: _finite(v) for k, v in ch.caps.remaining(now).items()} if ch is not None else {}
                    ),
                    "registered": h.registered if h is not None else None,
                    "signal": h.signal if h is not None and h.signal != 99 else None,
                    "operator": h.operator if h is not None else None,
                }
                if ch is not None and ch.state in ("cooldown", "quarantine"):
                    entry["back_in_seconds"] = round(max(0.0, ch.down_until - sched.clock()), 1)
                chans.append(entry)
            devices.append({
                "name": name,
                "kind": driver.kind,
                "url": _safe_url(dcfg.url) if dcfg is not None else None,
                "health": None if health is None else {
                    "up": health.ok,
                    "detail": health.detail,
                    "checked_seconds_ago": round(now - checked, 1),
                    "consecutive_errors": health.consecutive_errors,
                    "protocol_errors": health.protocol_errors,
                },
                "channels": chans,
            })  # fmt: skip
        routes = []
        if sched is not None:
            for rname, (depth, oldest) in sched.queue_stats().items():
                chans = sched.route_channels.get(rname, [])
                routes.append({
                    "name": rname,
                    "queued": depth,
                    "oldest_queued_seconds": round(oldest, 1),
                    "channels": [c.key for c in chans],
                    "channels_available": sum(1 for c in chans if c.state in ("ready", "sending") and not c.paused),
                })  # fmt: skip
        store = app.store
        try:
            import os

            st = os.statvfs(store.path.parent)
            disk_free: int | None = st.f_bavail * st.f_frsize
        except OSError:
            disk_free = None
        return {
            "version": __version__,
            "started_at": _iso(app.started_at),
            "uptime_seconds": round(now - app.started_at, 1),
            "ready": app.ready,
            "smpp": {"ports": list(app.smpp_ports), "connections": len(app.server.connections)},
            "esmes": esmes,
            "devices": devices,
            "connectors": connector_status(app.drivers),  # upstream SMSCs (bridge/connectors/)
            "routes": routes,
            "store": {
                "path": str(store.path),
                "database_bytes": store.database_size(),
                "disk_free_bytes": disk_free,
                "active_messages": store.active_count,
                "messages_by_state": dict(monitor.counts),
                "counted_seconds_ago": round(now - monitor.counted_at, 1) if monitor.counted_at else None,
            },
        }

    # -- messages -------------------------------------------------------------------------------

    async def get_message(self, req: Request, p: dict[str, str]) -> Response:
        mid = p["message_id"]
        store = self.app.store
        rec = await store.get(mid)
        if rec is None:
            raise ApiError(404, f"no message with id {mid!r}",
                           "use the message_id of the submit_sm_resp (10 digits), "
                           "or GET /api/messages?number=+49... to search by number")
        events = await store.events(mid)
        parts = await store.parts(rec.id)
        return json_response({
            "message": _record(rec),
            "events": _history(rec, events),
            "parts": [_part(x) for x in parts],
        })  # fmt: skip

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
        store = self.app.store
        found = await store.find_by_number(number, limit)
        out = []
        for rec in found:
            events = await store.events(rec.message_id)
            out.append({**_record(rec), "events": _history(rec, events)})
        return json_response({"number": number, "messages": out})

    # -- opt-outs -------------------------------------------------------------------------------

    def _optout_store(self, method: str) -> Callable[..., Awaitable[Any]]:
        fn = getattr(self.app.store, method, None)
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
        sched = self.app.scheduler
        if sched is None:
            raise ApiError(404, "this bridge runs no channels (no routes are configured)")
        ch = sched.channels.get(key)
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
        timeout = min(max(timeout, 0.0), DRAIN_MAX_SECONDS)
        ch.pause()
        log.info("channel %s draining through the admin API", ch.key)
        with trio.move_on_after(timeout):
            while ch.state != "paused":
                await trio.sleep(0.1)
        drained = ch.state == "paused"
        body = {**self._channel_view(ch), "drained": drained}
        if not drained:
            body["hint"] = "a message is still in progress; it takes no new ones. Poll GET /api/status"
        return json_response(body, status=200 if drained else 202)

    # -- reload ---------------------------------------------------------------------------------

    async def reload(self, req: Request, _p: dict[str, str]) -> Response:
        result = await self.app.reload()
        return json_response(result, status=200 if result.get("ok") else 422)

    # -- device webhooks ------------------------------------------------------------------------

    async def smsgate_webhook(self, req: Request, p: dict[str, str]) -> Response:
        """An SMSGate phone's webhook. The driver verifies the HMAC signature (401 otherwise) and,
        for an inbound SMS, answers only once the SMS is stored (503 meanwhile: the phone retries)."""
        name = p["device"]
        driver = self.app.drivers.get(name)
        if driver is None or not driver.declared.webhooks:
            raise ApiError(404, f"no smsgate device {name!r} runs in this bridge",
                           "the webhook URL ends in the device's name from the config: /webhooks/smsgate/NAME")
        status, detail = await driver.handle_webhook_async(dict(req.headers), req.body)
        return json_response({"ok": 200 <= status < 300, "detail": detail}, status=status)

    # -- PDU logs -------------------------------------------------------------------------------

    async def list_pdu_logs(self, req: Request, _p: dict[str, str]) -> Response:
        pl = self.app.pdu_log
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
        pl = self.app.pdu_log
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


def _safe_url(url: str | None) -> str | None:
    """A device URL without user info or query (credentials never leave through the API)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _record(rec: Any) -> dict[str, Any]:
    return {
        "id": rec.message_id,
        "esme": rec.esme,
        "state": rec.state.value,
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
        "created_at": _iso(rec.created_at),
        "updated_at": _iso(rec.updated_at),
        "schedule_at": _iso(rec.schedule_at),
        "expire_at": _iso(rec.expire_at),
        "final_at": _iso(rec.final_at),
        "receipt_id": rec.receipt_message_id,
    }


def _history(rec: Any, events: list[Any]) -> list[dict[str, Any]]:
    """The store's events, after the acceptance itself (the store records no event for it:
    the message row's created_at is that moment)."""
    first = {"at": _iso(rec.created_at), "state": "accepted", "detail": f"submit_sm from {rec.esme} stored"}
    return [first] + [{"at": _iso(e.at), "state": e.state, "detail": e.detail} for e in events]


def _part(p: Any) -> dict[str, Any]:
    return {
        "seq": p.seq,
        "total": p.total,
        "state": p.state,
        "channel": f"{p.device}:{p.channel}",
        "device_ref": p.ref,
        "error": p.error,
        "started_at": _iso(p.started_at),
        "sent_at": _iso(p.sent_at),
        "done_at": _iso(p.done_at),
    }


def _jsonable(value: Any) -> Any:
    """Store results (attrs classes, tuples, enums) as JSON-ready values."""
    import enum

    import attrs

    if attrs.has(type(value)):
        value = attrs.asdict(value, recurse=False)
    if isinstance(value, dict):
        return {
            str(k): _iso(v) if str(k).endswith("at") and isinstance(v, float) else _jsonable(v)
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
