"""The group-commit engine: ids, batching, one bad operation, a full disk."""

import functools
import sqlite3
import threading

import pytest
import trio
import trio.testing

from bridge.lifecycle import State
from bridge.store import NewMessage, Store, StoreError


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


async def test_ping_reads_and_fails_once_closed(store):
    await store.ping()
    store.close()
    with pytest.raises(Exception):
        await store.ping()


async def test_close_waits_for_a_commit_running_in_its_thread(tmp_path, nursery):
    # A test (or a shutdown) that closed the store while the writer thread was still inside a
    # commit crashed the process (a segmentation fault inside SQLite, seen under the parallel
    # test run). close() now waits for the running commit; later writes fail cleanly.
    import threading

    store = Store(tmp_path / "b.sqlite3")
    store.inline_commit_seconds = 0  # the commit runs in the writer's thread, as a batch would
    store.open()
    await nursery.start(store.run)
    inside, release = threading.Event(), threading.Event()

    def slow_op(conn):
        inside.set()
        release.wait(5)
        conn.execute("INSERT INTO meta (key, value) VALUES ('k', 'v')")
        return "committed"

    result: list = []

    async def write() -> None:
        result.append(await store.write(slow_op))

    nursery.start_soon(write)
    await trio.to_thread.run_sync(inside.wait)
    closer = threading.Thread(target=store.close)
    closer.start()  # close() from another thread while the commit is inside SQLite
    release.set()
    await trio.to_thread.run_sync(closer.join)
    with trio.fail_after(5):
        while not result:
            await trio.sleep(0.01)
    assert result == ["committed"]
    with pytest.raises(StoreError):
        await store.write(slow_op)


async def test_a_commit_does_not_queue_behind_threads_other_work_holds(store):
    """With 512 channels reading at once, every token of trio's default thread limiter was
    taken (40) and each group commit waited behind the reads for a thread: 0.3-0.5 s per write
    (bench/channels.py --many). The writer has a thread of its own."""
    store.inline_commit_seconds = 0  # as for a group commit of several submits
    limiter = trio.to_thread.current_default_thread_limiter()
    release = threading.Event()
    async with trio.open_nursery() as n:
        for _ in range(int(limiter.total_tokens)):
            n.start_soon(functools.partial(trio.to_thread.run_sync, release.wait, abandon_on_cancel=True))
        await trio.testing.wait_all_tasks_blocked()
        assert limiter.available_tokens == 0
        try:
            with trio.move_on_after(10) as late:  # a hang guard, not a timing
                accepted = await store.accept(msg("through"))
        finally:
            release.set()
    assert not late.cancelled_caught, "the commit waited for a thread of the default limiter"
    assert accepted.complete
    assert (await store.record(int(accepted.message_id))).text == "through"
async def test_reads_waiting_their_turn_hold_no_worker_threads(store, monkeypatch):
    """Reads share one connection, one at a time. Many at once (the report tracker, the
    scheduler and the outbox read together) wait in trio, not each in a worker thread of its
    own: 14 to 32 such threads came and went under steady sending, and the C heap grew
    fragmented (bench/soak.py)."""
    import time

    from bridge.store import engine

    busy = most = 0
    guard = threading.Lock()
    in_thread = engine._in_thread

    async def counting_in_thread(fn, *args, **kw):
        def counted():  # from the moment a worker thread takes the call up
            nonlocal busy, most
            with guard:
                busy += 1
                most = max(most, busy)
            try:
                return fn(*args)
            finally:
                with guard:
                    busy -= 1

        return await in_thread(counted, **kw)

    def slow_read(conn):
        time.sleep(0.002)  # the connection is held meanwhile
        return conn.execute("SELECT 1").fetchone()

    monkeypatch.setattr(engine, "_in_thread", counting_in_thread)
    async with trio.open_nursery() as n:
        for _ in range(30):
            n.start_soon(store.read, slow_read)
    assert most == 1, f"{most} worker threads taken at once by 30 concurrent reads"


