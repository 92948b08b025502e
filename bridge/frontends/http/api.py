"""The send API: ``/api/v1/messages`` for applications that do not speak SMPP.

Rules
-----
* An application authenticates as one of the configured ESMEs with HTTP Basic auth: its
  system_id and either its API key (``esmes[].api_key``) or its SMPP password, compared in
  constant time. The ESME must be enabled and the caller's address in its ``allowed_ips``
  (checked before any secret, as for a bind). Failed attempts slow (address, system_id) down
  exactly as failed binds do (`BindThrottle`: after 5 in a minute each next attempt waits its
  turn, 2 s apart; with more than ``AUTH_QUEUE_SECONDS`` of turns queued, 429 at once). Every
  message belongs to that ESME: it can look up and cancel only its own (another's id is
  answered 404, as an unknown one).
* ``POST`` goes through the same acceptance step as submit_sm (bridge/acceptance.py: validity,
  coding, route, opt-out, the queue depth ``limits.queue_depth``, the ESME's throughput); it
  answers 201 with the id(s) only after the store's commit, like ESME_ROK; its commit counts in the queue depth while it runs (``Acceptance.pending``, as
  for SMPP). Refusals say what to do: 400/422 name the bad field, 429 with ``Retry-After`` for
  throttling, 503 (``Retry-After``) when the queue is full or the store could not commit.
* ``Idempotency-Key`` (header, or the ``idempotency_key`` field): the key and the answer are
  committed with the messages (bridge/store/api_requests.py), so a retried POST gets the first
  answer (``Idempotent-Replayed: true``) and never a second SMS, across restarts and kill -9.
  The same key with another body is refused (422). Keys are kept the receipt retention.
* The parsing of a request (`parse_send`) is sans-IO and tested on its own.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import math
import re
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

from ...acceptance import DEST_RE, SUBMIT_MULTI, SUBMIT_SM, Acceptance, Refused
from ...http.server import Request, Response, json_response
from ...smpp.constants import Status
from ...smpp.text import encode_for_esme, part_count
from ...smpp.timefmt import format_smpp_time
from ...store import StoreError
from ..smpp.protocol import BindThrottle, bind_key
from .asgi import ApiError, Route, json_body, secret_digest

log = logging.getLogger(__name__)

MAX_TEXT = 10_000  # characters (about 65 SMS parts in UCS-2; SMPP's message_payload allows as much)
MAX_DESTINATIONS = 100
KEY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
SENDER_RE = re.compile(r"^[^\x00-\x1f]{1,20}$")
SWEEP_SECONDS = 3600.0
QUEUE_FULL_RETRY = 30
STORE_RETRY = 5
AUTH_LOG_SECONDS = 10.0
AUTH_QUEUE_SECONDS = 10.0
FIELDS = ("to", "from", "text", "schedule_at", "validity", "priority", "flash", "receipt",
          "reference", "idempotency_key")


@attrs.frozen
class SendRequest:
    """A POST /api/v1/messages after parsing: what the application asked for."""

    to: tuple[str, ...]
    text: str
    sender: str = ""
    schedule_at: float | None = None
    validity: float | None = None  # seconds
    priority: int = 0
    flash: bool = False
    receipt: bool = False
    reference: str | None = None
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """What makes two POSTs the same request (the key itself left out)."""
        d = attrs.asdict(self)
        d.pop("idempotency_key")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()

    def smpp_fields(self, now: float) -> dict[str, Any]:
        """The request as the SMPP fields the acceptance step reads."""
        dc, _ = encode_for_esme(self.text)
        fields: dict[str, Any] = {
            "source_addr": self.sender,
            "source_addr_ton": 0 if not self.sender or re.fullmatch(r"\+?[0-9]+", self.sender) else 5,
            "priority_flag": self.priority,
            "registered_delivery": 1 if self.receipt else 0,
            "data_coding": (dc | 0x10) if self.flash else dc,
            "schedule_delivery_time": _smpp_time(self.schedule_at) if self.schedule_at else "",
            "validity_period": _smpp_time(max(self.schedule_at or now, now) + self.validity) if self.validity else "",
        }
        if len(self.to) == 1:
            fields["destination_addr"] = self.to[0]
        else:
            fields["dest_addresses"] = [{"dest_flag": 1, "destination_addr": d} for d in self.to]
        return fields

    def body(self) -> bytes:
        return encode_for_esme(self.text)[1]


def _smpp_time(t: float) -> str:
    return format_smpp_time(dt.datetime.fromtimestamp(t, dt.UTC))


def _bad(field: str, problem: str, hint: str = "") -> ApiError:
    return ApiError(400, f"{field}: {problem}", hint or "GET /api/openapi.json describes every field", field=field)


def _as_bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", ""):
        return value.lower() in ("1", "true", "yes", "on")
    raise _bad(field, f"expected true or false, got {value!r}")


def _as_int(field: str, value: Any, lo: int, hi: int) -> int:
    try:
        n = int(value) if not isinstance(value, bool) else None
    except (TypeError, ValueError):
        n = None
    if n is None or not lo <= n <= hi or (isinstance(value, float) and not value.is_integer()):
        raise _bad(field, f"expected a whole number from {lo} to {hi}, got {value!r}")
    return n


def _as_time(field: str, value: Any, now: float) -> float:
    if not isinstance(value, str):
        raise _bad(field, f"expected an ISO 8601 time with its offset, e.g. 2030-01-31T12:00:00+01:00, got {value!r}")
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _bad(field, f"expected an ISO 8601 time with its offset, e.g. 2030-01-31T12:00:00+01:00, got {value!r}") from None
    if when.tzinfo is None:
        raise _bad(field, f"{value!r} has no offset", "add Z or +HH:MM: the bridge does not guess a time zone")
    return when.timestamp()


def parse_send(data: dict[str, Any], now: float, header_key: str | None = None) -> SendRequest:
    """The fields of a send request (JSON object or form fields; a form's repeated ``to`` is a
    list), checked; an `ApiError` 400 names the first bad field."""
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        name = unknown[0]
        raise ApiError(400, f"{name!r} is not a field of this API", f"the fields are: {', '.join(FIELDS)}", field=name)
    to_value = data.get("to")
    if to_value is None or to_value == "" or to_value == []:
        raise _bad("to", "missing", 'give the destination number(s), e.g. "to": "+4917012345678"')
    raw_to = [to_value] if isinstance(to_value, str) else to_value
    if not isinstance(raw_to, list) or not all(isinstance(x, str) for x in raw_to):
        raise _bad("to", "expected a phone number or a list of them")
    to = tuple(x.strip() for x in raw_to)
    if len(to) > MAX_DESTINATIONS:
        raise _bad("to", f"{len(to)} destinations; at most {MAX_DESTINATIONS} in one request")
    for i, number in enumerate(to):
        if not DEST_RE.match(number):
            where = "to" if len(to) == 1 else f"to[{i}]"
            raise _bad(where, f"expected a phone number like +4917012345678, got {number!r}")
    text = data.get("text")
    if not isinstance(text, str) or not text:
        raise _bad("text", "missing" if text in (None, "") else "expected a string",
                   'give the message text, e.g. "text": "Hello"')
    if len(text) > MAX_TEXT:
        raise _bad("text", f"{len(text)} characters; at most {MAX_TEXT}")
    sender = data.get("from") or ""
    if not isinstance(sender, str) or (sender and not SENDER_RE.match(sender)):
        raise _bad("from", f"expected a number or a name of at most 20 characters, got {sender!r}")
    schedule = _as_time("schedule_at", data["schedule_at"], now) if data.get("schedule_at") else None
    validity = None
    if data.get("validity") not in (None, ""):
        validity = float(_as_int("validity", data["validity"], 60, 30 * 86400))
    priority = _as_int("priority", data.get("priority", 0) or 0, 0, 3)
    reference = data.get("reference")
    if reference is not None and (not isinstance(reference, str) or len(reference) > 64):
        raise _bad("reference", "expected a string of at most 64 characters")
    key = header_key if header_key is not None else data.get("idempotency_key")
    if key is not None and (not isinstance(key, str) or not KEY_RE.match(key)):
        raise _bad("idempotency_key", "expected 1 to 200 printable ASCII characters without spaces",
                   "a UUID per logical message is a good key")
    return SendRequest(
        to=to, text=text, sender=sender, schedule_at=schedule, validity=validity, priority=priority,
        flash=_as_bool("flash", data.get("flash", False)), receipt=_as_bool("receipt", data.get("receipt", False)),
        reference=reference, idempotency_key=key,
    )  # fmt: skip


def form_fields(body: bytes) -> dict[str, Any]:
    """application/x-www-form-urlencoded fields; ``to`` may repeat or be comma-separated."""
    out: dict[str, Any] = {}
    tos: list[str] = []
    for name, value in urllib.parse.parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True):
        if name == "to":
            tos.extend(v for v in value.split(",") if v.strip())
        else:
            out.setdefault(name, value)
    if tos:
        out["to"] = tos[0] if len(tos) == 1 else tos
    return out


# -- refusals -------------------------------------------------------------------------------------

_FIELD_OF = {
    Status.RINVSCHED: "schedule_at",
    Status.RINVEXPIRY: "validity",
    Status.RINVPRTFLG: "priority",
    Status.RSUBMITFAIL: "text",
    Status.RINVDSTADR: "to",
}


def refusal(r: Refused, retry_after: float | None = None, queue_depth: int = 0) -> ApiError:
    """The HTTP answer for an acceptance refusal."""
    if r.status == Status.RMSGQFUL:
        return ApiError(503, f"the queue is full ({queue_depth} messages waiting; limits.queue_depth)",
                        f"retry after {QUEUE_FULL_RETRY} s", headers=[("Retry-After", str(QUEUE_FULL_RETRY))])
    if r.status == Status.RTHROTTLED:
        secs = max(1, math.ceil(retry_after or 1))
        return ApiError(429, "over this ESME's throughput (esmes[].throughput)", f"retry after {secs} s",
                        headers=[("Retry-After", str(secs))])
    field = _FIELD_OF.get(Status(r.status), "to")
    if r.reason == "opted out":
        return ApiError(422, "to: the number opted out of messages from this bridge",
                        "do not send to it; it opts in again by the inbound opt-in keyword or the admin API", field="to")
    if r.reason == "no route":
        return ApiError(422, "to: no route takes this destination",
                        "add a route (or default_route for this ESME) that matches it", field="to")
    return ApiError(400, f"{field}: {r.reason or 'refused'}", field=field)


# -- the routes -----------------------------------------------------------------------------------


@attrs.frozen
class ApiParts:
    """What the send API may use; bridge/app.py wires it once."""

    config: Callable[[], Any]  # the config in force (ESMEs, limits, receipts.retention)
    acceptance: Acceptance  # the same instance the SMPP front end uses (buckets are shared)
    store: Any  # accept_api, api_answer, get, events, parts, cancel
    metrics: Any
    clock: Callable[[], float] = time.time


class SendApi:
    def __init__(self, parts: ApiParts) -> None:
        self.parts = parts
        self._last_auth_log = -math.inf
        self._auth_failures = 0
        self.throttle = BindThrottle(trio.current_time)
        self.routes = [
            Route("POST", "/api/v1/messages", self.post_messages),
            Route("GET", "/api/v1/messages/{message_id}", self.get_message),
            Route("DELETE", "/api/v1/messages/{message_id}", self.delete_message),
        ]

    # -- auth -----------------------------------------------------------------------------------

    async def authenticate(self, req: Request) -> Any:
        """The ESME this request speaks for, or 401/403."""
        origin = req.headers.get("origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc.lower() != req.headers.get("host", "").lower():
            raise ApiError(403, "requests from web pages of another origin are refused",
                           "call the API from your application's server, not from a browser page")
        creds = req.basic_auth()
        challenge = [("WWW-Authenticate", 'Basic realm="smpp-bridge API"')]
        if creds is None:
            raise ApiError(401, "missing credentials", "send HTTP Basic auth: the ESME's system_id and its "
                           "api_key (or password), e.g. curl -u SYSTEM_ID:KEY", headers=challenge)
        system_id, secret = creds
        esme = self.parts.config().esme(system_id)
        peer_ip = req.peer.rsplit(":", 1)[0].strip("[]")
        key = bind_key(peer_ip, esme)
        wait = self.throttle.delay(key, AUTH_QUEUE_SECONDS)
        if wait is None:
            self._refused(req, system_id, "too many failed attempts")
            raise ApiError(429, f"too many failed logins from {peer_ip}", f"retry after {AUTH_QUEUE_SECONDS:.0f} s "
                           "with the right credentials", headers=[("Retry-After", str(int(AUTH_QUEUE_SECONDS)))])
        if wait:
            await trio.sleep(wait)
        if esme is not None and esme.enabled and not esme.allows(peer_ip):
            self.throttle.note_failure(key)
            self._refused(req, system_id, "address not allowed")
            raise ApiError(403, f"{peer_ip} is not in this ESME's allowed_ips",
                           "add the application's address to esmes[].allowed_ips and reload")
        ok = False
        if esme is not None and esme.enabled:
            if esme.api_key is not None:
                ok = hmac.compare_digest(secret_digest(secret), secret_digest(esme.api_key.reveal()))
            if not ok:
                ok = (await trio.to_thread.run_sync(esme.check_password, secret) if esme.password_hash
                      else esme.check_password(secret))
        if not ok:
            self.throttle.note_failure(key)
            self._refused(req, system_id, "wrong credentials")
            raise ApiError(401, "wrong system_id or key", "use an enabled ESME's system_id with its api_key "
                           "or password", headers=challenge)
        if wait:
            self.throttle.give_back(key)
        return esme

    def _refused(self, req: Request, system_id: str, why: str) -> None:
        self._auth_failures += 1
        self.parts.metrics.api_auth_failures.inc()
        now = time.monotonic()
        if now - self._last_auth_log >= AUTH_LOG_SECONDS:
            self._last_auth_log = now
            log.warning("send API: %s for %r from %s (%d refused so far)", why, system_id, req.peer,
                        self._auth_failures)

    # -- POST -----------------------------------------------------------------------------------

    async def post_messages(self, req: Request, _p: dict[str, str]) -> Response:
        started = time.perf_counter()
        esme = await self.authenticate(req)
        ctype = req.headers.get("content-type", "")
        if "application/x-www-form-urlencoded" in ctype:
            data = form_fields(req.body)
        elif "json" in ctype or not ctype:
            data = json_body(req)
            if not isinstance(data, dict):
                raise ApiError(400, "expected a JSON object", 'e.g. {"to": "+4917012345678", "text": "Hello"}')
        else:
            raise ApiError(415, f"cannot read a body of type {ctype!r}",
                           "send application/json or application/x-www-form-urlencoded")
        now = self.parts.clock()
        send = parse_send(data, now, req.headers.get("idempotency-key"))
        fingerprint = send.fingerprint()
        store = self.parts.store
        if send.idempotency_key is not None:
            try:
                first = await store.api_answer(esme.system_id, send.idempotency_key)
            except StoreError as exc:
                raise self._store_failed(esme.system_id, exc) from None
            if first is not None:
                return self._replay(send, fingerprint, *first)
        acceptance = self.parts.acceptance
        command = SUBMIT_SM if len(send.to) == 1 else SUBMIT_MULTI
        try:
            decision = acceptance.decide(esme, command, send.smpp_fields(now), send.body())
        except Refused as r:
            raise refusal(r, self._retry_after(esme, part_count(send.text) * len(send.to)),
                          self.parts.config().limits.queue_depth) from None
        n = len(decision.messages)
        refused = [{"to": u["destination_addr"], "error": Status(u["error_status_code"]).name}
                   for u in decision.unsuccess]
        segments = [s.segments for s in decision.messages]

        def answer_for(ids: list[str]) -> dict[str, Any]:
            body: dict[str, Any] = {
                "messages": [{"id": i, "to": s.msg.destination_addr, "parts": seg}
                             for i, s, seg in zip(ids, decision.messages, segments)],
            }
            if refused:
                body["refused"] = refused
            if send.reference is not None:
                body["reference"] = send.reference
            return body

        acceptance.pending += n  # counted in limits.queue_depth until the commit is done
        try:
            answer, replayed, first_fp = await store.accept_api(
                esme.system_id, [s.msg for s in decision.messages], send.idempotency_key, fingerprint, answer_for)
        except StoreError as exc:
            raise self._store_failed(esme.system_id, exc) from None
        finally:
            acceptance.pending -= n
        if replayed:  # the same key committed meanwhile by a concurrent request
            return self._replay(send, fingerprint, first_fp, answer)
        metrics = self.parts.metrics
        metrics.accepted.labels(esme.system_id).inc(decision.segments)
        metrics.api_messages.labels(esme.system_id).inc(n)
        metrics.submit_latency.observe(time.perf_counter() - started)
        return json_response(answer, status=201)

    def _replay(self, send: SendRequest, fingerprint: str, first_fp: str, answer: dict[str, Any]) -> Response:
        if first_fp != fingerprint:
            raise ApiError(422, "Idempotency-Key was used before for a different request",
                           "use a new key for a new message; a retry must send the same body", field="idempotency_key")
        self.parts.metrics.api_replays.inc()
        return json_response(answer, status=201, headers=[("Idempotent-Replayed", "true")])

    def _store_failed(self, esme_id: str, exc: Exception) -> ApiError:
        self.parts.metrics.store_errors.inc()
        log.error("send API: messages from %s not stored: %s", esme_id, exc)
        return ApiError(503, "the store could not commit; nothing was stored",
                        f"retry after {STORE_RETRY} s with the same Idempotency-Key",
                        headers=[("Retry-After", str(STORE_RETRY))])

    def _retry_after(self, esme: Any, segments: int) -> float:
        bucket = self.parts.acceptance.bucket(esme)
        if bucket.rate <= 0:
            return 1.0
        return (min(segments, bucket.capacity) - bucket.tokens) / bucket.rate

    # -- GET / DELETE ---------------------------------------------------------------------------

    async def _own(self, esme: Any, message_id: str) -> Any:
        rec = await self.parts.store.get(message_id, esme.system_id)
        if rec is None:
            raise ApiError(404, f"no message {message_id!r} of {esme.system_id}",
                           "use an id from the answer to POST /api/v1/messages")
        return rec

    async def get_message(self, req: Request, p: dict[str, str]) -> Response:
        from ...admin import message_document

        esme = await self.authenticate(req)
        rec = await self._own(esme, p["message_id"])
        doc = await message_document(self.parts.store, rec)
        return json_response({**doc["message"], "events": doc["events"], "parts": doc["parts"]})

    async def delete_message(self, req: Request, p: dict[str, str]) -> Response:
        esme = await self.authenticate(req)
        rec = await self._own(esme, p["message_id"])
        try:
            n = await self.parts.store.cancel(esme.system_id, message_id=rec.message_id)
        except KeyError:
            n = None
        except StoreError as exc:
            raise self._store_failed(esme.system_id, exc) from None
        if not n:
            raise ApiError(409, f"message {rec.message_id} is {rec.state.value}: only a message still waiting "
                           "can be cancelled", "GET it to see what happened", state=rec.state.value)
        after = await self.parts.store.get(rec.message_id, esme.system_id)
        return json_response({"id": rec.message_id, "state": after.state.value if after else "deleted", "cancelled": n})

    # -- housekeeping ---------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Forget idempotency keys older than the receipt retention, once an hour."""
        task_status.started()
        while True:
            try:
                await self.parts.store.expire_api_requests(self.parts.config().receipts.retention)
            except Exception:
                log.exception("forgetting old Idempotency-Keys failed; will retry in an hour")
            await trio.sleep(SWEEP_SECONDS)
