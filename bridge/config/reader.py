"""The YAML checking engine: `ConfigIssue`/`ConfigError`, the state of one load (`Ctx`) and
`Map`, the reader every section loader is built on.

`Map` reads one YAML mapping node, converts and checks each key's value, and reports every
problem with its key path, its line and what was expected; a value that is wrong becomes `BAD`
(already reported) so loading goes on and one run lists every problem.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .model import DeviceConfig, RouteConfig

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
# Loading: machinery


class Ctx:
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
BAD = object()  # the value is wrong, and that was already reported


class _Shape:
    def __init__(self, text: str) -> None:
        self.text = text


A_LIST = _Shape("a list")
A_MAPPING = _Shape("a mapping")

_MERGE_TAG = "tag:yaml.org,2002:merge"
_OCTAL_LOOKING = re.compile(r"^[-+]?0[0-9_]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}\.?$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$"
)


def scalar_or_bad(ctx: Ctx, node: ScalarNode) -> Any:
    try:
        return ctx.construct(node)
    except yaml.YAMLError:
        return _Shape(f"a value tagged {node.tag}")


def describe(value: Any, *, secret: bool = False) -> str:
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


def quote_hint(value: Any) -> str:
    """Advice when YAML turned the user's text into a non-string."""
    if isinstance(value, bool):
        return " (YAML reads unquoted yes/no/on/off/true/false as booleans; put the value in quotes)"
    if value is not None and not isinstance(value, (str, _Shape)):
        return " (put the value in quotes)"
    return ""


class Map:
    """One YAML mapping being read against a fixed set of known keys.

    Readers (`get_int`, `get_str` ...) mark a key used and return the default when the key is
    absent or its value is wrong (after recording the problem). `finish()` reports every key
    nobody asked for, with a did-you-mean suggestion.
    """

    def __init__(
        self, ctx: Ctx, node: Node | None, path: str, keys: Sequence[str], *, what: str = "a mapping"
    ) -> None:
        self.ctx = ctx
        self.path = path
        self.keys = tuple(keys)
        self.line: int | None = node.start_mark.line + 1 if node is not None else None
        self.entries: dict[str, tuple[ScalarNode, Node]] = {}
        self.used: set[str] = set()
        self.bad: set[str] = set()
        self.ok = True
        if node is None or (isinstance(node, ScalarNode) and scalar_or_bad(ctx, node) is None):
            return  # absent, or a key with no value: all defaults
        if not isinstance(node, MappingNode):
            found = A_LIST if isinstance(node, SequenceNode) else scalar_or_bad(ctx, node)
            ctx.error(path, node, f"expected {what}, got {describe(found)}")
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
        return BAD

    def missing(self, key: str, what: str) -> Any:
        self.bad.add(key)
        self.ctx.error(self._sub(key), self.line, f"missing: expected {what}")
        return BAD

    def value(self, key: str) -> tuple[Any, Node | None]:
        """(Python value, node): _ABSENT, BAD, A_LIST, A_MAPPING or the scalar's value."""
        node = self.node(key)
        if node is None:
            return _ABSENT, None
        if isinstance(node, SequenceNode):
            return A_LIST, node
        if isinstance(node, MappingNode):
            return A_MAPPING, node
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
        if value is _ABSENT or value is BAD:
            return default
        if expected is None:
            expected = _int_range(lo, hi)
        if isinstance(value, bool) or not isinstance(value, int):
            hint = ""
            quoted = isinstance(node, ScalarNode) and node.style in ("'", '"')
            if quoted and isinstance(value, str) and value.strip().lstrip("+-").isdigit():
                hint = " (remove the quotes)"
            elif isinstance(value, bool):
                hint = quote_hint(value)
            self.fail(key, node, f"expected {expected}, got {describe(value)}{hint}")
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
        if value is _ABSENT or value is BAD:
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
            self.fail(key, node, f"expected {expected}, got {describe(value)}{hint}")
            return default
        try:
            number = float(value)
        except OverflowError:
            self.fail(key, node, f"expected {expected}, got a number too large to use")
            return default
        if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
            self.fail(key, node, f"expected {expected}, got {describe(value)}")
            return default
        return number

    def get_bool(self, key: str, default: bool) -> bool:
        value, node = self.value(key)
        if value is _ABSENT or value is BAD:
            return default
        if not isinstance(value, bool):
            self.fail(key, node, f"expected true or false, got {describe(value)}")
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
        if value is BAD:
            return BAD if required else default
        if not isinstance(value, str):
            found = describe(value, secret=secret)
            self.fail(key, node, f"expected {what}, got {found}{quote_hint(value)}")
            return BAD if required else default
        if value == "":
            self.fail(key, node, f"expected {what}, got an empty string")
            return BAD if required else default
        if check is not None:
            problem = check(value)
            if problem is not None:
                self.fail(key, node, problem)
                return BAD if required else default
        return value

    def get_choice(self, key: str, default: str, choices: Sequence[str]) -> str:
        value, node = self.value(key)
        if value is _ABSENT or value is BAD:
            return default
        expected = "one of " + ", ".join(repr(c) for c in choices)
        if isinstance(value, str) and value.lower() in choices:
            return value.lower()
        self.fail(key, node, f"expected {expected}, got {describe(value)}{quote_hint(value)}")
        return default

    def get_path(
        self, key: str, default: Path | None, *, what: str = "a file path", required: bool = False
    ) -> Any:
        """A path resolved against the config's directory; `default` if absent, BAD if wrong."""
        text = self.get_str(key, _ABSENT, what=what, required=required)
        if text is BAD:
            return BAD
        if text is _ABSENT:
            return default
        return self.ctx.resolve_path(text)

    def get_list(self, key: str, what: str) -> tuple[list[Node], Node] | None:
        """The item nodes of a list value, or None if absent or wrong (reported)."""
        value, node = self.value(key)
        if value is _ABSENT or value is BAD:
            return None
        if value is not A_LIST:
            self.fail(key, node, f"expected {what}, got {describe(value)}")
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


def item_text(ctx: Ctx, node: Node) -> Any:
    """A list item as text: a string, or the text of an unquoted number; else what YAML made
    of it (None, a bool, A_LIST, A_MAPPING) for the error message."""
    if isinstance(node, SequenceNode):
        return A_LIST
    if isinstance(node, MappingNode):
        return A_MAPPING
    assert isinstance(node, ScalarNode)
    return _as_written(scalar_or_bad(ctx, node), node)


def _int_range(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f"an integer from {lo} to {hi}"
    if lo is not None:
        return f"an integer of at least {lo}"
    if hi is not None:
        return f"an integer of at most {hi}"
    return "an integer"
