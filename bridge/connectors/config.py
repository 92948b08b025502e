"""The YAML keys of a connector (``connectors:`` items), their loader, and the driver factory.

Every error names the key and its line. Secrets (the password) come inline, from the
environment or from a file, like every secret of the config.
"""

from __future__ import annotations

import hmac
from typing import Any

import attrs
from yaml.nodes import ScalarNode, SequenceNode

from bridge.config.devices import BAD, DEVICE_PASSWORD_KEYS, Map, host_problem, load_device_password
from bridge.devices.base import secret_text

KEYS = (
    "host", "port", "system_id", *DEVICE_PASSWORD_KEYS, "system_type", "interface_version", "tls",
    "verify_tls", "ca_file", "server_name", "binds", "enquire_link", "window", "throughput",
    "throttle_backoff", "response_timeout", "rebind_min", "rebind_max", "auth_retry", "encoding",
    "long", "source_ton_npi", "dest_ton_npi", "source", "receipt_grace", "outbind",
)  # fmt: skip
OUTBIND_KEYS = ("host", "port", "system_id", *DEVICE_PASSWORD_KEYS, "allowed_ips")


@attrs.frozen
class Outbind:
    """Where the bridge waits for the SMSC's outbind, and what the outbind must carry."""

    host: str
    port: int
    system_id: str
    password: Any = attrs.field(repr=False)  # a Secret
    allowed_ips: tuple[Any, ...] = ()  # networks the SMSC may connect from

    def accepts(self, system_id: str, password: str) -> bool:
        return system_id == self.system_id and hmac.compare_digest(password.encode(), self.password.reveal().encode())

_BIND_KEYS = ("tx", "rx", "trx")


@attrs.frozen
class Settings:
    """What a connector's binds and driver need (read from DeviceConfig.options)."""

    name: str
    host: str
    port: int
    system_id: str
    password: str = attrs.field(repr=False)
    system_type: str = ""
    version: str = "3.4"
    tls: bool = False
    verify_tls: bool = True
    ca_file: str | None = None
    server_name: str | None = None
    binds: dict[str, int] = attrs.Factory(lambda: {"trx": 1})
    enquire_link: float = 30.0
    window: int = 10
    throughput: float = 0.0
    throttle_backoff: float = 1.0
    throttle_backoff_max: float = 60.0
    response_timeout: float = 10.0
    connect_timeout: float = 10.0
    rebind_min: float = 1.0
    rebind_max: float = 60.0
    auth_retry: float = 300.0
    encoding: str = "gsm7"
    long: str = "udh"
    source_ton_npi: tuple[int, int] | None = None
    dest_ton_npi: tuple[int, int] | None = None
    source: str | None = None
    early_grace: float = 120.0
    outbind: Outbind | None = None


def _ton_npi(m: Map, key: str) -> Any:
    """'auto' (None) or [ton, npi]."""
    if not m.has(key):
        return None
    value, node = m.value(key)
    if value == "auto":
        return None
    expected = 'expected "auto" or [ton, npi] like [1, 1] (each 0-255)'
    if isinstance(node, SequenceNode):
        items = [m.ctx.construct(n) if isinstance(n, ScalarNode) else None for n in node.value]
        if len(items) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in items):
            return (items[0], items[1])
        m.fail(key, node, f"{expected}, got {items!r}")
        return None
    m.fail(key, node, f"{expected}, got {value!r}")
    return None


def _version(m: Map) -> str:
    value, node = m.value("interface_version")
    if isinstance(value, float):  # interface_version: 3.4 unquoted reads as a number
        value = f"{value:.1f}"
    if value in (None, BAD) or not m.has("interface_version"):
        return "3.4"
    if value in ("3.3", "3.4", "5.0"):
        return value
    m.fail("interface_version", node, f"expected one of '3.3', '3.4', '5.0', got {value!r}")
    return "3.4"


def _credentials(m: Map, what: str, pdu: str) -> tuple[Any, Any]:
    """system_id (at most 15 characters) and a password source (at most 8: the SMPP limit)."""
    system_id = m.get_str("system_id", None, what=f"{what} (at most 15 characters)", required=True,
                          check=lambda v: None if len(v) <= 15 else f"expected at most 15 characters, got {len(v)}")
    password = load_device_password(m)
    if password is not BAD and len(password.reveal()) > 8:
        key = next((k for k in DEVICE_PASSWORD_KEYS if m.has(k)), "password")
        m.fail(key, m.node(key), f"expected a password of at most 8 characters (the SMPP {pdu}'s limit)")
    return system_id, password