async def test_reads_that_queued_up_share_one_thread_hop_each_with_its_own_answer(store, monkeypatch):
    """At 512 channels ~230 reads a second each took a hop of its own and then handed the turn
    on through the event loop: a read waited 0.3-1.4 s on a loaded machine (bench/channels.py
    --many). The reads that queue up while one hop runs now go together in the next one."""
    from bridge.store import engine

    hops = 0
    first_hop_started = threading.Event()
    release = threading.Event()
    in_thread = engine._in_thread

    async def counting_in_thread(fn, *args, **kw):
        nonlocal hops
        hops += 1

        def held(*args):
            first_hop_started.set()
            release.wait(10)  # the first hop is held until every other read has queued up
            return fn(*args)

        return await in_thread(held if hops == 1 else fn, *args, **kw)

    monkeypatch.setattr(engine, "_in_thread", counting_in_thread)

    def boom(conn):
        raise ValueError("a read that fails")

    answers: dict[int, object] = {}

    async def one(i: int) -> None:
        try:
            answers[i] = await store.read(
                lambda conn: conn.execute("SELECT ?", (i,)).fetchone()[0] if i != 7 else boom(conn)
            )
        except ValueError as exc:
            answers[i] = str(exc)

    async def cancelled() -> None:
        with trio.move_on_after(0):
            await store.read(lambda conn: conn.execute("SELECT 1").fetchone())
        answers[-1] = "gave up"

    async with trio.open_nursery() as n:
        n.start_soon(one, 0)
        await trio.to_thread.run_sync(first_hop_started.wait, 10)
        for i in range(1, 30):
            n.start_soon(one, i)
        n.start_soon(cancelled)
        await trio.testing.wait_all_tasks_blocked()
        release.set()
    assert hops == 2, f"{hops} thread hops for 30 reads, 29 of them queued behind the first"
    assert answers == {-1: "gave up", **{i: (i if i != 7 else "a read that fails") for i in range(30)}}
    # Nothing stalls afterwards: the turn was handed on.
    assert await store.read(lambda conn: conn.execute("SELECT 42").fetchone()[0]) == 42


async def test_a_lone_commit_runs_on_the_event_loop_and_a_group_in_the_writer_thread(store):
    """At window 1 the hop to the writer's thread and back cost more than the commit itself
    (bench/ingest.py --windows 1: 800/s with the hop, 1,300/s without). A commit of one
    operation runs on the loop's thread while commits are fast; a group, or any commit after
    slow ones, goes to the thread so that the loop is never held long."""
    loop = threading.get_ident()
    seen: list[int] = []

    def op(conn):
        seen.append(threading.get_ident())
        conn.execute("INSERT INTO meta (key, value) VALUES (?, 'v') ON CONFLICT(key) DO NOTHING", (str(len(seen)),))

    await store.write(op)
    assert seen == [loop]

    seen.clear()
    async with trio.open_nursery() as n:  # three writes queued before the writer runs: one group
        for _ in range(3):
            n.start_soon(store.write, op)
    assert len(seen) == 3 and loop not in seen

    seen.clear()
    store.commit_seconds = 0.5  # the last commits were slow (an SD card)
    await store.write(op)
    assert seen and seen[0] != loop


async def test_the_writer_checkpoints_between_commits_and_the_wal_stops_growing(tmp_path, nursery):
    """SQLite's own checkpoint ran inside the commit that crossed 1,000 pages, so one submit
    in about 140 waited several ms for it, on the event loop once lone commits ran there. The
    writer now checkpoints after the batch's answers, and a complete checkpoint lets the next
    commit write the WAL from its start: without it the file grew with every commit."""
    s = Store(tmp_path / "b.sqlite3")
    s.checkpoint_after = (20, 10**9)
    s.open()
    await nursery.start(s.run)
    wal = tmp_path / "b.sqlite3-wal"

    async def checkpoints(n: int) -> None:  # each runs after its batch was answered
        with trio.fail_after(10):
            while s.checkpoints < n:
                await trio.sleep(0.001)

    for i in range(40):
        await s.accept(msg(f"warm {i}"))
    await checkpoints(2)
    size = wal.stat().st_size
    for i in range(400):
        await s.accept(msg(f"m {i}"))
    await checkpoints(22)
    assert wal.stat().st_size <= size  # written again from its start, never longer
    s.close()
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    assert db.execute("SELECT count(*) FROM messages").fetchone() == (440,)


