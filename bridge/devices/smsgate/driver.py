"""Android phone via SMSGate (the android-sms-gateway app, Local Server mode).

Long on purpose (~820 lines): sending, polling, the webhook receiver and its registration act
on one per-message record; the pure pieces (signatures, states) are apart in messages.py.

docs/devices/smsgate.md, from the app's public docs (sms-gate.app: sending messages,
status tracking, webhooks, health). The app runs an HTTP server on the phone
(``http://<phone>:8080``, HTTP Basic auth with the username/password shown in the app).
One driver per phone; channels "1".."sims" are the app's ``simNumber`` values (1-based).

Sending and polling:

* ``POST /message`` ``{"id", "textMessage":{"text"}, "phoneNumbers":[dest], "simNumber",
  "withDeliveryReport"[, "priority":100]}`` -> 202 ``{"id","state":"Pending","recipients":[…]}``.
  The driver always sends its OWN id (``message_id=`` keyword, else a generated one), so an
  ambiguous send can be checked later with ``GET /message/{id}`` (see ``last_ref``).
  ``urgent=True`` sends ``priority: 100`` (the app sends priority >= 100 first and bypasses its
  own rate limits and delays).
* ``GET /message/{id}`` -> states Pending, Processed -> PENDING; Sent -> SENT;
  Delivered -> DELIVERED; Failed -> FAILED (``error_code`` from the recipient's ``error``, see
  ``failure_code``). 404 -> UNKNOWN (the phone does not know the id).
* Outcomes: 400 (e.g. a number that is not E.164) -> REJECTED, but a 400 about the SIM
  (a ``simNumber`` the phone lacks) -> CHANNEL_DOWN; 401/403 -> AUTH_FAILED;
  409 (our id already exists: an earlier attempt got through) -> ACCEPTED; 5xx -> ERROR;
  a transport failure before the request was written -> ERROR, after -> AMBIGUOUS (as
  ``bridge.devices.http_common.HttpDevice`` tells); an unreadable 2xx -> AMBIGUOUS.

Webhooks (the phone calls us): the app POSTs ``{"deviceId","event","id","payload",
"webhookId"}`` with ``X-Timestamp`` (Unix seconds) and ``X-Signature`` = hex
HMAC-SHA256(key=signing key, msg=raw body bytes + X-Timestamp as sent). ``handle_webhook``
checks the timestamp (within ``webhook_max_age`` seconds either way) and the signature (in
constant time) before it reads the body, then:

* ``sms:received`` -> an ``InboundSms`` held until the bridge has stored it (``inbox()`` returns
  every un-acknowledged one; ``delete_inbox`` acknowledges). ``device_key`` is
  ``smsgate:<event id>``. Do not use the payload's ``messageId``: the app derives it from the
  content, so two identical SMS share it.
* ``sms:sent`` / ``sms:delivered`` / ``sms:failed`` -> a per-message status cache that
  ``status`` answers from (conclusive answers need no poll).
* ``system:ping`` -> remembered for ``health``; anything else -> 200, ignored.

Each event id is processed once: the app retries an event (same body, same id) until it gets
a 2xx, so repeats are answered 200 and not counted again.

Long messages. The app splits a long text itself and the handset sends one delivery report
per PART, so ``sms:delivered`` arrives once per part. The message counts as DELIVERED only when
every part's report has arrived; one ``sms:failed`` makes it FAILED whatever came before. The
part count comes from the event payload's ``partsCount`` when the app sends one; otherwise from
the text this driver sent (GSM 7-bit: 160 / 153 per part, else UCS2: 70 / 67, as
``bridge.smpp.text.split_text`` counts); for a message this driver did not send (or sent before
a restart: the count lives in memory) it is taken as 1. Reports are told apart by event id,
not by arrival order, so out-of-order reports combine correctly. Note that the app's own
``GET /message`` state says Delivered as soon as ANY part is delivered: when webhook reports
for a message are coming in, a polled "Delivered" is reported as SENT until all parts'
reports are in.

The signature check, the state and failure mappings and the per-message record are sans-IO, in
``messages.py``; this module is the HTTP client and the webhook receiver around them.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
import urllib.parse
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

import attrs
import httpx
import trio

from bridge.devices.smsgate import CAPABILITIES
from bridge.devices.base import (
    ChannelHealth,
    DeliveryState,
    DeviceError,
    DeviceHealth,
    DriverBase,
    InboundSms,
    Redactor,
    SendOutcome,
    SendResult,
    StatusResult,
    install_httpx_log_redaction,
)
from bridge.devices.http_common import (
    CallCounters,
    HttpAnswer,
    HttpDevice,
    encode_pairs,
    snippet,
    tls_verify_option,
    validate_base_url,
)
from bridge.devices.smsgate.messages import (
    EVENTS,
    BoundedMap,
    TrackedMessage,
    judge_message_state,
    parse_event_time,
    verify_webhook_signature,
)
from bridge.smpp.text import part_count

__all__ = ["SmsGateDriver", "WebhookSetup"]

log = logging.getLogger("bridge.devices.smsgate")

# ============================================================================================
# State kept by the driver


@attrs.frozen
class WebhookSetup:
    """What ``register_webhooks`` did."""

    ok: bool
    #: Events newly registered (or re-pointed) by this call.
    created: tuple[str, ...] = ()
    #: Events that already had a webhook to this URL.
    existing: tuple[str, ...] = ()
    detail: str = ""


def _json(answer: HttpAnswer) -> Any:
    """The answer's body as JSON (ValueError when it is not)."""
    try:
        return json.loads(answer.body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ValueError(str(exc)) from None


# ============================================================================================
# The driver


class SmsGateDriver(DriverBase):
    kind = "smsgate"
    capabilities = CAPABILITIES.flags
    declared = CAPABILITIES

    def __init__(
        self,
        name: str,
        base_url: str,
        username: str,
        password: str,
        *,
        sims: int = 1,
        with_delivery_report: bool = True,
        timeout: float = 10.0,
        webhook_secret: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        webhook_max_age: float = 300.0,
        skip_phone_validation: bool = False,
        inbox_limit: int = 1000,
        inbox_ttl: float = 600.0,
        cache_size: int = 10000,
        verify_tls: bool | str = True,
        max_connections: int = 4,
        wall_clock: Callable[[], float] = time.time,
    ):
        base_url = validate_base_url(name, base_url)
        if not 1 <= sims <= 3:
            raise DeviceError(f"device {name!r}: sims must be 1..3 (the app's simNumber)")
        if timeout <= 0:
            raise DeviceError(f"device {name!r}: timeout must be > 0")
        if webhook_secret is not None and not webhook_secret:
            raise DeviceError(f"device {name!r}: webhook_secret must not be empty")
        self.name = name
        self.base_url = base_url
        self.username = username
        self._password = password
        self.sims = sims
        self.channels = tuple(str(n) for n in range(1, sims + 1))
        self.with_delivery_report = with_delivery_report
        self.timeout = timeout
        self._webhook_secret = webhook_secret
        self.webhook_max_age = webhook_max_age
        self.skip_phone_validation = skip_phone_validation
        self.inbox_limit = inbox_limit
        self.inbox_ttl = inbox_ttl
        self._wall = wall_clock
        self._redact = Redactor(
            [password] + ([webhook_secret] if webhook_secret else []),
            basic_auth=[(username, password)],
        )
        install_httpx_log_redaction()
        self._http = HttpDevice(
            timeout=timeout,
            redact=self._redact,
            transport=transport,
            verify=tls_verify_option(name, verify_tls),
            max_connections=max_connections,
        )
        self._basic = httpx.BasicAuth(username, password)
        self._counters = CallCounters()
        # per message id
        self._tracked: BoundedMap = BoundedMap(cache_size)
        # webhook bookkeeping
        self._seen_events: BoundedMap = BoundedMap(cache_size)
        self._inbox: OrderedDict[str, InboundSms] = OrderedDict()
        self._inbox_since: dict[str, float] = {}
        self._acked: BoundedMap = BoundedMap(cache_size)
        self._ack_events: dict[str, trio.Event] = {}
        self.webhooks_accepted = 0
        self.webhooks_rejected = 0
        self._last_reject = ""
        self._last_ping: float | None = None
        # per channel, for last_ref
        self._last_ref: dict[str, str] = {}
        self._unsure: dict[str, str] = {}
        #: Called as ``on_status(message_id, StatusResult)`` whenever a webhook changes what
        #: ``status`` would answer for a message (a push path for the status pollers).
        self.on_status: Callable[[str, StatusResult], None] | None = None

    def __repr__(self) -> str:
        return f"<SmsGateDriver {self.name!r} {self.base_url} sims={self.sims}>"

    # ---------------------------------------------------------------- plumbing

    def _check_open(self) -> None:
        if self._http.closed:
            raise DeviceError(f"device {self.name!r}: driver is closed")

    def _ok(self) -> None:
        self._counters.ok()

    def _failed(self, detail: str, *, protocol: bool = False, auth: bool = False) -> None:
        self._counters.failed(detail, protocol=protocol, auth=auth)

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        query: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """One authenticated call; ``HttpAnswer.error`` (redacted) when no answer came."""
        self._check_open()
        url = self.base_url + path
        if query:
            url += "?" + encode_pairs(query.items())
        headers = {"Accept": "application/json"}
        content = None
        if json_body is not None:
            content = json.dumps(json_body, ensure_ascii=False).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        answer = await self._http.request(
            method, url, content=content, headers=headers, auth=self._basic
        )
        if answer.error is not None:
            answer.error = f"{method} {path}: {answer.error}"
        return answer

    def _app_message(self, reply: HttpAnswer) -> str:
        """The app's error text ({"message": …}) or a snippet of the body, redacted."""
        try:
            data = _json(reply)
            if isinstance(data, Mapping) and data.get("message"):
                return self._redact(snippet(str(data["message"])))
        except ValueError:
            pass
        return self._redact(snippet(reply.text, 80))

    @staticmethod
    def _quote(message_id: str) -> str:
        return urllib.parse.quote(message_id, safe="")

    # ---------------------------------------------------------------- send

    @staticmethod
    def new_message_id() -> str:
        """A fresh id for ``POST /message``: lower case, so that comparing ids case-blind (as
        the scheduler does with refs) is safe."""
        return "sb-" + secrets.token_hex(10)

    async def send(
        self,
        channel: str,
        destination: str,
        text: str,
        *,
        urgent: bool = False,
        message_id: str | None = None,
        **_: Any,
    ) -> SendResult:
        """``POST /message`` on SIM ``channel``; ``urgent`` -> priority 100; ``message_id`` is
        the id to give the message (default: a fresh one). Resending with the same id is safe:
        the app answers 409 for an id it already has, which counts as ACCEPTED."""
        self._check_open()
        self.check_channel(channel)
        msg_id = message_id or self.new_message_id()
        body: dict[str, Any] = {
            "id": msg_id,
            "textMessage": {"text": text},
            "phoneNumbers": [destination],
            "simNumber": int(channel),
            "withDeliveryReport": self.with_delivery_report,
        }
        if urgent:
            body["priority"] = 100
        query = {"skipPhoneValidation": "true"} if self.skip_phone_validation else None
        reply = await self._request("POST", "/message", json_body=body, query=query)
        result = self._send_result(reply, msg_id)
        result = attrs.evolve(result, detail=self._redact(result.detail))
        outcome = result.outcome
        if outcome is SendOutcome.ACCEPTED:
            self._ok()
            assert result.ref is not None
            self._track(result.ref).parts_sent = part_count(text)
            self._last_ref[channel] = result.ref
            self._unsure.pop(channel, None)
        elif outcome is SendOutcome.AMBIGUOUS:
            self._failed(result.detail, protocol=reply.error is None)
            self._track(msg_id).parts_sent = part_count(text)
            self._unsure[channel] = msg_id
        else:
            self._failed(result.detail, auth=outcome is SendOutcome.AUTH_FAILED)
            self._unsure.pop(channel, None)
        log.debug(
            "smsgate %s sim %s send -> %s %s", self.name, channel, outcome.value, result.ref or ""
        )
        if outcome is not SendOutcome.ACCEPTED:
            log.warning(
                "smsgate %s sim %s send: %s: %s", self.name, channel, outcome.value, result.detail
            )
        return result

    def _send_result(self, reply: HttpAnswer, msg_id: str) -> SendResult:
        if reply.error is not None:
            if reply.maybe_sent:
                return SendResult(
                    SendOutcome.AMBIGUOUS,
                    detail=f"request sent, no answer ({reply.error}): the SMS may have been taken",
                )
            return SendResult(SendOutcome.ERROR, detail=f"not sent: {reply.error}")
        status = reply.status
        assert status is not None
        if status in (200, 201, 202):
            try:
                data = _json(reply)
                ref = data.get("id") if isinstance(data, Mapping) else None
            except ValueError:
                ref = None
            if not isinstance(ref, str) or not ref:
                return SendResult(
                    SendOutcome.AMBIGUOUS,
                    detail=f"HTTP {status} with an unreadable body {self._app_message(reply)}",
                    http_status=status,
                )
            detail = f"HTTP {status}"
            if ref != msg_id:
                detail += f" (the app renamed message {msg_id})"
            return SendResult(SendOutcome.ACCEPTED, ref=ref, detail=detail, http_status=status)
        if status == 409:
            return SendResult(
                SendOutcome.ACCEPTED,
                ref=msg_id,
                detail="HTTP 409: the phone already has this message id (an earlier attempt got through)",
                http_status=status,
            )
        if status in (401, 403):
            return SendResult(SendOutcome.AUTH_FAILED, detail=f"HTTP {status}", http_status=status)
        if status in (400, 422) and re.search(r"(?i)\bsim\b", self._app_message(reply)):
            # A SIM slot the phone lacks (or an empty slot): the channel, not the message.
            return SendResult(
                SendOutcome.CHANNEL_DOWN,
                detail=f"HTTP {status}: {self._app_message(reply)}",
                http_status=status,
            )
        if status in (400, 422):
            return SendResult(
                SendOutcome.REJECTED,
                detail=f"HTTP {status}: {self._app_message(reply)}",
                http_status=status,
            )
        return SendResult(
            SendOutcome.ERROR,
            detail=f"HTTP {status}: {self._app_message(reply)}",
            http_status=status,
        )

    # ---------------------------------------------------------------- status

    def _track(self, message_id: str) -> TrackedMessage:
        tracked = self._tracked.get(message_id)
        if tracked is None:
            tracked = TrackedMessage()
            self._tracked[message_id] = tracked
        return tracked

    def cached_status(self, message_id: str) -> StatusResult | None:
        """What webhooks alone say about a message (None: nothing yet). No I/O."""
        tracked = self._tracked.get(message_id)
        return None if tracked is None else tracked.combined()

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        self._check_open()
        self.check_channel(channel)
        if not ref:
            return StatusResult(DeliveryState.UNKNOWN, detail="no message id to ask about")
        tracked = self._tracked.get(ref)
        cached = tracked.combined() if tracked is not None else None
        if cached is not None and cached.state in (DeliveryState.DELIVERED, DeliveryState.FAILED):
            return cached
        reply = await self._request("GET", f"/message/{self._quote(ref)}")
        if (
            reply.error is not None
            or reply.status in (401, 403)
            or (reply.status is not None and reply.status >= 500)
        ):
            detail = reply.error or f"HTTP {reply.status}"
            self._failed(f"status poll: {detail}", auth=reply.status in (401, 403))
            log.warning("smsgate %s status poll failed: %s", self.name, detail)
            if cached is not None:
                return attrs.evolve(cached, detail=f"{cached.detail} (poll failed: {detail})")
            return StatusResult(
                DeliveryState.UNKNOWN, detail=f"status poll failed: {detail}", poll_failed=True
            )
        if reply.status == 404:
            self._ok()
            if cached is not None:
                return cached
            return StatusResult(
                DeliveryState.UNKNOWN, detail=f"the phone does not know message {ref}"
            )
        try:
            if reply.status != 200:
                raise ValueError(f"HTTP {reply.status}")
            data = _json(reply)
            if not isinstance(data, Mapping):
                raise ValueError("not a JSON object")
            polled = judge_message_state(data)
        except ValueError as exc:
            detail = self._redact(f"unreadable status answer ({exc}): {self._app_message(reply)}")
            self._failed(detail, protocol=True)
            if cached is not None:
                return cached
            return StatusResult(DeliveryState.UNKNOWN, detail=detail, poll_failed=True)
        self._ok()
        if polled.poll_failed:
            self._counters.protocol_errors += 1
        return self._merge(polled, tracked, cached)

    @staticmethod
    def _merge(
        polled: StatusResult, tracked: TrackedMessage | None, cached: StatusResult | None
    ) -> StatusResult:
        """Combine a polled state with what webhooks said (``cached`` is not conclusive)."""
        if polled.state is DeliveryState.FAILED:
            return polled
        if polled.state is DeliveryState.DELIVERED:
            if tracked is not None and tracked.events and tracked.parts > 1:
                # The app says Delivered after the FIRST part's report; webhooks tell the rest.
                return StatusResult(
                    DeliveryState.SENT,
                    detail=(
                        f"the phone says Delivered; delivery reports for "
                        f"{len(tracked.delivered)} of {tracked.parts} parts so far"
                    ),
                )
            if tracked is not None and tracked.parts > 1:
                return attrs.evolve(
                    polled,
                    detail=(
                        f"Delivered (a {tracked.parts}-part message: the app says so after the "
                        "first part's report; no webhooks to tell the rest)"
                    ),
                )
            return polled
        if cached is not None:
            return cached  # webhooks already know more than Pending/Processed
        return polled

    # ---------------------------------------------------------------- ambiguity

    async def last_ref(self, channel: str) -> str | None:
        """The id of the last message this driver knows the phone has on ``channel``.

        After an AMBIGUOUS send the driver asks the phone for the id it tried: found -> that
        id (the phone took the message); not found (404) -> the previous id, i.e. "not taken";
        cannot ask -> None. Before the first send on a channel since start: None (the driver
        does not know; the scheduler's ambiguity policy then applies).
        """
        self._check_open()
        self.check_channel(channel)
        attempt = self._unsure.get(channel)
        if attempt is None:
            return self._last_ref.get(channel)
        reply = await self._request("GET", f"/message/{self._quote(attempt)}")
        if reply.status == 200:
            self._ok()
            self._unsure.pop(channel, None)
            self._last_ref[channel] = attempt
            return attempt
        if reply.status == 404:
            self._ok()
            self._unsure.pop(channel, None)
            return self._last_ref.get(channel)
        self._failed(f"last_ref: {reply.error or f'HTTP {reply.status}'}")
        return None

    # ---------------------------------------------------------------- webhooks in

    def handle_webhook(self, headers: Mapping[str, str], body: bytes) -> tuple[int, str]:
        """Verify and record one webhook request from the phone. Returns (HTTP status, text).

        200 for anything authentic (also repeats and events we do not use, so the app stops
        retrying); 401 for a missing, wrong or stale signature; 400 for an authentic but
        malformed body; 403 when no ``webhook_secret`` is configured; 503 when the inbound
        queue is full (the app retries later). Never raises for a bad request.
        """
        return self._handle_webhook(headers, body)[:2]

    async def handle_webhook_async(
        self, headers: Mapping[str, str], body: bytes, *, ack_timeout: float = 20.0
    ) -> tuple[int, str]:
        """Like ``handle_webhook``, but for ``sms:received`` answers 200 only once the bridge
        has stored the SMS (its inbox poller called ``delete_inbox`` for it), so the phone's
        retry covers a crash between the webhook and the store (docs/architecture.md, rule 1). Not
        stored within ``ack_timeout`` seconds -> 503: the app retries later with the same event
        id, which is recognised. Keep ``ack_timeout`` under the app's 30 s answer limit."""
        status, text, pending_key = self._handle_webhook(headers, body)
        if pending_key is None:
            return status, text
        event = self._ack_events.setdefault(pending_key, trio.Event())
        with trio.move_on_after(ack_timeout):
            await event.wait()
        if pending_key in self._acked:
            return 200, "ok: stored"
        return 503, "not stored yet; retry later"

    def _reject(self, status: int, why: str) -> tuple[int, str, None]:
        self.webhooks_rejected += 1
        self._last_reject = why
        log.warning("smsgate %s: webhook rejected (%d): %s", self.name, status, why)
        return status, why, None

    def _handle_webhook(
        self, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, str, str | None]:
        """-> (status, text, device_key of an inbound SMS still waiting to be stored)."""
        if self._webhook_secret is None:
            return self._reject(403, "no webhook_secret configured for this device")
        lower = {str(k).lower(): str(v) for k, v in headers.items()}
        why = verify_webhook_signature(
            self._webhook_secret,
            body,
            lower.get("x-timestamp"),
            lower.get("x-signature"),
            now=self._wall(),
            max_age=self.webhook_max_age,
        )
        if why is not None:
            return self._reject(401, why)
        try:
            data = json.loads(body.decode("utf-8"))
            if not isinstance(data, Mapping):
                raise ValueError("not a JSON object")
            event = data.get("event")
            event_id = data.get("id")
            payload = data.get("payload") or {}
            if not isinstance(event, str) or not isinstance(event_id, str) or not event_id:
                raise ValueError("no event or id")
            if not isinstance(payload, Mapping):
                raise ValueError("payload is not an object")
        except (ValueError, UnicodeDecodeError) as exc:
            return self._reject(400, f"malformed webhook body: {exc}")

        if event_id in self._seen_events:
            key = self._seen_events[event_id]
            pending = key if key is not None and key in self._inbox else None
            log.debug("smsgate %s: repeated webhook %s (%s)", self.name, event_id, event)
            return 200, "ok: already processed", pending

        if event == "sms:received":
            result = self._received(event_id, payload)
            if result[0] != 200:
                return result
            self._seen_events[event_id] = f"smsgate:{event_id}"
        elif event in ("sms:sent", "sms:delivered", "sms:failed"):
            result = self._status_event(event, event_id, payload)
            if result[0] != 200:
                return result
            self._seen_events[event_id] = None
        elif event == "system:ping":
            self._last_ping = self._wall()
            self._seen_events[event_id] = None
            result = (200, "ok", None)
        else:
            self._seen_events[event_id] = None
            result = (200, f"ignored event {snippet(event, 30)}", None)
        self.webhooks_accepted += 1
        return result

    def _received(self, event_id: str, payload: Mapping[str, Any]) -> tuple[int, str, str | None]:
        self._expire_inbox()
        if len(self._inbox) >= self.inbox_limit:
            log.warning(
                "smsgate %s: inbound queue full (%d); phone will retry", self.name, self.inbox_limit
            )
            return 503, "inbound queue full; retry later", None
        sender = payload.get("phoneNumber")
        text = payload.get("message")
        if not isinstance(sender, str) or not isinstance(text, str):
            return self._reject(400, "sms:received without phoneNumber/message")
        sim = payload.get("simNumber")
        channel = (
            str(sim) if isinstance(sim, int) and str(sim) in self.channels else self.channels[0]
        )
        received_at = parse_event_time(payload.get("receivedAt")) or datetime.now(timezone.utc)
        key = f"smsgate:{event_id}"
        sms = InboundSms(
            channel=channel,
            sender=sender,
            text=text,
            received_at=received_at,
            device_key=key,
            raw=json.dumps(
                {
                    "event": "sms:received",
                    "id": event_id,
                    "simNumber": sim,
                    "receivedAt": payload.get("receivedAt"),
                }
            ),
        )
        if key not in self._acked:
            self._inbox[key] = sms
            self._inbox_since[key] = time.monotonic()
        log.info("smsgate %s: inbound SMS on sim %s (event %s)", self.name, channel, event_id)
        return 200, "ok", key if key in self._inbox else None

    def _status_event(
        self, event: str, event_id: str, payload: Mapping[str, Any]
    ) -> tuple[int, str, None]:
        message_id = payload.get("messageId")
        if not isinstance(message_id, str) or not message_id:
            return self._reject(400, f"{event} without messageId")
        tracked = self._track(message_id)
        before = tracked.combined()
        tracked.events += 1
        parts = payload.get("partsCount")
        if isinstance(parts, int) and not isinstance(parts, bool) and parts > 0:
            tracked.parts_event = parts
        if event == "sms:sent":
            tracked.sent = True
        elif event == "sms:delivered":
            tracked.sent = True
            tracked.delivered.add(event_id)
        else:
            tracked.failed_reason = str(payload.get("reason") or "no reason given")
        after = tracked.combined()
        log.debug("smsgate %s: %s for %s (event %s)", self.name, event, message_id, event_id)
        if after is not None and after != before and self.on_status is not None:
            try:
                self.on_status(message_id, after)
            except Exception:  # noqa: BLE001 - a listener bug must not fail the webhook
                log.exception("smsgate %s: on_status listener failed", self.name)
        return 200, "ok", None

    # ---------------------------------------------------------------- webhooks registration

    def webhook_id(self, event: str) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "device"
        return f"smpp-bridge-{slug}-{event.split(':')[-1]}"

    async def register_webhooks(self, url: str, events: Iterable[str] = EVENTS) -> WebhookSetup:
        """Point the phone's webhooks for ``events`` at ``url`` (idempotent).

        Lists the phone's webhooks first and registers only what is missing; our webhooks use
        fixed ids (``webhook_id``), so a changed URL replaces the old registration instead of
        adding one. Never raises for device answers: see ``WebhookSetup.ok``/``detail``.
        """
        self._check_open()
        reply = await self._request("GET", "/webhooks")
        if reply.error is not None or reply.status != 200:
            detail = reply.error or f"HTTP {reply.status}: {self._app_message(reply)}"
            self._failed(f"webhooks list: {detail}", auth=reply.status in (401, 403))
            return WebhookSetup(ok=False, detail=f"cannot list webhooks: {detail}")
        try:
            current = _json(reply)
            if not isinstance(current, list):
                raise ValueError("not a list")
        except ValueError as exc:
            self._failed(f"webhooks list: {exc}", protocol=True)
            return WebhookSetup(ok=False, detail=f"unreadable webhook list: {exc}")
        have = {(str(w.get("event")), str(w.get("url"))) for w in current if isinstance(w, Mapping)}
        created, existing = [], []
        for event in events:
            if (event, url) in have:
                existing.append(event)
                continue
            answer = await self._request(
                "POST",
                "/webhooks",
                json_body={"id": self.webhook_id(event), "url": url, "event": event},
            )
            if answer.error is not None or answer.status not in (200, 201, 202):
                detail = answer.error or f"HTTP {answer.status}: {self._app_message(answer)}"
                self._failed(f"webhook {event}: {detail}", auth=answer.status in (401, 403))
                return WebhookSetup(
                    ok=False,
                    created=tuple(created),
                    existing=tuple(existing),
                    detail=f"registering {event} failed: {detail}",
                )
            created.append(event)
        self._ok()
        log.info(
            "smsgate %s: webhooks -> %s (new: %s)", self.name, url, ", ".join(created) or "none"
        )
        return WebhookSetup(ok=True, created=tuple(created), existing=tuple(existing), detail="ok")

    # ---------------------------------------------------------------- inbox

    async def inbox(self) -> list[InboundSms]:
        """Every inbound SMS received by webhook and not yet acknowledged, oldest first. No
        device call: SMS arrive only by webhook.

        An entry nobody acknowledges is dropped after ``inbox_ttl`` seconds (the bridge's
        inbox poller has had it many times by then: with ``handle_webhook_async`` that only
        happens when ``delete_inbox`` is never called, which would otherwise fill the queue)."""
        self._check_open()
        self._expire_inbox()
        return sorted(self._inbox.values(), key=lambda s: (s.received_at, s.device_key))

    def _expire_inbox(self) -> None:
        limit = time.monotonic() - self.inbox_ttl
        old = [key for key, since in self._inbox_since.items() if since < limit]
        for key in old:
            self._inbox.pop(key, None)
            self._inbox_since.pop(key, None)
        if old:
            log.warning(
                "smsgate %s: %d inbound SMS never acknowledged (delete_inbox) within %g s; "
                "dropped from the queue",
                self.name,
                len(old),
                self.inbox_ttl,
            )

    async def delete_inbox(self, items: Iterable[InboundSms]) -> None:
        """Acknowledge stored SMS: they leave ``inbox()`` and their webhook (if it is waiting in
        ``handle_webhook_async``) is answered 200."""
        for item in items:
            key = item.device_key
            self._inbox_since.pop(key, None)
            if self._inbox.pop(key, None) is not None:
                self._acked[key] = True
            event = self._ack_events.pop(key, None)
            if event is not None:
                event.set()

    # ---------------------------------------------------------------- health

    async def health(self) -> DeviceHealth:
        """``GET /health`` on the phone, plus webhook and error counters in the detail."""
        self._check_open()
        reply = await self._request("GET", "/health")
        if reply.error is not None:
            return self._health(reachable=False, detail=f"unreachable: {reply.error}")
        if reply.status in (401, 403):
            self._counters.auth_failed = True
            return self._health(reachable=True, detail="phone refused our credentials")
        parts = []
        try:
            data = _json(reply)
            if not isinstance(data, Mapping) or "status" not in data:
                raise ValueError("no status")
            app_status = str(data["status"])
            parts.append(f"app {app_status}")
            checks = data.get("checks") or {}
            bad = [
                f"{name}={check.get('observedValue')}"
                for name, check in (checks.items() if isinstance(checks, Mapping) else [])
                if isinstance(check, Mapping) and check.get("status") not in ("pass", None)
            ]
            if bad:
                parts.append("checks: " + ", ".join(bad))
        except ValueError:
            self._counters.protocol_errors += 1
            parts.append(f"unreadable /health answer (HTTP {reply.status})")
        if self._webhook_secret is not None:
            webhook = (
                f"webhooks: {self.webhooks_accepted} accepted, {self.webhooks_rejected} rejected"
            )
            if self.webhooks_rejected:
                webhook += f" (last: {self._last_reject})"
            if self._last_ping is not None:
                webhook += f"; last system:ping {self._wall() - self._last_ping:.0f} s ago"
            parts.append(webhook)
        if self._counters.consecutive_errors:
            parts.append(self._counters.summary())
        channels = {ch: ChannelHealth() for ch in self.channels}
        return self._health(reachable=True, detail="; ".join(parts), channels=channels)

    def _health(
        self, *, reachable: bool, detail: str, channels: Mapping[str, ChannelHealth] | None = None
    ) -> DeviceHealth:
        return self._counters.health(
            reachable=reachable, detail=detail, channels=channels or {}, redact=self._redact
        )

    # ---------------------------------------------------------------- lifecycle

    async def aclose(self) -> None:
        if not self._http.closed:
            for event in self._ack_events.values():
                event.set()  # waiting webhooks answer 503: not stored
            self._ack_events.clear()
        await self._http.aclose()
