"""Long messages submitted part by part: resent parts, reused references, mixed codings.

A client that loses a submit_sm_resp sends the same part again (same UDH reference, same
sequence number, same octets). The store must recognise it, answer with the id it gave the
first time, and never let it open a group that a later message with the same reference (8-bit
references wrap after 256 messages) would complete.
"""

import sqlite3

from bridge.lifecycle import State
from bridge.store import NewMessage
from bridge.smpp.text import gsm7_encode, ucs2_encode


def part(body, seq, *, total=2, ref=5, dc=0, esme="app", bits=8, **kw):
    if isinstance(body, str):
        body = gsm7_encode(body) if dc == 0 else ucs2_encode(body)
    return NewMessage(
        esme=esme, destination_addr="+491701", source_addr="shop", body=body, data_coding=dc,
        concat=(ref, total, seq, bits), **kw,
    )


def all_texts(tmp_path):
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    try:
        return sorted(r[0] for r in db.execute("SELECT text FROM messages"))
    finally:
        db.close()


async def test_a_part_resent_after_assembly_is_the_same_part_not_a_new_group(store, tmp_path):
    a1 = await store.accept(part("Message A first half. ", 1))
    a2 = await store.accept(part("Message A second half.", 2))
    assert a2.complete
    # submit_sm_resp for A2 was lost: the client sends A2 again.
    again = await store.accept(part("Message A second half.", 2))
    assert again.message_id == a2.message_id and again.duplicate
    assert store.active_count == 1  # the message; no new partial group
    # The next message reusing ref 5 must not be completed by the resent A2.
    b1 = await store.accept(part("Message B first half. ", 1))
    assert not b1.complete
    b2 = await store.accept(part("Message B second half.", 2))
    assert b2.complete
    assert all_texts(tmp_path) == [
        "Message A first half. Message A second half.",
        "Message B first half. Message B second half.",
    ]
    assert (await store.get(again.message_id)).message_id == a1.message_id
    assert store.resent_parts == 1


async def test_a_part_resent_after_assembly_and_after_the_next_group_started(store, tmp_path):
    await store.accept(part("A1 ", 1))
    a2 = await store.accept(part("A2", 2))
    await store.accept(part("B1 ", 1))
    late = await store.accept(part("A2", 2))  # a late retry while B waits for its part 2
    assert late.message_id == a2.message_id
    await store.accept(part("B2", 2))
    assert all_texts(tmp_path) == ["A1 A2", "B1 B2"]


async def test_same_ref_and_seq_with_other_content_after_assembly_is_a_new_message(store, tmp_path):
    await store.accept(part("A1 ", 1))
    a2 = await store.accept(part("A2", 2))
    b2 = await store.accept(part("B2", 2))  # the reference wrapped; B's parts come in any order
    assert b2.message_id != a2.message_id and not b2.complete and not b2.duplicate
    await store.accept(part("B1 ", 1))
    assert all_texts(tmp_path) == ["A1 A2", "B1 B2"]


async def test_a_resend_after_the_window_is_a_new_part(store, tmp_path):
    await store.accept(part("A1 ", 1))
    a2 = await store.accept(part("A2", 2))
    store.clock.now += 601  # the window is partial_timeout
    again = await store.accept(part("A2", 2))
    assert again.message_id != a2.message_id and not again.duplicate


async def test_the_resend_memory_is_pruned(store, tmp_path):
    await store.accept(part("A1 ", 1))
    await store.accept(part("A2", 2))
    store.clock.now += 601
    await store.expire_partials()
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    assert db.execute("SELECT count(*) FROM assembled_parts").fetchone()[0] == 0


async def test_a_part_resent_while_its_group_is_incomplete_is_stored_once(store):
    a = await store.accept(part("A1 ", 1, total=3))
    b = await store.accept(part("A1 ", 1, total=3))
    assert a.message_id == b.message_id and b.duplicate
    assert store.active_count == 1


async def test_other_content_for_a_part_of_an_incomplete_group_supersedes_it(store, tmp_path):
    # A lost its part 2 for good; 256 messages later B reuses the reference. B must not be
    # answered with A's id, and A must not be joined with B.
    old = await store.accept(part("A1 ", 1, registered_delivery=1))
    b1 = await store.accept(part("B1 ", 1))
    assert b1.message_id != old.message_id and not b1.duplicate
    rec = await store.get(old.message_id)
    assert rec.state is State.EXPIRED and "superseded" in rec.error
    b2 = await store.accept(part("B2", 2))
    assert b2.complete
    assert (await store.get(b2.message_id)).text == "B1 B2"
    assert store.active_count == 1


async def test_parts_with_different_codings_are_decoded_each_with_its_own(store):
    # Part 1 in GSM 7-bit, part 2 in UCS2 (a client that picks the coding per part).
    await store.accept(part("Grüße aus ", 1, dc=0))
    done = await store.accept(part("Москва ☺", 2, dc=8))
    rec = await store.get(done.message_id)
    assert rec.text == "Grüße aus Москва ☺"
    assert rec.data_coding == 8  # the joined text needs UCS2


async def test_parts_with_different_gsm_codings_keep_gsm(store):
    await store.accept(part("Hello ", 1, dc=0))
    done = await store.accept(part(b"world", 2, dc=3))  # Latin-1
    rec = await store.get(done.message_id)
    assert rec.text == "Hello world" and rec.data_coding == 0


async def test_a_late_resend_of_part_1_does_not_end_the_next_group(store, tmp_path):
    a1 = await store.accept(part("A1 ", 1))
    await store.accept(part("A2", 2))
    await store.accept(part("B1 ", 1))
    late = await store.accept(part("A1 ", 1))
    assert late.message_id == a1.message_id and late.duplicate
    await store.accept(part("B2", 2))
    assert all_texts(tmp_path) == ["A1 A2", "B1 B2"]
    assert store.superseded_groups == 0
