"""The nursery: wires and starts every long-running part of the bridge.

Order of life:
  1. open the store (migrations run here; a broken database stops the start with a clear error)
  2. start the store's writer, then the SMPP listeners and the housekeeping tasks
  3. on SIGTERM/SIGINT: unbind every ESME (bounded wait), then cancel everything; the store's
     writer is the last to stop so that every submit already read is answered
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from .config import Config
from .devices import build_driver
from .dlr import Dispatcher
from .metrics import Metrics, SchedulerCollector, StoreCollector
from .scheduler import Scheduler
from .server import SmppServer
from .store import Store

log = logging.getLogger(__name__)

PARTIAL_SWEEP_SECONDS = 30.0


class App:
    """One running bridge. ``await app.run()`` until cancelled or signalled."""

    def __init__(self, config: Config, *, handle_signals: bool = False) -> None:
        self.config = config
        self.handle_signals = handle_signals
        self.metrics = Metrics()
        self.store = Store(
            config.store.path,
            synchronous=config.store.synchronous,
            partial_timeout=config.store.partial_timeout,
            on_commit=self.metrics.on_commit,
        )
        self.server = SmppServer(config, self.store, self.metrics)
        self.drivers = {d.name: build_driver(d) for d in config.devices if d.enabled}
        self.scheduler: Scheduler | None = None
        if config.routes:
            self.scheduler = Scheduler(config, self.store, self.drivers, self.metrics)
            self.store.on_new_message = self.scheduler.on_new_message
            self.server.route_for = self.scheduler.route_for
            self.server.routes_configured = True
        self.dispatcher = Dispatcher(self.store, self.server, self.metrics, config)
        self.store.on_outbox = self.dispatcher.wake
        self.server.on_bind = self.dispatcher.wake
        self.metrics.add_collector(StoreCollector(self.store))
        self.metrics.add_collector(SchedulerCollector(self.scheduler, self.dispatcher))
        self.smpp_ports: list[int] = []
        self._extra: list[Callable[..., Awaitable[Any]]] = []
        self._stopping = False
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
                    if self.scheduler is not None:
                        await nursery.start(self.scheduler.run)
                    self.smpp_ports = await nursery.start(self.server.serve)
                    nursery.start_soon(self._sweep_partials)
                    if self.handle_signals:
                        nursery.start_soon(self._signals)
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

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                log.info("received %s", signal.Signals(signum).name)
                await self.stop()

    async def _sweep_partials(self) -> None:
        while True:
            await trio.sleep(min(PARTIAL_SWEEP_SECONDS, self.config.store.partial_timeout))
            try:
                await self.store.expire_partials()
            except Exception:
                log.exception("sweeping incomplete long messages failed; will retry")
