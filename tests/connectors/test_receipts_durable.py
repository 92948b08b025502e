"""Receipts from an upstream SMSC are committed before they are answered (docs/connectors.md,
Receipts): the connector driver with a real store and our SMSC emulator, in one process.

The process tests (kill -9 right after the SMSC got its deliver_sm_resp; intermediate receipts
seen by an ESME) are in tests/e2e/test_upstream_receipts.py.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.connectors.config import build_driver
from bridge.connectors.emulator import SmscEmulator
from bridge.connectors.journal import ReceiptJournal
from bridge.connectors.receipts import Receipt, ReceiptBook
from bridge.devices.base import DeliveryState
from bridge.smpp.constants import Status
from bridge.store import Store, StoreUnwritable

from connector_support import connector_device


async def wait_for(cond: Any, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


class Clock:
    """The wall clock receipts are aged with (simulated: a restart may come hours later)."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def connector(nursery: trio.Nursery, port: int, store: Store, clock: Clock, **extra: Any) -> Any:
    drv = build_driver(connector_device(port, receipt_grace=60, **extra))
    drv.attach_store(store, clock)
    await nursery.start(drv.serve)
    await wait_for(lambda: drv.binds_up == 1)
    return drv


async def open_store(path: Path, nursery: trio.Nursery) -> Store:
    store = Store(path)
    store.open()
    await nursery.start(store.run)
    return store


def kept(path: Path) -> list[tuple[Any, ...]]:
    """The receipts the store holds, read from the file as another process would."""
    with sqlite3.connect(path) as db:
        return db.execute("SELECT smsc_id, stat, matched FROM upstream_receipts ORDER BY received_at").fetchall()


async def status(drv: Any, ref: str) -> Any:
    return await drv.status("1", ref)


async def one_sent(n: trio.Nursery, path: Path) -> tuple[SmscEmulator, Store, Any, Any]:
    """The SMSC emulator (receipts only when told), a store, its connector, one message sent."""
    emu = SmscEmulator()
    port = await n.start(emu.serve)
    store = await open_store(path, n)
    emu.apply_faults({"receipts": False})
    drv = await connector(n, port, store, Clock())
    res = await drv.send("1", "+15551234", "hello")
    return emu, store, drv, res


async def test_a_receipt_is_in_the_store_when_the_smsc_gets_its_answer(tmp_path: Path) -> None:
    path = tmp_path / "bridge.sqlite3"
    async with trio.open_nursery() as n:
        emu, store, drv, res = await one_sent(n, path)
        seen_at_answer: list[list[tuple[Any, ...]]] = []
        real_answer = emu._on_pdu

        async def spy(conn: Any, pdu: Any) -> bool:
            if pdu.command_id == 0x80000005:  # deliver_sm_resp: what is stored at this moment
                seen_at_answer.append(kept(path))
            return await real_answer(conn, pdu)

        emu._on_pdu = spy  # type: ignore[method-assign]
        assert await emu.send_receipt(res.ref, "DELIVRD") == 1
        await wait_for(lambda: emu.deliver_resps.get(0) == 1)
        assert seen_at_answer == [[(res.ref, "DELIVRD", res.ref)]]
        assert (await status(drv, res.ref)).state is DeliveryState.DELIVERED
        n.cancel_scope.cancel()


async def test_a_receipt_the_store_cannot_take_is_refused_and_taken_when_resent(tmp_path: Path) -> None:
    async with trio.open_nursery() as n:
        emu, store, drv, res = await one_sent(n, tmp_path / "bridge.sqlite3")
        save = store.save_upstream_receipt

        async def disk_full(*args: Any) -> None:
            raise StoreUnwritable("database or disk is full")

        store.save_upstream_receipt = disk_full  # type: ignore[method-assign]
        await emu.send_receipt(res.ref, "DELIVRD")
        await wait_for(lambda: emu.deliver_resps.get(Status.RX_T_APPN) == 1)
        # Not taken: the message still waits, and the SMSC knows to send it again.
        assert (await status(drv, res.ref)).state is DeliveryState.PENDING
        assert drv.stats.receipt_commit_failures == 1 and drv.stats.receipts["matched"] == 0
        store.save_upstream_receipt = save  # type: ignore[method-assign]
        await emu.send_receipt(res.ref, "DELIVRD")  # the SMSC's resend
        await wait_for(lambda: emu.deliver_resps.get(0) == 1)
        assert (await status(drv, res.ref)).state is DeliveryState.DELIVERED
        assert drv.stats.receipts == {"matched": 1, "unmatched": 0, "duplicate": 0, "early": 0}
        n.cancel_scope.cancel()


