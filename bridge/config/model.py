"""The config model: plain data (frozen attrs classes, no validators), and `Secret`.

Code inside the bridge trusts these values: all checking happens at the edge, in the loader
(the section modules of this package).
"""

from __future__ import annotations

import datetime
import hmac
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import attrs

from bridge import passwords

IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

SYSTEM_ID_MAX = 15  # SMPP 3.4: system_id is a C-Octet String of at most 16 octets with the NUL
ADMIN_TOKEN_MIN = 16
LOOPBACK_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("127.0.0.1/32"),
    ipaddress.ip_network("::1/128"),
)
SYNCHRONOUS_MODES = ("full", "normal")
LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("text", "json")
AMBIGUOUS_POLICIES = ("unknown", "resend")
GOIP_DONE_CHOICES = ("delivered", "accepted")
RECEIPT_STATS = ("DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD")
MO_LONG_MODES = ("udh", "payload")  # how a long inbound message reaches an ESME
DELIVER_VIA = ("webhook", "both")  # with a webhook URL: receipts/MO by webhook only, or by SMPP too
RECEIPT_MODES = ("combined", "per_part")  # receipts for a long message: one, or one per part
DATA_CODING_1_MODES = ("auto", "gsm", "ascii")  # how a data_coding 1 submit is read
OPTOUT_MT_ACTIONS = ("receipt", "reject_submit")  # what happens to an MT to an opted-out number
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")  # device and route names
GOIP_MAX_LINES = 64


# --------------------------------------------------------------------------------------------
# Secrets


class Secret:
    """A secret string that does not leak: ``repr()``, ``str()`` and f-strings all give ``***``.

    Call `reveal()` at the one place that needs the value. Equality is constant-time.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret wraps a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return "***"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(_utf8(self._value), _utf8(other._value))

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> tuple[Any, ...]:  # copy.copy / deepcopy
        return (Secret, (self._value,))


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def _hidden(value: object) -> str:
    return "None" if value is None else "***"


class FrozenMap(Mapping[Any, Any]):
    """An immutable, hashable mapping, so that frozen config classes holding mappings stay
    hashable and comparable. Built from a mapping or from (key, value) pairs; keeps order."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[Any, Any] | Iterable[tuple[Any, Any]] = ()) -> None:
        object.__setattr__(self, "_data", dict(data))
        object.__setattr__(self, "_hash", None)

    def __getitem__(self, key: Any) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return self._data == dict(other.items())

    def __hash__(self) -> int:
        if self._hash is None:
            object.__setattr__(self, "_hash", hash(frozenset(self._data.items())))
        return self._hash  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("FrozenMap is immutable")

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._data,))


# --------------------------------------------------------------------------------------------
# The model


@attrs.frozen
class TlsConfig:
    cert: Path
    key: Path


@attrs.frozen
class Listener:
    host: str = "0.0.0.0"
    port: int = 2775
    tls: TlsConfig | None = None


@attrs.frozen
class Timers:
    """SMPP session timers, in seconds."""

    session_init: float = 10.0
    enquire_link: float = 30.0
    inactivity: float = 120.0
    response: float = 10.0
    unbind_grace: float = 2.0


@attrs.frozen
class SmppConfig:
    system_id: str = "smpp-bridge"
    listeners: tuple[Listener, ...] = attrs.field(default=(Listener(),), converter=tuple)
    timers: Timers = attrs.Factory(Timers)
    window: int = 10
    max_connections: int = 1000


