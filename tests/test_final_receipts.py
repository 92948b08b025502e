"""Every acknowledged message ends in exactly one final state, with its receipt (when asked for)
committed in the same transaction: parts that never completed, cancel_sm (also of a
submit_multi), rejection for want of a route; replace_sm reaches the scheduler; per-part
receipts for ESMEs that track segments; an ESME's permanent refusal of a deliver_sm ends it."""

from __future__ import annotations

import math

import sqlite3

import pytest
import trio
import trio.testing

from bridge.config import Config, DeviceConfig, EsmeConfig, ReceiptsConfig, RouteConfig, SchedulerConfig
from bridge.receipts.delivery import OutboxDelivery
from bridge.receipts.payload import decode_payload
from bridge.receipts.policy import Receipts
from bridge.lifecycle import State
from bridge.metrics import Metrics
from bridge.scheduler import Scheduler
from bridge.smpp.constants import CommandId, Status
from bridge.smpp.pdu import Pdu
from bridge.smpp.receipt import parse_receipt_text
from bridge.store import NewMessage, Store, StoreError, run_inline
from test_scheduler_health import FakeDriver

BASE = 1_700_000_000.0


def config(receipts: str = "combined") -> Config:
    return Config(
        esmes=(EsmeConfig("app", receipts=receipts),),
        devices=(DeviceConfig(name="a", kind="router", lines=1, status_poll_interval=0.05, status_timeout=5),),
        routes=(RouteConfig(name="r", prefixes=("+49",), channels=[("a", "1")]),),
        scheduler=SchedulerConfig(retry_backoff=0.1, retry_backoff_max=0.1),
        receipts=ReceiptsConfig(),
    )  # fmt: skip


_CLOCK: list = []


def now() -> float:
    """Simulated wall time; callable from the store's writer thread too."""
    return BASE + _CLOCK[-1].current_time()


@pytest.fixture
def cfg() -> dict:
    return {"config": config()}


@pytest.fixture
async def store(tmp_path, cfg):
    _CLOCK.append(trio.lowlevel.current_clock())
    # SQLite work inline: the autojump clock must not jump while a commit is under way.
    s = Store(tmp_path / "b.sqlite3", clock=now, run_sync=run_inline)
    s.final_receipts = Receipts(lambda: cfg["config"]).final
    s.open()
    # The writer stops (its commit in flight finished) before the database is closed.
    async with trio.open_nursery() as own:
        await own.start(s.run)
        yield s
        own.cancel_scope.cancel()
    s.close()


def msg(text="hi", dest="+491701", **kw) -> NewMessage:
    return NewMessage(esme="app", destination_addr=dest, body=text.encode(), **kw)


async def receipts(store: Store) -> list[dict]:
    """The receipts waiting in the outbox, parsed as the ESME would read them."""

    def fn(conn: sqlite3.Connection) -> list[tuple]:
        return conn.execute("SELECT esme, kind, message, payload FROM outbox WHERE kind='receipt' ORDER BY id").fetchall()

    out = []
    for esme, _kind, message, payload in await store.read(fn):
        pdu = decode_payload(payload)
        r = parse_receipt_text(pdu.params["short_message"].decode("ascii"))
        r.update(esme=esme, message=message, to=pdu.params["destination_addr"], dest=pdu.params["source_addr"])
        out.append(r)
    return out


async def accept_multi(store: Store, msgs: list[NewMessage]) -> str:
    got: list = []
    event = trio.Event()

    def done(result, error) -> None:
        got.append((result, error))
        event.set()

    store.accept_multi_nowait(msgs, [], done)
    await event.wait()
    (result, error), = got
    assert error is None
    return result[0]


# -- 1: parts that never complete ------------------------------------------------------------


async def test_parts_that_expire_waiting_for_siblings_end_expired_with_a_receipt(store, autojump_clock):
    store.partial_timeout = 60
    p1 = await store.accept(msg("first ", concat=(1, 3, 1, 8), registered_delivery=1))
    p3 = await store.accept(msg("third", concat=(1, 3, 3, 8), registered_delivery=1))
    await trio.sleep(61)
    assert await store.expire_partials() == 1
    for pid in (p1.message_id, p3.message_id):
        assert (await store.get(pid, "app")).state is State.EXPIRED  # every acknowledged id
    [r] = await receipts(store)
    assert (r["id"], r["stat"], r["esme"]) == (p1.message_id, "EXPIRED", "app")


async def test_expired_parts_get_a_receipt_per_part_id_for_a_per_part_esme(store, cfg, autojump_clock):
    cfg["config"] = config("per_part")
    store.partial_timeout = 60
    p1 = await store.accept(msg("first ", concat=(1, 3, 1, 8), registered_delivery=1))
    p3 = await store.accept(msg("third", concat=(1, 3, 3, 8), registered_delivery=1))
    await trio.sleep(61)
    await store.expire_partials()
    assert [(r["id"], r["stat"]) for r in await receipts(store)] == [
        (p1.message_id, "EXPIRED"), (p3.message_id, "EXPIRED"),
    ]  # fmt: skip


