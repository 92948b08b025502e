import sqlite3

import pytest
import trio

from bridge.lifecycle import InvalidTransition, State
from bridge.store import SCHEMA_VERSION, NewMessage, Store, StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3", clock=Clock())
    s.open()
    await nursery.start(s.run)
    yield s
    s.close()


def msg(text="hi", dest="+491701", **kw):
    return NewMessage(esme=kw.pop("esme", "app"), destination_addr=dest, body=text.encode(), **kw)


async def test_accept_assigns_increasing_ids_and_commits(store, tmp_path):
    a = await store.accept(msg("one"))
    b = await store.accept(msg("two"))
    assert a.complete and int(b.message_id) == int(a.message_id) + 1
    assert len(a.message_id) == 10 and a.message_id.isdigit()
    # Visible to an independent connection: it is committed.
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    assert db.execute("SELECT text, state FROM messages ORDER BY id").fetchall() == [
        ("one", "accepted"),
        ("two", "accepted"),
    ]
    assert store.active_count == 2


async def test_concurrent_accepts_share_group_commits(store):
    results = []

    async def one(i):
        results.append(await store.accept(msg(f"m{i}")))

    async with trio.open_nursery() as n:
        for i in range(200):
            n.start_soon(one, i)
    assert len({r.message_id for r in results}) == 200
    assert store.commits < 200  # many messages per commit


async def test_ids_never_go_back_after_reopen(tmp_path):
    s = Store(tmp_path / "b.sqlite3")
    s.open()
    async with trio.open_nursery() as n:
        await n.start(s.run)
        first = await s.accept(msg())
        await s.transition(first.message_id, State.DELETED)
        n.cancel_scope.cancel()
    s.close()
    # Even if the newest row disappears (retention purge), its id is not handed out again.
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    db.execute("DELETE FROM messages")
    db.commit()
    db.close()
    s = Store(tmp_path / "b.sqlite3")
    s.open()
    async with trio.open_nursery() as n:
        await n.start(s.run)
        second = await s.accept(msg())
        n.cancel_scope.cancel()
    s.close()
    assert int(second.message_id) > int(first.message_id)


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


async def test_transitions_are_checked_and_recorded(store):
    acc = await store.accept(msg())
    await store.transition(acc.message_id, State.QUEUED, "route default")
    with pytest.raises(InvalidTransition):
        await store.transition(acc.message_id, State.DELIVERED)
    await store.transition(acc.message_id, State.SUBMITTING, channel="goip1/1")
    await store.transition(acc.message_id, State.SENT)
    rec = await store.transition(acc.message_id, State.DELIVERED)
    assert rec.state is State.DELIVERED and rec.final_at is not None
    assert [e.state for e in await store.events(acc.message_id)] == ["queued", "submitting", "sent", "delivered"]
    assert store.active_count == 0


async def test_a_failing_operation_does_not_harm_its_batch(store):
    def broken(conn):
        raise RuntimeError("bug in one operation")

    async def ok(i, out):
        out.append(await store.accept(msg(f"ok{i}")))

    out = []
    errors = []

    async def bad():
        try:
            await store.write(broken)
        except RuntimeError as exc:
            errors.append(exc)

    async with trio.open_nursery() as n:
        for i in range(5):
            n.start_soon(ok, i, out)
        n.start_soon(bad)
        for i in range(5, 10):
            n.start_soon(ok, i, out)
    assert len(out) == 10 and len(errors) == 1
    assert len({o.message_id for o in out}) == 10


async def test_disk_full_fails_the_submit_and_recovers(store):
    await store.accept(msg("fits"))
    (pages,) = store._wconn.execute("PRAGMA page_count").fetchone()
    store._wconn.execute(f"PRAGMA max_page_count={pages}")
    before = store.active_count
    with pytest.raises(StoreError) as err:
        for i in range(500):
            await store.accept(msg("x" * 1000))
    assert "full" in str(err.value)
    assert store.active_count - before == i  # only what was committed counts
    store._wconn.execute("PRAGMA max_page_count=1073741823")
    assert (await store.accept(msg("space is back"))).complete


async def test_cancel_and_replace(store):
    a = await store.accept(msg("to cancel", source_addr="me"))
    b = await store.accept(msg("to replace"))
    assert await store.cancel("app", message_id=a.message_id) == 1
    assert (await store.get(a.message_id)).state is State.DELETED
    assert await store.cancel("app", message_id=a.message_id) == 0  # already final
    with pytest.raises(KeyError):
        await store.cancel("other-esme", message_id=b.message_id)
    assert await store.replace("app", b.message_id, source_addr="", body=b"replaced", schedule_at=None,
                               expire_at=None, registered_delivery=1)
    rec = await store.get(b.message_id)
    assert rec.text == "replaced" and rec.registered_delivery == 1
    await store.transition(b.message_id, State.QUEUED)
    await store.transition(b.message_id, State.SUBMITTING)
    assert not await store.replace("app", b.message_id, source_addr="", body=b"late", schedule_at=None,
                                   expire_at=None, registered_delivery=0)


async def test_cancel_by_destination(store):
    for _ in range(3):
        await store.accept(msg("bulk", dest="+4912", source_addr="me"))
    await store.accept(msg("keep", dest="+4913", source_addr="me"))
    assert await store.cancel("app", destination_addr="+4912", source_addr="me") == 3
    assert store.active_count == 1


async def test_schema_version_is_recorded(store, tmp_path):
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "b.sqlite3").open()


async def test_part_states_only_move_through_the_lifecycle_table(store):
    from bridge.lifecycle import InvalidTransition
    from bridge.store import NewMessage

    acc = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="r"))
    mid = int(acc.message_id)
    await store.begin_part(mid, 1, 1, "a", "1", None)
    await store.update_part(mid, 1, "sent", ref="x1")
    await store.update_part(mid, 1, "delivered")
    with pytest.raises(InvalidTransition):
        await store.update_part(mid, 1, "sent", ref="x2")  # a delivered part is never sent again
    with pytest.raises(InvalidTransition):
        await store.begin_part(mid, 1, 1, "a", "1", None)  # nor sent twice
    assert [p.state for p in await store.parts(mid)] == ["delivered"]