def ip_allowed(ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address, networks: Sequence[IPNetwork]) -> bool:
    """True if a peer at `ip` is in one of `networks`. IPv4-mapped IPv6 (``::ffff:a.b.c.d``,
    what a dual-stack ``::`` listener reports for IPv4 peers) is checked as the IPv4 address
    too. Anything that is not an IP address is refused."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return False
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        candidates.append(address.ipv4_mapped)
    return any(a in net for a in candidates for net in networks)


@attrs.frozen
class EsmeConfig:
    """One application allowed to bind. `password` or `password_hash` is set, never both.

    The server checks, for a bind: the ESME exists, `enabled`, `allows(peer_ip)`, then
    `check_password(...)`, then `max_binds`.
    """

    system_id: str
    password: Secret | None = None
    password_hash: str | None = attrs.field(default=None, repr=_hidden)
    allowed_ips: tuple[IPNetwork, ...] = attrs.field(default=LOOPBACK_NETWORKS, converter=tuple)
    max_binds: int = 4
    throughput: float = 0.0  # submit_sm segments per second; 0 = unlimited
    enabled: bool = True
    default_route: str | None = None  # route used when no route matches the destination
    mo_long: str = "udh"  # long inbound SMS as UDH parts ("udh") or one message_payload ("payload")
    # Receipts for a long message: one for the whole message ("combined") or one per part id
    # the ESME was given ("per_part").
    receipts: str = "combined"
    # How a submit with data_coding 1 (IA5/ASCII) is read: "auto" (GSM 03.38 when the octets
    # hold control characters, else ASCII), "gsm" (npm smpp sends GSM text as data_coding 1) or
    # "ascii". See bridge/smpp/text.py, "data_coding 1".
    data_coding_1: str = "auto"
    # The HTTP send API: an application authenticates as this ESME with its system_id and this
    # key (or its password). None: password only.
    api_key: Secret | None = attrs.field(default=None, repr=_hidden)
    # Webhooks (bridge/frontends/http/webhook_delivery.py): receipts and inbound SMS POSTed as
    # signed JSON to these URLs, from the durable outbox; without a URL, that kind goes by SMPP.
    receipt_url: str | None = None
    inbound_url: str | None = None
    webhook_secret: Secret | None = attrs.field(default=None, repr=_hidden)
    deliver_via: str = "webhook"  # "webhook" or "both" (SMPP too) for a kind that has a URL

    def outbox_channels(self, kind: str) -> tuple[str, ...]:
        """Where a receipt ("receipt") or an inbound SMS ("mo") for this ESME goes."""
        url = self.receipt_url if kind == "receipt" else self.inbound_url
        if url is None:
            return ("smpp",)
        return ("smpp", "webhook") if self.deliver_via == "both" else ("webhook",)

    def allows(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True if a peer at `ip` may bind (``ip_allowed``)."""
        return ip_allowed(ip, self.allowed_ips)

    def check_password(self, candidate: str) -> bool:
        """Constant-time password check (hmac.compare_digest; PBKDF2 for a hash)."""
        if self.password is not None:
            return hmac.compare_digest(_utf8(candidate), _utf8(self.password.reveal()))
        if self.password_hash is not None:
            try:
                return passwords.verify_password(self.password_hash, candidate)
            except ValueError:
                return False
        return False


@attrs.frozen
class StoreConfig:
    path: Path = Path("data/bridge.sqlite3")
    synchronous: str = "full"  # "full" survives power cuts; "normal" may lose the last commits
    partial_timeout: float = 600.0  # seconds to wait for the missing parts of a long message


@attrs.frozen
class Limits:
    queue_depth: int = 10_000  # accepted-but-not-final messages before ESME_RMSGQFUL


@attrs.frozen
class AdminConfig:
    host: str = "127.0.0.1"
    port: int = 8025  # 0 disables the admin HTTP server
    token: Secret | None = None
    # HTTPS on the admin port (PEM cert and key, like an SMPP listener's; phones' webhooks want HTTPS).
    tls: TlsConfig | None = None
    # The web console (bridge/frontends/console/): a password besides the token (a PBKDF2 hash
    # from `smpp-bridge hash-password --console`), and whether its pages are readable without login.
    console_password_hash: str | None = None
    console_read_only_public: bool = False

    @property
    def enabled(self) -> bool:
        return self.port != 0


@attrs.frozen
class PduLogConfig:
    """Per-ESME, per-day files of every decoded PDU (passwords masked), for integration work."""

    enabled: bool = False
    dir: Path | None = None  # None: a "pdu-logs" directory next to the store's database
    retention_days: int = 14  # files older than this many days are deleted


