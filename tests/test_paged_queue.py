"""The scheduler's paged queues (bridge/scheduler/queues.py) against the unbounded queue they
replace, over a real store.

A property test: random runs of submits (priorities, schedule times, validity), picks (the
picked message is sent, put back in the queue, or retried later), cancel_sm, replace_sm (a new
schedule time, or none), the clock moving on (timers released, the expiry sweep) and restarts.
The paged route queue holds at most a tiny window (3) of each priority level, so almost every
pick pages from the store. It must hand out exactly what the old in-memory heap (fed the same
announcements, rebuilt from the whole store after a restart) hands out, in the same order; never
hand out a message twice without it being queued again; and at the end, with every timer due and
the queue drained, nothing may be left waiting in the store (nothing skipped).
"""

from __future__ import annotations

import heapq
import tempfile
from pathlib import Path

import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.lifecycle import InvalidTransition, State
from bridge.scheduler.queues import RouteQueue, TimerQueue
from bridge.store import NewMessage, QueueEntry, Store, format_id, run_inline

T0 = 1_700_000_000.0
WINDOW = 3


class UnboundedQueue:
    """The route queue as it was before paging: everything announced, in one heap."""

    def __init__(self) -> None:
        self.heap: list[tuple[int, int]] = []
        self.held: set[int] = set()

    def push(self, e: QueueEntry) -> None:
        if e.id not in self.held:
            heapq.heappush(self.heap, (-e.priority, e.id))
            self.held.add(e.id)

    def pop(self) -> int | None:
        while self.heap:
            _p, mid = heapq.heappop(self.heap)
            if mid in self.held:
                self.held.discard(mid)
                return mid
        return None


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


op = st.one_of(
    st.tuples(st.just("submit"), st.integers(0, 3), st.one_of(st.none(), st.integers(1, 60)),
              st.one_of(st.none(), st.integers(5, 200)), st.integers(1, 4)),
    st.tuples(st.just("pick"), st.integers(1, 6), st.lists(st.sampled_from(["send", "requeue", "retry"]), min_size=1, max_size=6)),
    st.tuples(st.just("cancel"), st.integers(0, 10_000)),
    st.tuples(st.just("replace"), st.integers(0, 10_000), st.one_of(st.none(), st.integers(0, 60))),
    st.tuples(st.just("tick"), st.integers(1, 40)),
    st.tuples(st.just("restart")),
    st.tuples(st.just("settle")),
    st.tuples(st.just("concurrent"), st.integers(1, 4), st.integers(0, 3), st.one_of(st.none(), st.integers(1, 60))),
)


