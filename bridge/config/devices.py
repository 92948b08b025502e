"""The ``devices`` section: the keys every device has (name, kind, timeouts, caps, channels),
and the public helpers the per-kind loaders in ``bridge/devices/<kind>/config.py`` build on
(`Map`, `BAD`, `load_http_device`, `tls_options`, `load_device_password`...).
"""

from __future__ import annotations

import datetime
import difflib
import re
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from yaml.nodes import MappingNode, Node, SequenceNode

from bridge.devices import registry as device_registry

from .model import GOIP_MAX_LINES, NAME_PATTERN, Caps, ChannelOverride, DeviceConfig, Secret
from .reader import BAD, Map, Ctx, describe, scalar_or_bad
from .values import check_file, phone_problem, sources_given, host_problem, read_secret

# What the per-kind loaders (bridge/devices/<kind>/config.py) may use.
__all__ = [
    "BAD",
    "DEVICE_KINDS",
    "DEVICE_PASSWORD_KEYS",
    "GOIP_MAX_LINES",
    "Map",
    "Secret",
    "describe",
    "device_password_problem",
    "device_url_problem",
    "host_problem",
    "load_device_password",
    "load_http_device",
    "read_secret",
    "scalar_or_bad",
    "tls_options",
    "username_problem",
]


def first_use(
    ctx: Ctx, first_line: dict[str, int | None], name: str | None, line: int | None, key: str, what: str
) -> bool:
    """Note ``name`` as used at ``line``; False (with the error) when it was used before. A
    list item without a readable name is not a duplicate."""
    if name is None:
        return True
    if name in first_line:
        ctx.error(key, line, f"duplicate {what} name {name!r} (first used at line {first_line[name]})")
        return False
    first_line[name] = line
    return True


def name_problem(what: str) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        if NAME_PATTERN.match(value):
            return None
        return (
            f"expected a {what} name: 1-32 characters of lowercase letters, digits, '_' and '-', "
            f"starting with a letter or digit, got {value!r}"
        )

    return check


def known_hint(name: str, known: Iterable[str], plural: str) -> str:
    known = list(known)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    if known:
        return f" (known {plural}: {', '.join(known)})"
    return f" (no {plural} are configured)"


def device_url_problem(value: str) -> str | None:
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
    bad_host = host_problem(parts.hostname)
    if bad_host is not None:
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


def username_problem(value: str) -> str | None:
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "expected a user name without control characters"
    if ":" in value:
        return f"expected a user name without ':' (it is sent in HTTP Basic auth), got {value!r}"
    return None


def device_password_problem(value: str) -> str | None:
    if value == "":
        return "is empty"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "contains control characters (a stray line break?)"
    return None


DEVICE_PASSWORD_KEYS = ("password", "password_env", "password_file")


def load_device_password(m: Map) -> Any:
    """Exactly one of password / password_env / password_file: a Secret, or BAD (reported)."""
    given = sources_given(m, DEVICE_PASSWORD_KEYS)
    secret, _ = read_secret(
        m, DEVICE_PASSWORD_KEYS, check=device_password_problem, alternatives="password_env or password_file"
    )
    if not given:
        m.ctx.error(
            m.path, m.line, "missing password: expected exactly one of password, password_env, password_file"
        )
        return BAD
    if len(given) > 1:
        for extra in given[1:]:
            m.fail(
                extra, m.key_line(extra),
                f"expected exactly one password source, got {len(given)}: {', '.join(given)}",
            )
        return BAD
    return BAD if secret is None else secret


def load_http_device(m: Map, what: str, *, default_url: str | None = None,
                      default_username: str = "admin", username_key: str = "username") -> dict[str, Any]:
    """url, user name, password: what every HTTP-driven device kind has."""
    url = m.get_str(
        "url", default_url, what=f"the {what}'s base URL, like http://192.168.1.50",
        required=default_url is None, check=device_url_problem,
    )
    username = m.get_str(username_key, default_username, what="a user name", check=username_problem)
    return {
        "url": url.rstrip("/") if isinstance(url, str) else BAD,
        "username": username,
        "password": load_device_password(m),
    }


