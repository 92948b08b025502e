"""A SENT message's intermediate stat from the network (store/upstream.py, note_network_stat):
a sub-status of SENT, never a change of a final message, and what query_sm answers while sent."""

from bridge.lifecycle import State, smpp_state
from bridge.smpp.constants import MessageState
from bridge.store import NewMessage, parse_id


async def sent_message(store):
    acc = await store.accept(NewMessage(esme="app", destination_addr="+491701", body=b"hi"))
    for state in (State.QUEUED, State.SUBMITTING, State.SENT):
        await store.transition(acc.message_id, state)
    return acc, parse_id(acc.message_id)


async def test_the_network_stat_of_a_sent_message_is_kept_with_an_event(store):
    acc, mid = await sent_message(store)
    rec = await store.note_network_stat(mid, "ACCEPTD")
    assert (rec.state, rec.network_stat) == (State.SENT, "ACCEPTD")
    assert smpp_state(rec.state, rec.network_stat) is MessageState.ACCEPTED
    assert await store.note_network_stat(mid, "ACCEPTD") is None  # the same again: no news
    events = await store.events(acc.message_id)
    assert [(e.state, e.detail) for e in events][-1] == ("sent", "network: ACCEPTD")
    assert [e.detail for e in events].count("network: ACCEPTD") == 1


async def test_a_final_message_keeps_its_state_whatever_the_network_says_later(store):
    acc, mid = await sent_message(store)
    await store.transition(acc.message_id, State.DELIVERED)
    assert await store.note_network_stat(mid, "ENROUTE") is None
    rec = await store.get(acc.message_id)
    assert (rec.state, rec.network_stat) == (State.DELIVERED, None)
    assert smpp_state(rec.state, "ACCEPTD") is MessageState.DELIVERED
    assert store.active_count == 0


async def test_the_intermediate_receipt_commits_with_the_stat_and_sees_every_part_id(store):
    # The receipt rows are built from the record as this same transaction has it, part ids
    # included (an ESME with per-part receipts gets one per id it was given).
    ids = []
    for seq, chunk in ((1, "abc"), (2, "def")):
        acc = await store.accept(NewMessage(esme="app", destination_addr="+491702", body=chunk.encode(),
                                            concat=(9, 2, seq, 8), registered_delivery=0x11))
        ids.append(acc.message_id)
    mid = parse_id(ids[0])
    for state in (State.QUEUED, State.SUBMITTING, State.SENT):
        await store.transition(ids[0], state)
    seen = []

    def rows(rec):
        seen.append((rec.network_stat, rec.part_ids))
        return [("app", "receipt", f"stat:{rec.network_stat}", 0.0)]

    rec = await store.note_network_stat(mid, "ACCEPTD", outbox=rows)
    assert rec.network_stat == "ACCEPTD"
    assert seen == [("ACCEPTD", (parse_id(ids[1]),))]
    assert [i.payload for i in await store.pending_outbox("app")] == ["stat:ACCEPTD"]
    assert await store.note_network_stat(mid, "ACCEPTD", outbox=rows) is None  # no news: no row
    assert len(seen) == 1
