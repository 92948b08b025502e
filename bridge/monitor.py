"""Watching the hardware and the store for metrics and the admin API.

* `InstrumentedDriver` wraps a device driver: every call (send, status, inbox, last_ref,
  health ...) is timed into ``smpp_bridge_device_request_latency_seconds`` and counted in
  ``smpp_bridge_device_request_errors_total`` when it failed, per device and operation. The
  scheduler and the pollers call it exactly as they would call the driver.
* `Monitor` asks every device for its health every ``health_interval`` seconds (device up, per
  channel: GSM registration and signal) and tells the scheduler (``Scheduler.device_health``),
  which takes a device that is down, or a channel that is not registered, out of service. It
  also recounts the messages by state every ``COUNT_SECONDS`` (a GROUP BY over the whole table:
  too dear for every scrape). The admin API shows the last answers.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import trio


from .devices.base import DeviceHealth, SendOutcome
from .keyed_tasks import KeyedTasks
from .lifecycle import FINAL, State

log = logging.getLogger(__name__)

FAILED_SENDS = frozenset({SendOutcome.ERROR, SendOutcome.AMBIGUOUS, SendOutcome.AUTH_FAILED})
# Label values the code uses (bounded sets), so their series can exist from the start.
OPERATIONS = ("send", "status", "inbox", "last_ref", "health")
BIND_FAILURE_REASONS = ("unknown_system_id", "wrong_password", "ip_not_allowed", "max_binds", "disabled", "other")
CHANNEL_FAILURE_REASONS = ("channel_down", "auth_failed", "rejected", "error", "device_failed")
AMBIGUOUS_RESOLUTIONS = ("reconciled_sent", "reconciled_not_sent", "policy_unknown", "policy_resend")
FINAL_STATES = tuple(s.value for s in sorted(FINAL, key=lambda s: s.value))


def _send_failed(result: Any) -> bool:
    return getattr(result, "outcome", None) in FAILED_SENDS


def _status_failed(result: Any) -> bool:
    return bool(getattr(result, "poll_failed", False))


def _status_many_failed(result: Any) -> bool:
    return isinstance(result, Mapping) and any(_status_failed(r) for r in result.values())


def _health_failed(result: Any) -> bool:
    return not getattr(result, "ok", True)


def _never(_result: Any) -> bool:
    return False


class InstrumentedDriver:
    """A driver with timing and error counting around every call. Anything not wrapped here
    (attributes, driver-specific methods) is passed through unchanged."""

    def __init__(self, driver: Any, metrics: Any) -> None:
        self.driver = driver
        self.kind = driver.kind
        self.name = driver.name
        self.channels = driver.channels
        self.capabilities = driver.capabilities
        self.declared = driver.declared
        self._latency = metrics.device_request_latency
        self._errors = metrics.device_request_errors

    def __getattr__(self, name: str) -> Any:
        return getattr(self.driver, name)

    async def _call(self, operation: str, failed: Any, fn: Any, *args: Any) -> Any:
        started = time.perf_counter()
        try:
            result = await fn(*args)
        except trio.Cancelled:
            raise
        except BaseException:
            self._latency.labels(self.name, operation).observe(time.perf_counter() - started)
            self._errors.labels(self.name, operation).inc()
            raise
        self._latency.labels(self.name, operation).observe(time.perf_counter() - started)
        if failed(result):
            self._errors.labels(self.name, operation).inc()
        return result

    async def send(self, channel: str, destination: str, text: str, **options: Any) -> Any:
        # options: the keywords the driver's own send() takes (flash, urgent; see
        # the kind's Capabilities.send_options, which the scheduler reads).
        return await self._call(
            "send", _send_failed, lambda: self.driver.send(channel, destination, text, **options)
        )

    async def status(self, channel: str, ref: str | None) -> Any:
        return await self._call("status", _status_failed, self.driver.status, channel, ref)

    async def status_many(self, refs: Mapping[str, str | None]) -> Any:
        return await self._call("status", _status_many_failed, self.driver.status_many, refs)

    async def inbox(self) -> Any:
        return await self._call("inbox", _never, self.driver.inbox)

    async def delete_inbox(self, items: Any) -> Any:
        return await self._call("delete_inbox", _never, self.driver.delete_inbox, items)

    async def last_ref(self, channel: str) -> Any:
        return await self._call("last_ref", _never, self.driver.last_ref, channel)

    async def health(self) -> Any:
        return await self._call("health", _health_failed, self.driver.health)

    async def aclose(self) -> None:
        await self.driver.aclose()


def instrument(driver: Any, metrics: Any) -> InstrumentedDriver:
    return InstrumentedDriver(driver, metrics)


class Monitor:
    """Device health checks and store counts, for metrics and the admin API."""

    HEALTH_SECONDS = 30.0
    COUNT_SECONDS = 30.0

    def __init__(self, config: Any, drivers: Mapping[str, Any], store: Any, metrics: Any,
                 scheduler: Any = None) -> None:
        self.config = config
        self.drivers = drivers
        self.store = store
        self.metrics = metrics
        self.scheduler = scheduler
        #: device -> (last health answer, time.time() it came)
        self.health: dict[str, tuple[DeviceHealth, float]] = {}
        self.counts: dict[str, int] = {}
        self.counted_at: float | None = None
        self._checks = KeyedTasks()  # one health loop per device (connectors come and go)

    def channels_of(self, device: str) -> tuple[str, ...]:
        """The channels of a device this bridge uses (enabled in the config)."""
        d = self.config.device(device)
        return d.enabled_channels() if d is not None else ()

    def init_series(self, config: Any) -> None:
        """Create every labelled series the config implies, at 0, before anything happens:
        rate() and increase() then see the first event, and dashboards and alerts tell
        "nothing happened" from "no data"."""
        m = self.metrics
        for esme in config.esmes:
            e = esme.system_id
            for counter in (m.accepted, m.throttled, m.queue_full):
                counter.labels(e)
            for kind in ("receipt", "mo"):
                m.outbox_delivered.labels(e, kind)
                m.outbox_retries.labels(e, kind)
        for reason in BIND_FAILURE_REASONS:
            m.bind_failures.labels(reason)
        for state in FINAL_STATES:
            m.messages_final.labels(state)
        for result in ("applied", "invalid"):
            m.config_reloads.labels(result)
        for name in self.drivers:
            m.status_poll_failures.labels(name)
            for resolution in AMBIGUOUS_RESOLUTIONS:
                m.ambiguous.labels(name, resolution)
            for operation in OPERATIONS:
                m.device_request_latency.labels(name, operation)
                m.device_request_errors.labels(name, operation)
            for ch in self.channels_of(name):
                m.channel_inflight.labels(name, ch)
                m.send_latency.labels(name, ch)
                m.channel_quarantines.labels(name, ch)
                for outcome in SendOutcome:
                    m.sends.labels(name, ch, outcome.value)
                for reason in CHANNEL_FAILURE_REASONS:
                    m.channel_failures.labels(name, ch, reason)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.init_series(self.config)
        async with trio.open_nursery() as nursery:
            self._checks.bind(nursery)
            for name, driver in self.drivers.items():
                self._checks.start(name, self._health_loop, name, driver)
            nursery.start_soon(self._count_loop)
            task_status.started()

    def watch(self, config: Any, name: str, driver: Any) -> None:
        """Check ``name`` from now on (a connector added or changed by a reload); ``config``
        is the one that has it."""
        self.config = config
        self._checks.cancel(name)
        self._checks.start(name, self._health_loop, name, driver)

    def unwatch(self, name: str) -> None:
        """Stop checking ``name`` (a connector a reload removed); its up/down series goes too."""
        self._checks.cancel(name)
        self.health.pop(name, None)
        _remove(self.metrics.device_up, name)

    async def _health_loop(self, name: str, driver: Any) -> None:
        while True:
            await self.check(name, driver)
            d = self.config.device(name)
            await trio.sleep(d.health_interval if d is not None else self.HEALTH_SECONDS)

    async def check(self, name: str, driver: Any) -> DeviceHealth:
        """One health check of one device; updates the metrics and the admin API's view."""
        d = self.config.device(name)
        timeout = (d.timeout if d is not None else 10.0) + 5.0
        health: DeviceHealth | None = None
        try:
            with trio.move_on_after(timeout):
                health = await driver.health()
        except Exception as exc:  # a driver bug must not stop the checks
            log.exception("health check of device %s failed", name)
            health = DeviceHealth(reachable=False, detail=f"health check failed: {type(exc).__name__}")
        if health is None:
            health = DeviceHealth(reachable=False, detail=f"no answer to the health check within {timeout:g} s")
        m = self.metrics
        previous = self.health.get(name)
        self.health[name] = (health, time.time())
        m.device_up.labels(name).set(1 if health.ok else 0)
        if previous is not None and previous[0].ok != health.ok:
            if health.ok:
                log.info("device %s is up again: %s", name, health.detail)
            else:
                log.warning("device %s is down: %s", name, health.detail)
        elif previous is None and not health.ok:
            if health.starting:
                log.info("device %s: %s", name, health.detail)
            else:
                log.warning("device %s is down at start: %s", name, health.detail)
        elif previous is not None and previous[0].starting and not health.ok and not health.starting:
            log.warning("device %s is down: %s", name, health.detail)
        if self.scheduler is not None:
            # A device found down gets no messages; its routes fail over (Scheduler.device_health).
            self.scheduler.device_health(name, health)
        for ch in self.channels_of(name):
            c = health.channels.get(ch)
            registered = c.registered if c is not None else None
            signal = c.signal if c is not None else None
            if registered is None:
                _remove(m.channel_registered, name, ch)
            else:
                m.channel_registered.labels(name, ch).set(1 if registered else 0)
            if signal is None or signal == 99:  # 99: the modem does not know (AT+CSQ)
                _remove(m.channel_signal, name, ch)
            else:
                m.channel_signal.labels(name, ch).set(signal)
        return health

    async def _count_loop(self) -> None:
        while True:
            try:
                await self.count()
            except Exception:
                log.exception("counting messages by state failed; will retry")
            await trio.sleep(self.COUNT_SECONDS)

    async def count(self) -> dict[str, int]:
        counts = await self.store.count_by_state()
        for state in State:
            self.metrics.messages_by_state.labels(state.value).set(counts.get(state.value, 0))
        self.counts = counts
        self.counted_at = time.time()
        return counts


def _remove(gauge: Any, *labels: str) -> None:
    try:
        gauge.remove(*labels)
    except KeyError:
        pass


__all__ = ["InstrumentedDriver", "Monitor", "instrument"]