@attrs.frozen
class LoggingConfig:
    level: str = "info"
    format: str = "text"
    pdu_log: PduLogConfig = attrs.Factory(PduLogConfig)


@attrs.frozen
class Caps:
    """Sending caps of one channel. 0 means "no limit" for the three counters."""

    per_minute: int = 6
    per_hour: int = 0
    per_day: int = 0
    day_reset: datetime.time = datetime.time(0, 0)  # local time when per_day counters reset
    jitter: float = 0.2  # pacing jitter, a fraction (0..0.9) of the pacing interval


@attrs.frozen
class ChannelOverride:
    """What one channel does differently from its device. `caps` is already merged: the
    device's caps with the keys given for this channel replaced."""

    enabled: bool = True
    caps: Caps = attrs.Factory(Caps)
    number: str | None = None  # the SIM's phone number: destination_addr of inbound SMS


@attrs.frozen
class DeviceConfig:
    """One piece of GSM hardware (one GoIP, one router, one phone).

    Channels are "1".."lines" for every kind so far (GoIP lines, router modems, phone SIMs).
    Kind-specific settings that have no field here live in `options` (empty for goip_http).
    A disabled device has every channel disabled.
    """

    name: str
    kind: str
    url: str | None = None
    username: str = "admin"
    password: Secret | None = None
    lines: int = 1
    timeout: float = 10.0  # seconds per device HTTP request
    status_poll_interval: float = 2.0
    status_timeout: float = 60.0  # seconds to wait for a final status; then the part is UNKNOWN
    inbox_poll_interval: float = 10.0
    enabled: bool = True
    caps: Caps = attrs.Factory(Caps)
    # Seconds between health checks; a device found down (unreachable, refusing our credentials,
    # a phone not seen) gets no messages until it is up again, and a channel found not
    # registered on the GSM network rests like after a logout.
    health_interval: float = 30.0
    channel_overrides: Mapping[str, ChannelOverride] = attrs.field(factory=FrozenMap, converter=FrozenMap)
    options: Mapping[str, Any] = attrs.field(factory=FrozenMap, converter=FrozenMap)

    def channel_ids(self) -> tuple[str, ...]:
        return tuple(str(i) for i in range(1, self.lines + 1))

    def channel_caps(self, channel: str) -> Caps:
        """The caps of `channel` (overrides merged). KeyError for a channel the device lacks."""
        if channel not in self.channel_ids():
            raise KeyError(f"device {self.name!r} has no channel {channel!r}")
        override = self.channel_overrides.get(channel)
        return self.caps if override is None else override.caps

    def channel_enabled(self, channel: str) -> bool:
        """False when the device is disabled, the channel is disabled, or there is no such channel."""
        if not self.enabled or channel not in self.channel_ids():
            return False
        override = self.channel_overrides.get(channel)
        return override is None or override.enabled

    def channel_number(self, channel: str) -> str | None:
        """The phone number configured for `channel` (``channels: {"1": {number: ...}}``)."""
        override = self.channel_overrides.get(channel)
        return override.number if override is not None else None

    def enabled_channels(self) -> tuple[str, ...]:
        return tuple(ch for ch in self.channel_ids() if self.channel_enabled(ch))


def _compile_regex(value: str | re.Pattern[str] | None) -> re.Pattern[str] | None:
    return re.compile(value) if isinstance(value, str) else value


def _channel_pairs(value: Iterable[Iterable[str]]) -> tuple[tuple[str, str], ...]:
    return tuple((str(device), str(channel)) for device, channel in value)