class Harness:
    def __init__(self, store: Store, clock: Clock, nursery: trio.Nursery) -> None:
        self.store = store
        self.nursery = nursery
        self.holding: list[tuple[int, str]] = []  # handed to a channel, not acted on yet
        self.concurrent, self.concurrent_priority, self.concurrent_delay = 0, 0, None
        self.clock = clock
        self.ids: list[int] = []
        self.eligible: set[int] = set()  # queued (announced or stored) and not handed out since
        self.handed: list[int] = []
        self.store.on_new_message = self.announce
        self.fresh(restart=False)

    def fresh(self, *, restart: bool) -> None:
        self.paged = RouteQueue("r", window=WINDOW)
        self.timers = TimerQueue(window=WINDOW)
        self.old = UnboundedQueue()
        if restart:
            self.paged.mark_unknown()
            self.timers.mark_unknown()

    async def restart(self) -> None:
        self.fresh(restart=True)
        self.holding = []  # the channels went with the process: what they held is still QUEUED
        self.eligible = {int(m) for m in await self.store.ids_in_state(State.QUEUED, 1_000_000)}
        # The old recovery: every waiting message back into memory.
        for e in await self.store.load_active():
            if e.state is State.QUEUED:
                self.old.push(e)

    def announce(self, e: QueueEntry) -> None:
        if e.state is State.QUEUED:
            self.paged.push(e, self.clock())
            self.old.push(e)
            self.eligible.add(e.id)
        else:
            due = e.schedule_at if e.state is State.SCHEDULED else e.next_attempt_at
            self.timers.push(due or 0.0, e)

    async def state(self, mid: int) -> State:
        rec = await self.store.record(mid)
        assert rec is not None
        return rec.state

    def racing(self, page):  # type: ignore[no-untyped-def]
        """``page`` (a store read of the queues), with the messages of a ``concurrent`` op
        submitted so that they commit right after the read, before its caller resumes: their
        announcements arrive while the page is being read (the race ``Paged.merge`` covers)."""
        n, self.concurrent = self.concurrent, 0
        if not n:
            return page

        async def raced(*args):  # type: ignore[no-untyped-def]
            def submit_now() -> None:
                for _ in range(n):
                    self.store.accept_nowait(self.message(self.concurrent_priority, self.concurrent_delay, None), self.submitted)

            # A no-op write in the same group commit as the read, ahead of it: its hook queues
            # the submits, which the writer commits before the reader's task runs again.
            self.store.write_nowait(lambda conn: self.store.after_commit(submit_now), lambda r, e: None)
            return await page(*args)

        return raced

    def submitted(self, acc, error) -> None:  # type: ignore[no-untyped-def]
        assert error is None, error
        self.ids.append(int(acc.message_id))

    async def refill(self) -> None:
        await self.paged.refill(self.racing(self.store.queued_page), self.clock())

    async def pop_paged(self) -> int | None:
        """What the dispatcher does: pick from what is held, page in when asked to."""
        while True:
            e = self.paged.pop()
            if e is None:
                if self.paged.wants_refill():
                    await self.refill()
                    continue
                return None
            assert e.id in self.eligible, f"message {e.id} handed out twice without being queued again"
            self.eligible.discard(e.id)
            if await self.state(e.id) is State.QUEUED:
                return e.id  # what a channel acts on; anything else it re-reads and drops

    async def pop_old(self) -> int | None:
        while (mid := self.old.pop()) is not None:
            if await self.state(mid) is State.QUEUED:
                return mid
        return None

    async def pick(self, n: int, outcomes: list[str]) -> None:
        """Hand out up to ``n`` messages to channels, which act on them later (``settle``):
        until then they are still QUEUED in the store."""
        if self.paged.wants_refill():
            await self.refill()
        for i in range(n):
            got = await self.pop_paged()  # first: it may page, and messages come in meanwhile
            want = await self.pop_old()
            assert got == want, f"paged queue handed out {got}, the unbounded queue {want}"
            if got is None:
                return
            self.holding.append((got, outcomes[i % len(outcomes)]))

    async def settle(self) -> None:
        """The channels act on what they were given (re-reading it first, as they do)."""
        holding, self.holding = self.holding, []
        for mid, outcome in holding:
            if await self.state(mid) is not State.QUEUED:
                continue  # cancelled, expired or rescheduled meanwhile
            await self.store.move(mid, State.SUBMITTING, "test")
            if outcome == "send":
                await self.store.move(mid, State.ACKNOWLEDGED, "sent")
            elif outcome == "requeue":
                await self.store.move(mid, State.QUEUED, "line busy")
            else:
                await self.store.move(mid, State.RETRY_WAIT, "retry", next_attempt_at=self.clock() + 7)

    def message(self, prio: int, delay: int | None, validity: int | None) -> NewMessage:
        return NewMessage(
            esme="e", destination_addr="+491", body=b"hi", priority=prio, route="r",
            schedule_at=self.clock() + delay if delay else None,
            expire_at=self.clock() + validity if validity else None,
        )  # fmt: skip

    async def submit(self, prio: int, delay: int | None, validity: int | None) -> None:
        acc = await self.store.accept(self.message(prio, delay, validity))
        self.ids.append(int(acc.message_id))

    async def tick(self, seconds: float) -> None:
        self.clock.now += seconds
        now = self.clock()
        released: list[float] = []
        while True:
            if self.timers.wants_refill():
                await self.timers.refill(self.racing(self.store.timers_page))
                continue
            e = self.timers.pop_due(now)
            if e is None:
                break
            try:
                if await self.store.release_due(e.id, now, "due") is not None:
                    released.append(e.id)
            except (InvalidTransition, KeyError):
                pass  # cancelled, expired, or released already: a harmless duplicate
        await self.store.expire_waiting(now, lambda r: [])
        # Nothing due is left behind in the store.
        for state in (State.SCHEDULED, State.RETRY_WAIT):
            for message_id in await self.store.ids_in_state(state):
                e = await self.store.queue_entry(int(message_id))
                assert e is not None
                due = e.schedule_at if state is State.SCHEDULED else e.next_attempt_at
                assert due is not None and due > now, f"message {e.id} due at {due} not released at {now}"

    async def run(self, ops: list[tuple]) -> None:
        for o in ops:
            kind = o[0]
            if kind == "submit":
                _k, prio, delay, validity, count = o
                for _ in range(count):
                    await self.submit(prio, delay, validity)
            elif kind == "concurrent":
                self.concurrent, self.concurrent_priority, self.concurrent_delay = o[1:]
            elif kind == "settle":
                await self.settle()
            elif kind == "pick":
                await self.pick(o[1], o[2])
            elif kind == "cancel" and self.ids:
                await self.store.cancel("e", message_id=format_id(self.ids[o[1] % len(self.ids)]))
            elif kind == "replace" and self.ids:
                delay = o[2]
                await self.store.replace(
                    "e", format_id(self.ids[o[1] % len(self.ids)]), source_addr="", body=b"new",
                    schedule_at=self.clock() + delay if delay is not None else None,
                    expire_at=None, registered_delivery=0,
                )  # fmt: skip
            elif kind == "tick":
                await self.tick(o[1])
            elif kind == "restart":
                await self.restart()
        # Drain: every timer due, every queued message handed out and sent.
        self.concurrent = 0
        await self.settle()
        await self.tick(10_000)
        await self.pick(10_000, ["send"])
        await self.settle()
        left = {s: n for s, n in (await self.store.count_by_state()).items()
                if State(s) in (State.QUEUED, State.SCHEDULED, State.RETRY_WAIT)}  # fmt: skip
        assert not left, f"left waiting in the store: {left}"


