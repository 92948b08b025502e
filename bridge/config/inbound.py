"""The ``inbound`` section: inbound SMS (MO) routing to ESMEs, and opt-out keywords."""

from __future__ import annotations

import re

from yaml.nodes import Node

from .devices import channel_id, describe_ids, known_hint
from .model import InboundConfig, InboundRoute, OPTOUT_MT_ACTIONS, OptoutConfig
from .reader import BAD, Ctx, describe, item_text, Map
from .values import phone_problem

_KEYWORD = re.compile(r"^\S{1,20}$")


def _esme_ref(m: Map, key: str) -> str | None:
    """An ESME system_id named by `key`, checked against esmes:."""
    name = m.get_str(key, None, what="the system_id of an ESME (from esmes:)", as_written=True)
    if not isinstance(name, str):
        return None
    if name not in m.ctx.esme_ids:
        hint = known_hint(name, sorted(m.ctx.esme_ids), "ESMEs")
        m.fail(key, m.key_line(key), f"expected the system_id of an ESME, got {name!r}{hint}")
        return None
    return name


def _load_keywords(m: Map, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    got = m.get_list(key, "a list of keywords, like [STOP, UNSUBSCRIBE]")
    if got is None:
        return default
    items, _node = got
    words: list[str] = []
    for j, item in enumerate(items):
        value = item_text(m.ctx, item)
        if not isinstance(value, str) or not _KEYWORD.match(value.strip()):
            m.ctx.error(
                f"{m.path_of(key)}[{j}]", item,
                "expected a keyword: one word of 1 to 20 characters without spaces "
                f"(quote words YAML reads otherwise, like \"NO\"), got {describe(value)}",
            )
            m.bad.add(key)
            continue
        if value.strip().upper() not in words:
            words.append(value.strip().upper())
    return tuple(words)


def _load_optout(ctx: Ctx, node: Node | None, path: str) -> OptoutConfig:
    d = OptoutConfig()
    m = Map(ctx, node, path, ("keywords", "optin_keywords", "mt_action"))
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


def _load_inbound_route(ctx: Ctx, node: Node, path: str) -> InboundRoute | None:
    m = Map(
        ctx, node, path, ("device", "channel", "number", "esme"),
        what="an inbound route (a mapping with device [and channel] or number, and esme)",
    )
    if not m.ok:
        return None
    esme = _esme_ref(m, "esme") if m.has("esme") else m.missing("esme", "the system_id of an ESME")
    device_name = m.get_str("device", None, what="a device name (from devices:)", as_written=True)
    channel_text = m.get_str("channel", None, what='a channel id, like "2"', as_written=True)
    number = m.get_str("number", None, what='a SIM phone number, like "+491701234567"', as_written=True,
                       check=phone_problem)
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
                       f"unknown device {device_name!r}{known_hint(device_name, known, 'devices')}")
        elif isinstance(channel_text, str):
            channel = channel_id(device.channel_ids(), channel_text)
            if channel is None:
                m.fail("channel", m.key_line("channel"),
                       f"expected a channel id of device {device_name!r} "
                       f"({describe_ids(device.channel_ids())}), got {channel_text!r}")
    elif channel_text is not None and number is None:
        m.fail("channel", m.key_line("channel"), "a channel needs its device: add device: <name>")
    m.finish()
    if esme is None or esme is BAD or m.bad:
        return None
    return InboundRoute(
        esme=esme, device=device_name, channel=channel,
        number=number.strip() if isinstance(number, str) else None,
    )


def load_inbound(ctx: Ctx, node: Node | None, path: str) -> InboundConfig:
    d = InboundConfig()
    m = Map(
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


def _load_default_destination(m: Map) -> str | None:
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