def tls_options(m: Map) -> dict[str, Any]:
    opts: dict[str, Any] = {"verify_tls": m.get_bool("verify_tls", True)}
    if m.has("ca_file"):
        path = m.get_path("ca_file", None)
        if path is not None and check_file(m, "ca_file", path, m.node("ca_file")):
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


def _load_caps(ctx: Ctx, node: Node | None, path: str, base: Caps) -> Caps:
    """Caps; every key not given is taken from `base` (the defaults, or the device's caps)."""
    m = Map(ctx, node, path, _CAPS_KEYS, what="a mapping of caps (per_minute, per_hour, per_day, day_reset, jitter)")
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


def describe_ids(ids: Sequence[str]) -> str:
    if not ids:
        return "none"
    if tuple(ids) == _line_ids(len(ids)):
        return ids[0] if len(ids) == 1 else f"{ids[0]}..{ids[-1]}"
    return ", ".join(ids)


DIGITS = re.compile(r"^[0-9]+$")


def channel_id(ids: Sequence[str], token: str) -> str | None:
    """`token` as one of `ids` ("03" is "3"), or None."""
    token = token.strip()
    if token in ids:
        return token
    if DIGITS.match(token) and str(int(token)) in ids:
        return str(int(token))
    return None


def _load_channel_overrides(
    ctx: Ctx, node: Node | None, path: str, ids: tuple[str, ...] | None, device_caps: Caps
) -> dict[str, ChannelOverride]:
    """`channels:` of a device. `ids` None: the device's channels are unknown (already
    reported), so ids are not checked and nothing is returned."""
    m = Map(ctx, node, path, (), what='a mapping of channel id to overrides, like "3": {enabled: false}')
    result: dict[str, ChannelOverride] = {}
    first_key: dict[str, tuple[str, int | None]] = {}
    for key in m.entry_names():
        m.declare((key,))
        value_node = m.node(key)
        om = Map(
            ctx, value_node, m.path_of(key), ("enabled", "caps", "number"),
            what="overrides for one channel (a mapping with enabled, caps, number)",
        )
        enabled = om.get_bool("enabled", True)
        caps = _load_caps(ctx, om.node("caps"), om.path_of("caps"), device_caps)
        number = om.get_str(
            "number", None, what='the SIM\'s phone number, like "+491701234567"', as_written=True,
            check=phone_problem,
        )
        om.finish()
        if ids is None:
            continue
        channel = channel_id(ids, key)
        if channel is None:
            ctx.error(m.path_of(key), m.key_line(key), f"expected a channel id of this device ({describe_ids(ids)}), got {key!r}")
            continue
        if channel in first_key:
            other, line = first_key[channel]
            ctx.error(m.path_of(key), m.key_line(key), f"channel {channel} is given twice (also as {other!r} at line {line})")
            continue
        first_key[channel] = (key, m.key_line(key))
        result[channel] = ChannelOverride(enabled=enabled, caps=caps, number=number)
    m.finish()
    return result


def check_order(m: Map, low_key: str, low: float, high_key: str, high: float, why: str, *, strict: bool) -> None:
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


#: The timing keys of a device (seconds) and their defaults; a connector has its own defaults.
DEVICE_TIMINGS = {
    "timeout": 10.0, "status_poll_interval": 2.0, "status_timeout": 60.0, "inbox_poll_interval": 10.0,
    "health_interval": 30.0,
}  # fmt: skip


def load_timings(m: Map, defaults: dict[str, float]) -> dict[str, float]:
    """The timing keys of ``defaults`` (seconds, above 0), status_timeout after the poll."""
    got = {key: m.get_number(key, d, exclusive=True, what="a number of seconds") for key, d in defaults.items()}
    check_order(
        m, "status_poll_interval", got["status_poll_interval"], "status_timeout", got["status_timeout"],
        "the status would never be polled before the bridge gives up on it", strict=True,
    )
    return got


