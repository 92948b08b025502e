"""Two parts of the bridge may decide about one waiting message at the same moment: a channel
picks it up while the expiry sweep (or cancel_sm) finishes it. The message must end once, with
one receipt, nothing sent, and the channel must go straight on: a lost race is not a fault.

Found by the model-based test (tests/model): a message whose validity ran out while a channel
was about to send it was "rescued" as if its handling had failed, logged with a traceback and
finished a second time. Simulated time (trio's autojump clock); the real store, run inline so
the clock never jumps during a commit."""

from __future__ import annotations

import logging

import trio

from bridge.config import Config, DeviceConfig, EsmeConfig, RouteConfig
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
from bridge.receipts.policy import Outcome
from bridge.lifecycle import State
from bridge.metrics import Metrics
from bridge.scheduler import Scheduler
from bridge.store import NewMessage, Store, format_id, run_inline


class Driver:
    """One line that delivers everything it is given."""

    capabilities: frozenset[Capability] = frozenset()
    declared = Capabilities()

    def __init__(self) -> None:
        self.name = "a"
        self.kind = "router"
        self.channels = ("1",)
        self.sent: list[str] = []

    async def send(self, channel, destination, text, *, flash=False, urgent=False) -> SendResult:
        self.sent.append(destination)
        return SendResult(SendOutcome.ACCEPTED, ref=f"r{len(self.sent)}")

    async def status(self, channel, ref) -> StatusResult:
        return StatusResult(DeliveryState.DELIVERED)

    async def last_ref(self, channel):
        return None

    async def health(self) -> DeviceHealth:
        return DeviceHealth(reachable=True, channels={"1": ChannelHealth()})

    async def inbox(self):
        return []

    async def aclose(self):
        pass


CONFIG = Config(
    esmes=(EsmeConfig("app"),),
    devices=(DeviceConfig(name="a", kind="router", lines=1, status_poll_interval=1, status_timeout=30),),
    routes=(RouteConfig(name="r", channels=[("a", "1")]),),
)


def after_the_pick_read(store, action):
    """Stage a race: ``action(mid)`` runs right after a channel read the message it picked
    (``Store.record_and_parts``) and before it marks its first part, so the channel holds what
    the message said at the read."""
    real = store.record_and_parts

    async def read_then_act(mid: int):
        found = await real(mid)
        await action(mid)
        return found

    store.record_and_parts = read_then_act  # type: ignore[method-assign]


async def test_a_message_expired_while_a_channel_picks_it_ends_once_and_the_channel_goes_on(
    tmp_path, nursery, autojump_clock, caplog
):
    store = Store(tmp_path / "b.sqlite3", clock=trio.current_time, run_sync=run_inline)
    store.open()
    await nursery.start(store.run)
    driver = Driver()
    metrics = Metrics()
    sched = Scheduler(CONFIG, store, {"a": driver}, metrics, clock=trio.current_time)
    expired = Outcome(State.EXPIRED, "EXPIRED", 0, None, "validity period ended")

    # The race, made certain: right after the channel read the message (still QUEUED, still
    # valid), the expiry sweep finishes it, before the channel marks its first part.
    raced: list[int] = []

    async def the_sweep(mid: int):
        if not raced:
            raced.append(mid)
            await store.expire_waiting(trio.current_time() + 10**6, lambda r: sched.receipt_rows.rows(r, expired))

    after_the_pick_read(store, the_sweep)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    caplog.set_level(logging.WARNING)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"one", route="r",
                                        registered_delivery=1, expire_at=trio.current_time() + 100))  # fmt: skip
    two = await store.accept(NewMessage(esme="app", destination_addr="+4922", body=b"two", route="r"))
    with trio.fail_after(600):
        while (rec := await store.get(two.message_id)) is None or rec.state is not State.DELIVERED:
            await trio.sleep(1)
    assert raced, "the race was not staged"
    assert (await store.get(one.message_id)).state is State.EXPIRED
    assert driver.sent == ["+4922"]  # the expired one never went out
    receipts = [decode_payload(i.payload).params["short_message"].decode() for i in await store.pending_outbox("app")]
    assert len(receipts) == 1 and "stat:EXPIRED" in receipts[0]
    # Not treated as a fault: no rescue, no error count, no traceback in the log.
    assert metrics.scheduler_errors._value.get() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "failed" in r.getMessage()], caplog.text
    # The second message went out at once, not after a rescue delay.
    events = await store.events(two.message_id)
    assert events[-1].at - events[0].at < 30


