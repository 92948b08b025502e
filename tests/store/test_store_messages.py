"""Accepting messages: whole ones, long ones part by part, lookups."""

from bridge.lifecycle import State
from bridge.store import NewMessage


def msg(text="hi", dest="+491701", **kw):
    return NewMessage(esme=kw.pop("esme", "app"), destination_addr=dest, body=text.encode(), **kw)


async def test_long_message_parts_in_any_order_become_one_message(store):
    body = "abcdefghijklmnopqrstuvwxyz"
    chunks = [body[:9], body[9:18], body[18:]]
    ids = {}
    for seq in (3, 1, 2):
        acc = await store.accept(msg(chunks[seq - 1], concat=(77, 3, seq, 8), registered_delivery=1 if seq == 1 else 0))
        ids[seq] = acc.message_id
        assert acc.complete == (seq == 2)
    rec = await store.get(ids[2])
    assert rec.text == body and rec.esme_parts == 3
    assert rec.message_id == ids[1]  # the logical id is part 1's id
    assert rec.receipt_message_id == ids[1]
    assert (await store.get(ids[3])).id == rec.id
    assert store.active_count == 1


async def test_a_retried_part_is_stored_once(store):
    a = await store.accept(msg("x", concat=(5, 2, 1, 8)))
    b = await store.accept(msg("x", concat=(5, 2, 1, 8)))
    assert a.message_id == b.message_id
    assert store.active_count == 1


async def test_parts_of_different_esmes_or_refs_do_not_mix(store):
    await store.accept(msg("a1", concat=(9, 2, 1, 8), esme="one"))
    await store.accept(msg("b2", concat=(9, 2, 2, 8), esme="two"))
    c = await store.accept(msg("a2", concat=(9, 2, 2, 16), esme="one"))  # 16-bit ref 9 differs
    assert not c.complete


async def test_incomplete_parts_expire_into_one_expired_message(store):
    store.partial_timeout = 60
    p1 = await store.accept(msg("first ", concat=(1, 3, 1, 8), registered_delivery=1))
    await store.accept(msg("third", concat=(1, 3, 3, 8)))
    store.clock.now += 61
    assert await store.expire_partials() == 1
    rec = await store.get(p1.message_id)
    assert rec.state is State.EXPIRED and rec.text == "first third"
    assert "2 of 3" in rec.error
    assert store.active_count == 0
    assert [e.state for e in await store.events(p1.message_id)] == ["expired"]


async def test_the_scheduler_finds_a_message_by_its_number(store):
    acc = await store.accept(msg("hello", route="r1", priority=2))
    mid = int(acc.message_id)
    rec = await store.record(mid)
    assert rec.message_id == acc.message_id and rec.text == "hello"
    entry = await store.queue_entry(mid)
    assert (entry.id, entry.route, entry.priority, entry.state, entry.attempts) == (mid, "r1", 2, State.QUEUED, 0)
    assert await store.record(mid + 100) is None
    assert await store.queue_entry(mid + 100) is None
