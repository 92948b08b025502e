"""The protocol every device driver implements, and the plain results it returns.

Rules for every driver:

* One driver object stands for one device (one GoIP, one router, one phone). It is shared by
  all channel tasks of that device; the scheduler guarantees that a *channel* never has two
  calls of ``send`` in flight (docs/architecture.md, rule 4). Calls on *different* channels may run
  concurrently.
* A normal device answer is a result, never an exception: "line busy", "wrong password",
  "garbage on the wire", "timed out" all come back as a ``SendResult`` / ``StatusResult``.
  ``DeviceError`` is raised only for programming or configuration mistakes (an unknown channel,
  a call after ``aclose``).
* ``detail`` strings are for humans and logs. They never contain credentials: drivers pass
  every string that may have touched a URL, a header or a device answer through a
  ``Redactor`` first.
* Drivers know nothing about SMPP, the store or the message lifecycle. They translate one
  device's wire format into these results; the scheduler decides what a result means for the
  message (retry, cool-down, fail, ambiguity policy).
"""

from __future__ import annotations

import base64
import enum
import logging
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Protocol, runtime_checkable

import attrs

__all__ = [
    "Capabilities",
    "Capability",
    "ChannelHealth",
    "DeliveryState",
    "DeviceError",
    "DeviceHealth",
    "Driver",
    "DriverBase",
    "InboundSms",
    "Redactor",
    "SendOutcome",
    "SendResult",
    "StatusResult",
    "install_httpx_log_redaction",
    "secret_text",
]


def secret_text(value: object) -> str:
    """A config ``Secret``'s text ("" when not set), for handing to a driver."""
    return value.reveal() if value is not None else ""  # type: ignore[attr-defined]


class DeviceError(Exception):
    """A programming or configuration problem (unknown channel, driver closed, bad options).

    Never raised for something the device said or failed to say: those are results.
    """


# --------------------------------------------------------------------------------------------
# send


class SendOutcome(enum.Enum):
    """What the device said to one send request, in the terms the scheduler acts on."""

    #: The device took the message. ``SendResult.ref`` is its message id (may be None).
    ACCEPTED = "accepted"
    #: The channel is busy with another message: retry on the same channel shortly.
    BUSY = "busy"
    #: The channel cannot send now (e.g. GSM logout): cool the channel down.
    CHANNEL_DOWN = "channel_down"
    #: The device refused our credentials: the whole device is unhealthy.
    AUTH_FAILED = "auth_failed"
    #: The device refused *this message* (e.g. GoIP HTTP 500 on a text starting with '[').
    #: Retrying the same text on the same device kind will fail again.
    REJECTED = "rejected"
    #: A transient device or network error; the message was certainly not sent.
    #: Retry with back-off.
    ERROR = "error"
    #: The request reached (or may have reached) the device but no answer came back:
    #: we cannot know whether the message went out. The scheduler applies its ambiguity policy.
    AMBIGUOUS = "ambiguous"


@attrs.frozen
class SendResult:
    outcome: SendOutcome
    #: Device message id when ACCEPTED (GoIP: 8 hex characters), else None.
    ref: str | None = None
    #: Human-readable explanation, safe to log (never contains credentials).
    detail: str = ""
    #: HTTP status of the device answer, if there was one.
    http_status: int | None = None

    @property
    def accepted(self) -> bool:
        return self.outcome is SendOutcome.ACCEPTED


# --------------------------------------------------------------------------------------------
# status


class DeliveryState(enum.Enum):
    #: Still sending (GoIP: STARTED). Poll again.
    PENDING = "pending"
    #: Handed to the network (GoIP HTTP: DONE with an empty error). Not a handset receipt.
    SENT = "sent"
    #: A real handset delivery report.
    DELIVERED = "delivered"
    #: The device reports failure; ``StatusResult.error_code`` says why (GoIP: "2172").
    FAILED = "failed"
    #: The device no longer shows our ref (slot overwritten, device reset), or - when
    #: ``StatusResult.poll_failed`` is set - the status could not be read this time.
    UNKNOWN = "unknown"

    @property
    def final(self) -> bool:
        """True when polling again cannot change the answer (for a successful poll)."""
        return self in (DeliveryState.SENT, DeliveryState.DELIVERED, DeliveryState.FAILED)


