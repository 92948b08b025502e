"""Webhook signatures (sans-IO): what the bridge sends with every webhook, and how a receiver
checks it.

Every webhook carries ``X-Bridge-Timestamp`` (Unix seconds) and ``X-Bridge-Signature``
(``sha256=`` + hex HMAC-SHA256 with the ESME's ``webhook_secret`` over ``TIMESTAMP.`` + body).
A receiver recomputes the HMAC, compares in constant time, and refuses a timestamp more than
``TOLERANCE`` seconds away from its clock: a recorded webhook replayed later fails, and the
body cannot be changed without the secret. (A receiver that must not act twice on an honest
retry keys on the body's ``id``: delivery is at least once.)
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Bridge-Timestamp"
SIGNATURE_HEADER = "X-Bridge-Signature"
TOLERANCE = 300


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def headers(secret: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: sign(secret, timestamp, body),
            "Content-Type": "application/json"}


def problem(secret: str, headers: Mapping[str, str], body: bytes, now: float,
            tolerance: float = TOLERANCE) -> str | None:
    """None when the webhook is authentic and fresh, else why not. ``headers`` lower-case."""
    stamp = headers.get(TIMESTAMP_HEADER.lower(), "")
    given = headers.get(SIGNATURE_HEADER.lower(), "")
    if not stamp.isdigit() or not given:
        return "missing timestamp or signature"
    if abs(now - int(stamp)) > tolerance:
        return f"timestamp {stamp} is more than {tolerance:.0f} s away from now: a replay, or a clock off"
    if not hmac.compare_digest(given.encode(), sign(secret, int(stamp), body).encode()):
        return "wrong signature"
    return None