async def channel_alone(tmp_path, nursery, driver):
    """A running store and a scheduler (not started) over ``driver`` whose channel alone
    decides about expiry: no sweep in between."""
    store = Store(tmp_path / "b.sqlite3", clock=trio.current_time, run_sync=run_inline)
    store.open()
    await nursery.start(store.run)
    sched = Scheduler(CONFIG, store, {"a": driver}, Metrics(), clock=trio.current_time)
    sched.EXPIRY_SWEEP_SECONDS = 10**6
    store.final_receipts = sched.receipt_rows.final  # as the app wires it
    return store, sched


async def test_no_device_call_begins_after_the_validity_even_if_it_ran_out_during_the_pick(
    tmp_path, nursery, autojump_clock
):
    # Also found by the model test: the channel checked the validity, then (reading the parts
    # of the message) the validity ran out, and the send began anyway. The durable mark made
    # before every device call now checks the validity in the same transaction.
    driver = Driver()
    store, sched = await channel_alone(tmp_path, nursery, driver)
    slow: list[int] = []

    async def time_passes(mid: int):
        if not slow:
            slow.append(mid)
            await trio.sleep(200)  # the validity (100 s) runs out between check and send

    after_the_pick_read(store, time_passes)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"one", route="r",
                                        registered_delivery=1, expire_at=trio.current_time() + 100))  # fmt: skip
    two = await store.accept(NewMessage(esme="app", destination_addr="+4922", body=b"two", route="r"))
    with trio.fail_after(600):
        while (rec := await store.get(two.message_id)) is None or rec.state is not State.DELIVERED:
            await trio.sleep(1)
    assert slow
    assert (await store.get(one.message_id)).state is State.EXPIRED
    assert driver.sent == ["+4922"]
    receipts = [decode_payload(i.payload).params["short_message"].decode() for i in await store.pending_outbox("app")]
    assert len(receipts) == 1 and "stat:EXPIRED" in receipts[0]


class SlowDriver(Driver):
    """Two lines; each send takes a while, so two channels can be mid-send at once."""

    def __init__(self) -> None:
        super().__init__()
        self.channels = ("1", "2")

    async def send(self, channel, destination, text, *, flash=False, urgent=False) -> SendResult:
        self.sent.append(destination)
        await trio.sleep(5)
        return SendResult(SendOutcome.ACCEPTED, ref=f"r{len(self.sent)}")

    async def health(self) -> DeviceHealth:
        return DeviceHealth(reachable=True, channels={"1": ChannelHealth(), "2": ChannelHealth()})


async def test_a_message_queued_twice_is_sent_by_one_channel_only(tmp_path, nursery, autojump_clock):
    # Found by the model test: replace_sm on a queued message told the scheduler about it again,
    # so it waited twice in its route's queue; two idle lines picked it up at once and both
    # sent it. A message is now claimed by one channel in the store, whatever the queue holds.
    config = Config(
        esmes=(EsmeConfig("app"),),
        devices=(DeviceConfig(name="a", kind="router", lines=2, status_poll_interval=1, status_timeout=30),),
        routes=(RouteConfig(name="r", channels=[("a", "1"), ("a", "2")]),),
    )
    store = Store(tmp_path / "b.sqlite3", clock=trio.current_time, run_sync=run_inline)
    store.open()
    await nursery.start(store.run)
    driver = SlowDriver()
    sched = Scheduler(config, store, {"a": driver}, Metrics(), clock=trio.current_time)
    store.final_receipts = sched.receipt_rows.final
    heard: list = []

    def hook(entry) -> None:
        heard.append(entry)
        sched.on_new_message(entry)

    store.on_new_message = hook

    async def told_again(mid: int):
        # While the first channel holds the message (read "queued", not yet marked), the
        # scheduler hears of it again, as after a replace_sm; a second line is idle.
        if len(heard) == 1:
            sched.on_new_message(heard[0])
            heard.append(heard[0])
        await trio.sleep(1)

    after_the_pick_read(store, told_again)
    await nursery.start(sched.run)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"once", route="r"))
    with trio.fail_after(600):
        while (rec := await store.get(one.message_id)) is None or rec.state is not State.DELIVERED:
            await trio.sleep(1)
    await trio.sleep(30)  # let any second send finish
    assert heard
    assert driver.sent == ["+4911"]