@attrs.frozen
class StatusResult:
    state: DeliveryState
    error_code: str | None = None
    detail: str = ""
    #: True when the device could not be read this time (unreachable, garbage, malformed XML,
    #: bad credentials). ``state`` is then UNKNOWN, but the message's fate is simply not known
    #: *yet*: poll again until the scheduler's status deadline. False means the device was
    #: read and its answer is ``state``.
    poll_failed: bool = False
    #: While PENDING: the network's newest intermediate stat (an upstream SMSC's ENROUTE,
    #: ACCEPTD ...), which the report tracker shows on the message; None for devices.
    network_stat: str | None = None


# --------------------------------------------------------------------------------------------
# inbox


@attrs.frozen
class InboundSms:
    #: Channel id local to the device ("1".."N" for a GoIP).
    channel: str
    sender: str
    text: str
    #: When the device received it, timezone-aware UTC.
    received_at: datetime
    #: Stable de-duplication key for this inbox entry, the same on every poll and across
    #: restarts (the store keeps seen keys; docs/architecture.md rule 6).
    device_key: str
    #: The entry as the device showed it (for the event log and for debugging).
    raw: str
    #: Where the entry lives on the device (GoIP: ring position), for ``delete_inbox``.
    slot: int | None = None
    #: Concatenation info when the device exposes it (not GoIP: it shows parts as plain SMS).
    concat_ref: int | None = None
    concat_total: int | None = None
    concat_seq: int | None = None


# --------------------------------------------------------------------------------------------
# health


@attrs.frozen
class ChannelHealth:
    #: Registered on the GSM network (None: the device does not say).
    registered: bool | None = None
    #: Signal quality as the device reports it (GoIP: CSQ 0..31, 99 = unknown).
    signal: int | None = None
    operator: str | None = None


@attrs.frozen
class DeviceHealth:
    #: The device answered the health request at all.
    reachable: bool
    detail: str = ""
    channels: Mapping[str, ChannelHealth] = attrs.field(factory=dict)
    #: The device rejected our credentials.
    auth_failed: bool = False
    #: Answers the driver could not understand (garbage, malformed XML) since it started.
    protocol_errors: int = 0
    #: Failed device calls in a row (any kind: transport, garbage, auth); 0 after a good answer.
    consecutive_errors: int = 0
    #: Not heard from yet, and too early to call it down: a device that starts the talk itself
    #: (a GoIP in SMS-server mode) within its keepalive timeout of our start. Its channels wait
    #: quietly; after that timeout without a word it is down like any other.
    starting: bool = False

    @property
    def ok(self) -> bool:
        return self.reachable and not self.auth_failed


# --------------------------------------------------------------------------------------------
# the protocol


class Capability(enum.Enum):
    #: ``delete_inbox`` really removes entries from the device.
    DELETE_INBOX = "delete_inbox"
    #: ``inbox`` keeps an entry until ``delete_inbox`` acknowledges it (a push protocol: the
    #: device retransmits, a webhook waits for its answer). The inbox poller then acknowledges
    #: every stored entry, duplicates included, whatever ``inbound.delete_after_commit`` says.
    ACK_INBOX = "ack_inbox"
    #: ``status_many`` answers many channels with one device request (poll it per device,
    #: not per channel, if the scheduler can).
    STATUS_BATCH = "status_batch"
    #: ``status`` can return DELIVERED (real handset delivery reports).
    DELIVERY_REPORTS = "delivery_reports"
    #: ``inbox`` returns received SMS.
    INBOX = "inbox"
    #: ``send`` sends with the submit's ``source_addr`` (an alphanumeric sender such as
    #: "MyShop"). Without it the device sends with its SIM's own number, whatever the ESME
    #: asked (GoIP, LTE routers, Android phones): the acceptance step counts and logs that.
    CUSTOM_SENDER = "custom_sender"


