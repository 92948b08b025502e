"""The ``smpp`` section: listeners (host, port, TLS) and timers."""

from __future__ import annotations

import attrs
from yaml.nodes import Node

from .model import Listener, SmppConfig, Timers, TlsConfig
from .reader import BAD, Ctx, Map
from .values import check_file, host_problem, system_id_problem

# --------------------------------------------------------------------------------------------
# Sections: one loader per section, each `(ctx, node or None, path) -> model`


def load_tls(ctx: Ctx, node: Node, path: str) -> TlsConfig | None:
    m = Map(ctx, node, path, ("cert", "key"), what="a mapping with cert and key")
    cert = m.get_path("cert", None, what="the path of the certificate file (PEM)", required=True)
    key = m.get_path("key", None, what="the path of the private key file (PEM)", required=True)
    m.finish()
    if not m.ok or cert is BAD or key is BAD:
        return None
    ok = check_file(m, "cert", cert, m.node("cert"))
    ok = check_file(m, "key", key, m.node("key")) and ok
    return TlsConfig(cert=cert, key=key) if ok else None


def _load_listeners(ctx: Ctx, parent: Map) -> tuple[Listener, ...]:
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
        m = Map(ctx, item, path, ("host", "port", "tls"), what="a listener (a mapping with host, port, tls)")
        host = m.get_str("host", "0.0.0.0", what="an IP address or host name", check=host_problem)
        if m.has("port"):
            port = m.get_int("port", 2775, lo=0, hi=65535)
        elif m.ok:
            port = m.missing("port", "a TCP port number (0..65535), e.g. 2775, or 3550 for TLS")
        else:
            port = BAD  # not a mapping: already reported
        tls_node = m.node("tls")
        tls = load_tls(ctx, tls_node, m.path_of("tls")) if tls_node is not None else None
        m.finish()
        if not m.ok or port is BAD:
            continue
        if port != 0 and not {"host", "port"} & m.bad:
            if (host, port) in seen:
                message = f"duplicate listener {host}:{port} (also at line {seen[(host, port)]})"
                m.fail("port", m.node("port"), message)
            seen[(host, port)] = m.key_line("port")
        listeners.append(Listener(host=host, port=port, tls=tls))
    return tuple(listeners) or default


def _load_timers(ctx: Ctx, node: Node | None, path: str) -> Timers:
    defaults = Timers()
    names = [f.name for f in attrs.fields(Timers)]
    m = Map(ctx, node, path, names)
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


def load_smpp(ctx: Ctx, node: Node | None, path: str) -> SmppConfig:
    m = Map(ctx, node, path, ("system_id", "listeners", "timers", "window", "max_connections"))
    config = SmppConfig(
        system_id=m.get_str(
            "system_id", "smpp-bridge", what="a system_id (1..15 characters)", check=system_id_problem
        ),
        listeners=_load_listeners(ctx, m),
        timers=_load_timers(ctx, m.node("timers"), m.path_of("timers")),
        window=m.get_int("window", 10, lo=1, hi=1000),
        max_connections=m.get_int("max_connections", 1000, lo=1),
    )
    m.finish()
    return config
