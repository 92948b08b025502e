"""The ``routes`` section: prefixes/regex to ``device:channels``, and the check of every
reference to a route (an ESME's ``default_route``) once all sections have loaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from yaml.nodes import Node

from .devices import channel_id, describe_ids, DIGITS, first_use, known_hint, list_section, name_problem
from .model import DeviceConfig, RouteConfig
from .reader import BAD, Ctx, describe, item_text, Map

_ROUTE_KEYS = ("name", "prefixes", "regex", "channels", "failover")
_PREFIX = re.compile(r"^\+?[0-9]{1,20}$")


def _load_prefixes(m: Map) -> tuple[str, ...]:
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
        value = item_text(m.ctx, item)
        if not isinstance(value, str) or not _PREFIX.match(value.strip()):
            m.ctx.error(
                f"{m.path_of('prefixes')}[{j}]", item,
                f'expected a destination prefix: digits with an optional leading +, like "+49" or "0049", '
                f"got {describe(value)}",
            )
            m.bad.add("prefixes")
            continue
        if value.strip() not in prefixes:
            prefixes.append(value.strip())
    return tuple(prefixes)


def _load_regex(m: Map) -> re.Pattern[str] | None:
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
            if not (DIGITS.match(first) and DIGITS.match(last)):
                return [], f"expected a channel range like 1-4, got {token!r}"
            lo, hi = int(first), int(last)
            if lo > hi:
                return [], f"expected a channel range from low to high, got {token!r} (write {hi}-{lo})"
            for n in range(lo, hi + 1):
                if str(n) not in ids:
                    return [], f"expected channels of this device ({describe_ids(ids)}), got {token!r}: there is no channel {n}"
                chosen.append(str(n))
            continue
        channel = channel_id(ids, token)
        if channel is None:
            if not token:
                return [], "expected channel ids separated by single commas, found an empty one"
            return [], f"expected channels of this device ({describe_ids(ids)}), got {token!r}"
        chosen.append(channel)
    return chosen, None


def _resolve_channel_ref(ctx: Ctx, item: Node, path: str) -> tuple[DeviceConfig, Sequence[str]] | None:
    """One entry of a route's channels: (device, its channel ids named), or None (reported, or
    refers to a device whose own errors were reported)."""
    text = item_text(ctx, item)
    if not isinstance(text, str) or not text.strip():
        ctx.error(path, item, f'expected a device name, or device:channels like "goip2:1-4,7", got {describe(text)}')
        return None
    device_name, sep, spec = (part.strip() for part in text.partition(":"))
    device = ctx.devices.get(device_name)
    if device is None:
        if device_name in ctx.broken_devices or ctx.devices_unreadable:
            return None
        known = sorted({*ctx.devices, *ctx.broken_devices})
        ctx.error(path, item, f"unknown device {device_name!r}{known_hint(device_name, known, 'devices')}")
        return None
    if not sep:
        return device, device.channel_ids()
    channels, problem = _parse_channel_spec(spec, device.channel_ids())
    if problem is not None:
        ctx.error(path, item, f"{problem}, in {text!r} (device {device_name!r})")
        return None
    return device, channels


def _load_route_channels(m: Map) -> tuple[tuple[str, str], ...]:
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


def _load_route(ctx: Ctx, node: Node, path: str) -> tuple[RouteConfig | None, str | None, int | None]:
    before = len(ctx.issues)
    m = Map(ctx, node, path, _ROUTE_KEYS, what="a route (a mapping with name, prefixes or regex, channels)")
    if not m.ok:
        return None, None, None
    name = m.get_str(
        "name", None, what="a route name", required=True, as_written=True, check=name_problem("route")
    )
    prefixes = _load_prefixes(m)
    regex = _load_regex(m)
    channels = _load_route_channels(m)
    failover = m.get_str("failover", None, what="the name of another route", as_written=True)
    if failover is not None and failover is not BAD:
        if failover == name:
            m.fail("failover", m.key_line("failover"), "a route cannot fail over to itself")
        else:
            ctx.route_refs.append((m.path_of("failover"), m.key_line("failover"), failover))
    m.finish()
    line = m.key_line("name")
    if name is BAD:
        return None, None, line
    if len(ctx.issues) > before:
        return None, name, line
    return RouteConfig(
        name=name, prefixes=prefixes, regex=regex, channels=channels,
        failover=failover if isinstance(failover, str) else None,
    ), name, line


def load_routes(ctx: Ctx, node: Node | None, path: str) -> tuple[RouteConfig, ...]:
    items = list_section(
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
        if not first_use(ctx, first_line, name, line, f"{path}[{i}].name", "route"):
            continue
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


def check_route_refs(ctx: Ctx) -> None:
    """Every ESME default_route and every route failover names a route."""
    if ctx.routes_unreadable:
        return
    for path, line, name in ctx.route_refs:
        if name in ctx.routes or name in ctx.broken_routes:
            continue
        known = sorted({*ctx.routes, *ctx.broken_routes})
        ctx.error(path, line, f"expected the name of a route, got {name!r}{known_hint(name, known, 'routes')}")


# -- scheduler and receipts ------------------------------------------------------------------
