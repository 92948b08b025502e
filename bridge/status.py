"""The ``/api/status`` document: what a person running the bridge wants to see on one page.

It reads the running parts (SMPP server, outbox delivery, drivers, monitor, scheduler, store);
bridge/app.py hands them over once, and the admin API sees only `StatusReport.report`.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import attrs
import trio

from . import __version__
from .connectors.metrics import status as connector_status

log = logging.getLogger(__name__)


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def _finite(x: float) -> float | None:
    return None if math.isinf(x) else x


@attrs.define
class StatusReport:
    config: Callable[[], Any]  # the config in force (a reload replaces it)
    ready: Callable[[], bool]
    smpp_ports: Callable[[], list[int]]
    started_at: float
    server: Any  # binds, connections
    delivery: Any  # stats
    drivers: dict[str, Any]
    monitor: Any
    scheduler: Any
    store: Any
    #: More sections (e.g. "webhooks"), each a callable returning a JSON-ready value.
    extra: dict[str, Callable[[], Any]] = attrs.Factory(dict)

    async def report(self) -> dict[str, Any]:
        # The monitor recounts every COUNT_SECONDS; a person asking wants today's numbers
        # (right after a start there were none yet). One GROUP BY per request, at human pace.
        monitor = self.monitor
        if not monitor.counted_at or time.time() - monitor.counted_at > 1.0:
            try:
                await monitor.count()
            except Exception:
                log.exception("counting messages by state for /api/status failed; showing the last count")
        return self.status()

    def status(self) -> dict[str, Any]:
        now = time.time()
        mono = trio.current_time()  # the clock of Connection.connected_at
        stats = dict(self.delivery.stats)
        esmes = []
        for e in self.config().esmes:
            conns = self.server.binds.get(e.system_id, [])
            outbox = {}
            for kind in ("receipt", "mo"):
                n, created = stats.get((e.system_id, kind), (0, None))
                outbox[kind] = {"waiting": n, "oldest_seconds": round(now - created, 1) if created else 0.0}
            esmes.append({
                "system_id": e.system_id,
                "enabled": e.enabled,
                "max_binds": e.max_binds,
                "throughput": e.throughput,
                "binds": [
                    {
                        "bind_type": c.bind_type,
                        "peer": c.peer,
                        "listener": c.listener,
                        "connected_seconds": round(mono - c.connected_at, 1),
                    }
                    for c in conns
                ],
                "outbox": outbox,
            })  # fmt: skip
        sched = self.scheduler
        monitor = self.monitor
        devices = []
        for name, driver in self.drivers.items():
            dcfg = monitor.config.device(name)
            health, checked = monitor.health.get(name, (None, None))
            chans = []
            for ch_id in monitor.channels_of(name):
                ch = sched.channels.get(f"{name}:{ch_id}") if sched is not None else None
                h = health.channels.get(ch_id) if health is not None else None
                entry: dict[str, Any] = {
                    "id": ch_id,
                    "key": f"{name}:{ch_id}",
                    "state": ch.state if ch is not None else "not running",
                    "paused": ch.paused if ch is not None else False,
                    "busy": ch.busy if ch is not None else False,
                    "inflight": ch.inflight if ch is not None else 0,
                    "routes": list(ch.routes) if ch is not None else [],
                    "caps_remaining": (
                        {k: _finite(v) for k, v in ch.caps.remaining(now).items()} if ch is not None else {}
                    ),
                    "registered": h.registered if h is not None else None,
                    "signal": h.signal if h is not None and h.signal != 99 else None,
                    "operator": h.operator if h is not None else None,
                }
                if ch is not None and ch.state in ("cooldown", "quarantine"):
                    entry["back_in_seconds"] = round(max(0.0, ch.down_until - sched.clock()), 1)
                chans.append(entry)
            devices.append({
                "name": name,
                "kind": driver.kind,
                "url": safe_url(dcfg.url) if dcfg is not None else None,
                "health": None if health is None else {
                    "up": health.ok,
                    "detail": health.detail,
                    "checked_seconds_ago": round(now - checked, 1),
                    "consecutive_errors": health.consecutive_errors,
                    "protocol_errors": health.protocol_errors,
                },
                "channels": chans,
            })  # fmt: skip
        routes = []
        if sched is not None:
            for rname, (depth, oldest) in sched.queue_stats().items():
                chans = sched.route_channels.get(rname, [])
                routes.append({
                    "name": rname,
                    "queued": depth,
                    "oldest_queued_seconds": round(oldest, 1),
                    "channels": [c.key for c in chans],
                    "channels_available": sum(1 for c in chans if c.state in ("ready", "sending") and not c.paused),
                })  # fmt: skip
        store = self.store
        try:
            import os

            st = os.statvfs(store.path.parent)
            disk_free: int | None = st.f_bavail * st.f_frsize
        except OSError:
            disk_free = None
        return {
            "version": __version__,
            "started_at": iso(self.started_at),
            "uptime_seconds": round(now - self.started_at, 1),
            "ready": self.ready(),
            "smpp": {"ports": list(self.smpp_ports()), "connections": len(self.server.connections)},
            "esmes": esmes,
            "devices": devices,
            "connectors": connector_status(self.drivers),  # upstream SMSCs (bridge/connectors/)
            "routes": routes,
            "store": {
                "path": str(store.path),
                "database_bytes": store.database_size(),
                "disk_free_bytes": disk_free,
                "active_messages": store.active_count,
                "messages_by_state": dict(monitor.counts),
                "counted_seconds_ago": round(now - monitor.counted_at, 1) if monitor.counted_at else None,
            },
            **{name: section() for name, section in self.extra.items()},
        }


def safe_url(url: str | None) -> str | None:
    """A device URL without user info or query (credentials never leave through the API)."""
    if not url:
        return url
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))