GENERIC_RECEIPT_TABLE: Mapping[str, tuple[str, int | None]] = {
    "delivered": ("DELIVRD", 0),
    "network": ("DELIVRD", 0),  # the receipts policy (Capabilities.network_receipt) decides
    "failed": ("UNDELIV", None),
    "unknown": ("UNKNOWN", 0),
}


@attrs.frozen
class Capabilities:
    """What one device kind can do, declared once in ``bridge/devices/<kind>/__init__.py``.

    The scheduler, the receipt policy, the app and the admin API read this instead of testing
    a kind's name or probing a driver's methods. The defaults describe the plainest device:
    one part per SMS, no handset reports, polled inbox-less, no listener.
    """

    #: What the driver's optional protocol methods do (inbox, delete_inbox, status_many ...).
    flags: frozenset[Capability] = frozenset()
    #: The device takes a long text whole and sends it as one concatenated SMS itself (Android
    #: apps); otherwise every part is sent as a separate plain SMS.
    whole_text: bool = False
    #: Characters a text sent to this device must not start with (the device refuses such a
    #: text). The scheduler's splitter keeps them off the start of every part after the first.
    part_start_refused: frozenset[str] = frozenset()
    #: Optional keywords ``send`` takes: "flash" (class 0), "urgent" (priority), "source" (the
    #: submit's source_addr: an upstream SMSC connector).
    send_options: frozenset[str] = frozenset()
    #: Wait one status_poll_interval before the first status poll (the device shows nothing
    #: useful right after a send: GoIP HTTP's line is busy for seconds).
    first_poll_delay: bool = False
    #: Which ``receipts`` key decides the receipt for "handed to the network, no handset
    #: report": "goip_done" or "no_report".
    network_receipt: str = "no_report"
    #: Part result -> (receipt stat, err; None = derived from the device's error code).
    receipt_table: Mapping[str, tuple[str, int | None]] = GENERIC_RECEIPT_TABLE
    #: The driver listens itself (``await driver.serve(task_status=...)``): the device calls us.
    push_listener: bool = False
    #: The device calls webhooks: the admin API routes ``POST /webhooks/<kind>/<device>`` to
    #: ``driver.handle_webhook_async(headers, body)``, and the app checks (and, with the
    #: device option ``register_webhooks``, registers) the webhook URL at start.
    webhooks: bool = False

    @property
    def handset_reports(self) -> bool:
        """``status`` can say DELIVERED (real handset delivery reports)."""
        return Capability.DELIVERY_REPORTS in self.flags

    @property
    def inbox(self) -> bool:
        return Capability.INBOX in self.flags


@runtime_checkable
class Driver(Protocol):
    """What the scheduler, the status pollers and the inbox pollers call."""

    #: Device kind, e.g. "goip_http" (matches the config's ``kind``).
    kind: str
    #: Device name from the config.
    name: str
    #: Channel ids local to the device, in order ("1".."N" for a GoIP).
    channels: tuple[str, ...]
    #: What this driver can do beyond send/status/health (``declared.flags``).
    capabilities: frozenset[Capability]
    #: Everything else the kind declares (whole text, send options, listener, webhooks ...).
    declared: Capabilities

    async def send(self, channel: str, destination: str, text: str) -> SendResult:
        """Hand one SMS part to the device on ``channel``. Never raises for device answers."""
        ...

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        """Status of the message ``ref`` last sent on ``channel``."""
        ...

    async def status_many(self, refs: Mapping[str, str | None]) -> dict[str, StatusResult]:
        """Status for several channels at once: ``{channel: ref}`` -> ``{channel: result}``."""
        ...

    async def inbox(self) -> list[InboundSms]:
        """Everything the device's inbox holds now (the caller de-duplicates by device_key).

        An unreachable device yields an empty list (and counts in ``health``).
        """
        ...

    async def delete_inbox(self, items: Iterable[InboundSms]) -> None:
        """Remove entries from the device (only with Capability.DELETE_INBOX)."""
        ...

    async def last_ref(self, channel: str) -> str | None:
        """Id of the last message the device shows on ``channel`` ("" none, None unknown)."""
        ...

    async def health(self) -> DeviceHealth: ...

    async def aclose(self) -> None: ...


