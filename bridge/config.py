"""Configuration: a frozen attrs model, and a YAML loader that names the key and line of every problem.

The model is plain data (frozen attrs classes, no validators): code inside the bridge trusts
it. All checking happens at the edge, in the loader, which

* composes the YAML into a node tree (``yaml.compose``) so every value keeps its line number;
* walks the tree section by section, collecting *every* problem into one `ConfigError`
  (``FILE:LINE: key.path: message`` per line) instead of stopping at the first;
* rejects unknown keys at every level, suggesting the nearest known key (difflib);
* resolves secrets from the file, the environment (``*_env``) or a file (``*_file``), wraps them
  in `Secret` at once, and never echoes a secret in a message;
* refuses a config file that holds a secret inline, or a secret file, when group or others
  can read it.

Sections that refer to each other: routes name devices (so ``devices`` loads first and routes
resolve ``device:channels`` against it), and an ESME's ``default_route`` names a route (checked
once every section has loaded). Device kinds are one folder each, bridge/devices/<kind>/.

Adding a section takes three steps: an attrs class with defaults,
a loader ``_load_<name>(ctx, node, path) -> Class`` built on `_Map` (look at `_load_limits`,
the smallest), and one line in `_SECTIONS` plus the matching field on `Config`.

YAML notes for users, enforced here with specific messages: quote values that YAML would
otherwise turn into something else (``"::1"``, ``"0123"``, ``"on"``, numeric passwords); a key
present with no value is an error, except for a section (a mapping), where it means "all
defaults" so a section whose lines are all commented out still works.
"""

from __future__ import annotations

import datetime
import difflib
import hmac
import ipaddress
import math
import os
import re
import stat
import tempfile
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

import attrs
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bridge import lifecycle, passwords
from bridge.devices import registry as device_registry

