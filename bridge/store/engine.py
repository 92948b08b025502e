"""The group-commit engine: one writer task owns the write connection; reads run beside it.

Rules
-----
* Durable before acknowledged: a write returns (or calls its ``done``) only after the
  transaction that holds it has been committed (and, with ``synchronous=full``, fsynced).
* Group commit: every write is an *operation* (a function run inside a transaction on the
  writer thread). Everything that arrives while one commit runs goes into the next one, so a
  busy bridge pays one fsync for many messages.
* If one operation in a batch fails with a bug-type error, the batch is rolled back and its
  operations are retried one transaction each, so a bad operation harms no other. If the commit
  itself fails (disk full, read-only file system), every operation of the batch fails with
  ``StoreError`` and nothing of it is acknowledged.
* An operation may ask for a hook to run after its commit (``after_commit``): on the event
  loop, after the batch's answers (``done`` / the awaiting task's wake-up), never when the
  transaction rolled back. A hook's bug is logged and holds back no answer.
* The id counter (``_next_id``) and ``active_count`` are rolled back with a failed transaction;
  the counter is kept in ``meta.last_id`` so that ids never go back, also across restarts, and
  ids are reserved ahead in the id guard (``guard.py``) so that not even a database that lost its
  last transactions, or was lost whole, hands out an id twice.
* ``open()`` refuses a damaged, emptied, replaced or shortened store (``StoreDamaged``, saying
  what to run). Before every group commit, and every ``WATCH_SECONDS`` when idle, the file is
  checked (``FileWatch``): a deleted, replaced or read-only store fails every write with
  ``StoreError`` (nothing acknowledged) and ``fault`` says why; ``ping()`` (readiness) then fails.
* Reads use their own connection (WAL lets them run beside the writer), one thread hop at a
  time: they wait their turn in trio (``read``), not in a worker thread each, and the reads
  that queued up meanwhile run together in the next hop, each with its own result.
  Otherwise every read waiting for the connection held a thread of trio's cache (up to 40 at once when the report
  tracker, the scheduler and the outbox read together), and such threads were started and
  ended by the dozen under steady sending (14 to 32 alive in bench/soak.py; 4 with one read
  at a time).
* Group commits run on a worker thread of the writer's own, never waiting for a token of trio's
  default thread limiter, which reads (and all other ``to_thread`` work) share.
* ...except a commit of a single operation while the disk is fast (``INLINE_COMMIT_SECONDS``):
  that one runs on the event loop's thread. With one write at a time there is nothing to group,
  and the hop to a worker thread and back cost more than the commit itself (about 250 us
  against 200-250 us here, bench/ingest.py at window 1). A commit of several operations, or any
  commit while the last ones were slow (an SD card), goes to the thread, so the event loop is
  never held for long. A reader that has read everything its peer sent may ask for that lone
  commit at once, in its own turn (``commit_now``), when the writer task is idle.
* Checkpoints (copying the WAL back into the database file) are the writer's own work, done
  between commits on its thread, after the batch's answers went out: SQLite's automatic
  checkpoint ran inside the commit that crossed its threshold, so one submit in ~140 waited
  for it (several ms). The writer starts no commit while one runs; writes queue for the next
  group commit meanwhile, and a checkpoint that sees every frame copied lets the next commit
  write the WAL from its start again (its file stops growing).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from .guard import (
    FileWatch,
    IdGuard,
    StoreDamaged,
    adopt,
    check_before_open,
    db_state,
    open_read_only,
    verify,
    writable_problem,
)
from .records import StoreError, StoreUnwritable
from .schema import BUSY_TIMEOUT_MS, NOT_FINAL, open_db, migrate

log = logging.getLogger("bridge.store")

Op = Callable[[sqlite3.Connection], Any]


Done = Callable[[Any, "BaseException | None"], None]

#: How often the idle writer checks the database file (identity, writability).
WATCH_SECONDS = 5.0

#: A single-operation commit runs on the event loop while commits lately took less than this.
INLINE_COMMIT_SECONDS = 0.002

#: The writer checkpoints the WAL after this many commits, or this many operations, since the
#: last checkpoint (about what SQLite's default of 1,000 pages means for one-message commits).
CHECKPOINT_COMMITS = 100
CHECKPOINT_OPERATIONS = 1_000


class _Waiter:
    """One pending write: either awaited (``event``) or answered through a callback."""

    __slots__ = ("op", "event", "done", "result", "error", "hooks")

    def __init__(self, op: Op, done: Done | None = None) -> None:
        self.op = op
        # Functions the operation asked to run after its commit (see Store.after_commit).
        self.hooks: list[Callable[[], None]] = []
        self.done = done
        self.event = trio.Event() if done is None else None
        self.result: Any = None
        self.error: BaseException | None = None

    def finish(self) -> None:
        if self.done is not None:
            self.done(self.result, self.error)
        else:
            assert self.event is not None
            self.event.set()


async def _in_thread(fn: Callable[..., Any], *args: Any, limiter: trio.CapacityLimiter | None = None) -> Any:
    return await trio.to_thread.run_sync(fn, *args, abandon_on_cancel=False, limiter=limiter)


async def run_inline(fn: Callable[..., Any], *args: Any) -> Any:
    """A ``run_sync`` for tests: SQLite work on the event loop itself (see Store)."""
    return fn(*args)



class _Read:
    """One read waiting to run, and then its result or its exception."""

    __slots__ = ("fn", "done", "value", "error", "wake")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any]) -> None:
        self.fn = fn
        self.done = False
        self.wake = trio.Event()  # set when done, or when its caller is to run the next hop
        self.value: Any = None
        self.error: BaseException | None = None

    def run(self, conn: sqlite3.Connection | None) -> None:
        try:
            if conn is None:
                raise StoreError("the store is closed")
            self.value = self.fn(conn)
        except BaseException as exc:  # the caller's to raise, whatever it is
            self.error = exc
        self.done = True

    def outcome(self) -> Any:
        if self.error is not None:
            raise self.error
        return self.value


class Engine:
    """Group commits and reads on one SQLite file. ``Store`` builds on it; create, ``open()``,
    then start ``run`` (the writer) in a nursery."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[int, float], None] | None = None,
        run_sync: Callable[..., Awaitable[Any]] | None = None,
        inline_commit_seconds: float = INLINE_COMMIT_SECONDS,
    ) -> None:
        """``run_sync(fn, *args)`` runs SQLite work away from the event loop (default: a worker
        thread). Tests on trio's autojump MockClock pass one that runs ``fn`` inline, so the
        clock never jumps while a commit is under way. ``inline_commit_seconds`` 0: every
        commit goes to the worker thread (tests that hold a commit open)."""
        self.path = Path(path)
        self._run_sync = run_sync or _in_thread
        # The writer takes a worker thread of its own (see _thread_for), never a token of
        # trio's default limiter, so a commit never waits behind hundreds of queued reads.
        self._own_threads = run_sync is None
        self.inline_commit_seconds = inline_commit_seconds
        # How long commits took lately (moving average of the commit alone, without the hops).
        self.commit_seconds = 0.0
        self._busy_ms = BUSY_TIMEOUT_MS  # the write connection's busy timeout now
        self._commits_since_checkpoint = self._operations_since_checkpoint = 0
        #: Checkpoint after this many commits or operations (CHECKPOINT_COMMITS, _OPERATIONS).
        self.checkpoint_after = (CHECKPOINT_COMMITS, CHECKPOINT_OPERATIONS)
        self.checkpoints = 0
        self._limiters: dict[str, trio.CapacityLimiter] = {}
        self.synchronous = synchronous
        self.clock = clock
        self._on_commit = on_commit
        self._pending: list[_Waiter] = []
        self._wakeup = trio.Event()
        self._writer_idle = False  # the writer task waits for work (no commit or checkpoint runs)
        self._checkpoint_due = False
        self._closed = False
        self._wconn: sqlite3.Connection | None = None
        self._rconn: sqlite3.Connection | None = None
        self._rlock = threading.Lock()
        # One hop of reads in a worker thread at a time; the reads waiting for the next (read).
        self._reading = False
        self._reads: list[_Read] = []
        # Held by the worker thread for a whole group commit: close() waits for it, so a
        # connection is never closed under a commit still running (SQLite would crash).
        self._wlock = threading.Lock()
        self._last_id = 0
        # Messages that are not final, plus stored parts still waiting for siblings. The front
        # end compares this with limits.queue_depth (ESME_RMSGQFUL).
        self.active_count = 0
        self.commits = 0
        self._op_hooks: list[Callable[[], None]] = []
        self.guard = IdGuard(self.path, floors=synchronous == "full")
        self.watch = FileWatch(self.path)
        #: Why the store acknowledges nothing now (deleted, replaced, read-only), or None.
        self.fault: str | None = None
        #: Test seam (bench/powercut.py): called on the writer thread right after each commit
        #: and each checkpoint returned (its fsyncs done), before anything else is written or
        #: acknowledged.
        self.sync_barrier: Callable[[], None] | None = None

    # -- life -----------------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) and migrate. Synchronous: call before starting tasks."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.guard.load()
        check_before_open(self.path, self.guard)
        problem = writable_problem(self.path if self.path.exists() else self.path.parent)
        if problem is not None:
            raise StoreError(
                f"the database {self.path} is read-only: {problem}. The bridge does not start on a "
                f"store it cannot write (it could acknowledge nothing); make it writable and start again"
            )
        try:
            if db_state(self.path) == "present":
                ro = open_read_only(self.path)
                try:
                    verify(self.path, ro, self.guard)
                finally:
                    ro.close()
            self._wconn = c = open_db(self.path, self.synchronous)
            c.execute("PRAGMA wal_autocheckpoint=0")  # the writer checkpoints (see the top)
            migrate(c)
            self._last_id = adopt(c, self.guard)
            self._rconn = open_db(self.path, self.synchronous)
            self._rconn.execute("PRAGMA query_only=ON")
            self.active_count = self._count_active(c)
        except sqlite3.DatabaseError as exc:
            self._close_connections()
            raise StoreDamaged(
                f"the database {self.path} cannot be opened ({exc}). Run `smpp-bridge store check "
                f"--config FILE` for details, then `smpp-bridge store recover --config FILE`"
            ) from exc
        except BaseException:
            self._close_connections()
            raise
        self.watch.start()
        self._refresh_fault()

    @staticmethod
    def _count_active(c: sqlite3.Connection) -> int:
        # NOT_FINAL: counted in the index of active messages, not by reading every row.
        (n,) = c.execute(f"SELECT count(*) FROM messages WHERE {NOT_FINAL}").fetchone()
        (p,) = c.execute("SELECT count(*) FROM partials").fetchone()
        return n + p

    def close(self) -> None:
        self._closed = True
        with self._wlock, self._rlock:  # a commit or read still running in a thread ends first
            if self._wconn is not None:
                self.guard.close(self._last_id)
            self._close_connections()

    def _close_connections(self) -> None:
        for conn in (self._wconn, self._rconn):
            if conn is not None:
                conn.close()
        self._wconn = self._rconn = None

    def _refresh_fault(self) -> str | None:
        fault = self.watch.check()
        if fault != self.fault:
            if fault is not None:
                log.error("store stops acknowledging: %s", fault)
            else:
                log.warning("store %s is writable again; acknowledging submits", self.path)
            self.fault = fault
        return fault

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: runs group commits until cancelled, with the watch of an idle store
        beside it."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_while_idle)
            task_status.started()
            await self._write_loop()

    async def _watch_while_idle(self) -> None:
        """Every ``WATCH_SECONDS``, check the file of a store that is not writing (every commit
        checks it anyway). A task of its own, so that the writer waits for work without a timer:
        a cancel scope per wait cost as much as a tenth of a lone commit."""
        while True:
            await trio.sleep(WATCH_SECONDS)
            if self._writer_idle and self._wconn is not None:
                self._refresh_fault()

    async def _write_loop(self) -> None:
        while True:
            if self._checkpoint_due:  # after this task's commit, or one made by commit_now
                self._checkpoint_due = False
                await self._thread_for("write", self._checkpoint)
                continue
            if not self._pending:
                self._wakeup = trio.Event()
                self._writer_idle = True
                try:
                    await self._wakeup.wait()
                finally:
                    self._writer_idle = False
                continue
            batch, self._pending = self._pending, []
            started = time.perf_counter()
            inline = len(batch) == 1 and self._may_commit_inline()
            if not (inline and self._commit_batch(batch, wait=False)):
                await self._thread_for("write", self._commit_batch, batch)
            self._after_commit(batch, started)
            if inline and not self._checkpoint_due:
                await trio.lowlevel.checkpoint()  # what the hooks started runs before the next commit

    def _may_commit_inline(self) -> bool:
        return self._own_threads and self.commit_seconds < self.inline_commit_seconds

    def commit_now(self) -> None:
        """Commit a lone pending write at once, in the caller's own turn, if the writer task is
        idle and commits are fast (else leave it to the writer). The SMPP reader calls this when
        it has read everything the peer sent, before it waits for more: at window 1 the answer
        then leaves without waiting for the writer task's turn (about 50 us here, as much as the
        rest of reading and deciding the submit)."""
        if not (self._writer_idle and len(self._pending) == 1 and self._may_commit_inline()):
            return
        batch, self._pending = self._pending, []
        started = time.perf_counter()
        if not self._commit_batch(batch, wait=False):
            self._pending[:0] = batch  # another connection holds the lock: the writer's thread waits
            self._wakeup.set()
            return
        self._after_commit(batch, started)
        if self._checkpoint_due:
            self._wakeup.set()  # the writer runs it, on its thread

    def _after_commit(self, batch: list[_Waiter], started: float) -> None:
        """Answer a committed (or failed) batch, then run its hooks and count it. Answers come
        first: they are what a waiting client needs, and a hook's bug must not keep one back."""
        for w in batch:
            try:
                w.finish()
            except Exception:  # a callback's bug must not stop the writer
                log.exception("store completion callback failed")
        for w in batch:
            if w.error is None:
                for hook in w.hooks:
                    try:
                        hook()
                    except Exception:
                        log.exception("store after-commit hook failed")
        self.commits += 1
        if self._on_commit is not None:
            self._on_commit(len(batch), time.perf_counter() - started)
        self._commits_since_checkpoint += 1
        self._operations_since_checkpoint += len(batch)
        commits, operations = self.checkpoint_after
        if self._commits_since_checkpoint >= commits or self._operations_since_checkpoint >= operations:
            self._commits_since_checkpoint = self._operations_since_checkpoint = 0
            self._checkpoint_due = True

    def write_nowait(self, op: Op, done: Done) -> None:
        """Queue ``op`` for the next group commit; ``done(result, error)`` is called (on the
        event loop, after the commit: in the writer task, or in the turn of a ``commit_now``)
        instead of making the caller wait. The SMPP front end
        uses this so that one connection can have many submits in one commit."""
        if self._closed or self._wconn is None:
            raise StoreError("the store is closed")
        self._pending.append(_Waiter(op, done))
        self._wakeup.set()

    async def write(self, op: Op) -> Any:
        """Run ``op(conn)`` inside the next group commit; return its result once committed."""
        if self._closed or self._wconn is None:
            raise StoreError("the store is closed")
        w = _Waiter(op)
        self._pending.append(w)
        self._wakeup.set()
        assert w.event is not None
        await w.event.wait()
        if w.error is not None:
            raise w.error
        return w.result

    def _commit_batch(self, batch: list[_Waiter], wait: bool = True) -> bool:
        """Commit ``batch``. With ``wait`` False (on the event loop), do nothing and return False
        if another connection holds the write lock: the loop never waits for the busy timeout."""
        started = time.perf_counter()
        with self._wlock:
            if not self._commit_batch_locked(batch, wait):
                return False
        self.commit_seconds += (time.perf_counter() - started - self.commit_seconds) * 0.2
        return True

    def _begin(self, conn: sqlite3.Connection, wait: bool) -> bool:
        """BEGIN IMMEDIATE. Without ``wait``: False at once if another connection (a `store
        check`, a backup, a test) holds the write lock. (The busy timeout is set only when it
        changes: one statement less for each of a run of lone commits.)"""
        busy = BUSY_TIMEOUT_MS if wait else 0
        if busy != self._busy_ms:
            conn.execute(f"PRAGMA busy_timeout={busy}")
            self._busy_ms = busy
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not wait and exc.sqlite_errorcode == sqlite3.SQLITE_BUSY:
                return False
            raise
        return True

    def _checkpoint(self) -> None:
        """Copy the WAL's committed frames into the database file (never waiting for readers:
        what a reader still uses is copied next time)."""
        with self._wlock:
            if self._wconn is None:
                return
            try:
                self._wconn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                self.checkpoints += 1
            except sqlite3.Error as exc:  # the next commit reports a store that cannot write
                log.warning("WAL checkpoint of %s failed: %s", self.path, exc)
                return
            if self.sync_barrier is not None:
                self.sync_barrier()

    def _commit_batch_locked(self, batch: list[_Waiter], wait: bool = True) -> bool:
        conn = self._wconn
        if conn is None:  # closed meanwhile: nothing was written, nothing acknowledged
            for w in batch:
                w.hooks = []
                w.error = StoreError("the store is closed")
            return True
        fault = self._refresh_fault()
        if fault is not None:
            for w in batch:
                w.hooks = []
                w.error = StoreUnwritable(fault)
            return True
        try:
            if not self._begin(conn, wait):
                return False
        except sqlite3.Error as exc:
            self._fail_all(batch, exc)
            return True
        last_id, active = self._last_id, self.active_count
        try:
            for w in batch:
                self._op_hooks = w.hooks = []
                w.result = w.op(conn)
            if self._last_id != last_id:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('last_id', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(self._last_id),),
                )
            conn.execute("COMMIT")
            self._committed()
            return True
        except sqlite3.Error as exc:
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            if _is_fatal(exc):
                self._fail_all(batch, exc)
                return True
            first_error: BaseException = exc
        except Exception as exc:  # a bug in one operation: isolate it below
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            first_error = exc
        for w in batch:
            w.hooks = []
        log.debug("group commit failed (%s); retrying %d operations one by one", first_error, len(batch))
        for w in batch:
            w.result = None
            self._commit_one(conn, w)
        return True

    def _commit_one(self, conn: sqlite3.Connection, w: _Waiter) -> None:
        last_id, active = self._last_id, self.active_count
        try:
            conn.execute("BEGIN IMMEDIATE")
            self._op_hooks = w.hooks = []
            w.result = w.op(conn)
            if self._last_id != last_id:
                conn.execute(
                    "INSERT INTO meta(key, value) VALUES('last_id', ?) "
                    "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                    (str(self._last_id),),
                )
            conn.execute("COMMIT")
            self._committed()
        except sqlite3.Error as exc:
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            w.hooks = []
            kind = StoreUnwritable if _is_fatal(exc) else StoreError
            w.error = kind(f"could not write to {self.path}: {exc}")
        except Exception as exc:
            self._rollback(conn)
            self._last_id, self.active_count = last_id, active
            w.hooks = []
            w.error = exc

    def _committed(self) -> None:
        if self.sync_barrier is not None:
            self.sync_barrier()
        self.guard.committed(self._last_id)

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def after_commit(self, hook: Callable[[], None]) -> None:
        """Called by an operation (while it runs in the transaction): run ``hook`` on the event
        loop once the operation's transaction has committed, after the batch's answers. Dropped
        if it rolls back."""
        self._op_hooks.append(hook)

    def _fail_all(self, batch: list[_Waiter], exc: BaseException) -> None:
        log.error(
            "store commit failed: %s. Free disk space or fix permissions on %s; "
            "submits are answered with an error meanwhile",
            exc,
            self.path,
        )
        for w in batch:
            w.hooks = []
            w.error = StoreUnwritable(f"could not commit to {self.path}: {exc}")

    def _next_id(self) -> int:
        n = self._last_id + 1
        if n > self.guard.reserved:
            try:
                self.guard.reserve(n)
            except OSError as exc:
                raise StoreUnwritable(f"could not reserve message ids in {self.guard.path}: {exc}") from exc
        self._last_id = n
        return n

    # -- reads (separate connection; WAL lets them run beside the writer) ------------------------

    async def read(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        """``fn(connection)`` on the read connection, in a worker thread. One hop runs at a time
        and takes every read that queued up meanwhile (a read has no side effects: running it
        in a group changes nothing but the cost). At 512 channels, ~230 reads a second each in
        a hop of its own, then each handing the turn on to the next through the event loop, made
        a read wait 0.3-1.4 s on a loaded machine (bench/channels.py --many).

        The caller whose read finds no hop running runs the hops until its own read is done,
        then hands the turn to the oldest read still waiting (its caller runs the next hop)."""
        mine = _Read(fn)
        self._reads.append(mine)
        while not mine.done:
            if self._reading:
                try:
                    await mine.wake.wait()  # done, or handed the turn
                except BaseException:
                    self._drop_read(mine)
                    raise
                mine.wake = trio.Event()
                continue
            self._reading = True
            try:
                while not mine.done:
                    batch, self._reads = self._reads, []
                    if mine not in batch:  # taken by a hop that failed to run (no thread)
                        batch.append(mine)
                    await self._thread_for(None, self._run_reads, batch)
                    for r in batch:
                        r.wake.set()
            finally:
                self._reading = False
                if self._reads:
                    self._reads[0].wake.set()  # the turn passes on
        return mine.outcome()

    def _drop_read(self, r: _Read) -> None:
        """A waiting read whose caller gave up (cancelled): out of the queue, and the turn, if
        it was handed to it, passes on."""
        if r in self._reads:
            self._reads.remove(r)
        if not self._reading and self._reads:
            self._reads[0].wake.set()

    def _run_reads(self, batch: list[_Read]) -> None:
        with self._rlock:
            for r in batch:
                r.run(self._rconn)

    async def _thread_for(self, kind: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn`` away from the event loop in a worker thread: for ``kind`` "write" (the
        group commits) a thread of the writer's own, so that a commit never queues behind
        reads for a token of trio's default limiter (40 threads shared by every to_thread of
        the process: 512 channels reading at once took them all); for reads (None) a thread of
        the default limiter, taken by one read at a time (``_read_turn``)."""
        if not self._own_threads:
            return await self._run_sync(fn, *args)
        if kind is None:
            return await _in_thread(fn, *args)
        limiter = self._limiters.get(kind)
        if limiter is None:
            limiter = self._limiters[kind] = trio.CapacityLimiter(1)
        return await _in_thread(fn, *args, limiter=limiter)

    async def ping(self) -> None:
        """Raise if the database cannot be read, or cannot acknowledge (the readiness check)."""
        if self._wconn is not None and self._refresh_fault() is not None:
            raise StoreError(self.fault)
        await self.read(lambda c: c.execute("SELECT 1").fetchone())

    def database_size(self) -> int:
        total = 0
        for suffix in ("", "-wal", "-shm"):
            try:
                total += os.stat(str(self.path) + suffix).st_size
            except OSError:
                pass
        return total



def _is_fatal(exc: sqlite3.Error) -> bool:
    """Errors that no retry of the same batch can fix (the disk, not an operation)."""
    msg = str(exc).lower()
    return isinstance(exc, sqlite3.OperationalError) and any(
        s in msg for s in ("disk", "full", "readonly", "read-only", "i/o", "locked", "corrupt")
    )

