"""The outbox: deliver_sm waiting for ESMEs, retried, refused, expired."""

import trio


async def done_write(store, method, *args):
    """Call one of the *_nowait outbox methods and wait for its commit."""
    out = trio.Event()
    errors = []

    def done(_result, error):
        errors.append(error)
        out.set()

    getattr(store, method)(*args, done)
    await out.wait()
    assert errors == [None]


async def test_a_row_waits_until_its_esme_took_it_and_wakes_the_sender_after_commit(store):
    woken = []
    store.on_outbox = woken.append
    await store.add_outbox("app", "receipt", 5, "payload-1", store.clock() + 60)
    assert woken == ["app"]
    [item] = await store.pending_outbox("app")
    assert (item.kind, item.message, item.payload, item.attempts) == ("receipt", 5, "payload-1", 0)
    assert await store.outbox_esmes() == ["app"]
    assert await store.pending_outbox("other") == []
    await done_write(store, "outbox_delivered_nowait", item.id)
    assert await store.pending_outbox("app") == []
    assert await store.outbox_esmes() == []


async def test_a_retried_row_is_held_back_until_its_next_try(store):
    await store.add_outbox("app", "receipt", 1, "p", store.clock() + 600)
    [item] = await store.pending_outbox("app")
    await done_write(store, "outbox_retry_nowait", item.id, store.clock() + 30)
    assert await store.pending_outbox("app") == []
    store.clock.now += 30
    [again] = await store.pending_outbox("app")
    assert again.id == item.id and again.attempts == 1


async def test_a_refused_row_is_done_with_its_status_kept(store):
    await store.add_outbox("app", "receipt", 1, "p", store.clock() + 600)
    [item] = await store.pending_outbox("app")
    await done_write(store, "outbox_refused_nowait", item.id, 0x45)
    assert await store.pending_outbox("app") == []
    [(refused, status)] = await store.refused_outbox("app")
    assert refused.id == item.id and status == 0x45
    assert await store.refused_outbox("other") == []


async def test_rows_past_their_retention_expire_and_stats_show_what_waits(store):
    now = store.clock()
    await store.add_outbox("app", "receipt", 1, "old", now + 10)
    await store.add_outbox("app", "receipt", 2, "new", now + 100)
    await store.add_outbox("app", "mo", 3, "mo", now + 100)
    assert await store.outbox_stats() == {("app", "receipt"): (2, now), ("app", "mo"): (1, now)}
    store.clock.now += 11
    assert await store.expire_outbox() == 1
    assert [i.payload for i in await store.pending_outbox("app")] == ["new", "mo"]
    assert await store.outbox_stats() == {("app", "receipt"): (1, now), ("app", "mo"): (1, now)}
