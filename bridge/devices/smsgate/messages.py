"""SMSGate webhooks and message states, sans-IO (docs/devices/smsgate.md).

What the app's webhooks and ``GET /message/{id}`` answers mean, with no HTTP and no timers:
the webhook signature (``sign_webhook``, ``verify_webhook_signature``), a failure reason to an
``error_code`` (``failure_code``), a polled state to a ``StatusResult``
(``judge_message_state``), and what the driver remembers per message from the webhook events
(``TrackedMessage``: every part's delivery report, or one failure). ``driver.py`` receives the
webhooks, polls the phone and calls into this module.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections import OrderedDict
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import attrs

from bridge.devices.base import DeliveryState, StatusResult
from bridge.devices.http_common import snippet

__all__ = [
    "ANDROID_RESULT_CODES",
    "BoundedMap",
    "EVENTS",
    "TrackedMessage",
    "failure_code",
    "judge_message_state",
    "parse_event_time",
    "sign_webhook",
    "verify_webhook_signature",
]

#: The four events the bridge registers.
EVENTS = ("sms:received", "sms:sent", "sms:delivered", "sms:failed")

#: android.telephony.SmsManager result codes, as they show in the app's failure reasons.
ANDROID_RESULT_CODES = {
    "RESULT_ERROR_GENERIC_FAILURE": 1,
    "RESULT_ERROR_RADIO_OFF": 2,
    "RESULT_ERROR_NULL_PDU": 3,
    "RESULT_ERROR_NO_SERVICE": 4,
    "RESULT_ERROR_LIMIT_EXCEEDED": 5,
    "RESULT_ERROR_FDN_CHECK_FAILURE": 6,
    "RESULT_ERROR_SHORT_CODE_NOT_ALLOWED": 7,
    "RESULT_ERROR_SHORT_CODE_NEVER_ALLOWED": 8,
}
_RESULT_NAME = re.compile(r"\bRESULT_[A-Z0-9_]+\b")
_STATE_MAP = {
    "pending": DeliveryState.PENDING,
    "processed": DeliveryState.PENDING,
    "sent": DeliveryState.SENT,
    "delivered": DeliveryState.DELIVERED,
    "failed": DeliveryState.FAILED,
}


# ============================================================================================
# Pure helpers


def sign_webhook(secret: str, body: bytes, timestamp: str) -> str:
    """The app's X-Signature: hex HMAC-SHA256(key=secret, msg=body + timestamp)."""
    return hmac.new(
        secret.encode("utf-8"), body + timestamp.encode("ascii"), hashlib.sha256
    ).hexdigest()


def verify_webhook_signature(
    secret: str,
    body: bytes,
    timestamp: str | None,
    signature: str | None,
    *,
    now: float,
    max_age: float = 300.0,
) -> str | None:
    """None when the request is authentic and fresh, else why not (for logs and the answer)."""
    if not signature or not timestamp:
        return "missing X-Signature or X-Timestamp"
    timestamp = timestamp.strip()
    if not timestamp.isdigit():
        return "X-Timestamp is not Unix seconds"
    if abs(now - int(timestamp)) > max_age:
        return f"stale X-Timestamp ({now - int(timestamp):+.0f} s, allowed {max_age:g})"
    expected = sign_webhook(secret, body, timestamp)
    if not hmac.compare_digest(expected.encode(), signature.strip().lower().encode()):
        return "bad X-Signature"
    return None


def failure_code(reason: str | None) -> str:
    """A short ``error_code`` for a failure reason.

    An Android SmsManager result name in the text (``RESULT_ERROR_RADIO_OFF``) -> its number
    ("2"); another ``RESULT_*`` name -> that name; a reason that is just a number -> it;
    otherwise "failed" (the full reason stays in the detail).
    """
    text = (reason or "").strip()
    m = _RESULT_NAME.search(text)
    if m:
        name = m.group(0)
        code = ANDROID_RESULT_CODES.get(name)
        return str(code) if code is not None else name
    if text.isdigit():
        return text
    return "failed"


def _recipient_error(answer: Mapping[str, Any]) -> str | None:
    for recipient in answer.get("recipients") or []:
        if isinstance(recipient, Mapping) and recipient.get("error"):
            return str(recipient["error"])
    for key in ("reason", "error"):
        if isinstance(answer.get(key), str) and answer[key]:
            return answer[key]
    return None


def judge_message_state(answer: Mapping[str, Any]) -> StatusResult:
    """A ``GET /message/{id}`` answer -> StatusResult (ValueError when it has no state)."""
    state = answer.get("state")
    if not isinstance(state, str) or not state:
        raise ValueError("no state in the answer")
    mapped = _STATE_MAP.get(state.strip().lower())
    if mapped is None:
        # A state we do not know (a new app version?): not final; poll again.
        return StatusResult(
            DeliveryState.UNKNOWN, detail=f"unfamiliar state {snippet(state, 30)}", poll_failed=True
        )
    if mapped is DeliveryState.FAILED:
        reason = _recipient_error(answer)
        return StatusResult(
            DeliveryState.FAILED,
            error_code=failure_code(reason),
            detail=f"Failed: {snippet(reason or 'no reason given', 80)}",
        )
    return StatusResult(mapped, detail=state)


def parse_event_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed.astimezone(timezone.utc)


# ============================================================================================
# What the driver remembers per message


@attrs.define
class TrackedMessage:
    """What webhooks told us about one message."""

    #: Parts as counted from the text this driver sent (None: not sent by us / unknown).
    parts_sent: int | None = None
    #: Parts as the app said in an event payload (``partsCount``), if it did.
    parts_event: int | None = None
    sent: bool = False
    delivered: set[str] = attrs.Factory(set)
    failed_reason: str | None = None
    events: int = 0

    @property
    def parts(self) -> int:
        return self.parts_event or self.parts_sent or 1

    def combined(self) -> StatusResult | None:
        if self.failed_reason is not None:
            return StatusResult(
                DeliveryState.FAILED,
                error_code=failure_code(self.failed_reason),
                detail=f"sms:failed: {snippet(self.failed_reason, 80)}",
            )
        parts = self.parts
        if self.delivered:
            if len(self.delivered) >= parts:
                return StatusResult(
                    DeliveryState.DELIVERED,
                    detail=f"delivery report for all {parts} part(s)",
                )
            return StatusResult(
                DeliveryState.SENT,
                detail=f"delivery reports for {len(self.delivered)} of {parts} parts",
            )
        if self.sent:
            return StatusResult(DeliveryState.SENT, detail="sms:sent")
        return None


class BoundedMap(OrderedDict):
    """An insertion-ordered dict that forgets its oldest entries beyond ``limit``."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(key, value)
        while len(self) > self.limit:
            self.popitem(last=False)