class DriverBase:
    """Optional base class with the boring parts of ``Driver``."""

    kind: str = "abstract"
    name: str
    channels: tuple[str, ...]
    #: The kind's declaration (``bridge/devices/<kind>/__init__.py``).
    declared: Capabilities = Capabilities()
    capabilities: frozenset[Capability] = frozenset()

    def check_channel(self, channel: str) -> None:
        if channel not in self.channels:
            raise DeviceError(
                f"device {self.name!r} ({self.kind}) has no channel {channel!r}; "
                f"channels are {', '.join(self.channels)}"
            )

    async def status(self, channel: str, ref: str | None) -> StatusResult:  # pragma: no cover
        raise NotImplementedError

    async def status_many(self, refs: Mapping[str, str | None]) -> dict[str, StatusResult]:
        return {channel: await self.status(channel, ref) for channel, ref in refs.items()}

    async def delete_inbox(self, items: Iterable[InboundSms]) -> None:
        raise DeviceError(f"{self.kind} devices cannot delete inbox entries")

    async def last_ref(self, channel: str) -> str | None:
        """The device's id of the last message on ``channel`` as the device shows it now, ""
        when the device shows none, or None when this driver cannot tell (or the device cannot
        be read). The scheduler reads it before a send and again after an ambiguous one: a new
        id on a channel only we use means the device took our message."""
        return None

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # pragma: no cover
        pass


# --------------------------------------------------------------------------------------------
# keeping credentials out of strings and logs


class Redactor:
    """Replaces secrets (and their URL-encoded / Basic-auth forms) in free text with ``***``.

    Apply it to every string that might carry a secret before it leaves the driver: exception
    messages, device answers quoted in ``detail``, anything logged.
    """

    MASK = "***"

    def __init__(self, secrets: Iterable[str], *, basic_auth: Sequence[tuple[str, str]] = ()):
        forms: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            forms.add(secret)
            forms.add(urllib.parse.quote(secret, safe=""))
            forms.add(urllib.parse.quote_plus(secret, safe=""))
        for user, password in basic_auth:
            token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            forms.add(token)
        # Longest first, so that a secret containing another is masked whole.
        self._forms = sorted((f for f in forms if f), key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for form in self._forms:
            if form in text:
                text = text.replace(form, self.MASK)
        return _redact_query_credentials(text)


# Query parameters that carry credentials in the device APIs we speak (GoIP u/p, Teltonika
# username/password, SmsGateway24 pass/token, generic ones).
_CREDENTIAL_PARAM = re.compile(
    r"(?i)(?<![A-Za-z0-9_])((?:u|p|user|username|pass|passwd|password|pwd|token|key|secret)=)"
    r"[^&\s\"'<>#]*"
)


def _redact_query_credentials(text: str) -> str:
    return _CREDENTIAL_PARAM.sub(lambda m: m.group(1) + Redactor.MASK, text)


class _HttpxUrlRedactionFilter(logging.Filter):
    """Masks credential query parameters in httpx's 'HTTP Request: GET <url>' INFO records."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken record is not ours to fix
            return True
        redacted = _redact_query_credentials(message)
        if redacted != message:
            record.msg = redacted
            record.args = None
        return True


def install_httpx_log_redaction() -> None:
    """Make the "httpx" logger mask credential query parameters (idempotent).

    httpx logs every request URL at INFO on the "httpx" logger; device APIs such as GoIP's
    send.html take credentials in the query string. The application should still keep the
    "httpx" logger at WARNING; this filter is the second line of defence.
    """
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _HttpxUrlRedactionFilter) for f in logger.filters):
        logger.addFilter(_HttpxUrlRedactionFilter())