async def early_receipt_then_stop(path: Path, emu: SmscEmulator, port: int, clock: Clock, smsc_id: str, stat: str, err: int = 0) -> None:
    """A first life of the bridge: a receipt for an id no submit_sm_resp gave yet comes, is
    answered, and the connector and its store stop."""
    async with trio.open_nursery() as n:
        store = await open_store(path, n)
        drv = await connector(n, port, store, clock)
        await emu.send_receipt(smsc_id, stat, err)
        await wait_for(lambda: emu.deliver_resps.get(0) == 1)
        assert kept(path) == [(smsc_id, stat, None)]
        await drv.aclose()
        n.cancel_scope.cancel()
    store.close()


async def test_an_early_receipt_survives_a_restart_and_finds_its_resp(tmp_path: Path) -> None:
    path = tmp_path / "bridge.sqlite3"
    clock = Clock()
    emu = SmscEmulator()
    emu.apply_faults({"receipts": False})
    early_id = "0000BEEF"  # the id the SMSC will give our next submit
    async with trio.open_nursery() as outer:
        port = await outer.start(emu.serve)
        await early_receipt_then_stop(path, emu, port, clock, early_id, "UNDELIV", 34)
        clock.now += 30  # within receipt_grace (60 s)
        async with trio.open_nursery() as n:
            store = await open_store(path, n)
            drv = await connector(n, port, store, clock)
            emu._ids = itertools.count(0xBEEF)
            res = await drv.send("1", "+15551234", "hello")
            assert res.ref == early_id
            st = await status(drv, res.ref)
            assert (st.state, st.error_code) == (DeliveryState.FAILED, "34")
            assert kept(path) == [(early_id, "UNDELIV", early_id)]
            n.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def test_an_early_receipt_nobody_claims_expires_after_its_grace_even_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "bridge.sqlite3"
    clock = Clock()
    emu = SmscEmulator()
    emu.apply_faults({"receipts": False})
    async with trio.open_nursery() as outer:
        port = await outer.start(emu.serve)
        await early_receipt_then_stop(path, emu, port, clock, "0000CAFE", "DELIVRD")
        clock.now += 61  # the grace (60 s) passed while the bridge was down
        async with trio.open_nursery() as n:
            store = await open_store(path, n)
            drv = await connector(n, port, store, clock)
            assert drv.stats.receipts["unmatched"] == 1
            assert kept(path) == []
            n.cancel_scope.cancel()
        outer.cancel_scope.cancel()


async def test_intermediate_receipts_show_until_the_final_one(tmp_path: Path) -> None:
    async with trio.open_nursery() as n:
        emu, store, drv, res = await one_sent(n, tmp_path / "bridge.sqlite3")
        assert (await status(drv, res.ref)).network_stat is None
        for i, stat in enumerate(["ENROUTE", "ACCEPTD"], 1):
            await emu.send_receipt(res.ref, stat)
            await wait_for(lambda: emu.deliver_resps.get(0) == i)  # noqa: B023
            st = await status(drv, res.ref)
            assert (st.state, st.network_stat) == (DeliveryState.PENDING, stat)
        await emu.send_receipt(res.ref, "DELIVRD")
        await wait_for(lambda: emu.deliver_resps.get(0) == 3)
        assert (await status(drv, res.ref)).state is DeliveryState.DELIVERED
        # A later intermediate receipt changes nothing: the final one stands.
        await emu.send_receipt(res.ref, "ENROUTE")
        await wait_for(lambda: emu.deliver_resps.get(0) == 4)
        assert (await status(drv, res.ref)).state is DeliveryState.DELIVERED
        assert drv.stats.intermediate == {"ENROUTE": 1, "ACCEPTD": 1}
        assert drv.stats.receipts["duplicate"] == 1
        n.cancel_scope.cancel()


# -- the invariant: a restart at any point changes no message's receipt ---------------------------

IDS = ["0000A1F3", "0000B000"]
STATS = ["ENROUTE", "ACCEPTD", "DELIVRD", "UNDELIV"]


def as_written(mid: str, style: str) -> str:
    return {"lower": mid.lower(), "padded": mid.rjust(20, "0"), "decimal": str(int(mid, 16))}.get(style, mid)