@attrs.frozen
class RouteConfig:
    """Where messages for some destinations go. A route with neither prefixes nor a regex
    matches every destination (a catch-all). `channels` are (device name, channel id) pairs,
    resolved from the config: deduplicated, disabled channels left out, never empty when
    loaded from a file."""

    name: str
    prefixes: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    regex: re.Pattern[str] | None = attrs.field(default=None, converter=_compile_regex)
    channels: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_channel_pairs)
    # When none of this route's channels is healthy, its messages go to this route's channels.
    failover: str | None = None

    @property
    def catch_all(self) -> bool:
        return not self.prefixes and self.regex is None

    def matches(self, destination: str) -> bool:
        """True if `destination` (as the ESME wrote it) starts with one of the prefixes, or the
        regex finds a match in it (re.search: anchor with ^ yourself), or this is a catch-all."""
        if self.catch_all:
            return True
        if any(destination.startswith(prefix) for prefix in self.prefixes):
            return True
        return self.regex is not None and self.regex.search(destination) is not None


@attrs.frozen
class SchedulerConfig:
    """Scheduler policy. Durations in seconds."""

    default_validity: float = 172_800.0  # when the ESME gives no validity_period (48 h)
    max_validity: float = 604_800.0  # cap on ESME-given validity (7 d)
    max_attempts: int = 5  # device attempts per message before it fails as UNDELIV
    retry_backoff: float = 10.0  # before the first retry; doubles per attempt
    retry_backoff_max: float = 600.0
    busy_retry: float = 1.0  # before retrying a line that answered busy
    logout_cooldown: float = 120.0  # a channel rests this long after GSM logout before a probe
    quarantine_after: int = 3  # consecutive errors on a channel before quarantine
    quarantine_base: float = 30.0  # first quarantine; doubles up to quarantine_max
    quarantine_max: float = 1800.0
    ambiguous: str = "unknown"  # "unknown" | "resend": a send that may or may not have gone out


@attrs.frozen
class ReceiptMapping:
    stat: str  # one of RECEIPT_STATS
    err: int = 0  # 0..999, the receipt's err: field


def _freeze_receipt_map(
    value: Mapping[str, Mapping[str, ReceiptMapping]],
) -> Mapping[str, Mapping[str, ReceiptMapping]]:
    return FrozenMap((kind, FrozenMap(table)) for kind, table in dict(value).items())


@attrs.frozen
class ReceiptsConfig:
    goip_done: str = "delivered"  # "delivered" | "accepted": how GoIP HTTP "DONE" is reported
    retention: float = 604_800.0  # seconds an undelivered receipt (or MO) waits for its ESME
    # device kind -> device status code -> receipt; overrides of the built-in table
    map: Mapping[str, Mapping[str, ReceiptMapping]] = attrs.field(
        factory=FrozenMap, converter=_freeze_receipt_map
    )
    # How an SMS is reported when its device never gives a handset report (LTE router and
    # brevis.one "OK"; a phone whose report did not come within status_timeout).
    no_report: str = "accepted"


DEFAULT_OPTOUT_KEYWORDS = ("STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT")
DEFAULT_OPTIN_KEYWORDS = ("START", "UNSTOP")


@attrs.frozen
class OptoutConfig:
    """An inbound SMS whose whole text (trimmed, any case) is one of `keywords` puts its sender
    on the opt-out list; one of `optin_keywords` takes it off. Keywords are stored upper-case."""

    keywords: tuple[str, ...] = attrs.field(default=DEFAULT_OPTOUT_KEYWORDS, converter=tuple)
    optin_keywords: tuple[str, ...] = attrs.field(default=DEFAULT_OPTIN_KEYWORDS, converter=tuple)
    # "receipt": accept the submit, finish it REJECTED with a REJECTD receipt (err 011);
    # "reject_submit": answer submit_sm with ESME_RINVDSTADR.
    mt_action: str = "receipt"


@attrs.frozen
class InboundRoute:
    """Inbound SMS that arrived on `device` (and `channel`, if given), or on the SIM whose
    configured number is `number`, go to the ESME `esme`."""

    esme: str
    device: str | None = None
    channel: str | None = None
    number: str | None = None

    def matches(self, device: str, channel: str, recipient: str | None) -> bool:
        if self.number is not None:
            return recipient is not None and recipient == self.number
        return device == self.device and (self.channel is None or channel == self.channel)


