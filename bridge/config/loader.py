"""Entry points: `load_config` (a file) and `load_config_text` (text), and the list of top-level
sections with the loader each one uses.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import Node

from .admin import load_admin, load_limits, load_logging
from .connectors import load_connectors
from .devices import load_devices
from .esmes import load_esmes
from .inbound import load_inbound
from .model import Config
from .reader import ConfigError, ConfigIssue, Ctx, Map
from .receipts import load_receipts
from .routes import check_route_refs, load_routes
from .scheduler import load_scheduler
from .smpp import load_smpp
from .store import load_store

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
    ctx = Ctx(env=env, base_dir=base_dir)
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


# Top-level sections, in file order of the documented example. Key = YAML key = Config field.
# Order matters once: devices load before routes (routes name devices). References to routes
# (an ESME's default_route) are checked after every section has loaded.
_SECTIONS: dict[str, Callable[[Ctx, Node | None, str], Any]] = {
    "smpp": load_smpp,
    "esmes": load_esmes,
    "devices": load_devices,
    "connectors": load_connectors,  # after devices (names shared), before routes (they name both)
    "routes": load_routes,
    "scheduler": load_scheduler,
    "receipts": load_receipts,
    "inbound": load_inbound,  # after esmes and devices: its routes name both
    "store": load_store,
    "limits": load_limits,
    "admin": load_admin,
    "logging": load_logging,
}


def _load_root(ctx: Ctx, root: Node | None) -> Config | None:
    m = Map(ctx, root, "", tuple(_SECTIONS), what=f"a mapping of sections ({', '.join(_SECTIONS)})")
    if not m.ok:
        return None
    values = {name: loader(ctx, m.node(name), name) for name, loader in _SECTIONS.items()}
    values["devices"] = (*values["devices"], *values["connectors"])
    m.finish()
    check_route_refs(ctx)
    return Config(**values)
