"""The scheduler and device health, without a network: health checks take a device out of
service and bring it back, a channel going out of service makes its route fail over at once,
quarantined idle channels take no work, send options reach the driver through the monitor's
wrapper, and handset reports finish a message recovery left in SUBMITTING."""

from __future__ import annotations

import pytest
import trio

from bridge.config import Config, DeviceConfig, EsmeConfig, RouteConfig, SchedulerConfig
from bridge.devices.base import (
    Capabilities,
    Capability,
    ChannelHealth,
    DeliveryState,
    DeviceHealth,
    SendOutcome,
    SendResult,
    StatusResult,
)
from bridge.lifecycle import State
from bridge.metrics import Metrics
from bridge.monitor import instrument
from bridge.scheduler import Scheduler
from bridge.store import NewMessage, Store


class FakeDriver:
    capabilities: frozenset[Capability] = frozenset()
    declared = Capabilities(send_options=frozenset({"flash", "urgent"}))

    def __init__(self, name: str, kind: str = "router", outcome: SendOutcome = SendOutcome.ACCEPTED,
                 status: DeliveryState = DeliveryState.SENT, reports: bool = False) -> None:
        self.name = name
        self.kind = kind
        self.channels = ("1",)
        self.outcome = outcome
        self.state = status
        self.sent: list[tuple[str, str, dict]] = []
        if reports:
            self.capabilities = frozenset({Capability.DELIVERY_REPORTS})
            self.declared = Capabilities(flags=self.capabilities, send_options=self.declared.send_options)

    async def send(self, channel: str, destination: str, text: str, *, flash: bool = False,
                   urgent: bool = False) -> SendResult:
        self.sent.append((destination, text, {"flash": flash, "urgent": urgent}))
        ref = f"r{len(self.sent)}" if self.outcome is SendOutcome.ACCEPTED else None
        return SendResult(self.outcome, ref=ref, detail=self.outcome.value)

    async def status(self, channel: str, ref: str | None) -> StatusResult:
        return StatusResult(self.state)

    async def last_ref(self, channel: str) -> str | None:
        return None

    async def health(self) -> DeviceHealth:
        return DeviceHealth(reachable=True, channels={"1": ChannelHealth()})

    async def inbox(self) -> list:
        return []

    async def aclose(self) -> None:
        pass


def config(*routes: RouteConfig, devices: tuple[str, ...] = ("a", "b"), logout_cooldown: float = 60.0) -> Config:
    return Config(
        esmes=(EsmeConfig("app"),),
        devices=tuple(DeviceConfig(name=d, kind="router", lines=1, status_poll_interval=0.05, status_timeout=5)
                      for d in devices),
        routes=routes or (RouteConfig(name="ra", prefixes=("+49",), channels=[("a", "1")], failover="rb"),
                          RouteConfig(name="rb", channels=[("b", "1")])),
        scheduler=SchedulerConfig(logout_cooldown=logout_cooldown, quarantine_base=60.0, quarantine_max=60.0,
                                  retry_backoff=0.1, retry_backoff_max=0.1),
    )  # fmt: skip


def test_send_options_are_declared_and_passed_through_the_monitors_wrapper():
    driver = FakeDriver("a")
    wrapped = instrument(driver, Metrics())
    assert wrapped.declared.send_options == frozenset({"flash", "urgent"})

    async def main() -> None:
        await wrapped.send("1", "+4911", "hi", flash=True, urgent=True)

    trio.run(main)
    assert driver.sent == [("+4911", "hi", {"flash": True, "urgent": True})]


def test_a_device_found_down_is_taken_out_and_back_when_found_well():
    sched = Scheduler(config(), None, {"a": FakeDriver("a"), "b": FakeDriver("b")}, Metrics())  # type: ignore[arg-type]
    ch = sched.channels["a:1"]
    ch.idle = True
    sched.device_health("a", DeviceHealth(reachable=False, detail="phone offline"))
    assert ch.state == "quarantine" and not ch.healthy and ch.back_when == "device_up"
    assert not ch.idle and ch._assign_event.is_set()  # it left its wait for work
    assert sched._wake.is_set()  # the dispatcher looks again: failover
    assert sched.channels["b:1"].state == "ready"
    sched.device_health("a", DeviceHealth(reachable=True))
    assert ch.down_until <= sched.clock()  # probed now, not after the whole quarantine