@attrs.frozen
class InboundConfig:
    # Where inbound SMS go when no route matches. None: the only ESME, if exactly one is
    # configured; else they wait (stored) until a route exists.
    default_esme: str | None = None
    routes: tuple[InboundRoute, ...] = attrs.field(default=(), converter=tuple)  # first match wins
    delete_after_commit: bool = False  # delete from the device inbox once stored
    reassembly_timeout: float = 300.0  # seconds to wait for the missing parts of a long SMS
    keep: float = 2_592_000.0  # seconds a finished inbound SMS stays in the store (30 d)
    optout: OptoutConfig = attrs.Factory(OptoutConfig)
    # destination_addr of an MO whose channel has no SIM number configured. None: the channel
    # as "device:channel" (an ESME may discard MO with an empty destination).
    default_destination: str | None = None


@attrs.frozen
class Config:
    smpp: SmppConfig = attrs.Factory(SmppConfig)
    esmes: tuple[EsmeConfig, ...] = attrs.field(default=(), converter=tuple)
    store: StoreConfig = attrs.Factory(StoreConfig)
    limits: Limits = attrs.Factory(Limits)
    admin: AdminConfig = attrs.Factory(AdminConfig)
    logging: LoggingConfig = attrs.Factory(LoggingConfig)
    # Devices, then the upstream SMSC connectors (kind "smpp", from the ``connectors`` section):
    # both are route targets and are driven alike.
    devices: tuple[DeviceConfig, ...] = attrs.field(default=(), converter=tuple)
    connectors: tuple[DeviceConfig, ...] = attrs.field(default=(), converter=tuple)
    routes: tuple[RouteConfig, ...] = attrs.field(default=(), converter=tuple)  # first match wins
    scheduler: SchedulerConfig = attrs.Factory(SchedulerConfig)
    receipts: ReceiptsConfig = attrs.Factory(ReceiptsConfig)
    inbound: InboundConfig = attrs.Factory(InboundConfig)
    _by_id: dict[str, EsmeConfig] = attrs.field(init=False, repr=False, eq=False)
    _devices_by_name: dict[str, DeviceConfig] = attrs.field(init=False, repr=False, eq=False)
    _routes_by_name: dict[str, RouteConfig] = attrs.field(init=False, repr=False, eq=False)

    @_by_id.default
    def _index_esmes(self) -> dict[str, EsmeConfig]:
        return {esme.system_id: esme for esme in self.esmes}

    @_devices_by_name.default
    def _index_devices(self) -> dict[str, DeviceConfig]:
        return {device.name: device for device in self.devices}

    @_routes_by_name.default
    def _index_routes(self) -> dict[str, RouteConfig]:
        return {route.name: route for route in self.routes}

    def esme(self, system_id: str) -> EsmeConfig | None:
        return self._by_id.get(system_id)

    def device(self, name: str) -> DeviceConfig | None:
        return self._devices_by_name.get(name)

    def route(self, name: str) -> RouteConfig | None:
        return self._routes_by_name.get(name)

    def route_for(self, esme_system_id: str, destination: str) -> RouteConfig | None:
        """The first route (in config order) that matches `destination`; else the ESME's
        default_route; else None (no route: the message cannot be sent)."""
        for route in self.routes:
            if route.matches(destination):
                return route
        esme = self.esme(esme_system_id)
        if esme is not None and esme.default_route is not None:
            return self.route(esme.default_route)
        return None

    def inbound_esme(self, device: str, channel: str, recipient: str | None) -> str | None:
        """The ESME an inbound SMS goes to: the first inbound route that matches, else
        inbound.default_esme, else the only ESME if there is exactly one, else None."""
        for route in self.inbound.routes:
            if route.matches(device, channel, recipient):
                return route.esme
        if self.inbound.default_esme is not None:
            return self.inbound.default_esme
        return self.esmes[0].system_id if len(self.esmes) == 1 else None
