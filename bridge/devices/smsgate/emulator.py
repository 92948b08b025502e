"""SMSGate emulator: the android-sms-gateway app in Local Server mode, with a simulated phone
that calls the registered webhooks.

Wire format (docs/devices/smsgate.md), HTTP Basic auth on every route:

* ``POST /message`` ``{"id"?, "textMessage":{"text"} | "message", "phoneNumbers":[…],
  "simNumber"?, "withDeliveryReport"?, "priority"?}`` -> 202 ``{"id","state":"Pending",
  "isHashed":false,"isEncrypted":false,"recipients":[{"phoneNumber","state","error"}],
  "states":{…}}``. Numbers must be E.164 (``+`` and 7-15 digits) unless the query has
  ``skipPhoneValidation=true``; errors are 400 ``{"message":"…"}``.
* ``GET /message/{id}`` -> the same shape; 404 ``{"message":"Message not found"}``.
* ``GET /webhooks`` -> ``[{"id","url","event"}]``; ``POST /webhooks`` ``{"id"?,"url","event"}``
  -> 201 (an existing id is replaced); ``DELETE /webhooks/{id}`` -> 204.
* ``GET /health`` -> ``{"status":"pass","version",…,"checks":{…}}``.

The simulated phone, per accepted message: Pending -> Processed (``process_delay``) -> Sent
(``send_delay``, webhook ``sms:sent``) -> one ``sms:delivered`` per PART (``deliver_delay``
apart; parts counted like a handset: 160/153 GSM 7-bit, 70/67 UCS2) when a delivery report
was asked for. Like the real app, the message's state says Delivered as soon as ANY part is
delivered. ``fail_next(reason=…, part=None)`` fails the next message before sending
(``sms:failed``); with ``part=k`` the first k-1 parts are delivered and part k fails.

Webhook calls: ``POST <url>`` with ``{"deviceId","event","id","payload","webhookId"}``,
``X-Timestamp`` (Unix seconds) and ``X-Signature`` = hex HMAC-SHA256(signing_key,
body + X-Timestamp); a non-2xx answer or a network error is retried after
``webhook_retry_delays`` (same body, same event id, fresh timestamp). Every attempt is in
``webhook_log``.

Where the docs do not say, the emulator picks and marks it [I]: a duplicate message id is
409; a ``simNumber`` the phone lacks is 400; ``sms:sent`` carries ``partsCount`` only when
``parts_count_in_payload`` is on; failure reasons look like ``RESULT_ERROR_GENERIC_FAILURE``.

Faults and test hooks are the shared ones (``bridge/emulators/faults.py``, docs/emulators.md);
endpoints are ``message`` (POST /message), ``status`` (GET /message/{id}), ``webhooks``,
``health``. ``POST /emulator/inject`` takes sender, text[, sim][, when]; ``GET
/emulator/webhook_log`` lists every webhook attempt; ``POST /emulator/faults`` also takes
``fail_next`` {count, reason, part}.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import random
import re
import string
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any

import attrs
import httpx
import trio

from bridge.emulators.faults import HttpDeviceEmulator, HttpFaults, status_phrase
from bridge.emulators.http import HttpServer, Request, Response, json_response, unauthorized
from bridge.smpp.text import split_text

__all__ = [
    "ENDPOINTS",
    "SentMessage",
    "SmsGateEmulator",
    "SmsGateFaults",
    "WebhookAttempt",
    "run_smsgate_emulator",
]

log = logging.getLogger("bridge.emulators.smsgate")

ENDPOINTS = frozenset({"message", "status", "webhooks", "health"})
WEBHOOK_EVENTS = frozenset(
    {"sms:received", "sms:sent", "sms:delivered", "sms:failed", "sms:data-received", "system:ping"}
)
E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_ID_ALPHABET = string.ascii_letters + string.digits + "_-"


@attrs.define
class SmsGateFaults(HttpFaults):
    """The shared switches (``HttpFaults``; ``hang_after_processing`` applies to POST
    /message) and the app's own misbehaviour."""

    ENDPOINTS = ENDPOINTS
    DEVICE = "SMSGate"

    #: Sign webhooks with a wrong key.
    wrong_signature: bool = False
    #: Send webhooks with an X-Timestamp 10 minutes old.
    stale_timestamp: bool = False
    #: Deliver every webhook twice (same event id, as a retry would).
    duplicate_webhooks: bool = False
    #: Part reports in reverse order, and sms:sent only after the first report.
    out_of_order_parts: bool = False