class WaitingParts:
    """The store, except that the parts still waiting for a receipt are the test's (the real
    ones come from the channel worker's commits, which this test does not run)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.refs: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def upstream_refs(self, device: str) -> list[str]:
        return list(self.refs)

    async def upstream_ref_waiting(self, device: str, ref: str) -> bool:
        return ref in self.refs


events = st.lists(
    st.one_of(
        st.tuples(st.just("resp"), st.sampled_from(IDS)),
        st.tuples(st.just("receipt"), st.sampled_from(IDS), st.sampled_from(STATS),
                  st.sampled_from(["same", "lower", "padded", "decimal"])),
        st.tuples(st.just("restart")),
    ),
    max_size=25,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events)
def test_a_restart_anywhere_keeps_what_every_answered_receipt_said(tmp_path_factory: Any, script: list[tuple[Any, ...]]) -> None:
    """Model: each SMSC id's receipt is its first final one, else its newest, whether it came
    before or after the resp, in any id format. The connector, restarted from the store at
    random points (each restart a new book from the kept rows), always agrees."""
    path = tmp_path_factory.mktemp("journal") / "bridge.sqlite3"
    model: dict[str, str] = {}
    clock = Clock()

    def expect(mid: str, stat: str) -> None:
        old = model.get(mid)
        if old is None or old in ("ENROUTE", "ACCEPTD"):
            model[mid] = stat

    async def main() -> None:
        async with trio.open_nursery() as n:
            store = await open_store(path, n)
            parts = WaitingParts(store)
            book = ReceiptBook(early_grace=60)
            journal = ReceiptJournal("up1", book, parts, clock, horizon=3600)
            for event in script:
                clock.now += 1
                if event[0] == "restart":
                    book = ReceiptBook(early_grace=60)
                    journal = ReceiptJournal("up1", book, parts, clock, horizon=3600)
                    await journal.restore()
                elif event[0] == "resp" and event[1] not in parts.refs:
                    parts.refs.append(event[1])
                    early = book.claim(event[1])
                    if early is not None:
                        await journal.claimed(early, event[1])
                elif event[0] == "receipt":
                    _, mid, stat, style = event
                    receipt = Receipt(as_written(mid, style), stat, None)
                    result, ref = book.classify(receipt)
                    if result in ("matched", "early"):
                        await journal.commit(receipt, result, ref)
                    book.arrived(receipt, clock.now)
                    expect(mid, stat)
                for mid in parts.refs:
                    got = book.latest(mid)
                    assert (got.stat if got else None) == model.get(mid), (event, mid)
            n.cancel_scope.cancel()
        store.close()

    trio.run(main)


async def test_kept_receipts_end_when_their_message_is_done_or_after_the_horizon(tmp_path: Path) -> None:
    path = tmp_path / "bridge.sqlite3"
    clock = Clock()
    async with trio.open_nursery() as n:
        parts = WaitingParts(await open_store(path, n))
        book = ReceiptBook(early_grace=60)
        journal = ReceiptJournal("up1", book, parts, clock, horizon=3600)
        for mid, stat in (("0000A1F3", "DELIVRD"), ("0000B000", "ENROUTE")):
            parts.refs.append(mid)
            book.submitted(mid)
            receipt = Receipt(mid, stat, None)
            await journal.commit(receipt, *book.classify(receipt))
            book.arrived(receipt, clock.now)
        journal.reported("0000A1F3")  # the tracker read its final status
        clock.now += 61
        await journal.sweep()
        assert len(kept(path)) == 2  # its part still waits: the tracker's commit is not in yet
        parts.refs.remove("0000A1F3")  # ... now it is
        clock.now += 61
        await journal.sweep()
        assert kept(path) == [("0000B000", "ENROUTE", "0000B000")]
        clock.now += 3600  # no message waits longer than status_timeout + grace
        await journal.sweep()
        assert kept(path) == []
        n.cancel_scope.cancel()


# -- MO from upstream: the same content within ten minutes is one MO, across restarts too ---------


class NoRoute:
    """The store's inbound policy, reduced to what this test needs: no ESME to route to."""

    def recipient(self, device: str, channel: str) -> None:
        return None

    def route(self, device: str, channel: str, recipient: str | None) -> None:
        return None

    def rows(self, mo: Any) -> list[tuple[str, float]]:
        return []

    def keyword(self, text: str) -> None:
        return None


async def test_an_mo_sent_again_is_the_same_mo_within_ten_minutes_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "bridge.sqlite3"
    clock = Clock()
    emu = SmscEmulator()

    async def one_life(advance: float) -> str:
        """Start the connector ``advance`` seconds later, take the MO the SMSC sends, store it
        like the inbound poller does, answer it, stop; returns the MO's key."""
        clock.now += advance
        async with trio.open_nursery() as n:
            store = await open_store(path, n)
            drv = await connector(n, port, store, clock)
            await emu.inject_mo("+15559999", "12345", "the same text")
            await wait_for(lambda: len(drv._inbox) == 1)
            [sms] = await drv.inbox()
            await store.add_inbound(drv.name, [sms], NoRoute())
            await drv.delete_inbox([sms])
            await drv.aclose()
            n.cancel_scope.cancel()
        store.close()
        return sms.device_key

    async with trio.open_nursery() as outer:
        port = await outer.start(emu.serve)
        first = await one_life(0)
        assert await one_life(599) == first  # the SMSC's resend, after a restart: the same MO
        assert await one_life(2) != first  # 601 s after the first: a new MO with the same text
        outer.cancel_scope.cancel()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM inbound").fetchone()[0] == 2
