"""State changes: the lifecycle table, cancel_sm, replace_sm, device parts."""

import pytest

from bridge.lifecycle import InvalidTransition, State
from bridge.store import NewMessage


def msg(text="hi", dest="+491701", **kw):
    return NewMessage(esme=kw.pop("esme", "app"), destination_addr=dest, body=text.encode(), **kw)


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


async def test_part_states_only_move_through_the_lifecycle_table(store):
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


async def _submitting(store):
    acc = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="r",
                                        registered_delivery=0x11))
    mid = int(acc.message_id)
    await store.begin_part(mid, 1, 1, "a", "1", "r0")
    return acc, mid


def _enroute(rec):
    return [("app", "receipt", f"enroute {rec.message_id} {rec.state.value}", 1e12)]


async def test_the_sent_mark_the_enroute_receipt_and_the_move_to_sent_commit_together(store):
    acc, mid = await _submitting(store)

    def broken(rec):
        raise ValueError("a bug while building the receipt")

    with pytest.raises(ValueError):
        await store.part_sent(mid, 1, 1, "r1", intermediate=broken)
    # Nothing of it was committed: the part is still in its device call, the message too.
    assert [(p.state, p.ref) for p in await store.parts(mid)] == [("submitting", None)]
    assert (await store.get(acc.message_id)).state is State.SUBMITTING
    assert await store.pending_outbox("app") == []

    await store.part_sent(mid, 1, 1, "r1", intermediate=_enroute)
    assert [(p.state, p.ref) for p in await store.parts(mid)] == [("sent", "r1")]
    assert (await store.get(acc.message_id)).state is State.SENT
    # The receipt was built from the message as stored in that transaction (before the move).
    assert [o.payload for o in await store.pending_outbox("app")] == [f"enroute {acc.message_id} submitting"]


async def test_a_part_that_is_not_the_last_stays_submitting_as_a_message(store):
    acc = await store.accept(NewMessage(esme="app", destination_addr="+4911", body=b"hi", route="r"))
    mid = int(acc.message_id)
    await store.begin_part(mid, 1, 2, "a", "1", None)
    await store.part_sent(mid, 1, 2, "r1")
    assert (await store.get(acc.message_id)).state is State.SUBMITTING
    assert await store.pending_outbox("app") == []


async def test_the_last_parts_status_and_the_final_state_commit_together(store):
    acc, mid = await _submitting(store)
    await store.part_sent(mid, 1, 1, "r1")
    with pytest.raises(InvalidTransition):  # SENT -> QUEUED is not in the table: nothing changes
        await store.move(mid, State.QUEUED, "wrong", part=(1, "delivered", None))
    assert [p.state for p in await store.parts(mid)] == ["sent"]
    with pytest.raises(InvalidTransition):  # a sent part cannot go back: the move is not stored
        await store.move(mid, State.DELIVERED, "delivered", part=(1, "submitting", None))
    assert (await store.get(acc.message_id)).state is State.SENT
    await store.move(mid, State.UNDELIVERABLE, "refused", part=(1, "failed", "E42"))
    assert [(p.state, p.error) for p in await store.parts(mid)] == [("failed", "E42")]
    assert (await store.get(acc.message_id)).state is State.UNDELIVERABLE
