"""The small sections: ``limits``, ``admin`` (the HTTP API) and ``logging`` (with ``pdu_log``)."""

from __future__ import annotations

from yaml.nodes import Node

from .model import (
    ADMIN_TOKEN_MIN,
    AdminConfig,
    Limits,
    LOG_FORMATS,
    LOG_LEVELS,
    LoggingConfig,
    PduLogConfig,
)
from ..passwords import parse_hash
from .reader import BAD, Ctx, Map
from .smpp import load_tls
from .values import host_problem, is_loopback, read_secret, sources_given

def load_limits(ctx: Ctx, node: Node | None, path: str) -> Limits:
    m = Map(ctx, node, path, ("queue_depth",))
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


def load_admin(ctx: Ctx, node: Node | None, path: str) -> AdminConfig:
    token_keys = ("token", "token_env", "token_file")
    m = Map(ctx, node, path, ("host", "port", "tls", "console_password_hash", "console_read_only_public", *token_keys))
    host = m.get_str("host", "127.0.0.1", what="an IP address or host name", check=host_problem)
    port = m.get_int("port", 8025, lo=0, hi=65535)
    given = sources_given(m, token_keys)
    token, _ = read_secret(m, token_keys, check=_token_problem, alternatives="token_env or token_file")
    for extra in given[1:]:
        message = f"expected at most one token source, got {len(given)}: {', '.join(given)}"
        m.fail(extra, m.key_line(extra), message)
    if port != 0 and not given and not {"host", "port"} & m.bad and not is_loopback(host):
        m.fail(
            "host", m.key_line("host"),
            f"admin HTTP on {host!r} is reachable from the network, so a token is required: "
            "set token_env or token_file (or use host 127.0.0.1)",
        )
    console_hash = m.get_str("console_password_hash", None, what="a hash from `smpp-bridge hash-password --console`", secret=True,
                             check=_hash_problem)
    read_only_public = m.get_bool("console_read_only_public", False)
    tls_node = m.node("tls")
    tls = load_tls(ctx, tls_node, m.path_of("tls")) if tls_node is not None else None
    m.finish()
    return AdminConfig(host=host, port=port, token=token, tls=tls,
                       console_password_hash=None if console_hash is BAD else console_hash,
                       console_read_only_public=read_only_public)


def _hash_problem(value: str) -> str | None:
    try:
        parse_hash(value)
    except ValueError as exc:
        return f"is not a password hash: {exc}; make one with `smpp-bridge hash-password --console`"
    return None


def load_logging(ctx: Ctx, node: Node | None, path: str) -> LoggingConfig:
    m = Map(ctx, node, path, ("level", "format", "pdu_log"))
    config = LoggingConfig(
        level=m.get_choice("level", "info", LOG_LEVELS),
        format=m.get_choice("format", "text", LOG_FORMATS),
        pdu_log=_load_pdu_log(ctx, m.node("pdu_log"), m.path_of("pdu_log")),
    )
    m.finish()
    return config


def _load_pdu_log(ctx: Ctx, node: Node | None, path: str) -> PduLogConfig:
    m = Map(ctx, node, path, ("enabled", "dir", "retention_days"))
    directory = m.get_path("dir", None, what="a directory path")
    config = PduLogConfig(
        enabled=m.get_bool("enabled", False),
        dir=None if directory is BAD else directory,
        retention_days=m.get_int("retention_days", 14, lo=1, hi=3650),
    )
    m.finish()
    return config
