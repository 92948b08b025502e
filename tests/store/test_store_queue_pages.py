"""The store's queries that must not grow with the backlog (issue 14: a million queued): paging
the queues and timers, what a start loads, the expiry sweep; each is answered from an index,
never by reading the whole messages table. Checked through SQLite's own
query plan, on the real schema, for the exact SQL the store runs (captured with a trace)."""

from __future__ import annotations

import re
import sqlite3

import pytest

from bridge.lifecycle import State
from bridge.store import NewMessage, QueueEntry, Store
from bridge.store.schema import NOT_FINAL, migrate


def plans(db_path, statements):
    db = sqlite3.connect(db_path)
    out = {}
    for sql in statements:
        if sql.lstrip().upper().startswith("SELECT"):
            out[sql] = " / ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql))
    return out


@pytest.fixture
def traced(store):
    seen: list[str] = []
    for conn in (store._wconn, store._rconn):
        conn.set_trace_callback(seen.append)
    return seen


async def test_paging_and_start_queries_use_indexes(store, traced):
    for prio, schedule in [(0, None), (1, None), (0, store.clock() + 60)]:
        await store.accept(NewMessage(esme="e", destination_addr="+49", body=b"x", priority=prio,
                                      route="r", schedule_at=schedule))
    traced.clear()
    counts, pages = await store.queued_page("r", True, {}, 10)
    assert counts == {0: 1, 1: 1} and [len(pages[p]) for p in (0, 1)] == [1, 1]
    assert [e.state for _due, e in await store.timers_page(None, 10)] == [State.SCHEDULED]
    assert await store.load_in_progress() == []
    assert await store.queued_routes() == {"r"}
    assert await store.expire_waiting(store.clock(), lambda r: []) == []
    found = plans(store.path, traced)
    assert found, "no SELECT was traced"
    for sql, plan in found.items():
        assert not re.search(r"SCAN messages(?! USING (COVERING )?INDEX)", plan), f"{sql}\n  -> {plan}"


def test_counting_active_messages_uses_the_index_of_active_messages(tmp_path):
    db = sqlite3.connect(tmp_path / "b.sqlite3", isolation_level=None)
    migrate(db)
    plan = " / ".join(r[3] for r in db.execute(f"EXPLAIN QUERY PLAN SELECT count(*) FROM messages WHERE {NOT_FINAL}"))
    assert "messages_active" in plan, plan
