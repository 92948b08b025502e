"""The nursery: wires and starts every long-running part of the bridge.

Order of life:
  1. open the store (migrations run here; a broken database stops the start with a clear error)
  2. start the store's writer, then the SMPP listeners and the housekeeping tasks
  3. on SIGTERM/SIGINT: unbind every ESME (bounded wait), then cancel everything; the store's
     writer is the last to stop so that every submit already read is answered
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .admin import AdminServer
from .config import Config
from .devices import build_driver
from .dlr import Dispatcher
from .inbound import Inbound
from .logs import PduLog
from .metrics import Metrics, OpsCollector, SchedulerCollector, StoreCollector
from .monitor import Monitor, instrument
from .reload import reload_config
from .scheduler import Scheduler
from .server import SmppServer
from .store import Store

log = logging.getLogger(__name__)

PARTIAL_SWEEP_SECONDS = 30.0


class App:
    """One running bridge. ``await app.run()`` until cancelled or signalled."""

    def __init__(
        self,
        config: Config,
        *,
        handle_signals: bool = False,
        config_path: str | os.PathLike[str] | None = None,
    ) -> None:
        self.config = config
        self.config_path = config_path  # what a reload (SIGHUP, POST /api/reload) re-reads
        self.started_at = time.time()
        self.ready = False  # set once every part has started (GET /readyz)
        self.handle_signals = handle_signals
        self.metrics = Metrics()
        self.store = Store(
            config.store.path,
            synchronous=config.store.synchronous,
            partial_timeout=config.store.partial_timeout,
            on_commit=self.metrics.on_commit,
        )
        self.server = SmppServer(config, self.store, self.metrics)
        # Every driver call is timed and its failures counted (bridge/monitor.py).
        self.drivers = {d.name: instrument(build_driver(d), self.metrics) for d in config.devices if d.enabled}
        self.scheduler: Scheduler | None = None
        if config.routes:
            self.scheduler = Scheduler(config, self.store, self.drivers, self.metrics)
            self.store.on_new_message = self.scheduler.on_new_message
            self.server.route_for = self.scheduler.route_for
            self.server.routes_configured = True
        self.dispatcher = Dispatcher(self.store, self.server, self.metrics, config)
        self.store.on_outbox = self.dispatcher.wake
        self.server.on_bind = self.dispatcher.wake
        self.inbound = Inbound(config, self.store, self.drivers, self.metrics)
        self.store.on_optout = self.inbound.on_optout
        self.metrics.add_collector(StoreCollector(self.store))
        self.metrics.add_collector(SchedulerCollector(self.scheduler, self.dispatcher))
        self.metrics.add_collector(OpsCollector(self.store, self.scheduler))
        self.monitor = Monitor(config, self.drivers, self.store, self.metrics, self.scheduler)
        self.pdu_log: PduLog | None = None
        if config.logging.pdu_log.enabled:
            self.pdu_log = PduLog(
                config.logging.pdu_log.dir or config.store.path.parent / "pdu-logs",
                config.logging.pdu_log.retention_days,
                show_bodies=config.logging.level == "debug",
                is_esme=lambda system_id: self.server.config.esme(system_id) is not None,
            )
            self.server.pdu_log = self.pdu_log
        self.admin = AdminServer(self)
        self.admin_port: int | None = None
        self.smpp_ports: list[int] = []
        self._extra: list[Callable[..., Awaitable[Any]]] = []
        self._stopping = False
        self._reload_lock = trio.Lock()
        self._cancel: trio.CancelScope | None = None
        self.stopped = trio.Event()  # set when run() has ended

    def add_task(self, fn: Callable[..., Awaitable[Any]]) -> None:
        """Run ``fn(task_status=...)`` in the app's nursery (an emulator in the demo, say).
        Must be called before run()."""
        self._extra.append(fn)

    async def run(self, *, task_status: trio.TaskStatus[App] = trio.TASK_STATUS_IGNORED) -> None:
        self.store.open()
        try:
            async with trio.open_nursery() as outer:
                # The store writer lives in the outer nursery so it outlives the SMPP side.
                await outer.start(self.store.run)
                async with trio.open_nursery() as nursery:
                    self._cancel = nursery.cancel_scope
                    for fn in self._extra:
                        await nursery.start(fn)
                    await nursery.start(self.dispatcher.run)
                    await nursery.start(self.inbound.run)
                    if self.scheduler is not None:
                        await nursery.start(self.scheduler.run)
                    await nursery.start(self.monitor.run)
                    if self.pdu_log is not None:
                        await nursery.start(self.pdu_log.run)
                    self.smpp_ports = await nursery.start(self.server.serve)
                    if self.config.admin.enabled:
                        self.admin_port = await nursery.start(self.admin.serve)
                    nursery.start_soon(self._sweep_partials)
                    if self.handle_signals:
                        nursery.start_soon(self._signals)
                    self.ready = True
                    _tune_gc()
                    task_status.started(self)
                outer.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                for driver in self.drivers.values():
                    with trio.move_on_after(2):
                        await driver.aclose()
            self.store.close()
            self.stopped.set()
            log.info("bridge stopped")

    async def stop(self) -> None:
        """Graceful stop: unbind ESMEs (bounded), then end run()."""
        if self._stopping:
            return
        self._stopping = True
        log.info("stopping: unbinding ESMEs")
        await self.server.shutdown()
        if self._cancel is not None:
            self._cancel.cancel()

    async def reload(self) -> dict[str, Any]:
        """Re-read the config file and apply what can change while running (bridge/reload.py)."""
        async with self._reload_lock:
            return await reload_config(self)

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                if signum == signal.SIGHUP:
                    try:
                        await self.reload()
                    except Exception:
                        log.exception("config reload failed; still running on the previous config")
                    continue
                await self.stop()

    async def _sweep_partials(self) -> None:
        while True:
            await trio.sleep(min(PARTIAL_SWEEP_SECONDS, self.config.store.partial_timeout))
            try:
                await self.store.expire_partials()
            except Exception:
                log.exception("sweeping incomplete long messages failed; will retry")


def _tune_gc() -> None:
    """Start-up objects (modules, config, tables) never die: move them out of the collector's
    sight, and collect the young generation less often. A busy bridge allocates many
    short-lived PDUs; with the defaults, full collections over a long queue paused the event
    loop for tens of milliseconds (the ingest benchmark's p99)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