async def run_case(ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory() as d:
        clock = Clock()
        store = Store(Path(d) / "b.sqlite3", clock=clock, run_sync=run_inline)
        store.open()
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await Harness(store, clock, nursery).run(ops)
            nursery.cancel_scope.cancel()
        store.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(op, max_size=40))
def test_paged_queue_hands_out_what_the_unbounded_queue_did(ops):
    trio.run(run_case, ops)


def test_a_backlog_past_the_window_is_paged_in_order():
    """The plain case spelled out: 20 messages at two priorities through a window of 3."""
    ops = [("submit", 0, None, None, 4)] * 3 + [("submit", 2, None, None, 4)] * 2
    ops += [("restart",), ("pick", 6, ["send"]), ("settle",), ("submit", 1, None, None, 2)]
    trio.run(run_case, ops)


def test_a_message_committed_while_the_last_page_is_read_is_not_lost():
    """The race of ``Paged.merge``: a level's last page is read while a new message of that
    level commits in the next group commit; it is announced before the reader resumes, behind
    the old cursor, and must still be handed out."""
    trio.run(run_case, [("submit", 0, None, None, 4), ("concurrent", 1, 0, None), ("pick", 6, ["send"])])


def test_a_timer_committed_while_the_last_page_is_read_is_not_lost():
    trio.run(run_case, [("submit", 0, 5, None, 4), ("concurrent", 1, 0, 5), ("tick", 1), ("tick", 10)])