def _load_device(ctx: Ctx, node: Node, path: str) -> tuple[DeviceConfig | None, str | None, int | None]:
    """(device or None if anything in it was wrong, its name if readable, line of the name)."""
    before = len(ctx.issues)
    m = Map(ctx, node, path, _DEVICE_KEYS, what="a device (a mapping with name, kind ...)")
    if not m.ok:
        return None, None, None
    name = m.get_str(
        "name", None, what="a device name", required=True, as_written=True, check=name_problem("device")
    )
    kinds = ", ".join(repr(k) for k in DEVICE_KINDS)
    kind = m.get_str("kind", None, what=f"a device kind: one of {kinds}", required=True)
    spec = None
    if kind is not BAD:
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

    timings = load_timings(m, DEVICE_TIMINGS)
    enabled = m.get_bool("enabled", True)
    caps = _load_caps(ctx, m.node("caps"), m.path_of("caps"), Caps())
    lines = fields.get("lines", 1) if fields is not None else BAD
    ids = _line_ids(lines) if isinstance(lines, int) else None
    overrides = _load_channel_overrides(ctx, m.node("channels"), m.path_of("channels"), ids, caps)
    m.finish()
    line = m.key_line("name")
    if name is BAD:
        return None, None, line
    if fields is None or len(ctx.issues) > before or any(v is BAD for v in fields.values()):
        return None, name, line
    device = DeviceConfig(
        name=name,
        kind=kind,
        **timings,
        enabled=enabled,
        caps=caps,
        channel_overrides=overrides,
        **fields,
    )
    return device, name, line


def list_section(ctx: Ctx, node: Node | None, path: str, what: str, hint: str) -> list[Node] | None:
    """Items of an optional list section; [] when absent or empty; None when not a list (reported)."""
    if node is None:
        return []
    if isinstance(node, SequenceNode):
        return list(node.value)
    if isinstance(node, MappingNode):
        ctx.error(path, node, f"expected {what}, got a mapping ({hint})")
        return None
    value = scalar_or_bad(ctx, node)
    if value is None:
        return []
    ctx.error(path, node, f"expected {what}, got {describe(value)}")
    return None


def load_devices(ctx: Ctx, node: Node | None, path: str) -> tuple[DeviceConfig, ...]:
    return load_targets(ctx, node, path, "device", _load_device)


def load_targets(
    ctx: Ctx, node: Node | None, path: str, word: str,
    load_one: Callable[[Ctx, Node, str], tuple[DeviceConfig | None, str | None, int | None]],
) -> tuple[DeviceConfig, ...]:
    """A list of route targets (``devices``, ``connectors``): each loaded by ``load_one``, its
    name unique among every target loaded so far (routes name both alike)."""
    items = list_section(
        ctx, node, path, f"a list of {word}s (may be empty)", f"start each {word} with '- name: ...'"
    )
    if items is None:
        if word == "device":
            ctx.devices_unreadable = True
        return ()
    targets: list[DeviceConfig] = []
    first_line: dict[str, int | None] = {}
    for i, item in enumerate(items):
        target, name, line = load_one(ctx, item, f"{path}[{i}]")
        if name is not None and name in ctx.devices and name not in first_line:
            ctx.error(f"{path}[{i}].name", line, f"{word} name {name!r} is already a device's name: routes name both, pick another")
            ctx.broken_devices.add(name)
            continue
        if not first_use(ctx, first_line, name, line, f"{path}[{i}].name", word):
            continue
        if target is None:
            if name is not None:
                ctx.broken_devices.add(name)
            continue
        ctx.devices[target.name] = target
        targets.append(target)
    return tuple(targets)


# -- routes ----------------------------------------------------------------------------------