def _outbind(m: Map) -> Outbind | None:
    """``outbind: {host, port, system_id, password, allowed_ips}`` (SMPP 3.4 4.1.7): the SMSC
    connects to us and sends outbind; we then bind_receiver on that connection."""
    from bridge.config.esmes import _load_allowed_ips

    if not m.has("outbind"):
        return None
    o = Map(m.ctx, m.node("outbind"), m.path_of("outbind"), OUTBIND_KEYS,
            what="a mapping like {host: 0.0.0.0, port: 2777, system_id: ..., password: ..., allowed_ips: [...]}")
    if not o.ok:
        return None
    host = o.get_str("host", None, what="the address to listen on for the SMSC's outbind, like 0.0.0.0", required=True)
    if isinstance(host, str) and host_problem(host) is not None:
        o.fail("host", o.node("host"), f"expected a host name or IP address to listen on, got {host!r}")
    port = o.get_int("port", 0, lo=1, hi=65535) if o.has("port") else o.missing("port", "the TCP port to listen on for the SMSC's outbind")
    system_id, password = _credentials(o, "the system_id the SMSC's outbind carries", "outbind")
    allowed = _load_allowed_ips(o)  # not given: loopback only (secure by default)
    o.finish()
    if any(v is BAD or v is None or v == 0 for v in (host, port, system_id, password)):
        return None
    return Outbind(host=host, port=port, system_id=system_id, password=password, allowed_ips=allowed)


def load(m: Map) -> dict[str, Any]:
    """The fields of a connector's DeviceConfig: lines (= window) and options."""
    host = m.get_str("host", None, what="the SMSC's host name or IP address", required=True)
    if isinstance(host, str) and host_problem(host) is not None:
        m.fail("host", m.node("host"), f"expected a host name or IP address, got {host!r}")
    port = m.get_int("port", 2775, lo=1, hi=65535)
    system_id, password = _credentials(m, "the system_id the provider gave you", "bind")
    tls = m.get_bool("tls", True)  # secure by default: plain TCP needs an explicit tls: false
    verify = m.get_bool("verify_tls", True)
    ca_file = m.get_path("ca_file", None)
    binds = {"trx": 1, "tx": 0, "rx": 0}
    if m.has("binds"):
        bm = Map(m.ctx, m.node("binds"), m.path_of("binds"), _BIND_KEYS, what="a mapping like {trx: 1} or {tx: 2, rx: 1}")
        binds = {k: bm.get_int(k, 0, lo=0, hi=16) for k in _BIND_KEYS}
        bm.finish()
        if binds["tx"] + binds["trx"] == 0:
            m.fail("binds", m.node("binds"), "expected at least one tx or trx bind (messages go out only over those)")
    window = m.get_int("window", 10, lo=1, hi=1000)

    def seconds(key: str, default: float) -> float:
        return m.get_number(key, default, exclusive=True, what="a number of seconds")

    settings = {
        "host": host, "port": port, "system_id": system_id, "password": password,
        "system_type": m.get_str("system_type", "", what="the system_type the provider asks for"),
        "version": _version(m),
        "tls": tls, "verify_tls": verify, "ca_file": str(ca_file) if ca_file else None,
        "server_name": m.get_str("server_name", None, what="the name in the SMSC's certificate"),
        "binds": binds, "window": window,
        "enquire_link": seconds("enquire_link", 30.0),
        "throughput": m.get_number("throughput", 0.0, what="segments per second (0 = no pacing)"),
        "throttle_backoff": seconds("throttle_backoff", 1.0),
        "response_timeout": seconds("response_timeout", 10.0),
        "rebind_min": seconds("rebind_min", 1.0),
        "rebind_max": seconds("rebind_max", 60.0),
        "auth_retry": seconds("auth_retry", 300.0),
        "encoding": m.get_choice("encoding", "gsm7", ("gsm7", "8bit")),
        "long": m.get_choice("long", "udh", ("udh", "sar", "payload")),
        "source_ton_npi": _ton_npi(m, "source_ton_npi"),
        "dest_ton_npi": _ton_npi(m, "dest_ton_npi"),
        "source": m.get_str("source", None, what="a default sender (source_addr)"),
        "early_grace": seconds("receipt_grace", 120.0),
        "outbind": _outbind(m),
    }
    if settings["version"] == "3.3" and settings["long"] != "udh":
        m.fail("long", m.node("long") or m.key_line("interface_version"),
               f"long: {settings['long']} needs TLVs, which SMPP 3.3 does not carry: use long: udh with "
               "interface_version 3.3")
    return {"lines": window, "password": password, "options": settings}


def settings_of(device: Any) -> Settings:
    opts = dict(device.options)
    opts["password"] = secret_text(device.password)
    return Settings(name=device.name, **opts)


def build_driver(device: Any) -> Any:
    from .driver import ConnectorDriver

    return ConnectorDriver(device, settings_of(device))
