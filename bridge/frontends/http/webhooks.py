"""``POST /webhooks/smsgate/{device}``: an SMSGate phone's webhooks (inbound SMS, handset reports).

The phone sends no token and calls from the LAN, so this route has no guard (no token, no
loopback-Host or Origin check): the HMAC signature over body and timestamp, made with the
device's ``webhook_secret``, authenticates it. The driver checks it (401 when wrong or stale) and,
for an inbound SMS, answers only once the SMS is stored (503 meanwhile: the phone retries).
This is why SMSGate webhooks need the admin port (admin.port not 0, on an address the phone reaches).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ...http.server import Request, Response, json_response
from .asgi import ApiError, Route

#: What the receiver needs of a device: its webhook handler (headers, body) -> (status, detail).
WebhookHandler = Callable[[dict[str, str], bytes], Awaitable[tuple[int, str]]]


def smsgate_routes(receivers: Mapping[str, WebhookHandler]) -> list[Route]:
    """``receivers``: device name -> its driver's webhook handler (only devices that take webhooks)."""

    async def smsgate_webhook(req: Request, p: dict[str, str]) -> Response:
        name = p["device"]
        handler = receivers.get(name)
        if handler is None:
            raise ApiError(404, f"no smsgate device {name!r} runs in this bridge",
                           "the webhook URL ends in the device's name from the config: /webhooks/smsgate/NAME")
        status, detail = await handler(dict(req.headers), req.body)
        return json_response({"ok": 200 <= status < 300, "detail": detail}, status=status)

    return [Route("POST", "/webhooks/smsgate/{device}", smsgate_webhook)]


def receivers_of(drivers: Mapping[str, Any]) -> dict[str, WebhookHandler]:
    """The webhook handlers of the drivers whose kind declares webhooks."""
    return {name: d.handle_webhook_async for name, d in drivers.items() if d.declared.webhooks}
