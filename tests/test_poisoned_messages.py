"""A message must never wedge its channel: not a final state the network reports that the
lifecycle did not expect (receipts.map), not a message whose handling fails every time.
Simulated time (trio's MockClock); the real store; fake drivers."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from bridge import scheduler as scheduler_mod
from bridge.config import Config, DeviceConfig, EsmeConfig, ReceiptMapping, ReceiptsConfig, RouteConfig
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
from bridge.receipts.payload import decode_payload
from bridge.lifecycle import State
from bridge.metrics import Metrics
from bridge.scheduler import Scheduler
from bridge.store import NewMessage, Store


class Driver:
    """A router-like device. ``status_for`` gives the status per destination; a callable that
    raises makes every status read of that message fail."""

    capabilities: frozenset[Capability] = frozenset()
    declared = Capabilities(send_options=frozenset({"flash", "urgent"}))

    def __init__(self, status_for: dict) -> None:
        self.name = "a"
        self.kind = "router"
        self.channels = ("1",)
        self.status_for = status_for
        self.sent: list[str] = []
        self._dest: dict[str, str] = {}

    async def send(self, channel, destination, text, *, flash=False, urgent=False) -> SendResult:
        self.sent.append(destination)
        ref = f"r{len(self.sent)}"
        self._dest[ref] = destination
        return SendResult(SendOutcome.ACCEPTED, ref=ref)

    async def status(self, channel, ref) -> StatusResult:
        s = self.status_for[self._dest[ref]]
        return s() if callable(s) else s

    async def last_ref(self, channel):
        return None

    async def health(self) -> DeviceHealth:
        return DeviceHealth(reachable=True, channels={"1": ChannelHealth()})

    async def inbox(self):
        return []

    async def aclose(self):
        pass


def config(receipts: ReceiptsConfig | None = None) -> Config:
    return Config(
        esmes=(EsmeConfig("app"),),
        devices=(DeviceConfig(name="a", kind="router", lines=1, status_poll_interval=1, status_timeout=30),),
        routes=(RouteConfig(name="r", channels=[("a", "1")]),),
        receipts=receipts or ReceiptsConfig(),
    )


@pytest.fixture
def autojump_clock():
    # Jump only when every task has waited a little: the store commits in a worker thread.
    return trio.testing.MockClock(autojump_threshold=0.05)


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3")
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()


async def final_state(store: Store, mid: str) -> State:
    with trio.fail_after(600):
        while True:
            rec = await store.get(mid)
            if rec is not None and rec.state in {State.DELIVERED, State.ACKNOWLEDGED, State.UNDELIVERABLE,
                                                  State.EXPIRED, State.REJECTED, State.UNKNOWN, State.DELETED}:
                return rec.state
            await trio.sleep(0.5)


async def receipt_stats(store: Store) -> list[str]:
    items = await store.pending_outbox("app")
    return [decode_payload(i.payload).params["short_message"].decode().split("stat:")[1][:7] for i in items]


async def test_a_receipts_map_entry_to_rejectd_finishes_the_message_and_the_channel_goes_on(
    store, nursery, autojump_clock
):
    receipts = ReceiptsConfig(map={"router": {"42": ReceiptMapping("REJECTD", 42)}})
    driver = Driver({
        "+4911": StatusResult(DeliveryState.FAILED, error_code="42"),
        "+4922": StatusResult(DeliveryState.DELIVERED),
    })  # fmt: skip
    sched = Scheduler(config(receipts), store, {"a": driver}, Metrics(), clock=autojump_clock.current_time)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="r",
                                        registered_delivery=1))
    assert await final_state(store, one.message_id) is State.REJECTED
    two = await store.accept(NewMessage(esme="app", destination_addr="+4922", body=b"hi", route="r"))
    assert await final_state(store, two.message_id) is State.DELIVERED
    assert driver.sent == ["+4911", "+4922"]
    assert await receipt_stats(store) == ["REJECTD"]


async def test_a_message_whose_handling_always_fails_ends_unknown_and_frees_its_channel(
    store, nursery, autojump_clock
):
    def broken() -> StatusResult:
        raise RuntimeError("a bug in the status parser")

    driver = Driver({"+4911": broken, "+4922": StatusResult(DeliveryState.DELIVERED)})
    metrics = Metrics()
    sched = Scheduler(config(), store, {"a": driver}, metrics, clock=autojump_clock.current_time)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="r",
                                        registered_delivery=1))
    two = await store.accept(NewMessage(esme="app", destination_addr="+4922", body=b"hi", route="r"))
    started = trio.current_time()
    assert await final_state(store, one.message_id) is State.UNKNOWN
    # Bounded: a few rescues, each RESCUE_DELAY apart, not forever.
    assert trio.current_time() - started < (scheduler_mod.MAX_RESCUES + 2) * (scheduler_mod.RESCUE_DELAY + 2)
    assert await final_state(store, two.message_id) is State.DELIVERED
    assert driver.sent == ["+4911", "+4922"]  # never sent twice
    assert await receipt_stats(store) == ["UNKNOWN"]
    assert metrics.messages_poisoned.labels("a", "1")._value.get() == 1
    rec = await store.get(one.message_id)
    assert "failed" in (rec.error or "")


async def test_a_message_given_up_by_the_report_tracker_leaves_nothing_followed_in_memory(
    store, nursery, autojump_clock
):
    # The tracker notes when it last polled each part; a message given up after its status
    # polls kept failing must take those notes with it, or every such message leaks memory for
    # the life of the process.
    def broken() -> StatusResult:
        raise RuntimeError("a bug in the status parser")

    class Reporting(Driver):  # a phone: the channel is free once it took the SMS
        declared = Capabilities(flags=frozenset({Capability.DELIVERY_REPORTS}))

    driver = Reporting({"+4911": broken, "+4922": StatusResult(DeliveryState.DELIVERED)})
    metrics = Metrics()
    sched = Scheduler(config(), store, {"a": driver}, metrics, clock=autojump_clock.current_time)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="r"))
    two = await store.accept(NewMessage(esme="app", destination_addr="+4922", body=b"hi", route="r"))
    assert await final_state(store, one.message_id) is State.UNKNOWN
    assert await final_state(store, two.message_id) is State.DELIVERED
    assert metrics.messages_poisoned.labels("", "")._value.get() == 1  # given up by the tracker
    assert sched.tracker._tracked == {}
    assert sched.tracker._track_polled == {}
