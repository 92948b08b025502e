"""What the console's pages show, as plain values for the templates: the config in force with
its secrets masked, the overview's tallies (from the /api/status document, never a second
computation), the inbound SMS query, and the small formatting filters."""

from __future__ import annotations

import datetime as dt
import enum
import math
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

from ...config.model import Secret
from ...status import safe_url

MASK = "•••••• (set, hidden)"
SECRET_WORDS = ("password", "secret", "token", "api_key", "apikey", "key_file", "hash", "credential", "auth")


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return any(w in k for w in SECRET_WORDS)


def masked(value: Any, key: str = "") -> Any:
    """The config (attrs classes, dicts, lists, Secrets, paths) as plain YAML-ready values, with
    every secret replaced by MASK: Secret values, any key that names a password, secret, token,
    key or hash, and the user info and query of URLs."""
    if isinstance(value, Secret):
        return MASK
    if attrs.has(type(value)):
        return {f.name: masked(getattr(value, f.name), f.name)
                for f in attrs.fields(type(value)) if not f.name.startswith("_")}
    if isinstance(value, dict):
        return {str(k): masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [masked(v, key) for v in value]
    if value is not None and key and _is_secret_key(key) and not isinstance(value, bool):
        return MASK
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return MASK if key else value.hex()
    if isinstance(value, str) and "://" in value:
        return safe_url(value)
    if isinstance(value, float) and math.isinf(value):
        return "unlimited"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def overview(status: dict[str, Any]) -> dict[str, Any]:
    """Tallies for the overview's headline: devices up, channels by state, queued messages."""
    devices = status.get("devices", [])
    channels = [c for d in devices for c in d.get("channels", [])]
    by_state = Counter("paused" if c.get("paused") and c["state"] != "paused" else c["state"] for c in channels)
    routes = status.get("routes", [])
    return {
        "devices_up": sum(1 for d in devices if (d.get("health") or {}).get("up")),
        "devices": len(devices),
        "channels": len(channels),
        "channels_by_state": dict(sorted(by_state.items())),
        "queued": sum(r["queued"] for r in routes),
        "oldest_queued_seconds": max((r["oldest_queued_seconds"] for r in routes if r["queued"]), default=0.0),
        "binds": sum(len(e["binds"]) for e in status.get("esmes", [])),
    }


INBOUND_LIMIT = 100


def latest_inbound(conn: sqlite3.Connection, sim: str | None, limit: int = INBOUND_LIMIT) -> list[dict[str, Any]]:
    """The newest inbound SMS (all SIMs, or one DEVICE:CHANNEL), newest first."""
    q = "SELECT device, channel, sender, recipient, text, received_at, esme, state, incomplete FROM inbound"
    args: list[Any] = []
    if sim:
        device, _, channel = sim.partition(":")
        q += " WHERE device=? AND channel=?"
        args += [device, channel]
    q += " ORDER BY received_at DESC, id DESC LIMIT ?"
    args.append(limit)
    cols = ("device", "channel", "sender", "recipient", "text", "received_at", "esme", "state", "incomplete")
    return [dict(zip(cols, row)) for row in conn.execute(q, args).fetchall()]


# -- filters --------------------------------------------------------------------------------------


def age(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    s = int(seconds)
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d"


def size(n: int | None) -> str:
    if n is None:
        return "–"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def when(t: float | str | None) -> str:
    """A time as UTC, to the second (ISO strings from the status are shortened)."""
    if t is None:
        return "–"
    if isinstance(t, str):
        return t.replace("T", " ")[:19] + " UTC"
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def left(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:.0f}"
