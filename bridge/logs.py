"""Logging: the process log (text or JSON lines) with secrets masked, and per-ESME PDU logs.

Rules
-----
* Passwords and tokens from the config never reach a log line, at any level: a filter on the
  handler replaces every secret (and its URL-encoded forms) with ``***`` in the message, its
  arguments and any traceback. A short secret (under 8 characters: a GoIP's factory "admin",
  say) would turn every ordinary word it equals into ``***``, so it is masked where credentials
  are written (``key=SECRET``, ``key: SECRET``, ``user:SECRET@``) rather than everywhere;
  credential query parameters are masked whatever their value. The set of secrets is refreshed
  on a config reload.
* Phone numbers in international format (``+49...``, ``0049...``) keep their first five
  characters (``+4917*******``) unless ``logging.level`` is ``debug``. Message texts are not
  written to the process log at all; in PDU logs they are replaced by their length unless
  ``logging.level`` is ``debug``.
* ``logging.format: text`` is for people: time, level, logger, message. Under systemd (the
  ``JOURNAL_STREAM`` variable is set) the time is left to journald and each line starts with
  its syslog priority (``<4>``), so ``journalctl -p warning`` works. ``json`` writes one object
  per line (``ts``, ``level``, ``logger``, ``msg``, ``exc``) for log shippers.
* Repeated errors are rate-limited (``RepeatFilter``): of the ERROR (and CRITICAL) records with
  the same logger, level and message template, the first ``BURST`` within ``WINDOW`` seconds are written;
  the rest are counted and summarised in one line with the count and the last one's text, when
  that kind next appears after the window, when any other line is written after it, or at exit.
  A storm (a full disk refusing every submit) is a handful of lines a minute, never one per PDU.
  Warnings are not limited: each names one event a person may look for (an ambiguous send of
  one message, a device down), and none is written per refused PDU.
* PDU logs: one file per ESME per local day, ``DIR/<esme>/<YYYY-MM-DD>.jsonl``, one decoded PDU
  per line. Files older than ``retention_days`` are deleted; a file stops growing at
  ``MAX_FILE_BYTES`` (one line says so) so that a flood cannot fill the disk. PDUs of sessions
  that have not bound as a configured ESME go to ``_unbound``.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import re
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import IO, Any

import attrs
import trio

from .devices.base import Redactor, install_httpx_log_redaction
from .metrics import command_name, status_name
from .smpp.constants import Tag

__all__ = [
    "JsonFormatter",
    "PduLog",
    "RedactingFilter",
    "RepeatFilter",
    "collect_secrets",
    "configure_logging",
    "mask_numbers",
    "update_secrets",
]

log = logging.getLogger(__name__)

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
JOURNAL_FORMAT = "%(name)s: %(message)s"

# "+4917012345678" and "004917012345678": international numbers. Not bare national numbers
# (0170...) nor 10-digit runs: those are message ids in our own log lines.
_NUMBER = re.compile(r"(?<![\w+])(?:\+\d{6,15}|00[1-9]\d{8,12})(?!\w)")


def mask_number(number: str) -> str:
    """The one masking of phone numbers in logs: the international prefix as written (``+`` or
    ``00``, when there is one) and the first four digits stay, every later character is a ``*``:
    ``+4915550001`` -> ``+4915******``, ``004915550001`` -> ``004915******``."""
    keep = len(number) - len(number.lstrip("+")) if number.startswith("+") else (2 if number.startswith("00") else 0)
    keep += 4
    return number[:keep] + "*" * max(0, len(number) - keep)


def mask_numbers(text: str) -> str:
    return _NUMBER.sub(lambda m: mask_number(m.group(0)), text)


def collect_secrets(obj: Any) -> list[str]:
    """Every `config.Secret` value inside a config (ESME and device passwords, the admin
    token, and whatever later sections add), found by walking the attrs tree."""
    from .config import Secret

    found: list[str] = []
    seen: set[int] = set()

    def walk(o: Any) -> None:
        if id(o) in seen:
            return
        seen.add(id(o))
        if isinstance(o, Secret):
            found.append(o.reveal())
        elif attrs.has(type(o)):
            for f in attrs.fields(type(o)):
                walk(getattr(o, f.name, None))
        elif isinstance(o, (list, tuple, set, frozenset)):
            for item in o:
                walk(item)
        elif hasattr(o, "items") and callable(o.items):
            for _k, v in o.items():
                walk(v)

    walk(obj)
    return found


class RedactingFilter(logging.Filter):
    """Masks secrets (always) and phone numbers (unless debug) in a record before any handler
    formats it. Attach it to handlers, so that records of every logger pass through it."""

    def __init__(self, secrets: Iterable[str] = (), *, mask_phone_numbers: bool = True) -> None:
        super().__init__()
        self.mask_phone_numbers = mask_phone_numbers
        self._redact = Redactor(())
        self._short: re.Pattern[str] | None = None
        self.set_secrets(secrets)

    SHORT = 8

    def set_secrets(self, secrets: Iterable[str]) -> None:
        values = {s for s in secrets if s}
        self._redact = Redactor([s for s in values if len(s) >= self.SHORT])
        short = sorted((s for s in values if len(s) < self.SHORT), key=len, reverse=True)
        self._short = (
            re.compile(r"([=:]\s*['\"]?)(?:" + "|".join(re.escape(s) for s in short) + r")(?![\w])")
            if short
            else None
        )

    def redact(self, text: str) -> str:
        text = self._redact(text)
        if self._short is not None:
            text = self._short.sub(lambda m: m.group(1) + Redactor.MASK, text)
        return mask_numbers(text) if self.mask_phone_numbers else text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string: log what we have, safely
            message = f"{record.msg!r} (unformattable arguments)"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
            # Formatters print exc_text when it is set; drop exc_info so that none renders
            # the unmasked traceback again.
            record.exc_info = None
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


class RepeatFilter(logging.Filter):
    """Rate-limits repeated errors (module rules). Attach it to the handler before
    the redacting filter: it keys on the message template, which that filter replaces."""

    BURST = 3
    WINDOW = 60.0
    LEVEL = logging.ERROR

    def __init__(self, handler: logging.Handler, *, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.handler = handler
        self.clock = clock
        self._lock = threading.Lock()
        # key -> [window start, written, suppressed, last suppressed record]
        self._seen: dict[tuple[str, int, str], list[Any]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_repeat_summary", False):
            return True
        now = self.clock()
        with self._lock:
            due = self._expired(now)
            passes = True
            if record.levelno >= self.LEVEL:
                key = (record.name, record.levelno, str(record.msg))
                entry = self._seen.get(key)
                if entry is None:
                    self._seen[key] = [now, 1, 0, None]
                elif entry[1] < self.BURST:
                    entry[1] += 1
                else:
                    entry[2] += 1
                    entry[3] = record
                    passes = False
        for summary in due:
            self.handler.handle(summary)
        return passes

    def _expired(self, now: float) -> list[logging.LogRecord]:
        out = []
        for key, (start, _written, suppressed, last) in list(self._seen.items()):
            if now - start >= self.WINDOW:
                del self._seen[key]
                if suppressed:
                    out.append(self._summary(last, suppressed, now - start))
        return out

    def flush(self) -> None:
        """Write the summaries still pending (at exit)."""
        with self._lock:
            due = self._expired(float("inf"))
        for summary in due:
            self.handler.handle(summary)

    @staticmethod
    def _summary(last: logging.LogRecord, count: int, seconds: float) -> logging.LogRecord:
        try:
            text = last.getMessage()
        except Exception:
            text = str(last.msg)
        span = f"{seconds:.0f} s" if seconds != float("inf") else "the last window"
        record = logging.LogRecord(
            last.name, last.levelno, last.pathname, last.lineno,
            "%d more like this in %s, not written one by one; the last: %s",
            (count, span, text), None,
        )
        record._repeat_summary = True  # type: ignore[attr-defined]
        return record


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, and exc if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        if record.stack_info:
            out["stack"] = record.stack_info
        return json.dumps(out, ensure_ascii=False)


class _JournalFormatter(logging.Formatter):
    """``<priority>logger: message``; journald strips the prefix and keeps the priority."""

    PRIORITY = {"CRITICAL": 2, "ERROR": 3, "WARNING": 4, "INFO": 6, "DEBUG": 7}

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        prio = self.PRIORITY.get(record.levelname, 6)
        # Continuation lines (tracebacks) keep the priority too.
        return "\n".join(f"<{prio}>{line}" for line in text.splitlines() or [""])


def configure_logging(
    level: str = "info",
    fmt: str = "text",
    secrets: Iterable[str] = (),
    *,
    stream: IO[str] | None = None,
) -> RedactingFilter:
    """Set up the root logger: one handler on ``stream`` (stderr), the chosen format, and the
    redacting filter (returned, so that a reload can give it new secrets)."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    elif os.environ.get("JOURNAL_STREAM") and _is_journal(stream):
        handler.setFormatter(_JournalFormatter(JOURNAL_FORMAT))
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    global _active
    redact = _active = RedactingFilter(secrets, mask_phone_numbers=level != "debug")
    global _repeats
    if _repeats is None:
        atexit.register(_flush_repeats)
    repeats = _repeats = RepeatFilter(handler)
    handler.addFilter(repeats)  # first: it keys on the template the redacting filter replaces
    handler.addFilter(redact)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # httpx logs full request URLs (device credentials in query strings) at INFO/DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    install_httpx_log_redaction()
    return redact