async def test_replace_sm_while_a_channel_picks_the_message_sends_the_new_text_once(
    tmp_path, nursery, autojump_clock
):
    # Found by the model test: a channel read the message, then replace_sm changed its text
    # (answered ESME_ROK: the message was still queued), and the channel sent the old text.
    # What a channel sends is what the message says when the channel claims it.
    store = Store(tmp_path / "b.sqlite3", clock=trio.current_time, run_sync=run_inline)
    store.open()
    await nursery.start(store.run)
    driver = Driver()
    texts: list[str] = []
    send = driver.send

    async def recording_send(channel, destination, text, **kw):
        texts.append(text)
        return await send(channel, destination, text, **kw)

    driver.send = recording_send  # type: ignore[method-assign]
    sched = Scheduler(CONFIG, store, {"a": driver}, Metrics(), clock=trio.current_time)
    store.final_receipts = sched.receipt_rows.final
    replaced: list[bool] = []

    async def replace(mid: int):
        if not replaced:
            replaced.append(
                await store.replace("app", format_id(mid), source_addr="", body=b"new text", schedule_at=None,
                                    expire_at=None, registered_delivery=0)  # fmt: skip
            )

    after_the_pick_read(store, replace)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"old text", route="r"))
    with trio.fail_after(600):
        while (rec := await store.get(one.message_id)) is None or rec.state is not State.DELIVERED:
            await trio.sleep(1)
    assert replaced == [True]  # replace_sm was answered ESME_ROK ...
    assert texts == ["new text"]  # ... so the new text went out, once


async def test_replace_sm_moving_a_picked_message_to_a_later_schedule_is_kept(tmp_path, nursery, autojump_clock):
    store = Store(tmp_path / "b.sqlite3", clock=trio.current_time, run_sync=run_inline)
    store.open()
    await nursery.start(store.run)
    driver = Driver()
    metrics = Metrics()
    sched = Scheduler(CONFIG, store, {"a": driver}, metrics, clock=trio.current_time)
    store.final_receipts = sched.receipt_rows.final
    later: list[float] = []

    async def reschedule(mid: int):
        if not later:
            later.append(trio.current_time() + 1000)
            assert await store.replace("app", format_id(mid), source_addr="", body=b"later", schedule_at=later[0],
                                       expire_at=None, registered_delivery=0)  # fmt: skip

    after_the_pick_read(store, reschedule)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"now", route="r"))
    with trio.fail_after(5000):
        while (rec := await store.get(one.message_id)) is None or rec.state is not State.DELIVERED:
            await trio.sleep(1)
    events = await store.events(one.message_id)
    sent_at = next(e.at for e in events if e.state == "submitting")
    assert sent_at >= later[0]  # at the new time, not at the pick before the replace
    assert metrics.scheduler_errors._value.get() == 0  # a lost race, not a fault


class SlowFirstPartDriver(Driver):
    """The first device call takes 200 s (a GoIP answering late); the others are quick."""

    def __init__(self) -> None:
        super().__init__()
        self.texts: list[str] = []

    async def send(self, channel, destination, text, *, flash=False, urgent=False) -> SendResult:
        self.texts.append(text)
        if len(self.texts) == 1:
            await trio.sleep(200)
        return SendResult(SendOutcome.ACCEPTED, ref=f"r{len(self.texts)}")


async def test_no_part_of_a_long_message_begins_after_its_validity(tmp_path, nursery, autojump_clock):
    # Found by the model test: the validity ran out while part 1 was with the device, and
    # part 2 still went out 640 s after it (the check before a device call looked only at
    # messages still waiting, not at one whose earlier part was sent).
    driver = SlowFirstPartDriver()
    store, sched = await channel_alone(tmp_path, nursery, driver)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    text = "long " * 60  # 300 characters: two parts
    one = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=text.encode(), route="r",
                                        registered_delivery=1, expire_at=trio.current_time() + 100))  # fmt: skip
    with trio.fail_after(600):
        while (rec := await store.get(one.message_id)) is None or rec.state not in (State.EXPIRED, State.DELIVERED, State.SENT):
            await trio.sleep(1)
    await trio.sleep(30)  # anything still to go out would have gone by now (simulated time)
    assert len(driver.texts) == 1, driver.texts
    assert (await store.get(one.message_id)).state is State.EXPIRED
    receipts = [decode_payload(i.payload).params["short_message"].decode() for i in await store.pending_outbox("app")]
    assert [r for r in receipts if "stat:EXPIRED" in r] and not [r for r in receipts if "stat:DELIVRD" in r]
