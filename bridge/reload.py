"""Config reload (SIGHUP or POST /api/reload): re-read the file, check it, apply what can change
while running.

Rules
-----
* A file with errors changes nothing: the bridge keeps running on the config it has and the
  answer lists every error (the same lines ``smpp-bridge check-config`` prints).
* Applied at once: ``esmes`` (binds that did not change stay bound; binds of removed or disabled
  ESMEs, of ESMEs whose password changed, or from an address no longer allowed are closed),
  ``routes`` (waiting messages of a removed route are routed again, or REJECTED when nothing
  matches), ``scheduler``, ``receipts``, ``limits``, ``inbound`` (and each ESME's ``mo_long``:
  the next inbound SMS is built with it), ``logging.level``, and SMPP timers, window and limits
  for new sessions.
* ``connectors`` (upstream SMSCs) are added, removed, rebound or retuned at once, before the
  routes that name them change (bridge/connectors/reconfigure.py); the answer's
  ``connectors`` says which.
* Needs a restart (the answer says so, and the running bridge keeps the old values): SMPP
  listeners, ``store``, ``admin``, ``devices`` (channels are tasks with their own drivers),
  ``logging.format`` and ``logging.pdu_log``, and any section this module does not know.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs
import trio

from . import logs
from .config import Config, ConfigError, load_config

log = logging.getLogger(__name__)

RESTART_WHY = {
    "store": "the store is opened once at start",
    "admin": "the admin HTTP listener is opened once at start",
    "devices": "device drivers and channel workers are started once; restart to add, remove "
    "or change devices and channels",
}


@attrs.frozen
class ReloadParts:
    """What a reload touches; bridge/app.py wires it once. Each running part that follows the
    config takes the new one through its own ``apply`` callable; nothing here reaches into a
    part's insides."""

    path: str | os.PathLike[str] | None  # the file to re-read (None: demo, nothing to reload)
    current: Callable[[], Config]
    install: Callable[[Config], None]  # make the new config the one in force
    metrics: Any  # config_reloads
    binds_open: Callable[[], int]  # SMPP binds now (the answer says how many the reload closed)
    #: Parts that read the new config (SMPP server, outbox delivery, inbound, monitor series);
    #: each may be async.
    apply: Sequence[Callable[[Config], Awaitable[None] | None]] = ()
    #: The scheduler's route update (None: the bridge started without routes).
    update_routes: Callable[[Config], Awaitable[dict[str, Any]]] | None = None
    #: Upstream connectors added, removed, changed (old, new) -> what was done.
    update_connectors: Callable[[Config, Config], Awaitable[dict[str, Any]]] | None = None


def sections() -> list[str]:
    return [f.name for f in attrs.fields(Config) if not f.name.startswith("_")]


async def reload_config(parts: ReloadParts) -> dict[str, Any]:
    """Reload ``parts.path`` into the running bridge; returns what happened (JSON-ready)."""
    path = parts.path
    if path is None:
        return {
            "ok": False,
            "errors": ["this bridge was started without a config file (demo mode): there is nothing to reload"],
        }
    try:
        new: Config = await trio.to_thread.run_sync(load_config, path)
    except ConfigError as exc:
        parts.metrics.config_reloads.labels("invalid").inc()
        errors = [issue.format(exc.source) for issue in exc.issues]
        log.error(
            "config reload refused, %d error(s) in %s; still running on the previous config:\n%s",
            len(errors), path, "\n".join(errors),
        )  # fmt: skip
        return {
            "ok": False,
            "errors": errors,
            "hint": f"The bridge keeps running on its previous config. Fix {path} "
            "(`smpp-bridge check-config FILE` lists the same errors) and reload again.",
        }
    old: Config = parts.current()
    applied: list[str] = []
    unchanged: list[str] = []
    restart: list[dict[str, str]] = []
    for name in sections():
        if name == "devices":  # config.devices lists the connectors too: they have their own section
            if _devices_only(old) == _devices_only(new):
                unchanged.append(name)
            else:
                restart.append({"section": name, "why": RESTART_WHY[name]})
        elif getattr(old, name) == getattr(new, name):
            unchanged.append(name)
        elif name == "connectors" and parts.update_connectors is not None:
            applied.append(name)
        elif name in ("esmes", "routes", "scheduler", "receipts", "limits", "inbound"):
            applied.append(name)
        elif name == "smpp":
            if old.smpp.listeners != new.smpp.listeners:
                restart.append({"section": "smpp", "why": "listeners are opened once at start; "
                                "timers, window and limits apply to new sessions after the restart too"})
            else:
                applied.append("smpp")
        elif name == "logging":
            if (old.logging.format, old.logging.pdu_log) != (new.logging.format, new.logging.pdu_log):
                restart.append({"section": "logging", "why": "format and pdu_log are set up at start "
                                "(level is applied now)"})
            if old.logging.level != new.logging.level:
                applied.append("logging")
        else:
            restart.append({"section": name, "why": RESTART_WHY.get(name, "this section is read at start")})

    # ESMEs, limits, SMPP timers (the server reads its config on every request), the outbox,
    # inbound (routes, keywords, timeouts, mo_long and the MO destination for the next SMS), the
    # monitor's series of new ESMEs.
    connectors: dict[str, Any] | None = None
    if parts.update_connectors is not None:
        # Before the routes: a route that names a new connector finds its channels running.
        # Also with the section unchanged: a connector that could not start is tried again.
        connectors = await parts.update_connectors(old, new)
        if "connectors" in unchanged and any(connectors.values()):
            unchanged.remove("connectors")
            applied.append("connectors")
        elif "connectors" not in applied:
            connectors = None
    binds_before = parts.binds_open()
    for apply in parts.apply:
        result = apply(new)
        if inspect.isawaitable(result):
            await result
    binds_after = parts.binds_open()
    routes: dict[str, Any] | None = None
    if parts.update_routes is not None:
        routes = await parts.update_routes(new)
        if routes["channels_not_running"]:
            restart.append({
                "section": "routes",
                "why": "these channels are named by a route but not running: "
                + ", ".join(routes["channels_not_running"]),
            })  # fmt: skip
    elif new.routes:
        restart.append({"section": "routes", "why": "the bridge started without routes; "
                        "restart it to start sending"})
        if "routes" in applied:
            applied.remove("routes")
    if old.logging.level != new.logging.level:
        logging.getLogger().setLevel(getattr(logging, new.logging.level.upper(), logging.INFO))
    logs.update_secrets(logs.collect_secrets(old) + logs.collect_secrets(new),
                        mask_phone_numbers=new.logging.level != "debug")
    parts.install(new)
    parts.metrics.config_reloads.labels("applied").inc()
    result: dict[str, Any] = {
        "ok": True,
        "applied": applied,
        "restart_required": restart,
        "unchanged": unchanged,
        "binds_closed": max(0, binds_before - binds_after),
    }
    if routes is not None:
        result["routes"] = routes
    if connectors is not None:
        result["connectors"] = connectors
    changes = [f"{k} {', '.join(v)}" for k, v in (connectors or {}).items() if v and k != "bound"]
    log.info(
        "config reloaded from %s: applied %s; unchanged %s%s%s",
        path,
        ", ".join(applied) or "nothing",
        ", ".join(unchanged) or "nothing",
        "; connectors " + "; ".join(changes) if changes else "",
        "; restart needed for " + ", ".join(r["section"] for r in restart) if restart else "",
    )
    return result


def _devices_only(config: Config) -> tuple[Any, ...]:
    connectors = {id(c) for c in config.connectors}
    return tuple(d for d in config.devices if id(d) not in connectors)