# -- 2 and 3: cancel_sm, query_sm, replace_sm ---------------------------------------------------


async def test_cancel_sends_a_deleted_receipt_when_one_was_asked_for(store):
    asked = await store.accept(msg("a", registered_delivery=1))
    silent = await store.accept(msg("b", registered_delivery=0))
    assert await store.cancel("app", message_id=asked.message_id) == 1
    assert await store.cancel("app", message_id=silent.message_id) == 1
    [r] = await receipts(store)
    assert (r["id"], r["stat"]) == (asked.message_id, "DELETED")
    assert (await store.get(asked.message_id)).state is State.DELETED


async def test_a_submit_multi_id_cancels_every_destination(store):
    dests = ["+4911", "+4922", "+4933"]
    first = await accept_multi(store, [msg("x", dest=d, route="r", registered_delivery=1) for d in dests])
    assert await store.cancel("app", message_id=first) == 3
    states = await store.read(lambda c: c.execute("SELECT destination_addr, state FROM messages ORDER BY id").fetchall())
    assert states == [(d, "deleted") for d in dests]
    # One DELETED receipt per destination, each with the id the ESME was given.
    assert sorted((r["id"], r["dest"], r["stat"]) for r in await receipts(store)) == [
        (first, d, "DELETED") for d in dests
    ]


async def test_a_submit_multi_id_is_queried_as_a_whole(store):
    from bridge.store import summarise

    first = await accept_multi(store, [msg("x", dest=d, route="r") for d in ("+4911", "+4922")])
    recs = await store.get_group(first, "app")
    assert [r.destination_addr for r in recs] == ["+4911", "+4922"]
    assert summarise(recs)[0] is State.QUEUED
    # One destination final, the other still waiting: still en route.
    await store.transition(recs[0].message_id, State.SUBMITTING)
    await store.transition(recs[0].message_id, State.SENT)
    await store.transition(recs[0].message_id, State.DELIVERED)
    state, final_at = summarise(await store.get_group(first, "app"))
    assert state is State.QUEUED and final_at is None  # ENROUTE on the wire
    # Both final, one failed: the submit as a whole is reported by its worst destination.
    await store.transition(recs[1].message_id, State.EXPIRED)
    state, final_at = summarise(await store.get_group(first, "app"))
    assert state is State.EXPIRED and final_at is not None
    assert await store.get_group(first, "someone-else") == []


async def test_a_submit_multi_id_replaces_every_destination(store):
    first = await accept_multi(store, [msg("old", dest=d, route="r") for d in ("+4911", "+4922")])
    ok = await store.replace("app", first, source_addr="", body=b"new", schedule_at=None, expire_at=None,
                             registered_delivery=0)  # fmt: skip
    assert ok
    texts = await store.read(lambda c: c.execute("SELECT text FROM messages ORDER BY id").fetchall())
    assert texts == [("new",), ("new",)]


# -- 4: replace_sm reaches the scheduler --------------------------------------------------------


async def test_a_replaced_schedule_is_kept_by_the_scheduler(store, cfg, autojump_clock):
    driver = FakeDriver("a")
    sent_at: list[float] = []
    send = driver.send

    async def timed_send(*args, **kw):
        sent_at.append(now())
        return await send(*args, **kw)

    driver.send = timed_send  # type: ignore[method-assign]
    sched = Scheduler(cfg["config"], store, {"a": driver}, Metrics(), clock=now)
    store.on_new_message = sched.on_new_message
    async with trio.open_nursery() as nursery:
        await nursery.start(sched.run)
        # Time stands still while the store's writer thread commits the submit and the replace
        # (autojump would otherwise skip past the old due time while the test waits for the
        # thread); it runs again once the scheduler knows the new time.
        autojump_clock.autojump_threshold = math.inf
        acc = await store.accept(msg("hi", route="r", schedule_at=now() + 1000))
        assert (await store.get(acc.message_id)).state is State.SCHEDULED
        new_time = now() + 5000
        assert await store.replace("app", acc.message_id, source_addr="", body=b"later", schedule_at=new_time,
                                   expire_at=None, registered_delivery=0)  # fmt: skip
        autojump_clock.autojump_threshold = 0
        with trio.fail_after(20000):
            while not sent_at:
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert sent_at[0] >= new_time  # not at the old time (now + 1000)
    assert [t for _d, t, _o in driver.sent] == ["later"]


# -- 6: rejected for want of a route: state and receipt in one transaction ------------------------


async def test_rejected_for_no_route_commits_state_and_receipt_together(store, cfg, monkeypatch):
    acc = await store.accept(msg("x", dest="+3312345", registered_delivery=1))  # no route for +33
    sched = Scheduler(cfg["config"], store, {"a": FakeDriver("a")}, Metrics(), clock=now)

    async def crash(*_a, **_k):
        raise StoreError("the bridge stopped here")

    # A separate write for the receipt would be lost if the bridge stopped between the two.
    monkeypatch.setattr(store, "add_outbox", crash)
    try:
        await sched.recover()
    except StoreError:
        pass
    rec = await store.get(acc.message_id)
    assert rec.state is State.REJECTED
    assert [(r["id"], r["stat"]) for r in await receipts(store)] == [(acc.message_id, "REJECTD")]