_active: RedactingFilter | None = None
_repeats: RepeatFilter | None = None


def _flush_repeats() -> None:
    if _repeats is not None:
        _repeats.flush()


def update_secrets(secrets: Iterable[str], *, mask_phone_numbers: bool | None = None) -> None:
    """Give the filter that `configure_logging` installed new secrets (a config reload)."""
    if _active is not None:
        _active.set_secrets(secrets)
        if mask_phone_numbers is not None:
            _active.mask_phone_numbers = mask_phone_numbers


def _is_journal(stream: IO[str]) -> bool:
    """True when ``stream`` is the journald stream systemd gave us (JOURNAL_STREAM=dev:inode)."""
    try:
        dev, ino = (int(x) for x in os.environ["JOURNAL_STREAM"].split(":"))
        st = os.fstat(stream.fileno())
    except (KeyError, ValueError, OSError, AttributeError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


# --------------------------------------------------------------------------------------------
# PDU logs

UNBOUND = "_unbound"
DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
MAX_FILE_BYTES = 256 * 1024 * 1024
BODY_TLVS = frozenset({int(Tag.MESSAGE_PAYLOAD)})
SECRET_PARAMS = frozenset({"password"})
BODY_PARAMS = frozenset({"short_message"})


def esme_dirname(system_id: str) -> str:
    """A file-system-safe directory name for a system_id (which may hold any printable ASCII)."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_") else f"%{ord(c):02X}" for c in system_id)


def esme_from_dirname(name: str) -> str:
    return re.sub(r"%([0-9A-F]{2})", lambda m: chr(int(m.group(1), 16)), name)


def _tag_name(tag: int) -> str:
    try:
        return Tag(tag).name.lower()
    except ValueError:
        return f"0x{tag:04x}"


def _json_value(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"hex": value.hex()}
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _body(value: Any, show: bool) -> Any:
    if not isinstance(value, (bytes, bytearray)):
        return value
    if show:
        return {"hex": bytes(value).hex(), "octets": len(value)}
    return {"octets": len(value), "masked": True}


def decode_for_log(pdu: Any, *, show_bodies: bool) -> dict[str, Any]:
    """A PDU as a JSON-ready dict: command and status by name, params and TLVs by name,
    passwords replaced by ``***``, message bodies by their length unless ``show_bodies``."""
    params: dict[str, Any] = {}
    for name, value in pdu.params.items():
        if name in SECRET_PARAMS:
            params[name] = "***"
        elif name in BODY_PARAMS:
            params[name] = _body(value, show_bodies)
        else:
            params[name] = _json_value(value)
    tlvs: dict[str, Any] = {}
    for tag, value in pdu.tlvs.items():
        tlvs[_tag_name(tag)] = _body(value, show_bodies) if tag in BODY_TLVS else _json_value(value)
    out: dict[str, Any] = {
        "command": command_name(pdu.command_id),
        "command_id": f"0x{pdu.command_id:08x}",
        "seq": pdu.sequence_number,
    }
    if pdu.command_id & 0x80000000:
        out["status"] = status_name(pdu.command_status)
    if params:
        out["params"] = params
    if tlvs:
        out["tlvs"] = tlvs
    return out


@attrs.frozen
class PduLogFile:
    esme: str
    date: str
    bytes: int
    path: Path


class PduLog:
    """Writes every PDU of every session to its ESME's file of the day.

    The SMPP server calls `log_in` / `log_out`; `run` flushes once a second and applies the
    retention hourly. Writes are buffered: a crash loses at most the last second."""

    FLUSH_SECONDS = 1.0
    SWEEP_SECONDS = 3600.0

    def __init__(
        self,
        directory: Path,
        retention_days: int,
        *,
        show_bodies: bool = False,
        is_esme: Callable[[str], bool] = lambda _s: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.dir = Path(directory)
        self.retention_days = retention_days
        self.show_bodies = show_bodies
        self.is_esme = is_esme
        self.clock = clock
        self._files: dict[tuple[str, str], IO[str]] = {}
        self._sizes: dict[tuple[str, str], int] = {}
        self._bind_name: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        self._day_cache: tuple[int, str] = (-1, "")
        self.errors = 0

    # -- the server's hooks

    def log_in(self, conn: Any, pdu: Any) -> None:
        self._write(conn, pdu, "in")

    def log_out(self, conn: Any, pdu: Any) -> None:
        self._write(conn, pdu, "out")

    def _name(self, conn: Any, pdu: Any) -> str:
        esme = getattr(conn, "esme_id", "")
        if esme:
            return esme
        if pdu.command_id in (0x00000001, 0x00000002, 0x00000009):  # bind_* requests
            system_id = pdu.params.get("system_id", "")
            if isinstance(system_id, str) and self.is_esme(system_id):
                self._bind_name[conn] = system_id
        return self._bind_name.get(conn, UNBOUND)

    def _today(self, now: float) -> str:
        second = int(now)
        if self._day_cache[0] != second:
            self._day_cache = (second, time.strftime("%Y-%m-%d", time.localtime(now)))
        return self._day_cache[1]

    def _write(self, conn: Any, pdu: Any, direction: str) -> None:
        try:
            now = self.clock()
            key = (self._name(conn, pdu), self._today(now))
            size = self._sizes.get(key)
            if size is not None and size >= MAX_FILE_BYTES:
                return
            record = {
                "ts": dt.datetime.fromtimestamp(now).astimezone().isoformat(timespec="milliseconds"),
                "dir": direction,
                "peer": getattr(conn, "peer", ""),
                "session": f"{id(conn):x}",
                **decode_for_log(pdu, show_bodies=self.show_bodies),
            }
            line = json.dumps(record, ensure_ascii=False) + "\n"
            f = self._open(key)
            size = self._sizes.get(key, 0) + len(line.encode())
            if size >= MAX_FILE_BYTES:
                line = json.dumps({"ts": record["ts"], "note": "file reached its size limit; "
                                   "PDUs of this ESME are not logged until tomorrow"}) + "\n"
            f.write(line)
            self._sizes[key] = size
        except Exception as exc:  # the PDU log must never break a session
            self.errors += 1
            if self.errors in (1, 10, 100) or self.errors % 1000 == 0:
                log.error("cannot write the PDU log in %s: %s (%d failures so far)", self.dir, exc, self.errors)

    def _open(self, key: tuple[str, str]) -> IO[str]:
        f = self._files.get(key)
        if f is None:
            for old in [k for k in self._files if k[1] != key[1]]:
                self._files.pop(old).close()  # yesterday's files
            folder = self.dir / esme_dirname(key[0])
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = folder / f"{key[1]}.jsonl"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            f = self._files[key] = os.fdopen(fd, "a", encoding="utf-8")
            self._sizes[key] = os.fstat(fd).st_size
        return f

    # -- housekeeping

    def flush(self) -> None:
        for f in self._files.values():
            try:
                f.flush()
            except OSError as exc:
                log.error("cannot flush the PDU log: %s", exc)

    def close(self) -> None:
        for f in self._files.values():
            try:
                f.close()
            except OSError:
                pass
        self._files.clear()

    def sweep(self) -> int:
        """Delete files older than the retention; returns how many were deleted."""
        cutoff = dt.date.fromtimestamp(self.clock()) - dt.timedelta(days=self.retention_days)
        removed = 0
        for item in self.files():
            if dt.date.fromisoformat(item.date) < cutoff:
                try:
                    item.path.unlink()
                    removed += 1
                except OSError as exc:
                    log.warning("cannot delete old PDU log %s: %s", item.path, exc)
        return removed

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await trio.to_thread.run_sync(self.sweep)
        task_status.started()
        last_sweep = time.monotonic()
        try:
            while True:
                await trio.sleep(self.FLUSH_SECONDS)
                self.flush()
                if time.monotonic() - last_sweep >= self.SWEEP_SECONDS:
                    last_sweep = time.monotonic()
                    removed = await trio.to_thread.run_sync(self.sweep)
                    if removed:
                        log.info("deleted %d PDU log file(s) older than %d days", removed, self.retention_days)
        finally:
            self.close()

    # -- reading (admin API)

    def files(self) -> list[PduLogFile]:
        out: list[PduLogFile] = []
        try:
            folders = sorted(p for p in self.dir.iterdir() if p.is_dir())
        except OSError:
            return out
        for folder in folders:
            for path in sorted(folder.glob("*.jsonl")):
                date = path.name[: -len(".jsonl")]
                if not DATE_RE.match(date):
                    continue
                try:
                    size = path.stat().st_size
                except OSError:
                    continue
                out.append(PduLogFile(esme_from_dirname(folder.name), date, size, path))
        return out

    def path_for(self, esme: str, date: str) -> Path | None:
        """The file of ``esme`` on ``date`` if it exists; None for anything else (including
        names that try to leave the directory)."""
        if not DATE_RE.match(date):
            return None
        path = self.dir / esme_dirname(esme) / f"{date}.jsonl"
        return path if path.is_file() else None
