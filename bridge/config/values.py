"""Checks shared by sections: system ids, hosts, environment variable names, files and the
secret sources (``x``, ``x_env``, ``x_file``) that ESME passwords, admin tokens and device
passwords are read from.
"""

from __future__ import annotations

import ipaddress
import os
import re
import stat
from collections.abc import Callable, Sequence
from pathlib import Path

from yaml.nodes import Node

from .model import Secret, SYSTEM_ID_MAX
from .reader import BAD, _ENV_NAME, _HOSTNAME, Map

# --------------------------------------------------------------------------------------------
# Checks shared by sections


def system_id_problem(value: str) -> str | None:
    if len(value) > SYSTEM_ID_MAX:
        return (
            f"expected at most {SYSTEM_ID_MAX} characters (SMPP system_id is 16 octets with the NUL), "
            f"got {len(value)}: {value!r}"
        )
    if any(not (0x21 <= ord(c) <= 0x7E) for c in value):
        return f"expected printable ASCII without spaces, got {value!r}"
    return None


def host_problem(value: str) -> str | None:
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


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_file(m: Map, key: str, path: Path, node: Node | None) -> bool:
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


def _read_secret_file(m: Map, key: str) -> tuple[str, Path] | None:
    """(content with trailing newlines stripped, path) of the file named by `key`, or None
    (reported). Refuses a file that group or others can read."""
    path = m.get_path(key, None)
    if path is None or path is BAD:
        return None
    node = m.node(key)
    if not check_file(m, key, path, node):
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


def read_secret(
    m: Map, keys: tuple[str, str, str], *, check: Callable[[str], str | None], alternatives: str
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


def sources_given(m: Map, keys: Sequence[str]) -> list[str]:
    """Which of these alternative keys are present; marks them all as known."""
    for key in keys:
        m.node(key)
    return [k for k in keys if m.has(k)]


_PHONE = re.compile(r"^\+?[0-9]{1,20}$")


def phone_problem(value: str) -> str | None:
    if _PHONE.match(value.strip()):
        return None
    return f'expected a phone number: digits with an optional leading +, like "+491701234567", got {value!r}'