def test_a_channel_not_registered_rests_like_after_a_logout():
    sched = Scheduler(config(logout_cooldown=42), None, {"a": FakeDriver("a"), "b": FakeDriver("b")}, Metrics())  # type: ignore[arg-type]
    sched.device_health("a", DeviceHealth(reachable=True, channels={"1": ChannelHealth(registered=False)}))
    ch = sched.channels["a:1"]
    assert ch.state == "cooldown" and 41 < ch.down_until - sched.clock() <= 42
    # The device does not say (registered None): the rest holds. Registered again: probed now.
    sched.device_health("a", DeviceHealth(reachable=True, channels={"1": ChannelHealth()}))
    assert ch.down_until - sched.clock() > 41
    sched.device_health("a", DeviceHealth(reachable=True, channels={"1": ChannelHealth(registered=True)}))
    assert ch.down_until <= sched.clock()


def test_errors_keep_their_back_off_whatever_a_health_check_says():
    sched = Scheduler(config(), None, {"a": FakeDriver("a"), "b": FakeDriver("b")}, Metrics())  # type: ignore[arg-type]
    ch = sched.channels["a:1"]
    for _ in range(sched.config.scheduler.quarantine_after):
        ch._penalise("device error")
    assert ch.state == "quarantine" and ch.back_when is None
    sched.device_health("a", DeviceHealth(reachable=True, channels={"1": ChannelHealth(registered=True)}))
    assert ch.down_until - sched.clock() > 59


def test_quarantined_idle_channels_take_no_work():
    routes = (RouteConfig(name="r", channels=[("a", "1"), ("b", "1")]),)
    sched = Scheduler(config(*routes), None, {"a": FakeDriver("a"), "b": FakeDriver("b")}, Metrics())  # type: ignore[arg-type]
    a, b = sched.channels["a:1"], sched.channels["b:1"]
    a.idle = b.idle = True
    sched.quarantine_device("a", "wrong password")
    assert a.state == "quarantine" and not a.idle
    from bridge.store import QueueEntry

    sched.queues["r"].push(QueueEntry(1, "r", 0, State.QUEUED, None, None), 0.0)
    assert sched.dispatch() == 1 and b._assigned is not None and a._assigned is None


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3")
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()


async def wait_state(store: Store, mid: str, states: set[State]) -> State:
    with trio.fail_after(5):
        while True:
            rec = await store.get(mid)
            if rec is not None and rec.state in states:
                return rec.state
            await trio.sleep(0.02)


async def test_a_channel_going_down_on_a_send_makes_its_route_fail_over_at_once(store, nursery):
    a = FakeDriver("a", outcome=SendOutcome.CHANNEL_DOWN)
    b = FakeDriver("b")
    sched = Scheduler(config(), store, {"a": a, "b": b}, Metrics())
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    acc = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="ra"))
    # a's only channel cools down for 60 s; the message must not wait for it.
    assert await wait_state(store, acc.message_id, {State.ACKNOWLEDGED}) is State.ACKNOWLEDGED
    assert [d for d, _t, _o in a.sent] == ["+4911"] and [d for d, _t, _o in b.sent] == ["+4911"]
    assert sched.channels["a:1"].state == "cooldown"


async def test_reports_finish_a_message_that_recovery_found_in_submitting(store, nursery):
    # The bridge stopped after the device took the last part ("sent") but before the message
    # moved to SENT: recovery hands it to the report tracker, which must still finish it.
    routes = (RouteConfig(name="r", channels=[("a", "1")]),)
    cfg = config(*routes, devices=("a",))
    acc = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="r",
                                        registered_delivery=1))
    mid = int(acc.message_id)
    await store.begin_part(mid, 1, 1, "a", "1", None)
    await store.update_part(mid, 1, "sent", ref="r1")
    assert (await store.get(acc.message_id)).state is State.SUBMITTING
    a = FakeDriver("a", status=DeliveryState.DELIVERED, reports=True)
    sched = Scheduler(cfg, store, {"a": a}, Metrics())
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    assert await wait_state(store, acc.message_id, {State.DELIVERED}) is State.DELIVERED
    assert a.sent == []  # not sent again
