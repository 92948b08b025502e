"""The ``esmes`` section: one entry per ESME (system_id, password, allowed IPs, throughput...)."""

from __future__ import annotations

import ipaddress
import urllib.parse
from typing import Any

from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from bridge import passwords
from .model import (
    DATA_CODING_1_MODES,
    DELIVER_VIA,
    EsmeConfig,
    IPNetwork,
    LOOPBACK_NETWORKS,
    MO_LONG_MODES,
    RECEIPT_MODES,
)
from .reader import A_LIST, A_MAPPING, BAD, Ctx, describe, Map, quote_hint, scalar_or_bad
from .values import read_secret, sources_given, system_id_problem

_PASSWORD_KEYS = ("password", "password_hash", "password_env", "password_file")
_API_KEY_KEYS = ("api_key", "api_key_env", "api_key_file")
_WEBHOOK_SECRET_KEYS = ("webhook_secret", "webhook_secret_env", "webhook_secret_file")
_WEBHOOK_KEYS = ("receipt_url", "inbound_url", *_WEBHOOK_SECRET_KEYS, "deliver_via")
API_KEY_MIN = 16


def _api_key_problem(value: str) -> str | None:
    if any(not (0x21 <= ord(c) <= 0x7E) for c in value):
        return "must be printable ASCII without spaces (it is sent in an HTTP header)"
    if len(value) < API_KEY_MIN:
        return f"is {len(value)} characters; expected at least {API_KEY_MIN} (e.g. `openssl rand -hex 16`)"
    return None


def _url_problem(value: str) -> str | None:
    parts = urllib.parse.urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"expected an http:// or https:// URL with a host, got {value!r}"
    if parts.username or parts.password:
        return "must not carry a user or password: the webhook secret signs each request"
    return None


def _load_webhooks(m: Map) -> dict[str, Any]:
    """receipt_url, inbound_url, webhook_secret (one source), deliver_via."""
    receipt_url = m.get_str("receipt_url", None, what="a URL", check=_url_problem)
    inbound_url = m.get_str("inbound_url", None, what="a URL", check=_url_problem)
    given = sources_given(m, _WEBHOOK_SECRET_KEYS)
    secret, _ = read_secret(m, _WEBHOOK_SECRET_KEYS, check=_api_key_problem,
                            alternatives="webhook_secret_env or webhook_secret_file")
    for extra in given[1:]:
        m.fail(extra, m.key_line(extra), f"expected at most one webhook_secret source, got {len(given)}: {', '.join(given)}")
    deliver_via = m.get_choice("deliver_via", "webhook", DELIVER_VIA)
    urls = [k for k in ("receipt_url", "inbound_url") if m.has(k)]
    if urls and not given:
        m.fail(urls[0], m.key_line(urls[0]), "a webhook URL needs webhook_secret_env or webhook_secret_file "
               "(at least 16 characters, e.g. `openssl rand -hex 16`): every webhook is signed with it")
    if not urls:
        for key in (*given, *(["deliver_via"] if m.has("deliver_via") else [])):
            m.fail(key, m.key_line(key), f"{key} has no use without receipt_url or inbound_url")
    return {"receipt_url": receipt_url if isinstance(receipt_url, str) else None,
            "inbound_url": inbound_url if isinstance(inbound_url, str) else None,
            "webhook_secret": secret, "deliver_via": deliver_via}


def _hash_problem(value: str) -> str | None:
    try:
        passwords.parse_hash(value)
    except ValueError as e:
        return f"expected a hash made by `smpp-bridge hash-password`: {e}"
    return None


def _password_problem(value: str) -> str | None:
    return passwords.smpp_password_problem(value)


def _load_allowed_ips(m: Map) -> tuple[IPNetwork, ...]:
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
        value: Any = A_LIST if isinstance(item, SequenceNode) else A_MAPPING
        if isinstance(item, ScalarNode):
            value = scalar_or_bad(m.ctx, item)
        if not isinstance(value, str):
            found = f"{describe(value)}{quote_hint(value)}"
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


def _load_esme(ctx: Ctx, node: Node, path: str) -> tuple[EsmeConfig | None, int | None]:
    """One ESME, and the line of its system_id (for duplicate reports)."""
    m = Map(
        ctx,
        node,
        path,
        ("system_id", *_PASSWORD_KEYS, "allowed_ips", "max_binds", "throughput", "enabled", "default_route",
         "mo_long", "receipts", "data_coding_1", *_API_KEY_KEYS, *_WEBHOOK_KEYS),
        what="an ESME (a mapping with system_id, password ...)",
    )
    if not m.ok:
        return None, None
    system_id = m.get_str(
        "system_id", None, what="a system_id (1..15 characters)", required=True, check=system_id_problem
    )
    given = sources_given(m, _PASSWORD_KEYS)
    secret, _ = read_secret(
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
    api_given = sources_given(m, _API_KEY_KEYS)
    api_key, _ = read_secret(m, _API_KEY_KEYS, check=_api_key_problem, alternatives="api_key_env or api_key_file")
    for extra in api_given[1:]:
        m.fail(extra, m.key_line(extra), f"expected at most one api_key source, got {len(api_given)}: {', '.join(api_given)}")
    webhooks = _load_webhooks(m)
    m.finish()
    if system_id is BAD or system_id is None:
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
        api_key=api_key,
        **webhooks,
    )
    return esme, m.key_line("system_id")


def load_esmes(ctx: Ctx, node: Node | None, path: str) -> tuple[EsmeConfig, ...]:
    what = "a list of ESMEs (the applications allowed to bind), at least one"
    if node is None:
        ctx.error(path, None, f"missing: expected {what}")
        return ()
    if not isinstance(node, SequenceNode):
        found = A_MAPPING if isinstance(node, MappingNode) else scalar_or_bad(ctx, node)
        hint = " (start each ESME with '- system_id: ...')" if found is A_MAPPING else ""
        ctx.error(path, node, f"expected {what}, got {describe(found)}{hint}")
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
