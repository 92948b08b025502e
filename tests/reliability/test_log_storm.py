"""Logs under stress (issue 12): a storm of refused submits is a few lines and a count, not one
line per PDU. Before, a full disk wrote about two ERROR lines per refused submit (1,974 in 10 s)
into the journal on the same full disk."""

from __future__ import annotations

import io
import logging

import trio

from bridge.logs import RepeatFilter, configure_logging
from bridge.store import NewMessage, Store, StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_repeats_beyond_the_burst_are_counted_and_summarised() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    clock = Clock()
    repeats = RepeatFilter(handler, clock=clock)
    handler.addFilter(repeats)
    log = logging.getLogger("storm.test")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    try:
        for i in range(1000):
            log.error("commit %d failed: %s", i, "disk full")
            clock.now += 0.01
        log.error("another kind of trouble")  # a different template: written
        for i in range(10):
            log.warning("ambiguous send of message %d", i)  # warnings are events: each written
        assert stream.getvalue().count("\n") == 14
        clock.now += 60  # the window is over: the next line brings the summary first
        log.info("later")
        lines = stream.getvalue().splitlines()
        assert lines[:3] == [f"ERROR storm.test: commit {i} failed: disk full" for i in range(3)]
        assert lines[14] == ("ERROR storm.test: 997 more like this in 70 s, not written one by one; "
                            "the last: commit 999 failed: disk full")
        assert lines[15] == "INFO storm.test: later"
        # A new storm starts a new window: its first lines are written again.
        log.error("commit %d failed: %s", 1000, "disk full")
        assert stream.getvalue().splitlines()[-1].endswith("commit 1000 failed: disk full")
    finally:
        log.removeHandler(handler)


async def test_failed_commit_storm_writes_a_few_lines_and_the_count(tmp_path) -> None:
    stream = io.StringIO()
    configure_logging("info", "text", stream=stream)
    store = Store(tmp_path / "b.sqlite3")
    store.open()
    refused = 0
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            assert store._wconn is not None
            # The database is full: every commit fails, as on a full disk.
            (pages,) = store._wconn.execute("PRAGMA page_count").fetchone()
            store._wconn.execute(f"PRAGMA max_page_count={pages}")
            for i in range(300):
                done = trio.Event()
                result: list[BaseException | None] = []

                def answer(_r, err, done=done, result=result):  # type: ignore[no-untyped-def]
                    result.append(err)
                    done.set()

                store.accept_nowait(NewMessage(esme="app", destination_addr="+491701", body=b"x" * 2000), answer)
                await done.wait()
                refused += isinstance(result[0], StoreError)
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert refused == 300
    errors = [line for line in stream.getvalue().splitlines() if " ERROR " in line]
    assert len(errors) <= RepeatFilter.BURST, errors
    logging.getLogger().handlers[0].filters[0].flush()  # what happens at exit
    summary = stream.getvalue().splitlines()[-1]
    assert f"{300 - RepeatFilter.BURST} more like this" in summary and "store commit failed" in summary