__all__ = [
    "AMBIGUOUS_POLICIES",
    "AdminConfig",
    "Caps",
    "ChannelOverride",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "DEVICE_KINDS",
    "DeviceConfig",
    "EsmeConfig",
    "FrozenMap",
    "GOIP_DONE_CHOICES",
    "InboundConfig",
    "InboundRoute",
    "IPNetwork",
    "MO_LONG_MODES",
    "OPTOUT_MT_ACTIONS",
    "OptoutConfig",
    "Limits",
    "Listener",
    "LOOPBACK_NETWORKS",
    "LoggingConfig",
    "PduLogConfig",
    "RECEIPT_STATS",
    "ReceiptMapping",
    "ReceiptsConfig",
    "RouteConfig",
    "SchedulerConfig",
    "Secret",
    "SmppConfig",
    "StoreConfig",
    "Timers",
    "TlsConfig",
    "default_demo_config",
    "load_config",
    "load_config_text",
]

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

    def allows(self, ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        """True if a peer at `ip` may bind. IPv4-mapped IPv6 (``::ffff:a.b.c.d``, what a
        dual-stack ``::`` listener reports for IPv4 peers) is checked as the IPv4 address too.
        Anything that is not an IP address is refused."""
        try:
            address = ipaddress.ip_address(ip)
        except ValueError:
            return False
        candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            candidates.append(address.ipv4_mapped)
        return any(a in net for a in candidates for net in self.allowed_ips)

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
    devices: tuple[DeviceConfig, ...] = attrs.field(default=(), converter=tuple)
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


def default_demo_config(
    data_dir: Path,
    smpp_port: int = 2775,
    goip_url: str | None = None,
    goip_lines: int = 8,
    goip_password: str = "admin",
) -> Config:
    """A ready config for the demo and for tests: everything on loopback, one ESME demo/demo.

    With `goip_url`, also one GoIP (or its emulator) "goip1" with no sending caps and fast
    status polls, and a catch-all route "default" over all its lines (the demo ESME's
    default_route). Without it, the bridge only stores messages.
    """
    devices: tuple[DeviceConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    default_route = None
    if goip_url is not None:
        device = DeviceConfig(
            name="goip1",
            kind="goip_http",
            url=goip_url.rstrip("/"),
            username="admin",
            password=Secret(goip_password),
            lines=goip_lines,
            timeout=5.0,
            status_poll_interval=0.5,
            caps=Caps(per_minute=0),
        )
        devices = (device,)
        routes = (RouteConfig(name="default", channels=[("goip1", ch) for ch in device.channel_ids()]),)
        default_route = "default"
    return Config(
        smpp=SmppConfig(listeners=(Listener(host="127.0.0.1", port=smpp_port),)),
        esmes=(
            EsmeConfig(
                system_id="demo",
                password=Secret("demo"),
                allowed_ips=LOOPBACK_NETWORKS,
                max_binds=10,
                throughput=0.0,
                default_route=default_route,
            ),
        ),
        store=StoreConfig(path=Path(data_dir).absolute() / "bridge.sqlite3", synchronous="full"),
        limits=Limits(queue_depth=200_000),
        admin=AdminConfig(host="127.0.0.1", port=8025, token=None),
        logging=LoggingConfig(),
        devices=devices,
        routes=routes,
    )


# --------------------------------------------------------------------------------------------
# Errors


@attrs.frozen
class ConfigIssue:
    path: str  # like "esmes[1].throughput"; "" for the file as a whole
    line: int | None  # 1-based line in the file
    message: str  # what was expected and what was found

    def format(self, source: str) -> str:
        where = source if self.line is None else f"{source}:{self.line}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a config; `str()` gives one ``FILE:LINE: key.path: message`` per line."""

    def __init__(self, issues: Iterable[ConfigIssue], source: str = "<string>") -> None:
        self.issues: list[ConfigIssue] = list(issues)
        self.source = source
        super().__init__(str(self))

    def __str__(self) -> str:
        return "\n".join(issue.format(self.source) for issue in self.issues)


# --------------------------------------------------------------------------------------------
# Loading: entry points


def load_config(path: str | os.PathLike[str]) -> Config:
    """Load and check a config file. Raises `ConfigError` listing every problem.

    Relative paths inside the file are resolved against the file's directory. Secrets may be
    written inline only if nobody but the owner can read the file.
    """
    source = os.fspath(path)
    file_path = Path(source)
    try:
        with open(file_path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            data = f.read()
    except OSError as e:
        reason = e.strerror or str(e)
        raise ConfigError([ConfigIssue("", None, f"cannot read the config file: {reason}")], source)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        issue = ConfigIssue("", line, f"expected UTF-8 text, found byte 0x{data[e.start]:02x}")
        raise ConfigError([issue], source) from None
    return _load(
        text,
        source=source,
        env=os.environ,
        base_dir=file_path.absolute().parent,
        file_mode=mode if os.name == "posix" else None,
    )


def load_config_text(
    text: str,
    *,
    source: str = "<string>",
    env: Mapping[str, str] | None = None,
    base_dir: Path | None = None,
) -> Config:
    """Load and check config text. `env` replaces os.environ for ``*_env`` keys; relative paths
    resolve against `base_dir` (default: the current directory). No file-permission check on
    the text itself (there is no file); ``*_file`` secrets are still checked."""
    return _load(
        text,
        source=source,
        env=os.environ if env is None else env,
        base_dir=Path.cwd() if base_dir is None else Path(base_dir).absolute(),
        file_mode=None,
    )


def _load(
    text: str, *, source: str, env: Mapping[str, str], base_dir: Path, file_mode: int | None
) -> Config:
    ctx = _Ctx(env=env, base_dir=base_dir)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as e:
        raise ConfigError([_syntax_issue(e, text)], source) from None
    config = _load_root(ctx, root)
    if file_mode is not None and file_mode & 0o044 and ctx.inline_secrets:
        who = {0o040: "its group", 0o004: "other users"}.get(file_mode & 0o044, "its group and other users")
        for key_path, line, alternatives in ctx.inline_secrets:
            ctx.issues.append(
                ConfigIssue(
                    key_path,
                    line,
                    f"a secret is written inline, but {source} can be read by {who} "
                    f"(mode {file_mode:04o}): run `chmod 600 {source}`, or use {alternatives} instead",
                )
            )
    if ctx.issues or config is None:
        raise ConfigError(_sorted_unique(ctx.issues), source)
    return config


def _sorted_unique(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: -1 if i.line is None else i.line)


def _syntax_issue(e: yaml.YAMLError, text: str) -> ConfigIssue:
    if isinstance(e, yaml.MarkedYAMLError):
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = e.problem or "cannot parse"
        message = f"YAML syntax error: {problem}"
        if e.context:
            context = e.context
            if e.context_mark is not None and e.context_mark.line + 1 != line:
                context += f", line {e.context_mark.line + 1}"
            message += f" ({context})"
        if "'\\t'" in problem:
            message += "; indent with spaces, not tabs"
        elif "found ':'" in problem or "mapping values are not allowed" in problem:
            message += "; a value that contains ': ' or starts with ':' (like \"::1\") must be quoted"
        return ConfigIssue("", line, message)
    position = getattr(e, "position", None)  # yaml.reader.ReaderError: a bad character
    line = text[:position].count("\n") + 1 if isinstance(position, int) else None
    reason = getattr(e, "reason", None) or "cannot read the text"
    return ConfigIssue("", line, f"YAML error: {reason}")


# --------------------------------------------------------------------------------------------
# Loading: machinery


class _Ctx:
    """State of one load: where problems go, the environment, the directory for relative paths."""

    def __init__(self, env: Mapping[str, str], base_dir: Path) -> None:
        self.env = env
        self.base_dir = base_dir
        self.issues: list[ConfigIssue] = []
        # (key path, line, what to use instead) for every secret written in the file itself
        self.inline_secrets: list[tuple[str, int | None, str]] = []
        # Sections that refer to other sections. Devices load before routes; references to
        # routes (an ESME's default_route) are checked after every section has loaded.
        # A name in broken_* was defined but its entry had errors (already reported), and
        # *_unreadable means the whole section was; references to those are not reported again.
        self.devices: dict[str, DeviceConfig] = {}
        self.broken_devices: set[str] = set()
        self.devices_unreadable = False
        self.routes: dict[str, RouteConfig] = {}
        self.broken_routes: set[str] = set()
        self.routes_unreadable = False
        self.route_refs: list[tuple[str, int | None, str]] = []  # (key path, line, route name)
        self.esme_ids: set[str] = set()  # system_ids of esmes: (inbound routes name them)
        self._constructor = yaml.SafeLoader("")

    def error(self, path: str, where: Node | int | None, message: str) -> None:
        line = where.start_mark.line + 1 if isinstance(where, Node) else where
        self.issues.append(ConfigIssue(path, line, message))

    def construct(self, node: ScalarNode) -> Any:
        """The Python value of a scalar (int, float, bool, None, str, date ...)."""
        return self._constructor.construct_object(node, deep=True)

    def resolve_path(self, text: str) -> Path:
        path = Path(text).expanduser()
        return path if path.is_absolute() else self.base_dir / path


_ABSENT = object()  # the key is not in the file
_BAD = object()  # the value is wrong, and that was already reported


class _Shape:
    def __init__(self, text: str) -> None:
        self.text = text


_A_LIST = _Shape("a list")
_A_MAPPING = _Shape("a mapping")

_MERGE_TAG = "tag:yaml.org,2002:merge"
_OCTAL_LOOKING = re.compile(r"^[-+]?0[0-9_]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def _scalar_or_bad(ctx: _Ctx, node: ScalarNode) -> Any:
    try:
        return ctx.construct(node)
    except yaml.YAMLError:
        return _Shape(f"a value tagged {node.tag}")


def _describe(value: Any, *, secret: bool = False) -> str:
    """How a found value reads in a message: "'fast'", "12", "true", "a list", "an empty value"."""
    if value is None:
        return "an empty value"
    if isinstance(value, _Shape):
        return value.text
    if isinstance(value, bool):
        return "true" if value else "false"
    if secret:
        if isinstance(value, str):
            return "a string"
        if isinstance(value, int):
            return "an integer"
        if isinstance(value, float):
            return "a number"
        return f"a {type(value).__name__}"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return repr(value)
    return f"a {type(value).__name__} ({value})"


def _quote_hint(value: Any) -> str:
    """Advice when YAML turned the user's text into a non-string."""
    if isinstance(value, bool):
        return " (YAML reads unquoted yes/no/on/off/true/false as booleans; put the value in quotes)"
    if value is not None and not isinstance(value, (str, _Shape)):
        return " (put the value in quotes)"
    return ""


class _Map:
    """One YAML mapping being read against a fixed set of known keys.

    Readers (`get_int`, `get_str` ...) mark a key used and return the default when the key is
    absent or its value is wrong (after recording the problem). `finish()` reports every key
    nobody asked for, with a did-you-mean suggestion.
    """

    def __init__(
        self, ctx: _Ctx, node: Node | None, path: str, keys: Sequence[str], *, what: str = "a mapping"
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.keys = tuple(keys)
        self.line: int | None = node.start_mark.line + 1 if node is not None else None
        self.entries: dict[str, tuple[ScalarNode, Node]] = {}
        self.used: set[str] = set()
        self.bad: set[str] = set()
        self.ok = True
        if node is None or (isinstance(node, ScalarNode) and _scalar_or_bad(ctx, node) is None):
            return  # absent, or a key with no value: all defaults
        if not isinstance(node, MappingNode):
            found = _A_LIST if isinstance(node, SequenceNode) else _scalar_or_bad(ctx, node)
            ctx.error(path, node, f"expected {what}, got {_describe(found)}")
            self.ok = False
            return
        self.entries = self._entries(node, depth=0)

    def _entries(self, node: MappingNode, depth: int) -> dict[str, tuple[ScalarNode, Node]]:
        merged: dict[str, tuple[ScalarNode, Node]] = {}
        explicit: dict[str, tuple[ScalarNode, Node]] = {}
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.tag == _MERGE_TAG:
                # YAML merge key: `<<: *defaults` or `<<: [*a, *b]`; earlier sources win
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode) or depth > 20:
                        message = "'<<' (merge) expects a mapping or a list of mappings"
                        self.ctx.error(self.path, source, message)
                        continue
                    for name, entry in self._entries(source, depth + 1).items():
                        merged.setdefault(name, entry)
                continue
            if not isinstance(key_node, ScalarNode):
                self.ctx.error(self.path, key_node, "expected a key name, got a list or mapping as a key")
                continue
            name = key_node.value  # the text as written, so `on:` is the key 'on', not true
            if name in explicit:
                first = explicit[name][0].start_mark.line + 1
                message = f"duplicate key {name!r} (first given at line {first})"
                self.ctx.error(self._sub(name), key_node, message)
                continue
            explicit[name] = (key_node, value_node)
        return {**merged, **explicit}

    # -- plumbing

    def _sub(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def path_of(self, key: str) -> str:
        return self._sub(key)

    def has(self, key: str) -> bool:
        return key in self.entries

    def declare(self, keys: Iterable[str]) -> None:
        """Accept more keys (keys that depend on another value, like a device's kind)."""
        self.keys = self.keys + tuple(k for k in keys if k not in self.keys)

    def skip_unknown(self) -> None:
        """Do not report unknown keys (the keys allowed are unknown: e.g. a bad device kind)."""
        self.used.update(self.entries)

    def entry_names(self) -> list[str]:
        """Every key written in this mapping, in file order (for mappings keyed by the user)."""
        return list(self.entries)

    def node(self, key: str) -> Node | None:
        """The value node of `key` (None if absent), marking the key used."""
        if key not in self.keys:
            raise AssertionError(f"{key!r} is not declared for {self.path or 'the top level'}")
        self.used.add(key)
        entry = self.entries.get(key)
        return entry[1] if entry is not None else None

    def key_line(self, key: str) -> int | None:
        entry = self.entries.get(key)
        return entry[0].start_mark.line + 1 if entry is not None else self.line

    def fail(self, key: str, where: Node | int | None, message: str) -> Any:
        self.bad.add(key)
        self.ctx.error(self._sub(key), where, message)
        return _BAD

    def missing(self, key: str, what: str) -> Any:
        self.bad.add(key)
        self.ctx.error(self._sub(key), self.line, f"missing: expected {what}")
        return _BAD

    def value(self, key: str) -> tuple[Any, Node | None]:
        """(Python value, node): _ABSENT, _BAD, _A_LIST, _A_MAPPING or the scalar's value."""
        node = self.node(key)
        if node is None:
            return _ABSENT, None
        if isinstance(node, SequenceNode):
            return _A_LIST, node
        if isinstance(node, MappingNode):
            return _A_MAPPING, node
        try:
            return self.ctx.construct(node), node
        except yaml.YAMLError as e:
            problem = getattr(e, "problem", None) or "cannot read this value"
            return self.fail(key, node, problem), node

    def finish(self) -> None:
        for name, (key_node, _value) in self.entries.items():
            if name in self.used:
                continue
            close = difflib.get_close_matches(name, self.keys, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known keys: {', '.join(self.keys)})"
            self.ctx.error(self._sub(name), key_node, f"unknown key {name!r}{hint}")

    # -- typed readers

    def get_int(
        self,
        key: str,
        default: int,
        *,
        lo: int | None = None,
        hi: int | None = None,
        expected: str | None = None,
    ) -> int:
        value, node = self.value(key)
        if value is _ABSENT or value is _BAD:
            return default
        if expected is None:
            expected = _int_range(lo, hi)
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            quoted = isinstance(node, ScalarNode) and node.style in ("'", '"')
            if quoted and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                hint = " (remove the quotes)"
            elif isinstance(value, bool):
                hint = _quote_hint(value)
            self.fail(key, node, f"expected {expected}, got {_describe(value)}{hint}")
            return default
        assert isinstance(node, ScalarNode)
        if node.style is None and _OCTAL_LOOKING.match(node.value) and node.value.lstrip("+-") != "0":
            self.fail(
                key, node,
                f"expected {expected}, got {node.value} which YAML reads as octal {value}; "
                "drop the leading zero",
            )
            return default
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            self.fail(key, node, f"expected {expected}, got {value}")
            return default
        return value

    def get_number(
        self,
        key: str,
        default: float,
        *,
        minimum: float = 0.0,
        exclusive: bool = False,
        what: str = "a number",
        expected: str | None = None,
    ) -> float:
        """A finite int or float >= minimum (> minimum if exclusive), returned as float.

        Messages say "expected <what> greater than 0" unless `expected` replaces the phrase."""
        value, node = self.value(key)
        if value is _ABSENT or value is _BAD:
            return default
        if expected is None:
            bound = f"greater than {minimum:g}" if exclusive else f"of at least {minimum:g}"
            expected = f"{what} {bound}"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            hint = ""
            if isinstance(value, str):
                try:
                    float(value)
                    hint = " (write a plain number without quotes, e.g. 1000 or 0.5; YAML reads 1e3 as text)"
                except ValueError:
                    pass
            self.fail(key, node, f"expected {expected}, got {_describe(value)}{hint}")
            return default
        try:
            number = float(value)
        except OverflowError:
            self.fail(key, node, f"expected {expected}, got a number too large to use")
            return default
        if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
            self.fail(key, node, f"expected {expected}, got {_describe(value)}")
            return default
        return number

    def get_bool(self, key: str, default: bool) -> bool:
        value, node = self.value(key)
        if value is _ABSENT or value is _BAD:
            return default
        if not isinstance(value, bool):
            self.fail(key, node, f"expected true or false, got {_describe(value)}")
            return default
        return value

    def get_str(
        self,
        key: str,
        default: Any,
        *,
        what: str = "a string",
        secret: bool = False,
        required: bool = False,
        check: Callable[[str], str | None] | None = None,
        as_written: bool = False,
    ) -> Any:
        """A non-empty string; `check(value)` returns a problem (a message) or None.

        With `secret`, messages describe the value's type but never its content. With
        `as_written`, an unquoted value that YAML reads as a number (``+49``, ``0044``,
        ``12:30``) is taken as the text written.
        """
        value, node = self.value(key)
        if as_written:
            value = _as_written(value, node)
        if value is _ABSENT:
            return self.missing(key, what) if required else default
        if value is _BAD:
            return _BAD if required else default
        if not isinstance(value, str):
            found = _describe(value, secret=secret)
            self.fail(key, node, f"expected {what}, got {found}{_quote_hint(value)}")
            return _BAD if required else default
        if value == "":
            self.fail(key, node, f"expected {what}, got an empty string")
            return _BAD if required else default
        if check is not None:
            problem = check(value)
            if problem is not None:
                self.fail(key, node, problem)
                return _BAD if required else default
        return value

    def get_choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value, node = self.value(key)
        if value is _ABSENT or value is _BAD:
            return default
        expected = "one of " + ", ".join(repr(c) for c in choices)
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        self.fail(key, node, f"expected {expected}, got {_describe(value)}{_quote_hint(value)}")
        return default

    def get_path(
        self, key: str, default: Path | None, *, what: str = "a file path", required: bool = False
    ) -> Any:
        """A path resolved against the config's directory; `default` if absent, _BAD if wrong."""
        text = self.get_str(key, _ABSENT, what=what, required=required)
        if text is _BAD:
            return _BAD
        if text is _ABSENT:
            return default
        return self.ctx.resolve_path(text)

    def get_list(self, key: str, what: str) -> tuple[list[Node], Node] | None:
        """The item nodes of a list value, or None if absent or wrong (reported)."""
        value, node = self.value(key)
        if value is _ABSENT or value is _BAD:
            return None
        if value is not _A_LIST:
            self.fail(key, node, f"expected {what}, got {_describe(value)}")
            return None
        assert isinstance(node, SequenceNode)
        return list(node.value), node


def _as_written(value: Any, node: Node | None) -> Any:
    """The text of a plain (unquoted) scalar that YAML turned into a number; else `value`."""
    if (
        isinstance(node, ScalarNode)
        and node.style is None
        and isinstance(value, (int, float))
        and not isinstance(value, bool)
    ):
        return node.value
    return value


def _item_text(ctx: _Ctx, node: Node) -> Any:
    """A list item as text: a string, or the text of an unquoted number; else what YAML made
    of it (None, a bool, _A_LIST, _A_MAPPING) for the error message."""
    if isinstance(node, SequenceNode):
        return _A_LIST
    if isinstance(node, MappingNode):
        return _A_MAPPING
    assert isinstance(node, ScalarNode)
    return _as_written(_scalar_or_bad(ctx, node), node)


def _int_range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"an integer from {lo} to {hi}"
    if lo is not None:
        return f"an integer of at least {lo}"
    if hi is not None:
        return f"an integer of at most {hi}"
    return "an integer"


# --------------------------------------------------------------------------------------------
# Checks shared by sections


def _system_id_problem(value: str) -> str | None:
    if len(value) > SYSTEM_ID_MAX:
        return (
            f"expected at most {SYSTEM_ID_MAX} characters (SMPP system_id is 16 octets with the NUL), "
            f"got {len(value)}: {value!r}"
        )
    if any(not (0x21 <= ord(c) <= 0x7E) for c in value):
        return f"expected printable ASCII without spaces, got {value!r}"
    return None


def _host_problem(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
        return None
    except ValueError:
        pass
    if _HOSTNAME.match(value):
        return None
    hint = " (write IPv6 addresses without brackets)" if value.startswith("[") else ""
    return f"expected an IP address or host name, got {value!r}{hint}"


def _env_name_problem(value: str) -> str | None:
    if _ENV_NAME.match(value):
        return None
    return f"expected an environment variable name (letters, digits, _), got {value!r}"


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_file(m: _Map, key: str, path: Path, node: Node | None) -> bool:
    """An existing, readable regular file; else report and return False."""
    try:
        st = path.stat()
    except FileNotFoundError:
        m.fail(key, node, f"file not found: {path}")
        return False
    except OSError as e:
        m.fail(key, node, f"cannot read {path}: {e.strerror or e}")
        return False
    if not stat.S_ISREG(st.st_mode):
        m.fail(key, node, f"expected a regular file, got something else at {path}")
        return False
    if not os.access(path, os.R_OK):
        m.fail(key, node, f"cannot read {path}: permission denied for this user")
        return False
    return True


def _read_secret_file(m: _Map, key: str) -> tuple[str, Path] | None:
    """(content with trailing newlines stripped, path) of the file named by `key`, or None
    (reported). Refuses a file that group or others can read."""
    path = m.get_path(key, None)
    if path is None or path is _BAD:
        return None
    node = m.node(key)
    if not _check_file(m, key, path, node):
        return None
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            data = f.read(64 * 1024 + 1)
    except OSError as e:
        m.fail(key, node, f"cannot read {path}: {e.strerror or e}")
        return None
    if os.name == "posix" and mode & 0o044:
        m.fail(
            key, node,
            f"{path} holds a secret but can be read by group or others (mode {mode:04o}): "
            f"run `chmod 600 {path}`",
        )
        return None
    if len(data) > 64 * 1024:
        m.fail(key, node, f"expected a small secret file, got more than 64 KiB in {path}")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        m.fail(key, node, f"expected UTF-8 text in {path}")
        return None
    return text.rstrip("\r\n"), path


def _read_secret(
    m: _Map, keys: tuple[str, str, str], *, check: Callable[[str], str | None], alternatives: str
) -> tuple[Secret | None, str | None]:
    """Read one of (inline key, *_env key, *_file key). Returns (secret, source key used).

    Does not decide whether one is required or whether several are given; callers do."""
    inline, env_key, file_key = keys
    ctx = m.ctx
    if m.has(inline):
        value = m.get_str(inline, None, what="a string", secret=True)
        ctx.inline_secrets.append((m.path_of(inline), m.key_line(inline), alternatives))
        if value is None:
            return None, inline
        problem = check(value)
        if problem is not None:
            m.fail(inline, m.node(inline), f"{inline} {problem}")
            return None, inline
        return Secret(value), inline
    if m.has(env_key):
        name = m.get_str(env_key, None, what="an environment variable name", check=_env_name_problem)
        if name is None:
            return None, env_key
        node = m.node(env_key)
        value = ctx.env.get(name)
        if value is None:
            m.fail(env_key, node, f"environment variable {name} is not set")
            return None, env_key
        problem = check(value)
        if problem is not None:
            m.fail(env_key, node, f"the value of environment variable {name} {problem}")
            return None, env_key
        return Secret(value), env_key
    if m.has(file_key):
        got = _read_secret_file(m, file_key)
        if got is None:
            return None, file_key
        value, path = got
        problem = check(value)
        if problem is not None:
            m.fail(file_key, m.node(file_key), f"the content of {path} {problem}")
            return None, file_key
        return Secret(value), file_key
    return None, None


def _sources_given(m: _Map, keys: Sequence[str]) -> list[str]:
    """Which of these alternative keys are present; marks them all as known."""
    for key in keys:
        m.node(key)
    return [k for k in keys if m.has(k)]


# --------------------------------------------------------------------------------------------
# Sections: one loader per section, each `(ctx, node or None, path) -> model`


def _load_tls(ctx: _Ctx, node: Node, path: str) -> TlsConfig | None:
    m = _Map(ctx, node, path, ("cert", "key"), what="a mapping with cert and key")
    cert = m.get_path("cert", None, what="the path of the certificate file (PEM)", required=True)
    key = m.get_path("key", None, what="the path of the private key file (PEM)", required=True)
    m.finish()
    if not m.ok or cert is _BAD or key is _BAD:
        return None
    ok = _check_file(m, "cert", cert, m.node("cert"))
    ok = _check_file(m, "key", key, m.node("key")) and ok
    return TlsConfig(cert=cert, key=key) if ok else None


def _load_listeners(ctx: _Ctx, parent: _Map) -> tuple[Listener, ...]:
    default = (Listener(),)
    got = parent.get_list("listeners", "a list of listeners (host, port, optional tls)")
    if got is None:
        return default
    items, list_node = got
    if not items:
        parent.fail("listeners", list_node, "expected at least one listener, got an empty list")
        return default
    listeners: list[Listener] = []
    seen: dict[tuple[str, int], int | None] = {}
    for i, item in enumerate(items):
        path = f"{parent.path_of('listeners')}[{i}]"
        m = _Map(ctx, item, path, ("host", "port", "tls"), what="a listener (a mapping with host, port, tls)")
        host = m.get_str("host", "0.0.0.0", what="an IP address or host name", check=_host_problem)
        if m.has("port"):
            port = m.get_int("port", 2775, lo=0, hi=65535)
        elif m.ok:
            port = m.missing("port", "a TCP port number (0..65535), e.g. 2775, or 3550 for TLS")
        else:
            port = _BAD  # not a mapping: already reported
        tls_node = m.node("tls")
        tls = _load_tls(ctx, tls_node, m.path_of("tls")) if tls_node is not None else None
        m.finish()
        if not m.ok or port is _BAD:
            continue
        if port != 0 and not {"host", "port"} & m.bad:
            if (host, port) in seen:
                message = f"duplicate listener {host}:{port} (also at line {seen[(host, port)]})"
                m.fail("port", m.node("port"), message)
            seen[(host, port)] = m.key_line("port")
        listeners.append(Listener(host=host, port=port, tls=tls))
    return tuple(listeners) or default


def _load_timers(ctx: _Ctx, node: Node | None, path: str) -> Timers:
    defaults = Timers()
    names = [f.name for f in attrs.fields(Timers)]
    m = _Map(ctx, node, path, names)
    values = {
        name: m.get_number(name, getattr(defaults, name), exclusive=True, what="a number of seconds")
        for name in names
    }
    if (
        m.has("inactivity") or m.has("enquire_link")
    ) and not {"inactivity", "enquire_link"} & m.bad and values["inactivity"] <= values["enquire_link"]:
        culprit = "inactivity" if m.has("inactivity") else "enquire_link"
        m.fail(
            culprit,
            m.key_line(culprit),
            f"expected inactivity greater than enquire_link, got inactivity {values['inactivity']:g} "
            f"and enquire_link {values['enquire_link']:g} "
            "(idle sessions would be dropped before they are probed)",
        )
    m.finish()
    return Timers(**values)


def _load_smpp(ctx: _Ctx, node: Node | None, path: str) -> SmppConfig:
    m = _Map(ctx, node, path, ("system_id", "listeners", "timers", "window", "max_connections"))
    config = SmppConfig(
        system_id=m.get_str(
            "system_id", "smpp-bridge", what="a system_id (1..15 characters)", check=_system_id_problem
        ),
        listeners=_load_listeners(ctx, m),
        timers=_load_timers(ctx, m.node("timers"), m.path_of("timers")),
        window=m.get_int("window", 10, lo=1, hi=1000),
        max_connections=m.get_int("max_connections", 1000, lo=1),
    )
    m.finish()
    return config


_PASSWORD_KEYS = ("password", "password_hash", "password_env", "password_file")


def _hash_problem(value: str) -> str | None:
    try:
        passwords.parse_hash(value)
    except ValueError as e:
        return f"expected a hash made by `smpp-bridge hash-password`: {e}"
    return None


def _password_problem(value: str) -> str | None:
    return passwords.smpp_password_problem(value)


def _load_allowed_ips(m: _Map) -> tuple[IPNetwork, ...]:
    got = m.get_list("allowed_ips", "a list of IP addresses or networks (CIDR), e.g. [127.0.0.1, 10.0.0.0/8]")
    if got is None:
        return LOOPBACK_NETWORKS
    items, list_node = got
    if not items:
        m.fail(
            "allowed_ips", list_node,
            "expected at least one address or network, got an empty list "
            "(to stop this ESME binding, set enabled: false)",
        )
        return LOOPBACK_NETWORKS
    networks: list[IPNetwork] = []
    for i, item in enumerate(items):
        item_path = f"{m.path_of('allowed_ips')}[{i}]"
        value: Any = _A_LIST if isinstance(item, SequenceNode) else _A_MAPPING
        if isinstance(item, ScalarNode):
            value = _scalar_or_bad(m.ctx, item)
        if not isinstance(value, str):
            found = f"{_describe(value)}{_quote_hint(value)}"
            m.ctx.error(item_path, item, f"expected an IP address or network, got {found}")
            m.bad.add("allowed_ips")
            continue
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=True))
        except ValueError:
            try:
                loose = ipaddress.ip_network(value.strip(), strict=False)
                message = f"{value!r} has host bits set (did you mean '{loose}'?)"
            except ValueError:
                message = f"expected an IP address or network like 10.0.0.0/8 or \"::1\", got {value!r}"
            m.ctx.error(item_path, item, message)
            m.bad.add("allowed_ips")
    return tuple(networks) if networks else LOOPBACK_NETWORKS


def _load_esme(ctx: _Ctx, node: Node, path: str) -> tuple[EsmeConfig | None, int | None]:
    """One ESME, and the line of its system_id (for duplicate reports)."""
    m = _Map(
        ctx,
        node,
        path,
        ("system_id", *_PASSWORD_KEYS, "allowed_ips", "max_binds", "throughput", "enabled", "default_route",
         "mo_long", "receipts", "data_coding_1"),
        what="an ESME (a mapping with system_id, password ...)",
    )
    if not m.ok:
        return None, None
    system_id = m.get_str(
        "system_id", None, what="a system_id (1..15 characters)", required=True, check=_system_id_problem
    )
    given = _sources_given(m, _PASSWORD_KEYS)
    secret, _ = _read_secret(
        m,
        ("password", "password_env", "password_file"),
        check=_password_problem,
        alternatives="password_env or password_file",
    )
    password_hash = None
    if m.has("password_hash"):
        password_hash = m.get_str(
            "password_hash", None, what="a password hash", secret=True, check=_hash_problem
        )
    if not given:
        m.ctx.error(
            path, m.line,
            "missing password: expected exactly one of password, password_hash, password_env, password_file",
        )
    elif len(given) > 1:
        for extra in given[1:]:
            m.fail(
                extra, m.key_line(extra),
                f"expected exactly one password source, got {len(given)}: {', '.join(given)}",
            )
    allowed_ips = _load_allowed_ips(m)
    max_binds = m.get_int("max_binds", 4, lo=1, hi=1000)
    throughput = m.get_number(
        "throughput", 0.0, expected="a number of segments per second, 0 or more (0 = unlimited)"
    )
    enabled = m.get_bool("enabled", True)
    default_route = m.get_str(
        "default_route", None, what="the name of a route (from routes:)", as_written=True
    )
    if default_route is not None:
        ctx.route_refs.append((m.path_of("default_route"), m.key_line("default_route"), default_route))
    mo_long = m.get_choice("mo_long", "udh", MO_LONG_MODES)
    receipts = m.get_choice("receipts", "combined", RECEIPT_MODES)
    data_coding_1 = m.get_choice("data_coding_1", "auto", DATA_CODING_1_MODES)
    m.finish()
    if system_id is _BAD or system_id is None:
        return None, None
    esme = EsmeConfig(
        system_id=system_id,
        password=secret if password_hash is None else None,
        password_hash=password_hash,
        allowed_ips=allowed_ips,
        max_binds=max_binds,
        throughput=throughput,
        enabled=enabled,
        default_route=default_route,
        mo_long=mo_long,
        receipts=receipts,
        data_coding_1=data_coding_1,
    )
    return esme, m.key_line("system_id")


def _load_esmes(ctx: _Ctx, node: Node | None, path: str) -> tuple[EsmeConfig, ...]:
    what = "a list of ESMEs (the applications allowed to bind), at least one"
    if node is None:
        ctx.error(path, None, f"missing: expected {what}")
        return ()
    if not isinstance(node, SequenceNode):
        found = _A_MAPPING if isinstance(node, MappingNode) else _scalar_or_bad(ctx, node)
        hint = " (start each ESME with '- system_id: ...')" if found is _A_MAPPING else ""
        ctx.error(path, node, f"expected {what}, got {_describe(found)}{hint}")
        return ()
    if not node.value:
        ctx.error(path, node, f"expected {what}, got an empty list")
        return ()
    esmes: list[EsmeConfig] = []
    first_line: dict[str, int | None] = {}
    for i, item in enumerate(node.value):
        esme, line = _load_esme(ctx, item, f"{path}[{i}]")
        if esme is None:
            continue
        if esme.system_id in first_line:
            ctx.error(
                f"{path}[{i}].system_id", line,
                f"duplicate system_id {esme.system_id!r} (first used at line {first_line[esme.system_id]})",
            )
            continue
        first_line[esme.system_id] = line
        ctx.esme_ids.add(esme.system_id)
        esmes.append(esme)
    return tuple(esmes)


def _load_store(ctx: _Ctx, node: Node | None, path: str) -> StoreConfig:
    m = _Map(ctx, node, path, ("path", "synchronous", "partial_timeout"))
    config = StoreConfig(
        path=m.get_path("path", default_store_path(ctx.env, ctx.base_dir), what="a database file path"),
        synchronous=m.get_choice("synchronous", "full", SYNCHRONOUS_MODES),
        partial_timeout=m.get_number("partial_timeout", 600.0, exclusive=True, what="a number of seconds"),
    )
    m.finish()
    return config


SYSTEM_STATE_DIR = Path("/var/lib/smpp-bridge")
STORE_FILE = "bridge.sqlite3"


def default_store_path(env: Mapping[str, str], config_dir: Path) -> Path:
    """Where the database goes when ``store.path`` is not set, in this order:

    1. ``$STATE_DIRECTORY/bridge.sqlite3``: systemd sets it from the unit's ``StateDirectory=``
       (the first one, when it lists several); the container image sets it to its volume.
    2. ``/var/lib/smpp-bridge/bridge.sqlite3`` for a config kept under ``/etc`` (the installed
       appliance: the same place whether systemd or ``sudo -u smpp-bridge`` runs the command).
    3. ``data/bridge.sqlite3`` next to the config file otherwise (a config in a person's own
       directory: the demo, tests, a trial run).
    """
    state = env.get("STATE_DIRECTORY", "").split(":")[0]
    if state:
        return Path(state) / STORE_FILE
    if config_dir == Path("/etc") or Path("/etc") in config_dir.parents:
        return SYSTEM_STATE_DIR / STORE_FILE
    return config_dir / "data" / STORE_FILE


def store_location_issues(config: Config) -> list[ConfigIssue]:
    """Can this process create and write the database at ``store.path``? (check-config and run
    ask before anything opens it: a read-only directory otherwise surfaces as a bare
    ``Read-only file system`` at the first write.)"""
    path = config.store.path
    where = f"the database {path} (store.path, or its default when not set)"
    fix = "set store.path to a file in a directory the bridge's user can write (e.g. /var/lib/smpp-bridge)"
    if path.is_dir():
        return [ConfigIssue("store.path", None, f"{where} is a directory; expected a database file path")]
    for item in [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]:
        if item.exists() and not os.access(item, os.R_OK | os.W_OK):
            return [ConfigIssue("store.path", None, f"{item} exists but this user cannot read and write it; "
                                "run as the bridge's user or fix its owner")]
    # The directory (or the nearest one that exists: the store creates the rest) must be
    # writable, for the database and for SQLite's journal files beside it.
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        return [ConfigIssue("store.path", None, f"{where}: {parent} is not a directory; {fix}")]
    if not os.access(parent, os.W_OK | os.X_OK):
        return [ConfigIssue("store.path", None, f"{where}: cannot write in {parent}; {fix}")]
    try:
        probe = tempfile.NamedTemporaryFile(dir=parent, prefix=".smpp-bridge-write-test-")
        probe.close()
    except OSError as e:  # a read-only mount: os.access does not see it
        return [ConfigIssue("store.path", None, f"{where}: cannot write in {parent} ({e.strerror}); {fix}")]
    return []


def _load_limits(ctx: _Ctx, node: Node | None, path: str) -> Limits:
    m = _Map(ctx, node, path, ("queue_depth",))
    config = Limits(queue_depth=m.get_int("queue_depth", 10_000, lo=1))
    m.finish()
    return config


def _token_problem(value: str) -> str | None:
    if any(not (0x21 <= ord(c) <= 0x7E) for c in value):
        return "must be printable ASCII without spaces (it is sent in an HTTP header)"
    if len(value) < ADMIN_TOKEN_MIN:
        return (
            f"is {len(value)} characters; expected at least {ADMIN_TOKEN_MIN} "
            "(e.g. `openssl rand -hex 16`)"
        )
    return None


def _load_admin(ctx: _Ctx, node: Node | None, path: str) -> AdminConfig:
    token_keys = ("token", "token_env", "token_file")
    m = _Map(ctx, node, path, ("host", "port", *token_keys))
    host = m.get_str("host", "127.0.0.1", what="an IP address or host name", check=_host_problem)
    port = m.get_int("port", 8025, lo=0, hi=65535)
    given = _sources_given(m, token_keys)
    token, _ = _read_secret(m, token_keys, check=_token_problem, alternatives="token_env or token_file")
    for extra in given[1:]:
        message = f"expected at most one token source, got {len(given)}: {', '.join(given)}"
        m.fail(extra, m.key_line(extra), message)
    if port != 0 and not given and not {"host", "port"} & m.bad and not _is_loopback(host):
        m.fail(
            "host", m.key_line("host"),
            f"admin HTTP on {host!r} is reachable from the network, so a token is required: "
            "set token_env or token_file (or use host 127.0.0.1)",
        )
    m.finish()
    return AdminConfig(host=host, port=port, token=token)


def _load_logging(ctx: _Ctx, node: Node | None, path: str) -> LoggingConfig:
    m = _Map(ctx, node, path, ("level", "format", "pdu_log"))
    config = LoggingConfig(
        level=m.get_choice("level", "info", LOG_LEVELS),
        format=m.get_choice("format", "text", LOG_FORMATS),
        pdu_log=_load_pdu_log(ctx, m.node("pdu_log"), m.path_of("pdu_log")),
    )
    m.finish()
    return config


def _load_pdu_log(ctx: _Ctx, node: Node | None, path: str) -> PduLogConfig:
    m = _Map(ctx, node, path, ("enabled", "dir", "retention_days"))
    directory = m.get_path("dir", None, what="a directory path")
    config = PduLogConfig(
        enabled=m.get_bool("enabled", False),
        dir=None if directory is _BAD else directory,
        retention_days=m.get_int("retention_days", 14, lo=1, hi=3650),
    )
    m.finish()
    return config


# -- devices ---------------------------------------------------------------------------------


def _name_problem(what: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if NAME_PATTERN.match(value):
            return None
        return (
            f"expected a {what} name: 1-32 characters of lowercase letters, digits, '_' and '-', "
            f"starting with a letter or digit, got {value!r}"
        )

    return check


def _known_hint(name: str, known: Iterable[str], plural: str) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if known:
        return f" (known {plural}: {', '.join(known)})"
    return f" (no {plural} are configured)"


def _device_url_problem(value: str) -> str | None:
    example = "http://192.168.1.50"
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError as e:  # an unbalanced '[' and the like; the message does not quote the URL
        return f"expected an http(s) URL like {example}, got one that cannot be read ({e})"
    if "@" in parts.netloc:
        # never echo the value: it holds credentials
        return (
            "expected a URL without credentials: remove 'user:password@' from the URL and use "
            "the username and password (or password_env, password_file) keys instead"
        )
    if "://" not in value:
        return f"expected a URL starting with http:// or https://, got {value!r} (did you mean 'http://{value}'?)"
    if parts.scheme.lower() not in ("http", "https"):
        return f"expected an http:// or https:// URL, got {value!r}"
    if not parts.hostname:
        return f"expected a URL with a host, like {example}, got {value!r}"
    host_problem = _host_problem(parts.hostname)
    if host_problem is not None:
        return f"expected a URL with a valid host, like {example}, got {value!r}"
    try:
        parts.port
    except ValueError:
        return f"expected a URL with a port from 0 to 65535, got {value!r}"
    if parts.query or parts.fragment or "?" in value or "#" in value:
        return (
            f"expected the device's base URL without '?...' or '#...' (the bridge adds paths and "
            f"parameters itself), got {value!r}"
        )
    return None


def _username_problem(value: str) -> str | None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "expected a user name without control characters"
    if ":" in value:
        return f"expected a user name without ':' (it is sent in HTTP Basic auth), got {value!r}"
    return None


def _device_password_problem(value: str) -> str | None:
    if value == "":
        return "is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "contains control characters (a stray line break?)"
    return None


DEVICE_PASSWORD_KEYS = ("password", "password_env", "password_file")


def _load_device_password(m: _Map) -> Any:
    """Exactly one of password / password_env / password_file: a Secret, or _BAD (reported)."""
    given = _sources_given(m, DEVICE_PASSWORD_KEYS)
    secret, _ = _read_secret(
        m, DEVICE_PASSWORD_KEYS, check=_device_password_problem, alternatives="password_env or password_file"
    )
    if not given:
        m.ctx.error(
            m.path, m.line, "missing password: expected exactly one of password, password_env, password_file"
        )
        return _BAD
    if len(given) > 1:
        for extra in given[1:]:
            m.fail(
                extra, m.key_line(extra),
                f"expected exactly one password source, got {len(given)}: {', '.join(given)}",
            )
        return _BAD
    return _BAD if secret is None else secret


def _load_http_device(m: _Map, what: str, *, default_url: str | None = None,
                      default_username: str = "admin", username_key: str = "username") -> dict[str, Any]:
    """url, user name, password: what every HTTP-driven device kind has."""
    url = m.get_str(
        "url", default_url, what=f"the {what}'s base URL, like http://192.168.1.50",
        required=default_url is None, check=_device_url_problem,
    )
    username = m.get_str(username_key, default_username, what="a user name", check=_username_problem)
    return {
        "url": url.rstrip("/") if isinstance(url, str) else _BAD,
        "username": username,
        "password": _load_device_password(m),
    }


def _tls_options(m: _Map) -> dict[str, Any]:
    opts: dict[str, Any] = {"verify_tls": m.get_bool("verify_tls", True)}
    if m.has("ca_file"):
        path = m.get_path("ca_file", None)
        if path is not None and _check_file(m, "ca_file", path, m.node("ca_file")):
            opts["verify_tls"] = str(path)
    return opts


# Device kinds live in bridge/devices/<kind>/ (config.py there: KEYS and load); the registry
# lists them.
DEVICE_KINDS: tuple[str, ...] = device_registry.KINDS

_DEVICE_KEYS = (
    "name", "kind", "enabled", "timeout", "status_poll_interval", "status_timeout",
    "inbox_poll_interval", "health_interval", "caps", "channels",
)
_CAPS_KEYS = ("per_minute", "per_hour", "per_day", "day_reset", "jitter")
_HHMM = re.compile(r"^([01]?[0-9]|2[0-3]):([0-5][0-9])$")
JITTER_MAX = 0.9


def _hhmm_problem(value: str) -> str | None:
    if _HHMM.match(value.strip()):
        return None
    return f'expected a local time of day as "HH:MM" (00:00 to 23:59), got {value!r}'


def _load_caps(ctx: _Ctx, node: Node | None, path: str, base: Caps) -> Caps:
    """Caps; every key not given is taken from `base` (the defaults, or the device's caps)."""
    m = _Map(ctx, node, path, _CAPS_KEYS, what="a mapping of caps (per_minute, per_hour, per_day, day_reset, jitter)")
    counts = {
        key: m.get_int(
            key, getattr(base, key), lo=0,
            expected="a whole number of messages, 0 or more (0 = no limit)",
        )
        for key in ("per_minute", "per_hour", "per_day")
    }
    text = m.get_str("day_reset", None, what='a local time "HH:MM"', as_written=True, check=_hhmm_problem)
    day_reset = base.day_reset
    if isinstance(text, str):
        hour, minute = text.strip().split(":")
        day_reset = datetime.time(int(hour), int(minute))
    expected = f"a fraction of the pacing interval from 0 to {JITTER_MAX:g}"
    jitter = m.get_number("jitter", base.jitter, expected=expected)
    if m.has("jitter") and "jitter" not in m.bad and jitter > JITTER_MAX:
        m.fail("jitter", m.node("jitter"), f"expected {expected}, got {jitter:g}")
        jitter = base.jitter
    m.finish()
    return Caps(day_reset=day_reset, jitter=jitter, **counts)


def _line_ids(lines: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(1, lines + 1))


def _describe_ids(ids: Sequence[str]) -> str:
    if not ids:
        return "none"
    if tuple(ids) == _line_ids(len(ids)):
        return ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"
    return ", ".join(ids)


_DIGITS = re.compile(r"^[0-9]+$")


def _channel_id(ids: Sequence[str], token: str) -> str | None:
    """`token` as one of `ids` ("03" is "3"), or None."""
    token = token.strip()
    if token in ids:
        return token
    if _DIGITS.match(token) and str(int(token)) in ids:
        return str(int(token))
    return None


def _load_channel_overrides(
    ctx: _Ctx, node: Node | None, path: str, ids: tuple[str, ...] | None, device_caps: Caps
) -> dict[str, ChannelOverride]:
    """`channels:` of a device. `ids` None: the device's channels are unknown (already
    reported), so ids are not checked and nothing is returned."""
    m = _Map(ctx, node, path, (), what='a mapping of channel id to overrides, like "3": {enabled: false}')
    result: dict[str, ChannelOverride] = {}
    first_key: dict[str, tuple[str, int | None]] = {}
    for key in m.entry_names():
        m.declare((key,))
        value_node = m.node(key)
        om = _Map(
            ctx, value_node, m.path_of(key), ("enabled", "caps", "number"),
            what="overrides for one channel (a mapping with enabled, caps, number)",
        )
        enabled = om.get_bool("enabled", True)
        caps = _load_caps(ctx, om.node("caps"), om.path_of("caps"), device_caps)
        number = om.get_str(
            "number", None, what='the SIM\'s phone number, like "+491701234567"', as_written=True,
            check=_phone_problem,
        )
        om.finish()
        if ids is None:
            continue
        channel = _channel_id(ids, key)
        if channel is None:
            ctx.error(m.path_of(key), m.key_line(key), f"expected a channel id of this device ({_describe_ids(ids)}), got {key!r}")
            continue
        if channel in first_key:
            other, line = first_key[channel]
            ctx.error(m.path_of(key), m.key_line(key), f"channel {channel} is given twice (also as {other!r} at line {line})")
            continue
        first_key[channel] = (key, m.key_line(key))
        result[channel] = ChannelOverride(enabled=enabled, caps=caps, number=number)
    m.finish()
    return result


def _check_order(m: _Map, low_key: str, low: float, high_key: str, high: float, why: str, *, strict: bool) -> None:
    """Report when `high_key` is not greater than (strict) / at least `low_key`."""
    if not (m.has(low_key) or m.has(high_key)) or {low_key, high_key} & m.bad:
        return
    if high > low or (not strict and high == low):
        return
    culprit = high_key if m.has(high_key) else low_key
    relation = "greater than" if strict else "at least"
    m.fail(
        culprit, m.key_line(culprit),
        f"expected {high_key} {relation} {low_key}, got {high_key} {high:g} and {low_key} {low:g} ({why})",
    )


def _load_device(ctx: _Ctx, node: Node, path: str) -> tuple[DeviceConfig | None, str | None, int | None]:
    """(device or None if anything in it was wrong, its name if readable, line of the name)."""
    before = len(ctx.issues)
    m = _Map(ctx, node, path, _DEVICE_KEYS, what="a device (a mapping with name, kind ...)")
    if not m.ok:
        return None, None, None
    name = m.get_str(
        "name", None, what="a device name", required=True, as_written=True, check=_name_problem("device")
    )
    kinds = ", ".join(repr(k) for k in DEVICE_KINDS)
    kind = m.get_str("kind", None, what=f"a device kind: one of {kinds}", required=True)
    spec = None
    if kind is not _BAD:
        spec = device_registry.config(kind) if kind in DEVICE_KINDS else None
        if spec is None:
            close = difflib.get_close_matches(kind, DEVICE_KINDS, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            m.fail("kind", m.node("kind"), f"expected a device kind: one of {kinds}, got {kind!r}{hint}")
    fields: dict[str, Any] | None = None
    if spec is None:
        m.skip_unknown()  # which keys belong depends on the kind
    else:
        m.declare(spec.KEYS)
        fields = spec.load(m)

    def seconds(key: str, default: float) -> float:
        return m.get_number(key, default, exclusive=True, what="a number of seconds")

    timeout = seconds("timeout", 10.0)
    status_poll_interval = seconds("status_poll_interval", 2.0)
    status_timeout = seconds("status_timeout", 60.0)
    inbox_poll_interval = seconds("inbox_poll_interval", 10.0)
    health_interval = seconds("health_interval", 30.0)
    _check_order(
        m, "status_poll_interval", status_poll_interval, "status_timeout", status_timeout,
        "the status would never be polled before the bridge gives up on it", strict=True,
    )
    enabled = m.get_bool("enabled", True)
    caps = _load_caps(ctx, m.node("caps"), m.path_of("caps"), Caps())
    lines = fields.get("lines", 1) if fields is not None else _BAD
    ids = _line_ids(lines) if isinstance(lines, int) else None
    overrides = _load_channel_overrides(ctx, m.node("channels"), m.path_of("channels"), ids, caps)
    m.finish()
    line = m.key_line("name")
    if name is _BAD:
        return None, None, line
    if fields is None or len(ctx.issues) > before or any(v is _BAD for v in fields.values()):
        return None, name, line
    device = DeviceConfig(
        name=name,
        kind=kind,
        timeout=timeout,
        status_poll_interval=status_poll_interval,
        status_timeout=status_timeout,
        inbox_poll_interval=inbox_poll_interval,
        health_interval=health_interval,
        enabled=enabled,
        caps=caps,
        channel_overrides=overrides,
        **fields,
    )
    return device, name, line


def _list_section(ctx: _Ctx, node: Node | None, path: str, what: str, hint: str) -> list[Node] | None:
    """Items of an optional list section; [] when absent or empty; None when not a list (reported)."""
    if node is None:
        return []
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        ctx.error(path, node, f"expected {what}, got a mapping ({hint})")
        return None
    value = _scalar_or_bad(ctx, node)
    if value is None:
        return []
    ctx.error(path, node, f"expected {what}, got {_describe(value)}")
    return None


def _load_devices(ctx: _Ctx, node: Node | None, path: str) -> tuple[DeviceConfig, ...]:
    items = _list_section(
        ctx, node, path, "a list of devices (may be empty)", "start each device with '- name: ...'"
    )
    if items is None:
        ctx.devices_unreadable = True
        return ()
    devices: list[DeviceConfig] = []
    first_line: dict[str, int | None] = {}
    for i, item in enumerate(items):
        device, name, line = _load_device(ctx, item, f"{path}[{i}]")
        if name is not None:
            if name in first_line:
                ctx.error(
                    f"{path}[{i}].name", line, f"duplicate device name {name!r} (first used at line {first_line[name]})"
                )
                continue
            first_line[name] = line
        if device is None:
            if name is not None:
                ctx.broken_devices.add(name)
            continue
        ctx.devices[device.name] = device
        devices.append(device)
    return tuple(devices)


# -- routes ----------------------------------------------------------------------------------


_ROUTE_KEYS = ("name", "prefixes", "regex", "channels", "failover")
_PREFIX = re.compile(r"^\+?[0-9]{1,20}$")


def _load_prefixes(m: _Map) -> tuple[str, ...]:
    got = m.get_list("prefixes", 'a list of destination prefixes, like ["+49", "0049"]')
    if got is None:
        return ()
    items, list_node = got
    if not items:
        m.fail(
            "prefixes", list_node,
            "expected at least one prefix, got an empty list "
            "(to match every destination, leave out both prefixes and regex)",
        )
        return ()
    prefixes: list[str] = []
    for j, item in enumerate(items):
        value = _item_text(m.ctx, item)
        if not isinstance(value, str) or not _PREFIX.match(value.strip()):
            m.ctx.error(
                f"{m.path_of('prefixes')}[{j}]", item,
                f'expected a destination prefix: digits with an optional leading +, like "+49" or "0049", '
                f"got {_describe(value)}",
            )
            m.bad.add("prefixes")
            continue
        if value.strip() not in prefixes:
            prefixes.append(value.strip())
    return tuple(prefixes)


def _load_regex(m: _Map) -> re.Pattern[str] | None:
    what = "a regular expression (Python re syntax, in quotes)"
    pattern = m.get_str("regex", None, what=what, as_written=True)
    if not isinstance(pattern, str):
        return None
    try:
        return re.compile(pattern)
    except re.error as e:
        where = f" at position {e.pos}" if e.pos is not None else ""
        m.fail("regex", m.node("regex"), f"expected {what}, got {pattern!r}: {e.msg}{where}")
        return None


def _parse_channel_spec(spec: str, ids: Sequence[str]) -> tuple[list[str], str | None]:
    """ "1-4,7" -> ["1", "2", "3", "4", "7"]; or ([], problem)."""
    if not spec:
        return [], "expected channel ids after ':', like goip2:1-4,7"
    chosen: list[str] = []
    for token in spec.split(","):
        token = token.strip()
        first, dash, last = (part.strip() for part in token.partition("-"))
        if dash:
            if not (_DIGITS.match(first) and _DIGITS.match(last)):
                return [], f"expected a channel range like 1-4, got {token!r}"
            lo, hi = int(first), int(last)
            if lo > hi:
                return [], f"expected a channel range from low to high, got {token!r} (write {hi}-{lo})"
            for n in range(lo, hi + 1):
                if str(n) not in ids:
                    return [], f"expected channels of this device ({_describe_ids(ids)}), got {token!r}: there is no channel {n}"
                chosen.append(str(n))
            continue
        channel = _channel_id(ids, token)
        if channel is None:
            if not token:
                return [], "expected channel ids separated by single commas, found an empty one"
            return [], f"expected channels of this device ({_describe_ids(ids)}), got {token!r}"
        chosen.append(channel)
    return chosen, None


def _resolve_channel_ref(ctx: _Ctx, item: Node, path: str) -> tuple[DeviceConfig, Sequence[str]] | None:
    """One entry of a route's channels: (device, its channel ids named), or None (reported, or
    refers to a device whose own errors were reported)."""
    text = _item_text(ctx, item)
    if not isinstance(text, str) or not text.strip():
        ctx.error(path, item, f'expected a device name, or device:channels like "goip2:1-4,7", got {_describe(text)}')
        return None
    device_name, sep, spec = (part.strip() for part in text.partition(":"))
    device = ctx.devices.get(device_name)
    if device is None:
        if device_name in ctx.broken_devices or ctx.devices_unreadable:
            return None
        known = sorted({*ctx.devices, *ctx.broken_devices})
        ctx.error(path, item, f"unknown device {device_name!r}{_known_hint(device_name, known, 'devices')}")
        return None
    if not sep:
        return device, device.channel_ids()
    channels, problem = _parse_channel_spec(spec, device.channel_ids())
    if problem is not None:
        ctx.error(path, item, f"{problem}, in {text!r} (device {device_name!r})")
        return None
    return device, channels


def _load_route_channels(m: _Map) -> tuple[tuple[str, str], ...]:
    ctx = m.ctx
    what = 'a list of devices or device:channels, like [goip1, "goip2:1-4,7"]'
    if m.node("channels") is None:
        m.missing("channels", what)
        return ()
    got = m.get_list("channels", what)
    if got is None:
        return ()
    items, list_node = got
    if not items:
        m.fail("channels", list_node, f"expected {what}, got an empty list")
        return ()
    pairs: list[tuple[str, str]] = []
    disabled: dict[str, list[str]] = {}
    unresolved = False
    for j, item in enumerate(items):
        resolved = _resolve_channel_ref(ctx, item, f"{m.path_of('channels')}[{j}]")
        if resolved is None:
            unresolved = True
            continue
        device, channels = resolved
        for channel in channels:
            if not device.channel_enabled(channel):
                off = disabled.setdefault(device.name, [])
                if channel not in off:
                    off.append(channel)
            elif (device.name, channel) not in pairs:
                pairs.append((device.name, channel))
    if not pairs and not unresolved:
        names = []
        for name, channels in disabled.items():
            device = ctx.devices[name]
            names.append(f"{name} (enabled: false)" if not device.enabled else f"{name}:{','.join(channels)}")
        m.fail(
            "channels", m.key_line("channels"),
            f"expected at least one enabled channel, but every channel listed is disabled: {', '.join(names)}",
        )
    return tuple(pairs)


def _load_route(ctx: _Ctx, node: Node, path: str) -> tuple[RouteConfig | None, str | None, int | None]:
    before = len(ctx.issues)
    m = _Map(ctx, node, path, _ROUTE_KEYS, what="a route (a mapping with name, prefixes or regex, channels)")
    if not m.ok:
        return None, None, None
    name = m.get_str(
        "name", None, what="a route name", required=True, as_written=True, check=_name_problem("route")
    )
    prefixes = _load_prefixes(m)
    regex = _load_regex(m)
    channels = _load_route_channels(m)
    failover = m.get_str("failover", None, what="the name of another route", as_written=True)
    if failover is not None and failover is not _BAD:
        if failover == name:
            m.fail("failover", m.key_line("failover"), "a route cannot fail over to itself")
        else:
            ctx.route_refs.append((m.path_of("failover"), m.key_line("failover"), failover))
    m.finish()
    line = m.key_line("name")
    if name is _BAD:
        return None, None, line
    if len(ctx.issues) > before:
        return None, name, line
    return RouteConfig(
        name=name, prefixes=prefixes, regex=regex, channels=channels,
        failover=failover if isinstance(failover, str) else None,
    ), name, line


def _load_routes(ctx: _Ctx, node: Node | None, path: str) -> tuple[RouteConfig, ...]:
    items = _list_section(
        ctx, node, path, "a list of routes (may be empty)", "start each route with '- name: ...'"
    )
    if items is None:
        ctx.routes_unreadable = True
        return ()
    routes: list[RouteConfig] = []
    first_line: dict[str, int | None] = {}
    catch_all: tuple[str, int | None] | None = None
    for i, item in enumerate(items):
        route, name, line = _load_route(ctx, item, f"{path}[{i}]")
        if name is not None:
            if name in first_line:
                ctx.error(
                    f"{path}[{i}].name", line, f"duplicate route name {name!r} (first used at line {first_line[name]})"
                )
                continue
            first_line[name] = line
        if route is None:
            if name is not None:
                ctx.broken_routes.add(name)
            continue
        if catch_all is not None:
            ctx.error(
                f"{path}[{i}]", item,
                f"route {route.name!r} can never match: route {catch_all[0]!r} (line {catch_all[1]}) comes "
                "first and matches every destination (it has no prefixes and no regex); "
                "move the catch-all route to the end",
            )
        elif route.catch_all:
            catch_all = (route.name, line)
        ctx.routes[route.name] = route
        routes.append(route)
    return tuple(routes)


def _check_route_refs(ctx: _Ctx) -> None:
    """Every ESME default_route and every route failover names a route."""
    if ctx.routes_unreadable:
        return
    for path, line, name in ctx.route_refs:
        if name in ctx.routes or name in ctx.broken_routes:
            continue
        known = sorted({*ctx.routes, *ctx.broken_routes})
        ctx.error(path, line, f"expected the name of a route, got {name!r}{_known_hint(name, known, 'routes')}")


# -- scheduler and receipts ------------------------------------------------------------------


def _load_scheduler(ctx: _Ctx, node: Node | None, path: str) -> SchedulerConfig:
    d = SchedulerConfig()
    m = _Map(ctx, node, path, [f.name for f in attrs.fields(SchedulerConfig)])

    def seconds(key: str) -> float:
        return m.get_number(key, getattr(d, key), exclusive=True, what="a number of seconds")

    values: dict[str, Any] = {
        "default_validity": seconds("default_validity"),
        "max_validity": seconds("max_validity"),
        "max_attempts": m.get_int("max_attempts", d.max_attempts, lo=1, hi=100),
        "retry_backoff": seconds("retry_backoff"),
        "retry_backoff_max": seconds("retry_backoff_max"),
        "busy_retry": seconds("busy_retry"),
        "logout_cooldown": seconds("logout_cooldown"),
        "quarantine_after": m.get_int("quarantine_after", d.quarantine_after, lo=1),
        "quarantine_base": seconds("quarantine_base"),
        "quarantine_max": seconds("quarantine_max"),
        "ambiguous": m.get_choice("ambiguous", d.ambiguous, AMBIGUOUS_POLICIES),
    }
    for low, high, why in (
        ("default_validity", "max_validity", "the default would always be cut to the maximum"),
        ("retry_backoff", "retry_backoff_max", "the first back-off would already exceed the maximum"),
        ("quarantine_base", "quarantine_max", "the first quarantine would already exceed the maximum"),
    ):
        _check_order(m, low, values[low], high, values[high], why, strict=False)
    m.finish()
    return SchedulerConfig(**values)


# The stats a device status may map to: those whose state the lifecycle allows after a device
# took the message (lifecycle.DEVICE_FINAL). DELETED is cancel_sm's alone.
DEVICE_RECEIPT_STATS = tuple(
    s for s in RECEIPT_STATS if lifecycle.STAT_STATE[s] in lifecycle.DEVICE_FINAL
)


def _device_stat_problem(value: str) -> str | None:
    if value.upper() not in RECEIPT_STATS:
        return f"expected a receipt stat: one of {', '.join(DEVICE_RECEIPT_STATS)}, got {value!r}"
    if value.upper() not in DEVICE_RECEIPT_STATS:
        return (
            f"expected a receipt stat a device status can lead to: one of {', '.join(DEVICE_RECEIPT_STATS)}, "
            f"got {value!r} (only cancel_sm deletes a message, never a device)"
        )
    return None


def _stat_problem(value: str) -> str | None:
    if value.upper() in RECEIPT_STATS:
        return None
    return f"expected a receipt stat: one of {', '.join(RECEIPT_STATS)}, got {value!r}"


def _load_receipt_map(ctx: _Ctx, node: Node | None, path: str) -> dict[str, dict[str, ReceiptMapping]]:
    m = _Map(
        ctx, node, path, DEVICE_KINDS,
        what='a mapping of device kind to status overrides, like goip_http: {"2172": {stat: UNDELIV, err: 172}}',
    )
    result: dict[str, dict[str, ReceiptMapping]] = {}
    for kind in DEVICE_KINDS:
        kind_node = m.node(kind)
        if kind_node is None:
            continue
        km = _Map(
            ctx, kind_node, m.path_of(kind), (),
            what='a mapping of device status code to receipt, like "2172": {stat: UNDELIV, err: 172}',
        )
        table: dict[str, ReceiptMapping] = {}
        for code in km.entry_names():
            km.declare((code,))
            rm = _Map(
                ctx, km.node(code), km.path_of(code), ("stat", "err"),
                what="a receipt (a mapping with stat and err), like {stat: UNDELIV, err: 172}",
            )
            if not rm.ok:
                continue
            if not code.strip():
                ctx.error(km.path_of(code), km.key_line(code), "expected a device status code, got an empty key")
            stat_ = rm.get_str(
                "stat", None, what=f"a receipt stat: one of {', '.join(DEVICE_RECEIPT_STATS)}", required=True,
                check=_device_stat_problem,
            )
            err = rm.get_int("err", 0, lo=0, hi=999)
            rm.finish()
            if isinstance(stat_, str) and not rm.bad and code.strip():
                table[code.strip()] = ReceiptMapping(stat=stat_.upper(), err=err)
        km.finish()
        result[kind] = table
    m.finish()
    return result


def _load_receipts(ctx: _Ctx, node: Node | None, path: str) -> ReceiptsConfig:
    d = ReceiptsConfig()
    m = _Map(ctx, node, path, ("goip_done", "no_report", "retention", "map"))
    config = ReceiptsConfig(
        goip_done=m.get_choice("goip_done", d.goip_done, GOIP_DONE_CHOICES),
        no_report=m.get_choice("no_report", d.no_report, GOIP_DONE_CHOICES),
        retention=m.get_number("retention", d.retention, exclusive=True, what="a number of seconds"),
        map=_load_receipt_map(ctx, m.node("map"), m.path_of("map")),
    )
    m.finish()
    return config


# -- inbound SMS -----------------------------------------------------------------------------


_PHONE = re.compile(r"^\+?[0-9]{1,20}$")
_KEYWORD = re.compile(r"^\S{1,20}$")


def _phone_problem(value: str) -> str | None:
    if _PHONE.match(value.strip()):
        return None
    return f'expected a phone number: digits with an optional leading +, like "+491701234567", got {value!r}'


def _esme_ref(m: _Map, key: str) -> str | None:
    """An ESME system_id named by `key`, checked against esmes:."""
    name = m.get_str(key, None, what="the system_id of an ESME (from esmes:)", as_written=True)
    if not isinstance(name, str):
        return None
    if name not in m.ctx.esme_ids:
        hint = _known_hint(name, sorted(m.ctx.esme_ids), "ESMEs")
        m.fail(key, m.key_line(key), f"expected the system_id of an ESME, got {name!r}{hint}")
        return None
    return name


def _load_keywords(m: _Map, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    got = m.get_list(key, "a list of keywords, like [STOP, UNSUBSCRIBE]")
    if got is None:
        return default
    items, _node = got
    words: list[str] = []
    for j, item in enumerate(items):
        value = _item_text(m.ctx, item)
        if not isinstance(value, str) or not _KEYWORD.match(value.strip()):
            m.ctx.error(
                f"{m.path_of(key)}[{j}]", item,
                "expected a keyword: one word of 1 to 20 characters without spaces "
                f"(quote words YAML reads otherwise, like \"NO\"), got {_describe(value)}",
            )
            m.bad.add(key)
            continue
        if value.strip().upper() not in words:
            words.append(value.strip().upper())
    return tuple(words)


def _load_optout(ctx: _Ctx, node: Node | None, path: str) -> OptoutConfig:
    d = OptoutConfig()
    m = _Map(ctx, node, path, ("keywords", "optin_keywords", "mt_action"))
    keywords = _load_keywords(m, "keywords", d.keywords)
    optin = _load_keywords(m, "optin_keywords", d.optin_keywords)
    both = sorted(set(keywords) & set(optin))
    if both and not {"keywords", "optin_keywords"} & m.bad:
        m.fail(
            "optin_keywords", m.key_line("optin_keywords"),
            f"{', '.join(both)} cannot both opt out and opt in; remove it from one of the lists",
        )
    config = OptoutConfig(
        keywords=keywords,
        optin_keywords=optin,
        mt_action=m.get_choice("mt_action", d.mt_action, OPTOUT_MT_ACTIONS),
    )
    m.finish()
    return config


def _load_inbound_route(ctx: _Ctx, node: Node, path: str) -> InboundRoute | None:
    m = _Map(
        ctx, node, path, ("device", "channel", "number", "esme"),
        what="an inbound route (a mapping with device [and channel] or number, and esme)",
    )
    if not m.ok:
        return None
    esme = _esme_ref(m, "esme") if m.has("esme") else m.missing("esme", "the system_id of an ESME")
    device_name = m.get_str("device", None, what="a device name (from devices:)", as_written=True)
    channel_text = m.get_str("channel", None, what='a channel id, like "2"', as_written=True)
    number = m.get_str("number", None, what='a SIM phone number, like "+491701234567"', as_written=True,
                       check=_phone_problem)
    channel = None
    if number is not None and (device_name is not None or channel_text is not None):
        m.fail("number", m.key_line("number"), "expected either number or device (and channel), not both")
    elif number is None and device_name is None and channel_text is None and not {"device", "number"} & m.bad:
        m.ctx.error(path, m.line, "missing: expected device (and optionally channel), or number")
        m.bad.add("device")
    if isinstance(device_name, str):
        device = ctx.devices.get(device_name)
        if device is None:
            if device_name not in ctx.broken_devices and not ctx.devices_unreadable:
                known = sorted({*ctx.devices, *ctx.broken_devices})
                m.fail("device", m.key_line("device"),
                       f"unknown device {device_name!r}{_known_hint(device_name, known, 'devices')}")
        elif isinstance(channel_text, str):
            channel = _channel_id(device.channel_ids(), channel_text)
            if channel is None:
                m.fail("channel", m.key_line("channel"),
                       f"expected a channel id of device {device_name!r} "
                       f"({_describe_ids(device.channel_ids())}), got {channel_text!r}")
    elif channel_text is not None and number is None:
        m.fail("channel", m.key_line("channel"), "a channel needs its device: add device: <name>")
    m.finish()
    if esme is None or esme is _BAD or m.bad:
        return None
    return InboundRoute(
        esme=esme, device=device_name, channel=channel,
        number=number.strip() if isinstance(number, str) else None,
    )


def _load_inbound(ctx: _Ctx, node: Node | None, path: str) -> InboundConfig:
    d = InboundConfig()
    m = _Map(
        ctx, node, path,
        ("default_esme", "routes", "delete_after_commit", "reassembly_timeout", "keep", "optout",
         "default_destination"),
    )
    default_esme = _esme_ref(m, "default_esme") if m.has("default_esme") else None
    routes: list[InboundRoute] = []
    got = m.get_list("routes", "a list of inbound routes, like [{device: goip1, channel: \"2\", esme: app1}]")
    if got is not None:
        for i, item in enumerate(got[0]):
            route = _load_inbound_route(ctx, item, f"{m.path_of('routes')}[{i}]")
            if route is not None:
                routes.append(route)
    config = InboundConfig(
        default_esme=default_esme,
        routes=routes,
        delete_after_commit=m.get_bool("delete_after_commit", d.delete_after_commit),
        reassembly_timeout=m.get_number(
            "reassembly_timeout", d.reassembly_timeout, exclusive=True, what="a number of seconds"
        ),
        keep=m.get_number("keep", d.keep, exclusive=True, what="a number of seconds"),
        optout=_load_optout(ctx, m.node("optout"), m.path_of("optout")),
        default_destination=_load_default_destination(m),
    )
    m.finish()
    return config


def _load_default_destination(m: _Map) -> str | None:
    """inbound.default_destination: 1-20 printable ASCII characters without spaces
    (destination_addr is a C-string of at most 21 octets), e.g. a short code or a number."""

    def check(value: str) -> str | None:
        if len(value) > 20 or not all(" " < ch < "\x7f" for ch in value):
            return (f'expected an address of 1-20 printable ASCII characters without spaces, '
                    f'like "2323", got {value!r}')
        return None

    return m.get_str(
        "default_destination", None, what='an address like "2323" or "+491701234567"',
        check=check, as_written=True,
    )


# Top-level sections, in file order of the documented example. Key = YAML key = Config field.
# Order matters once: devices load before routes (routes name devices). References to routes
# (an ESME's default_route) are checked after every section has loaded.
_SECTIONS: dict[str, Callable[[_Ctx, Node | None, str], Any]] = {
    "smpp": _load_smpp,
    "esmes": _load_esmes,
    "devices": _load_devices,
    "routes": _load_routes,
    "scheduler": _load_scheduler,
    "receipts": _load_receipts,
    "inbound": _load_inbound,  # after esmes and devices: its routes name both
    "store": _load_store,
    "limits": _load_limits,
    "admin": _load_admin,
    "logging": _load_logging,
}


def _load_root(ctx: _Ctx, root: Node | None) -> Config | None:
    m = _Map(ctx, root, "", tuple(_SECTIONS), what=f"a mapping of sections ({', '.join(_SECTIONS)})")
    if not m.ok:
        return None
    values = {name: loader(ctx, m.node(name), name) for name, loader in _SECTIONS.items()}
    m.finish()
    _check_route_refs(ctx)
    return Config(**values)
