"""The opt-out list: number matching, changes after commit only, kept across restarts."""

import pytest
import trio

from bridge.store import InboundResult, Store, canonical_number, optout_key


def test_one_number_in_its_international_spellings_is_one_key():
    assert canonical_number(" 0049 170-123 (4567) ") == "+491701234567"
    assert {optout_key(n) for n in ("+491701234567", "00491701234567", "491701234567")} == {"491701234567"}
    assert optout_key("01701234567") != optout_key("+491701234567")  # national: not guessed


async def test_add_and_remove_change_the_list_and_announce_it(store):
    heard = []
    store.on_optout = lambda action, number: heard.append((action, number))
    assert not store.is_opted_out("+491701234567")
    assert await store.add_optout("0049 1701234567", keyword="STOP")
    assert store.is_opted_out("491701234567") and store.optout_count == 1
    assert not await store.add_optout("+491701234567")  # already on it
    [row] = await store.list_optouts()
    assert (row["number"], row["keyword"], row["source"]) == ("+491701234567", "STOP", "admin")
    assert await store.remove_optout("491701234567")
    assert not await store.remove_optout("491701234567")
    assert not store.is_opted_out("+491701234567") and store.optout_count == 0
    # Each change is announced with the number as it was written, in canonical form.
    assert heard == [("optout", "+491701234567"), ("optin", "491701234567")]


async def test_an_empty_number_is_refused(store):
    with pytest.raises(ValueError, match="phone number"):
        await store.add_optout(" - ")


async def test_a_change_that_does_not_commit_leaves_the_list_alone(store):
    def fails_after_the_change(conn):
        store._change_optout(conn, "+491700000001", "optout", "admin", None, InboundResult())
        raise RuntimeError("the rest of the operation failed")

    with pytest.raises(RuntimeError):
        await store.write(fails_after_the_change)
    assert not store.is_opted_out("+491700000001")
    assert await store.list_optouts() == []


async def test_the_list_is_read_back_at_open(tmp_path):
    s = Store(tmp_path / "o.sqlite3")
    s.open()
    async with trio.open_nursery() as n:
        await n.start(s.run)
        await s.add_optout("+491701234567")
        n.cancel_scope.cancel()
    s.close()
    again = Store(tmp_path / "o.sqlite3")
    again.open()
    try:
        assert again.is_opted_out("00491701234567") and again.optout_count == 1
    finally:
        again.close()
