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