@attrs.frozen
class SentMessage:
    id: str
    phone_numbers: tuple[str, ...]
    text: str
    sim: int | None
    with_delivery_report: bool
    priority: int
    parts: int
    at: datetime

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "phoneNumbers": list(self.phone_numbers),
            "text": self.text,
            "simNumber": self.sim,
            "withDeliveryReport": self.with_delivery_report,
            "priority": self.priority,
            "parts": self.parts,
            "at": self.at.isoformat(),
        }


@attrs.frozen
class WebhookAttempt:
    event: str
    event_id: str
    url: str
    attempt: int
    #: HTTP status of the answer, or None on a network error.
    status: int | None
    error: str = ""


@attrs.frozen
class _FailPlan:
    reason: str
    #: None: fail before sending; k: parts 1..k-1 delivered, part k fails.
    part: int | None = None


@attrs.define
class _Message:
    id: str
    text: str
    phones: list[str]
    sim: int | None
    with_report: bool
    priority: int
    parts: int
    state: str = "Pending"
    error: str | None = None
    delivered_parts: int = 0
    states: dict[str, str] = attrs.Factory(dict)
    plan: _FailPlan | None = None


class SmsGateEmulator(HttpDeviceEmulator):
    PROCESSING = frozenset({"message"})
    GARBAGE = b"\x00\xffKtor: <html>Internal</html> \x1b[0m not JSON"

    def __init__(
        self,
        username: str = "sms",
        password: str = "password",
        *,
        sims: int = 2,
        signing_key: str = "emulator-signing-key",
        device_id: str = "ffffffffceb0b1db0000018e937c815b",
        process_delay: float = 0.05,
        send_delay: float = 0.05,
        deliver_delay: float = 0.05,
        parts_count_in_payload: bool = False,
        webhook_retry_delays: tuple[float, ...] = (0.1, 0.2, 0.4),
        webhook_timeout: float = 5.0,
        device_tz: tzinfo = timezone(timedelta(hours=7)),
        require_https_webhooks: bool = False,
        seed: int | None = None,
        faults: SmsGateFaults | None = None,
        wall_clock: Callable[[], float] = time.time,
        **fault_options: Any,
    ):
        self._init_faults(SmsGateFaults, faults, fault_options)
        if not 1 <= sims <= 3:
            raise ValueError("the app knows SIM numbers 1..3")
        self.username = username
        self.password = password
        self.sims = sims
        self.signing_key = signing_key
        self.device_id = device_id
        self.process_delay = process_delay
        self.send_delay = send_delay
        self.deliver_delay = deliver_delay
        self.parts_count_in_payload = parts_count_in_payload
        self.webhook_retry_delays = tuple(webhook_retry_delays)
        self.webhook_timeout = webhook_timeout
        self.device_tz = device_tz
        self.require_https_webhooks = require_https_webhooks
        self.sent: list[SentMessage] = []
        self.webhook_log: list[WebhookAttempt] = []
        self.webhooks: dict[str, dict[str, str]] = {}
        self._messages: dict[str, _Message] = {}
        self._fail_next: list[_FailPlan] = []
        self._rng = random.Random(seed)
        self._wall = wall_clock
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self._outbox_send, self._outbox_recv = trio.open_memory_channel[tuple[str, dict[str, Any]]](
            1000
        )
        self._pending = 0
        self._idle = trio.Event()
        self._idle.set()
        self.server = HttpServer(self.handle, name="smsgate-emulator")

    # ---------------------------------------------------------------- runtime controls

    def fail_next(
        self, count: int = 1, reason: str = "RESULT_ERROR_GENERIC_FAILURE", part: int | None = None
    ) -> None:
        """The next ``count`` messages fail: before sending, or (``part=k``) at part k."""
        if part is not None and part < 1:
            raise ValueError("part is 1-based")
        self._fail_next.extend([_FailPlan(reason, part)] * count)

    def state_of(self, message_id: str) -> str | None:
        message = self._messages.get(message_id)
        return None if message is None else message.state

    def inject_sms(
        self, sender: str, text: str, *, sim: int | None = 1, when: datetime | None = None
    ) -> str:
        """An SMS arrives on the phone: every ``sms:received`` webhook is called. Returns the
        event id."""
        when = when or datetime.now(timezone.utc)
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.device_tz)
        local = when.astimezone(self.device_tz)
        payload = {
            # The app derives messageId from the content: not unique.
            "messageId": hashlib.sha256(f"{sender}|{text}".encode()).hexdigest()[:16],
            "message": text,
            "phoneNumber": sender,
            "simNumber": sim,
            "receivedAt": local.isoformat(timespec="milliseconds"),
        }
        return self._emit("sms:received", payload)

    async def wait_webhooks_idle(self) -> None:
        """Until every queued webhook delivery (with its retries) is done."""
        while self._pending:
            await self._idle.wait()

    # ---------------------------------------------------------------- serving

    async def serve(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve and run the simulated phone until cancelled."""
        async with httpx.AsyncClient(
            timeout=self.webhook_timeout, trust_env=False, follow_redirects=False
        ) as client:
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._webhook_worker)
                    actual = await nursery.start(self.server.serve, host, port)
                    task_status.started(actual)
            finally:
                self._nursery = None
                self._client = None

    def route(self, request: Request) -> str | None:
        found = self._route(request)
        return None if found is None else found[0]

    def not_found(self, request: Request) -> Response:
        return self._json({"message": "Not Found"}, 404)

    def error_page(self, status: int) -> Response:
        return self._json({"message": status_phrase(status)}, status)

    async def process(self, endpoint: str, request: Request) -> Response:
        if not request.check_basic_auth(self.username, self.password):
            return unauthorized("SMS Gateway")
        found = self._route(request)
        assert found is not None
        return found[1](request)

    def _route(self, request: Request) -> tuple[str, Callable[[Request], Response]] | None:
        path, method = request.path.rstrip("/") or "/", request.method
        if path == "/message" and method == "POST":
            return "message", self._post_message
        if path.startswith("/message/") and method == "GET":
            return "status", self._get_message
        if path == "/webhooks" and method in ("GET", "POST"):
            return "webhooks", self._list_webhooks if method == "GET" else self._post_webhook
        if path.startswith("/webhooks/") and method == "DELETE":
            return "webhooks", self._delete_webhook
        if path == "/health" and method == "GET":
            return "health", self._health
        return None

    @staticmethod
    def _json(obj: Any, status: int = 200) -> Response:
        return Response(
            status=status,
            body=json.dumps(obj, ensure_ascii=False),
            content_type="application/json; charset=UTF-8",
        )

    # -- POST /message

    def _post_message(self, request: Request) -> Response:
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            return self._json({"message": "Invalid JSON"}, 400)
        if not isinstance(data, Mapping):
            return self._json({"message": "Invalid request body"}, 400)
        text_message = data.get("textMessage")
        if isinstance(text_message, Mapping) and isinstance(text_message.get("text"), str):
            text = text_message["text"]
        elif isinstance(data.get("message"), str):
            text = data["message"]
        else:
            return self._json({"message": "textMessage.text is required"}, 400)
        phones = data.get("phoneNumbers")
        if (
            not isinstance(phones, list)
            or not phones
            or not all(isinstance(p, str) for p in phones)
        ):
            return self._json({"message": "phoneNumbers is required"}, 400)
        if request.query.get("skipPhoneValidation", "").lower() != "true":
            for phone in phones:
                if not E164.match(phone):
                    return self._json({"message": f"Invalid phone number: {phone}"}, 400)
        sim = data.get("simNumber")
        if sim is not None and (not isinstance(sim, int) or not 1 <= sim <= self.sims):
            return self._json({"message": f"Invalid SIM number {sim}"}, 400)
        priority = data.get("priority", 0)
        if not isinstance(priority, int) or not -128 <= priority <= 127:
            return self._json({"message": "priority must be -128..127"}, 400)
        message_id = data.get("id") or self._new_id()
        if not isinstance(message_id, str):
            return self._json({"message": "id must be a string"}, 400)
        if message_id in self._messages:
            return self._json({"message": f"Message with id {message_id} already exists"}, 409)
        with_report = data.get("withDeliveryReport", True) is not False
        message = _Message(
            id=message_id,
            text=text,
            phones=list(phones),
            sim=sim,
            with_report=with_report,
            priority=priority,
            parts=len(split_text(text).parts),
            plan=self._fail_next.pop(0) if self._fail_next else None,
        )
        message.states["Pending"] = self._now_iso()
        self._messages[message_id] = message
        self.sent.append(
            SentMessage(
                id=message_id,
                phone_numbers=tuple(phones),
                text=text,
                sim=sim,
                with_delivery_report=with_report,
                priority=priority,
                parts=message.parts,
                at=datetime.now(timezone.utc),
            )
        )
        if self._nursery is not None:
            self._nursery.start_soon(self._simulate, message)
        return self._json(self._message_json(message), 202)

    def _get_message(self, request: Request) -> Response:
        message = self._messages.get(request.path[len("/message/") :])
        if message is None:
            return self._json({"message": "Message not found"}, 404)
        return self._json(self._message_json(message))

    def _message_json(self, message: _Message) -> dict[str, Any]:
        return {
            "id": message.id,
            "state": message.state,
            "isHashed": False,
            "isEncrypted": False,
            "recipients": [
                {"phoneNumber": p, "state": message.state, "error": message.error}
                for p in message.phones
            ],
            "states": dict(message.states),
        }

    # -- webhooks

    def _list_webhooks(self, request: Request) -> Response:
        return self._json(list(self.webhooks.values()))

    def _post_webhook(self, request: Request) -> Response:
        try:
            data = request.json()
        except (ValueError, UnicodeDecodeError):
            return self._json({"message": "Invalid JSON"}, 400)
        if not isinstance(data, Mapping):
            return self._json({"message": "Invalid request body"}, 400)
        url, event = data.get("url"), data.get("event")
        if event not in WEBHOOK_EVENTS:
            return self._json({"message": f"Invalid event type {event!r}"}, 400)
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s]+", url):
            return self._json({"message": "url is required"}, 400)
        if self.require_https_webhooks and not (
            url.startswith("https://") or url.startswith("http://127.0.0.1")
        ):
            return self._json({"message": "url must be https"}, 400)
        webhook_id = data.get("id") or self._new_id()
        self.webhooks[str(webhook_id)] = {"id": str(webhook_id), "url": url, "event": event}
        return self._json(self.webhooks[str(webhook_id)], 201)

    def _delete_webhook(self, request: Request) -> Response:
        self.webhooks.pop(request.path[len("/webhooks/") :], None)
        return Response(status=204, content_type="")

    def _health(self, request: Request) -> Response:
        failed = sum(1 for m in self._messages.values() if m.state == "Failed")
        check = lambda value, unit, desc, status="pass": {  # noqa: E731
            "description": desc,
            "observedUnit": unit,
            "observedValue": value,
            "status": status,
        }
        return self._json(
            {
                "status": "warn" if failed else "pass",
                "version": "1.0.0-emulator",
                "releaseId": 1,
                "checks": {
                    "messages:failed": check(
                        failed,
                        "messages",
                        "Failed messages for last hour",
                        "warn" if failed else "pass",
                    ),
                    "connection:status": check(1, "Yes/No", "Internet connection status"),
                    "battery:level": check(94, "percent", "Battery level in percent"),
                },
            }
        )

    # ---------------------------------------------------------------- the simulated phone

    def _now_iso(self) -> str:
        return (
            datetime.now(timezone.utc).astimezone(self.device_tz).isoformat(timespec="milliseconds")
        )

    def _new_id(self) -> str:
        return "".join(self._rng.choice(_ID_ALPHABET) for _ in range(21))

    def _set_state(self, message: _Message, state: str) -> None:
        message.state = state
        message.states.setdefault(state, self._now_iso())

    def _event_payload(self, message: _Message, **extra: Any) -> dict[str, Any]:
        return {
            "messageId": message.id,
            "phoneNumber": message.phones[0],
            "simNumber": message.sim,
            **extra,
        }

    async def _simulate(self, message: _Message) -> None:
        await trio.sleep(self.process_delay)
        self._set_state(message, "Processed")
        await trio.sleep(self.send_delay)
        plan = message.plan
        if plan is not None and plan.part is None:
            self._fail(message, plan.reason)
            return
        self._set_state(message, "Sent")
        sent_extra: dict[str, Any] = {"sentAt": self._now_iso()}
        if self.parts_count_in_payload:
            sent_extra["partsCount"] = message.parts
        sent_payload = self._event_payload(message, **sent_extra)
        reorder = self.faults.out_of_order_parts
        if not reorder:
            self._emit("sms:sent", sent_payload)
        if not message.with_report:
            if reorder:
                self._emit("sms:sent", sent_payload)
            return
        order = list(range(1, message.parts + 1))
        if reorder:
            order.reverse()
        for n, part in enumerate(order):
            await trio.sleep(self.deliver_delay)
            if plan is not None and plan.part == part:
                if reorder and n == 0:
                    self._emit("sms:sent", sent_payload)
                self._fail(message, plan.reason)
                return
            message.delivered_parts += 1
            self._set_state(message, "Delivered")  # the app: any part delivered -> Delivered
            self._emit("sms:delivered", self._event_payload(message, deliveredAt=self._now_iso()))
            if reorder and n == 0:
                self._emit("sms:sent", sent_payload)

    def _fail(self, message: _Message, reason: str) -> None:
        message.error = reason
        self._set_state(message, "Failed")
        self._emit(
            "sms:failed", self._event_payload(message, failedAt=self._now_iso(), reason=reason)
        )

    # ---------------------------------------------------------------- webhook calls

    def _emit(self, event: str, payload: dict[str, Any]) -> str:
        event_id = self._new_id()
        for webhook in list(self.webhooks.values()):
            if webhook["event"] != event:
                continue
            body = json.dumps(
                {
                    "deviceId": self.device_id,
                    "event": event,
                    "id": event_id,
                    "payload": payload,
                    "webhookId": webhook["id"],
                },
                separators=(",", ":"),
                ensure_ascii=False,
            ).encode("utf-8")
            copies = 2 if self.faults.duplicate_webhooks else 1
            for _ in range(copies):
                self._pending += 1
                self._idle = trio.Event() if self._idle.is_set() else self._idle
                try:
                    self._outbox_send.send_nowait(
                        (webhook["url"], {"event": event, "id": event_id, "body": body})
                    )
                except trio.WouldBlock:
                    self._done_one()
                    log.warning("smsgate emulator: webhook queue full, %s dropped", event)
        return event_id

    def _done_one(self) -> None:
        self._pending -= 1
        if self._pending == 0:
            self._idle.set()

    def sign(self, body: bytes, timestamp: str) -> str:
        key = "wrong-" + self.signing_key if self.faults.wrong_signature else self.signing_key
        return hmac.new(key.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()

    async def _webhook_worker(self) -> None:
        async with trio.open_nursery() as retries:
            async for url, item in self._outbox_recv:
                ok = await self._deliver(url, item, 1)
                if ok or not self.webhook_retry_delays:
                    self._done_one()
                else:
                    retries.start_soon(self._retry, url, item)

    async def _retry(self, url: str, item: dict[str, Any]) -> None:
        try:
            for attempt, pause in enumerate(self.webhook_retry_delays, start=2):
                await trio.sleep(pause)
                if await self._deliver(url, item, attempt):
                    return
        finally:
            self._done_one()

    async def _deliver(self, url: str, item: dict[str, Any], attempt: int) -> bool:
        assert self._client is not None
        now = int(self._wall())
        if self.faults.stale_timestamp:
            now -= 600
        timestamp = str(now)
        headers = {
            "Content-Type": "application/json",
            "X-Timestamp": timestamp,
            "X-Signature": self.sign(item["body"], timestamp),
            "User-Agent": "android-sms-gateway/emulator",
        }
        status: int | None = None
        error = ""
        try:
            response = await self._client.post(url, content=item["body"], headers=headers)
            status = response.status_code
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        self.webhook_log.append(
            WebhookAttempt(item["event"], item["id"], url, attempt, status, error)
        )
        return status is not None and 200 <= status < 300

    # ---------------------------------------------------------------- test hooks over HTTP

    def inject_from(self, data: Mapping[str, Any]) -> dict[str, Any]:
        when = datetime.fromisoformat(data["when"]) if data.get("when") else None
        sim = data.get("sim", 1)
        event_id = self.inject_sms(
            str(data["sender"]), str(data["text"]), sim=None if sim is None else int(sim), when=when
        )
        return {"event_id": event_id}

    def control_extra(self, request: Request) -> Response | None:
        if request.path == "/emulator/webhook_log" and request.method == "GET":
            return json_response([attrs.asdict(a) for a in self.webhook_log])
        return None

    def device_state(self) -> dict[str, Any]:
        return {
            "webhooks": list(self.webhooks.values()),
            "webhook_attempts": len(self.webhook_log),
            "webhooks_pending": self._pending,
            "messages": {
                m.id: {"state": m.state, "parts": m.parts, "delivered_parts": m.delivered_parts}
                for m in self._messages.values()
            },
        }


async def run_smsgate_emulator(port: int, host: str = "127.0.0.1", **opts: Any) -> None:
    """Run an SMSGate (android-sms-gateway, Local Server) emulator until cancelled.

    ``opts`` are ``SmsGateEmulator`` keyword arguments (username, password, sims, signing_key,
    process_delay, send_delay, deliver_delay, parts_count_in_payload, ...) and any
    ``SmsGateFaults`` field. The driver's base_url is ``http://<host>:<port>``.
    """
    emulator = SmsGateEmulator(**opts)
    async with trio.open_nursery() as nursery:
        actual = await nursery.start(emulator.serve, host, port)
        log.info("SMSGate emulator on http://%s:%d/ (user %r)", host, actual, emulator.username)


# ============================================================================================
# `smpp-bridge emulate smsgate` (bridge/cli.py reads these)

DEFAULT_PORT = 8085


def add_arguments(parser: Any) -> None:
    """This kind's options of ``smpp-bridge emulate`` (an ``argparse`` parser)."""
    parser.add_argument("--username", default="sms", help="login [sms]")
    parser.add_argument("--password", default="password", help="password [password]")
    parser.add_argument("--sims", type=int, default=2, help="SIM slots [2]")
    parser.add_argument("--signing-key", default="emulator-signing-key",
                        help="the webhook signing key (the bridge's webhook_secret) [emulator-signing-key]")
    parser.add_argument("--process-delay", type=float, default=0.05, help="seconds Pending -> Processed [0.05]")
    parser.add_argument("--send-delay", type=float, default=0.05, help="seconds Processed -> Sent [0.05]")
    parser.add_argument("--deliver-delay", type=float, default=0.05,
                        help="seconds per part's delivery report [0.05]")


def from_cli(args: Any) -> tuple[SmsGateEmulator, str]:
    """(emulator, a one-line description) from the parsed options."""
    emu = SmsGateEmulator(
        username=args.username,
        password=args.password,
        sims=args.sims,
        signing_key=args.signing_key,
        process_delay=args.process_delay,
        send_delay=args.send_delay,
        deliver_delay=args.deliver_delay,
        seed=args.seed,
    )
    return emu, f"local server, user {emu.username!r}, {emu.sims} SIM(s)"
