"""How many store commits one send costs, and that the merged ones keep every row.

With 512 lines the store's round trips are a large part of the bridge's CPU per send
(bench/channels.py --many). A message on a device that holds its line until the final status
(a GoIP) takes three commits: the part's in-flight mark before the device call (it must be
durable before the request leaves), then the device's answer (the sent mark, the ENROUTE
receipt and the move to SENT together), then the final status (the part's and the message's,
with the final receipt). Simulated time; the real store, run inline."""

from __future__ import annotations

import trio

from bridge.devices.base import DeliveryState, SendOutcome, SendResult, StatusResult
from bridge.lifecycle import State, is_final
from bridge.metrics import Metrics
from bridge.receipts.payload import decode_payload
from bridge.scheduler import Scheduler
from bridge.store import NewMessage, Store, run_inline
from tests.test_scheduler_races import CONFIG, Driver


class Goip(Driver):
    """One line; the final status is read by polling, like a GoIP's. ``at_send`` notes the
    store writes made so far when each device call begins."""

    def __init__(self, writes: list[str], final: DeliveryState) -> None:
        super().__init__()
        self.writes = writes
        self.final = final
        self.at_send: list[list[str]] = []

    async def send(self, channel, destination, text, *, flash=False, urgent=False) -> SendResult:
        self.at_send.append(list(self.writes))
        return SendResult(SendOutcome.ACCEPTED, ref=f"r{len(self.at_send)}")

    async def status(self, channel, ref) -> StatusResult:
        return StatusResult(self.final, error_code="E1" if self.final is DeliveryState.FAILED else None)

    async def last_ref(self, channel):
        return "r0"


# The store writes a send can make (the periodic expiry sweep is not one of them).
MESSAGE_WRITES = ("Transitions.", "Outbox.add_outbox")
NOT_A_SEND = "Transitions.expire_waiting."


async def send_one(tmp_path, nursery, text: str, final: DeliveryState):
    store = Store(tmp_path / "b.sqlite3", clock=trio.current_time, run_sync=run_inline)
    store.open()
    await nursery.start(store.run)
    writes: list[str] = []
    real_write = store.write

    async def counted(op):
        name = getattr(op, "__qualname__", "")
        if name.startswith(MESSAGE_WRITES) and not name.startswith(NOT_A_SEND):
            writes.append(name.split(".")[1])
        return await real_write(op)

    store.write = counted  # type: ignore[method-assign]
    driver = Goip(writes, final)
    sched = Scheduler(CONFIG, store, {"a": driver}, Metrics(), clock=trio.current_time)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    acc = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=text.encode(), route="r",
                                        registered_delivery=0x11))  # fmt: skip
    with trio.fail_after(600):
        while (rec := await store.get(acc.message_id)) is None or not is_final(rec.state):
            await trio.sleep(1)
    return store, acc, rec, writes, driver


def stats(items):
    return [decode_payload(i.payload).params["short_message"].decode().split("stat:")[1][:7] for i in items]


async def test_a_delivered_send_takes_three_commits_with_every_row(tmp_path, nursery, autojump_clock):
    store, acc, rec, writes, driver = await send_one(tmp_path, nursery, "hello", DeliveryState.DELIVERED)
    assert rec.state is State.DELIVERED
    # The in-flight mark was committed before the device call began.
    assert driver.at_send == [["begin_part"]]
    assert writes == ["begin_part", "part_sent", "move"]
    assert [(p.state, p.ref) for p in await store.parts(rec.id)] == [("delivered", "r1")]
    assert [e.state for e in await store.events(acc.message_id)] == ["submitting", "sent", "delivered"]
    assert stats(await store.pending_outbox("app")) == ["ENROUTE", "DELIVRD"]


async def test_a_long_message_stores_each_parts_status_before_the_next_part_goes_out(
    tmp_path, nursery, autojump_clock
):
    store, acc, rec, writes, driver = await send_one(tmp_path, nursery, "x" * 200, DeliveryState.DELIVERED)
    assert rec.state is State.DELIVERED
    assert driver.at_send == [["begin_part"], ["begin_part", "part_sent", "update_part", "begin_part"]]
    assert writes == ["begin_part", "part_sent", "update_part", "begin_part", "part_sent", "move"]
    assert [(p.seq, p.state) for p in await store.parts(rec.id)] == [(1, "delivered"), (2, "delivered")]
    assert stats(await store.pending_outbox("app")) == ["ENROUTE", "DELIVRD"]


async def test_a_failed_part_ends_the_message_in_the_same_commit_as_its_status(tmp_path, nursery, autojump_clock):
    store, acc, rec, writes, driver = await send_one(tmp_path, nursery, "x" * 200, DeliveryState.FAILED)
    assert rec.state is State.UNDELIVERABLE
    assert len(driver.at_send) == 1  # the second part never went out
    assert writes == ["begin_part", "part_sent", "move"]
    assert [(p.seq, p.state, p.error) for p in await store.parts(rec.id)] == [(1, "failed", "E1")]
    assert stats(await store.pending_outbox("app")) == ["ENROUTE", "UNDELIV"]