async def test_a_transition_to_a_final_state_carries_its_receipt(store):
    acc = await store.accept(msg("x", registered_delivery=1))
    await store.transition(acc.message_id, State.REJECTED, "refused by an operator")
    assert [(r["id"], r["stat"]) for r in await receipts(store)] == [(acc.message_id, "REJECTD")]


# -- 7: per-part receipts ---------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["per_part", "combined"])
async def test_a_long_message_gets_one_receipt_per_part_for_a_per_part_esme(store, cfg, mode):
    cfg["config"] = config(mode)
    sched = Scheduler(cfg["config"], store, {"a": FakeDriver("a")}, Metrics(), clock=now)
    chunks = ["a" * 153, "b" * 153, "c" * 10]
    ids = []
    for seq in (1, 2, 3):  # a long message sent as 3 submit_sm with UDH
        acc = await store.accept(msg(chunks[seq - 1], concat=(42, 3, seq, 8), route="r", registered_delivery=1))
        ids.append(acc.message_id)
    mid = int(ids[0])
    await store.transition(ids[0], State.SUBMITTING)
    await store.transition(ids[0], State.SENT)
    await sched.finish(mid, sched.receipts.combine("router", [("network", None)] * 3), kind="router")
    # ACCEPTD: the network took it, no handset said so - dlvrd:000, not a delivery.
    got = [(r["id"], r["stat"], r["sub"], r["dlvrd"]) for r in await receipts(store)]
    if mode == "per_part":
        assert got == [(i, "ACCEPTD", 1, 0) for i in ids]
    else:
        assert got == [(ids[0], "ACCEPTD", 3, 0)]


# -- 5: an ESME's permanent refusal ends a deliver_sm ---------------------------------------------


class FakeConn:
    def __init__(self, status: int) -> None:
        self.status = status
        self.requests: list[Pdu] = []
        self.times: list[float] = []  # trio (mock) time of each request
        self.server = type("S", (), {"config": config()})()

    async def request(self, pdu: Pdu, timeout: float | None = None) -> Pdu:
        self.requests.append(pdu)
        self.times.append(trio.current_time())
        return Pdu(CommandId.DELIVER_SM_RESP, command_status=self.status, sequence_number=1)


class FakeServer:
    def __init__(self, conn: FakeConn) -> None:
        self.conn = conn

    def receivers(self, esme: str) -> list[FakeConn]:
        return [self.conn] if esme == "app" else []

    def next_receiver(self, esme: str) -> FakeConn | None:
        return self.conn if esme == "app" else None


@pytest.mark.parametrize("kind", ["receipt", "mo"])
async def test_a_permanently_refused_deliver_sm_ends_refused_and_counted(store, cfg, autojump_clock, kind):
    conn = FakeConn(Status.RX_P_APPN)
    metrics = Metrics()
    disp = OutboxDelivery(store, FakeServer(conn), metrics, cfg["config"])
    store.on_outbox = disp.wake
    async with trio.open_nursery() as nursery:
        await nursery.start(disp.run)
        await store.add_outbox("app", kind, 7, '{"params":{"short_message":"x"}}', now() + 86400)
        await trio.sleep(3600)  # an hour: it must have been offered once, not every few seconds
        # Then the refusal is committed (the store's writer task): wait for it, a bounded
        # number of looks.
        for _ in range(1000):
            if refused := await store.refused_outbox("app"):
                break
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert len(conn.requests) == 1
    [(item, status)] = refused
    assert (item.kind, status) == (kind, Status.RX_P_APPN)
    assert await store.pending_outbox("app") == []
    assert metrics.outbox_refused.labels("app", kind, "0x00000065")._value.get() == 1


async def test_a_transient_refusal_is_retried_with_a_growing_back_off(store, cfg, autojump_clock):
    conn = FakeConn(Status.RMSGQFUL)
    disp = OutboxDelivery(store, FakeServer(conn), Metrics(), cfg["config"])
    store.on_outbox = disp.wake
    async with trio.open_nursery() as nursery:
        await nursery.start(disp.run)
        await store.add_outbox("app", "receipt", 7, '{"params":{"short_message":"x"}}', now() + 86400)
        # Offered again and again while the ESME keeps saying "queue full" (mock time).
        for _ in range(100_000):  # a bounded number of looks
            if len(conn.requests) >= 6:
                break
            await trio.sleep(1)
        nursery.cancel_scope.cancel()
    # Each offer waits at least the doubling back-off (1, 2, 4 ... s, at most 300 s) after the
    # one before (lower bounds: a rescan may come later than the back-off, never sooner).
    gaps = [b - a for a, b in zip(conn.times, conn.times[1:])]
    assert all(gap >= min(OutboxDelivery.RETRY_MAX, OutboxDelivery.RETRY_BASE * 2**n) * 0.999 for n, gap in enumerate(gaps)), gaps
    assert len(await store.pending_outbox("app")) in (0, 1)  # still waiting (or backing off)
    assert await store.refused_outbox("app") == []
