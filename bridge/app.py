"""The nursery: wires and starts every long-running part of the bridge.

Order of life:
  1. open the store (migrations run here; a broken database stops the start with a clear error)
  2. start the store's writer, the device drivers that listen themselves (GoIP SMS-server mode:
     ``serve()``), then the scheduler, the SMPP listeners, the admin HTTP server (which also
     takes the SMSGate phones' webhooks) and the housekeeping tasks; register the SMSGate
     webhooks where configured
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

from .admin import AdminApi, AdminParts
from .config import Config
from .connectors import KIND as CONNECTOR
from .connectors.metrics import ConnectorCollector
from .connectors.reconfigure import ConnectorParts, Connectors
from .devices import build_driver
from .receipts.delivery import OutboxDelivery
from .receipts.policy import Receipts
from .inbound import Inbound
from .logs import PduLog
from .metrics import Metrics, OpsCollector, SchedulerCollector, StoreCollector
from .monitor import Monitor, instrument
from .reload import ReloadParts, reload_config
from .scheduler import Scheduler
from .frontends.http.api import ApiParts, SendApi
from .frontends.console.routes import Console, ConsoleParts
from .frontends.http.asgi import build_app
from .frontends.http.server import HttpListener
from .frontends.http.webhook_delivery import WebhookDelivery
from .frontends.http.webhooks import receivers_of, smsgate_routes
from .frontends.smpp.listener import SmppServer
from .heap import HeapTrimmer, malloc_trim_function, trim_interval
from .status import StatusReport
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
        clock: Callable[[], float] = time.time,
    ) -> None:
        # The wall clock every part reads for its time-driven decisions (validity, schedules,
        # partial timeouts, caps, receipt dates, retention). Tests pass a simulated one.
        self.clock = clock
        self.config = config
        self.config_path = config_path  # what a reload (SIGHUP, POST /api/reload) re-reads
        self.started_at = clock()
        self.ready = False  # set once every part has started (GET /readyz)
        self.handle_signals = handle_signals
        self.metrics = Metrics()
        self.store = Store(
            config.store.path,
            synchronous=config.store.synchronous,
            partial_timeout=config.store.partial_timeout,
            on_commit=self.metrics.on_commit,
            clock=clock,
        )
        # Final states the store decides itself (cancel_sm, incomplete long messages) carry
        # their receipts in the same transaction, built with the config in force.
        self.store.final_receipts = Receipts(lambda: self.config, clock).final
        self.server = SmppServer(config, self.store, self.metrics, clock=clock)
        # Every driver call is timed and its failures counted (bridge/monitor.py).
        self.drivers = {d.name: self._build_driver(d) for d in config.devices if d.enabled}
        self.scheduler: Scheduler | None = None
        if config.routes:
            self.scheduler = Scheduler(config, self.store, self.drivers, self.metrics, clock=clock)
            self.store.on_new_message = self.scheduler.on_new_message
            self.server.route_for = self.scheduler.route_for
            self.server.routes_configured = True
        self.delivery = OutboxDelivery(self.store, self.server, self.metrics, config)
        self.webhooks = WebhookDelivery(self.store, self.metrics, lambda: self.config, clock=clock)
        self.store.on_outbox = self._outbox_woken
        self.store.outbox_channels = lambda esme, kind: self._outbox_channels(esme, kind)
        self.server.on_bind = self.delivery.wake
        self.inbound = Inbound(config, self.store, self.drivers, self.metrics, clock=clock)
        self.store.on_optout = self.inbound.on_optout
        self.metrics.add_collector(StoreCollector(self.store))
        self.metrics.add_collector(SchedulerCollector(self.scheduler, self.delivery))
        self.metrics.add_collector(OpsCollector(self.store, self.scheduler))
        self.metrics.add_collector(ConnectorCollector(self.drivers))  # upstream SMSCs
        self.monitor = Monitor(config, self.drivers, self.store, self.metrics, self.scheduler)
        self.pdu_log: PduLog | None = None
        if config.logging.pdu_log.enabled:
            self.pdu_log = PduLog(
                config.logging.pdu_log.dir or config.store.path.parent / "pdu-logs",
                config.logging.pdu_log.retention_days,
                show_bodies=config.logging.level == "debug",
                is_esme=lambda system_id: self.server.config.esme(system_id) is not None,
                clock=clock,
            )
            self.server.pdu_log = self.pdu_log
        self.status = StatusReport(
            config=lambda: self.config, ready=lambda: self.ready, smpp_ports=lambda: self.smpp_ports,
            started_at=self.started_at, server=self.server, delivery=self.delivery, drivers=self.drivers,
            monitor=self.monitor, scheduler=self.scheduler, store=self.store,
            extra={"webhooks": self.webhooks.status},
        )
        self.last_reload: dict[str, Any] | None = None
        self.http = self._http_front_end()
        self.admin_port: int | None = None
        self.smpp_ports: list[int] = []
        self._extra: list[Callable[..., Awaitable[Any]]] = []
        self._stopping = False
        self._reload_lock = trio.Lock()
        self._nursery: trio.Nursery | None = None
        server, scheduler = self.server, self.scheduler
        # Upstream connectors a reload adds, removes or changes while running.
        self.connectors = Connectors(ConnectorParts(
            drivers=self.drivers, build=self._build_driver,
            serve=self._serve_added, scheduler=scheduler, monitor=self.monitor, inbound=self.inbound,
        ))  # fmt: skip
        self._reload_parts = ReloadParts(
            path=config_path,
            current=lambda: self.config,
            install=self._install_config,
            metrics=self.metrics,
            binds_open=lambda: sum(len(c) for c in server.binds.values()),
            apply=(server.update_config, self.delivery.update_config, self.inbound.update_config,
                   self.monitor.init_series),
            update_routes=scheduler.update_routes if scheduler is not None else None,
            update_connectors=self.connectors.apply,
        )
        # The C heap's free memory given back on a timer (glibc; heap.py).
        self.heap_trimmer = HeapTrimmer(trim_interval(), malloc_trim_function())
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
                    self._nursery = nursery
                    for fn in self._extra:
                        await nursery.start(fn)
                    # Drivers that listen themselves (GoIP SMS-server mode: the GoIP calls us)
                    # before anything sends through them.
                    for name, driver in self.drivers.items():
                        if driver.declared.push_listener:
                            await nursery.start(self._serve_driver, name, driver)
                    await nursery.start(self.delivery.run)
                    await nursery.start(self.webhooks.run)
                    await nursery.start(self.inbound.run)
                    if self.scheduler is not None:
                        await nursery.start(self.scheduler.run)
                    await nursery.start(self.monitor.run)
                    await nursery.start(self.heap_trimmer.run)
                    if self.pdu_log is not None:
                        await nursery.start(self.pdu_log.run)
                    self.smpp_ports = await nursery.start(self.server.serve)
                    if self.config.admin.enabled:
                        self.admin_port = await nursery.start(self.http.serve)
                        await nursery.start(self.api.run)
                    self._check_webhooks()
                    for device in self._webhook_devices():
                        nursery.start_soon(self._register_webhooks, device)
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

    def _http_front_end(self) -> HttpListener:
        """The HTTP port: admin API, SMSGate webhooks, send API; each handed only what it uses."""
        scheduler = self.scheduler
        self.admin = AdminApi(AdminParts(
            token=self.config.admin.token,
            registry=self.metrics.registry,
            store=self.store,
            status=self.status.report,
            readiness=self._readiness,
            channels=lambda: scheduler.channels if scheduler is not None else None,
            reload=self.reload,
            pdu_log=self.pdu_log,
        ))  # fmt: skip
        server = self.server
        self.api = SendApi(ApiParts(
            config=lambda: self.config,
            acceptance=server.acceptance,
            store=self.store,
            metrics=self.metrics,
            clock=self.clock,
        ))  # fmt: skip
        routes = [*self.admin.routes, *smsgate_routes(receivers_of(self.drivers)), *self.api.routes]
        counter = self.metrics.admin_requests
        self.console = Console(ConsoleParts(
            admin=self.config.admin,
            config=lambda: self.config,
            status=self.status.report,
            store=self.store,
            channels=lambda: scheduler.channels if scheduler is not None else None,
            last_reload=lambda: self.last_reload,
            on_login=lambda result: self.metrics.console_logins.labels(result).inc(),
        ))  # fmt: skip
        self.http_app = build_app(routes, on_answer=lambda template, status: counter.labels(template, str(status)).inc(),
                                  mounts=[self.console.mount()])
        cfg = self.config.admin
        return HttpListener(self.http_app, host=cfg.host, port=cfg.port,
                            tls_cert_file=cfg.tls.cert if cfg.tls else None,
                            tls_key_file=cfg.tls.key if cfg.tls else None)

    def _outbox_woken(self, esme: str) -> None:
        self.delivery.wake(esme)
        self.webhooks.wake(esme)

    def _outbox_channels(self, esme_id: str, kind: str) -> tuple[str, ...]:
        """Where a new receipt or inbound SMS for ``esme_id`` goes, by the config in force."""
        esme = self.config.esme(esme_id)
        return esme.outbox_channels(kind) if esme is not None else ("smpp",)

    def _readiness(self) -> dict[str, str]:
        started = "stopping" if self._stopping else "ok" if self.ready else "starting"
        return {"started": started, "smpp": "ok" if self.smpp_ports else "not listening"}

    def _build_driver(self, device: Any) -> Any:
        """A device's driver, every call timed and counted; a connector's receipts are kept in
        the store before they are answered (docs/connectors.md)."""
        driver = instrument(build_driver(device), self.metrics)
        if driver.kind == CONNECTOR:
            driver.attach_store(self.store, self.clock)
        return driver

    async def _serve_driver(self, name: str, driver: Any, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await driver.serve(task_status=task_status)
        except OSError as exc:
            where = f" on {getattr(driver, 'host', '?')}:{getattr(driver, 'port', '?')}"
            raise OSError(exc.errno, f"device {name} cannot listen{where}: {exc.strerror or exc}. "
                          "Is another program (or another device of this config) using that port?") from None

    async def _serve_added(self, name: str, driver: Any) -> None:
        """Start a driver a reload added (an upstream connector) in the app's nursery."""
        if self._nursery is not None and driver.declared.push_listener:
            await self._nursery.start(driver.serve)  # an OSError (a port in use) goes to the reload

    def _smsgate_devices(self) -> list[Any]:
        """Devices whose kind calls webhooks (Capabilities.webhooks: SMSGate phones)."""
        return [d for d in self.config.devices if d.name in self.drivers and self.drivers[d.name].declared.webhooks]

    def _webhook_devices(self) -> list[Any]:
        """SMSGate devices whose webhooks the bridge registers on the phone at start."""
        if self.admin_port is None:
            return []
        return [d for d in self._smsgate_devices() if d.options.get("register_webhooks")]

    def _check_webhooks(self) -> None:
        """SMSGate webhooks come to the admin HTTP port: say so when that cannot work."""
        for d in self._smsgate_devices():
            path = f"/webhooks/smsgate/{d.name}"
            if d.options.get("webhook_secret") is None:
                log.info("device %s (smsgate): no webhook_secret, so no webhooks: handset reports come from "
                         "polling only and inbound SMS cannot reach the bridge", d.name)
            elif self.admin_port is None:
                log.warning("device %s (smsgate): its webhooks (inbound SMS, handset reports) come to the admin "
                            "HTTP port at POST %s, but the admin HTTP server is off (admin.port: 0): inbound SMS "
                            "from this phone cannot reach the bridge. Set admin.port", d.name, path)
            url = d.options.get("webhook_url")
            if url and not str(url).rstrip("/").endswith(path):
                log.warning("device %s (smsgate): webhook_url %s does not end in %s, where the bridge takes this "
                            "phone's webhooks", d.name, url, path)

    async def _register_webhooks(self, device: Any) -> None:
        """Point the phone's webhooks at the bridge (register_webhooks: true). A phone that
        cannot be reached now is tried again later, with growing pauses; this never stops the
        bridge."""
        driver = self.drivers[device.name]
        url = device.options["webhook_url"]
        pause = 5.0
        while True:
            try:
                setup = await driver.register_webhooks(url)
                ok, detail = setup.ok, setup.detail
            except Exception as exc:  # a driver bug must not stop the bridge
                log.exception("device %s: registering webhooks failed", device.name)
                ok, detail = False, f"{type(exc).__name__}"
            if ok:
                log.info("device %s: webhooks registered on the phone for %s (new: %s; already there: %s)",
                         device.name, url, ", ".join(setup.created) or "none", ", ".join(setup.existing) or "none")
                return
            log.warning("device %s: could not register webhooks for %s (%s); trying again in %.0f s",
                        device.name, url, detail, pause)
            await trio.sleep(pause)
            pause = min(pause * 2, 300.0)

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
            result = await reload_config(self._reload_parts)
        self.last_reload = {"at": self.clock(), **result}  # the web console's config page shows it
        return result

    def _install_config(self, config: Config) -> None:
        self.config = config

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
