"""A config reload's changes to the upstream connectors, applied while the bridge runs.

Rules (docs/connectors.md, "Connectors change on reload")
----------------------------------------------------------
* Added (or enabled): its driver is built and its sessions bind; its channels run, its health is
  checked and its MO taken; the routes that name it use it from this reload on. The reload
  waits (at most ``connect_timeout`` + ``response_timeout``) for a first bind, so its answer
  says whether the connector is bound.
* Removed (or disabled): its channels take no new message and each finishes the one it is
  sending: the reload waits until every submit_sm in flight has its resp, at most
  ``DRAIN_FACTOR`` x ``response_timeout`` seconds. Then every session unbinds (each waits at
  most ``response_timeout`` for its unbind_resp) and the connector is gone. A submit still
  unanswered by then is ambiguous, and ``scheduler.ambiguous`` decides, as for a device.
  Messages still queued were never with it: they wait on their route for its other channels
  or its failover, or take the route the new config gives them (``update_routes``). A message
  the SMSC accepted whose final receipt had not come counts as handed to the network
  (``receipts.no_report`` decides its receipt): no receipt for it can reach the bridge now.
* Changed (credentials, host, port, TLS, binds, window, version, coding ...): drained and
  unbound like a removed one, then bound again with the new settings under the same name.
  The new driver keeps the old one's receipt book (receipts for what was sent before still
  match) and its counters (the metrics do not start again from 0).
* Pacing only (``throughput``, ``throttle_backoff``, ``receipt_grace`` and the timings
  ``status_poll_interval``, ``status_timeout``, ``inbox_poll_interval``, ``health_interval``):
  applied to the running connector, without a rebind.
* The reload's answer has ``connectors``: ``added``, ``removed``, ``rebound``, ``retuned`` (names),
  ``bound`` (added or rebound connectors with a session bound when the reload answered) and
  ``failed`` (connectors that could not start, with why: an outbind port in use; they are not
  running, the rest of the reload applies).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import attrs
import trio

from . import KIND
from .config import settings_of

log = logging.getLogger(__name__)

DRAIN_FACTOR = 2  # x response_timeout: the longest wait for the submits in flight of a connector
PACING_OPTIONS = ("throughput", "throttle_backoff", "early_grace")
TIMINGS = ("status_poll_interval", "status_timeout", "inbox_poll_interval", "health_interval")


def connectors_of(config: Any) -> dict[str, Any]:
    """The enabled connectors of ``config`` by name."""
    return {d.name: d for d in config.devices if d.kind == KIND and d.enabled}


def pacing_only(old: Any, new: Any) -> bool:
    """True when ``new`` differs from ``old`` in pacing and timings only (no rebind needed)."""
    options = {**new.options, **{k: old.options.get(k) for k in PACING_OPTIONS if k in old.options}}
    return attrs.evolve(new, options=options, **{t: getattr(old, t) for t in TIMINGS}) == old


def _inner(driver: Any) -> Any:
    return getattr(driver, "driver", driver)  # under bridge/monitor.py's InstrumentedDriver


@attrs.frozen
class ConnectorParts:
    """What applying connector changes touches; bridge/app.py wires it."""

    drivers: MutableMapping[str, Any]  # the app's drivers by name (status and metrics read it)
    build: Callable[[Any], Any]  # DeviceConfig -> driver (instrumented)
    serve: Callable[[str, Any], Awaitable[None]]  # start the driver's sessions
    scheduler: Any  # None: the bridge runs without routes
    monitor: Any
    inbound: Any


class Connectors:
    def __init__(self, parts: ConnectorParts) -> None:
        self.parts = parts

    async def apply(self, old: Any, new: Any) -> dict[str, list[str]]:
        # What runs, not what the old config says: one that could not start at the last reload
        # is started now if the new config still has it.
        before = {n: d for n, d in connectors_of(old).items() if n in self.parts.drivers}
        after = connectors_of(new)
        result: dict[str, list[str]] = {"added": [], "removed": [], "rebound": [], "retuned": [], "bound": [],
                                        "failed": []}
        for name in sorted(before.keys() - after.keys()):
            await self._retire(name)
            self._drop(name, before[name])
            result["removed"].append(name)
            log.info("connector %s removed by the config reload: unbound", name)
        changed = sorted(n for n in before.keys() & after.keys() if before[n] != after[n])
        for name in changed:
            if pacing_only(before[name], after[name]):
                self._retune(name, after[name])
                result["retuned"].append(name)
                log.info("connector %s: new pacing from the config reload, sessions kept", name)
                continue
            await self._retire(name)
            old_driver = self.parts.drivers.get(name)
            self._drop(name, before[name])
            # No await between the drop and the add: the report tracker never sees the name
            # without a driver (it would take its parts as handed to the network).
            driver = self._add(after[name])
            if old_driver is not None:
                _inner(driver).adopt(_inner(old_driver))
            if await self._start(name, after[name], driver, result):
                result["rebound"].append(name)
                log.info("connector %s changed by the config reload: binding again with the new settings", name)
        for name in sorted(after.keys() - before.keys()):
            driver = self._add(after[name])
            if await self._start(name, after[name], driver, result):
                result["added"].append(name)
                log.info("connector %s added by the config reload", name)
        for name in (*result["rebound"], *result["added"]):
            if await self._first_bind(name):
                result["bound"].append(name)
            # Health checks from now on (after the first bind: not "down" while it binds).
            self.parts.monitor.watch(new, name, self.parts.drivers[name])
        return result

    async def _start(self, name: str, device: Any, driver: Any, result: dict[str, list[str]]) -> bool:
        """Start its sessions (and its outbind listener). One that cannot start (its outbind
        port taken) is taken out again and reported under ``failed``; the reload goes on."""
        try:
            await self.parts.serve(name, driver)
            return True
        except OSError as exc:
            log.error("connector %s could not start after the config reload: %s; it is not running. Fix "
                      "the cause and reload again", name, exc.strerror or exc)
            result["failed"].append(f"{name}: {exc.strerror or exc}")
            await driver.aclose()
            self.parts.inbound.remove_device(name)
            self._drop(name, device)
            return False

    async def _retire(self, name: str) -> None:
        """No new message; the submits in flight answered (bounded); every session unbound."""
        p = self.parts
        driver = p.drivers.get(name)
        if driver is None:
            return
        timeout = _inner(driver).settings.response_timeout
        drained = True
        if p.scheduler is not None:
            drained = await p.scheduler.retire_device(name, DRAIN_FACTOR * timeout)
        if not drained:
            log.warning(
                "connector %s: submits still unanswered after %.0f s; unbinding now, they are "
                "ambiguous and scheduler.ambiguous decides", name, DRAIN_FACTOR * timeout,
            )  # fmt: skip
        await driver.aclose()  # each session unbinds, bounded; unanswered submits end ambiguous
        if not drained and p.scheduler is not None:
            # Their channels apply the ambiguity policy now that the answers cannot come.
            await p.scheduler.retire_device(name, timeout)
        p.monitor.unwatch(name)
        p.inbound.remove_device(name)

    def _drop(self, name: str, device: Any) -> None:
        if self.parts.scheduler is not None:
            self.parts.scheduler.drop_device(name, device)
        self.parts.drivers.pop(name, None)

    def _add(self, device: Any) -> Any:
        p = self.parts
        driver = p.build(device)
        p.drivers[device.name] = driver
        if p.scheduler is not None:
            p.scheduler.add_device(device, driver)
        p.inbound.add_device(device.name, driver)
        return driver

    def _retune(self, name: str, device: Any) -> None:
        driver = self.parts.drivers.get(name)
        if driver is None:
            return
        _inner(driver).retune(settings_of(device))
        if self.parts.scheduler is not None:
            for ch in self.parts.scheduler.device_channels(name):
                ch.device = device  # its status timings

    async def _first_bind(self, name: str) -> bool:
        driver = _inner(self.parts.drivers[name])
        s = driver.settings
        with trio.move_on_after(s.connect_timeout + s.response_timeout):
            while driver.binds_up == 0:
                await trio.sleep(0.05)
            return True
        log.warning("connector %s: not bound yet after the reload (%s)", name,
                    "; ".join(f"{b.name}: {b.detail}" for b in driver.binds))
        return False