async def test_a_write_lock_held_elsewhere_never_holds_the_event_loop(store, tmp_path):
    """A `store check`, a backup or a test holding the write lock made a commit wait up to the
    busy timeout (30 s). A lone commit on the event loop must not wait there: it goes to the
    writer's thread and waits in it, while the loop serves everything else."""
    loop = threading.get_ident()
    other = sqlite3.connect(tmp_path / "b.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    seen: list[int] = []

    def op(conn):
        seen.append(threading.get_ident())
        conn.execute("INSERT INTO meta (key, value) VALUES ('locked', 'then free')")

    async with trio.open_nursery() as n:
        n.start_soon(store.write, op)
        with trio.fail_after(10):  # a hang guard: the loop keeps turning meanwhile
            for _ in range(5):
                await trio.sleep(0.01)
        assert not seen  # the writer waits for the lock, in its thread
        other.execute("ROLLBACK")
    assert len(seen) == 1 and seen[0] != loop


async def test_a_reader_that_read_everything_has_its_lone_commit_answered_in_its_own_turn(store):
    """At window 1 the SMPP reader, having read all its peer sent, asks for the commit at once
    (commit_now) instead of waiting for the writer task's turn: the answer is given before the
    reader's next wait. Two pending writes stay the writer's, as one group commit; so does a
    lone one while commits are slow."""
    await trio.testing.wait_all_tasks_blocked()  # the writer waits for work
    answers: list[tuple[object, object]] = []

    def done(result, error):
        answers.append((result, error))

    async def answered(n: int) -> None:  # by the writer task
        with trio.fail_after(10):
            while len(answers) < n:
                await trio.sleep(0.001)

    store.accept_nowait(msg("one"), done)
    store.commit_now()
    assert len(answers) == 1 and answers[0][1] is None  # before this task yielded once

    commits = store.commits
    store.accept_nowait(msg("two"), done)
    store.accept_nowait(msg("three"), done)
    store.commit_now()
    assert len(answers) == 1
    await answered(3)
    assert store.commits == commits + 1  # one group

    await trio.testing.wait_all_tasks_blocked()
    store.commit_seconds = 0.5  # the last commits were slow (an SD card)
    store.accept_nowait(msg("four"), done)
    store.commit_now()
    assert len(answers) == 3
    await answered(4)
    assert [int(r.message_id) for r, _e in answers] == sorted(int(r.message_id) for r, _e in answers)


async def test_a_commit_made_in_a_readers_turn_still_gets_its_checkpoint(tmp_path, nursery):
    s = Store(tmp_path / "b.sqlite3")
    s.checkpoint_after = (1, 1)
    s.open()
    await nursery.start(s.run)
    await trio.testing.wait_all_tasks_blocked()
    answered = []
    s.accept_nowait(msg("one"), lambda r, e: answered.append(e))
    s.commit_now()
    assert answered == [None]
    with trio.fail_after(10):  # the writer task runs it, on its thread
        while s.checkpoints < 1:
            await trio.sleep(0.001)
    s.close()


async def test_a_failing_after_commit_hook_holds_back_no_answer(store, caplog):
    """A hook ran before its operation's answer, in the same try: a hook's bug left the write
    unanswered for ever (an awaiting caller hung, a submit never got its submit_sm_resp)."""

    def op(conn):
        conn.execute("INSERT INTO meta (key, value) VALUES ('hooked', 'yes')")
        store.after_commit(lambda: 1 / 0)
        return "stored"

    with trio.fail_after(10):
        assert await store.write(op) == "stored"
    assert "after-commit hook failed" in caplog.text
