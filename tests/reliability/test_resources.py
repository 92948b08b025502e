"""Group 5, resources: the disk fills up, or the file system turns read-only, under the store.

Submits are then answered ESME_RSYSERR (or ESME_RMSGQFUL), never ESME_ROK for something that
was not stored; a submit that got an error is not in the store either (an ESME that retries
does not cause a duplicate); the bridge keeps running, and when space returns (or the file
system is writable again) it accepts, sends and reports as before, without a restart.

The store lives on a real small file system: a tmpfs mounted for the test (needs root, or
CAP_SYS_ADMIN). Where mounting is not allowed, the same promises are checked in process with
SQLite's ``PRAGMA max_page_count`` (a full database) and ``PRAGMA query_only`` (a read-only
one) on the running bridge's write connection. Short form only: scenarios, not volume.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import smpplib.consts as sc
import trio

from bridge.scheduler.channel import MAX_RESCUES, RESCUE_DELAY
from e2e_support import BridgeProcess, EmulatorProcess, client, goip_config, read_until
from reliability_support import ReceiptCollector

OK, SYSERR, QFULL = sc.SMPP_ESME_ROK, sc.SMPP_ESME_RSYSERR, sc.SMPP_ESME_RMSGQFUL


def try_mount(where: Path, size: str) -> str | None:
    """Mount a tmpfs at ``where``; None if that is not allowed here, else the reason."""
    where.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return "not root"
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or f"mount exited {r.returncode}")


def remount(where: Path, options: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{options}", str(where)], check=True, capture_output=True)


def fill(where: Path, leave: int) -> Path:
    """A file that takes all free space of the file system at ``where`` but ``leave`` bytes."""
    st = os.statvfs(where)
    free = st.f_bavail * st.f_frsize
    filler = where / "filler"
    # The bridge keeps writing meanwhile: the space may run out before the filler is whole,
    # which is a full disk all the same.
    with open(filler, "wb") as f:
        try:
            f.write(b"\0" * max(0, free - leave))
        except OSError as exc:
            if exc.errno != errno.ENOSPC:
                raise
    return filler


def submit_one(c, i: int, tag: str):  # type: ignore[no-untyped-def]
    text = f"{tag} {i:05d} " + "x" * 100
    c.send_message(source_addr="disk", dest_addr_ton=1, destination_addr=f"+49170{i:07d}",
                   short_message=text.encode(), registered_delivery=1)
    resp = read_until(c, "submit_sm_resp", timeout=30)
    return text, resp.status, resp.message_id.decode() if resp.status == OK else None


def wait_for_receipts(receipts: ReceiptCollector, ids: set[str], seconds: float) -> set[str]:
    """The ids of ``ids`` that still have no receipt after waiting up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while (missing := ids - set(receipts.by_id())) and time.monotonic() < deadline:
        time.sleep(0.25)
    return missing


def states_of(bridge: BridgeProcess, ids: set[str]) -> list[tuple[str, str]]:
    with bridge.db() as db:
        return [(mid, db.execute("SELECT state FROM messages WHERE id = ?", (int(mid),)).fetchone()) for mid in sorted(ids)]


def stored_texts(bridge: BridgeProcess) -> dict[str, str]:
    with bridge.db() as db:
        return {f"{mid:010d}": text for mid, text in db.execute("SELECT id, text FROM messages")}


@pytest.fixture
def emulator():
    e = EmulatorProcess(lines=2, send_duration=0.3)
    yield e
    e.stop()


def test_disk_full_refuses_honestly_and_recovers_when_space_returns(tmp_path, emulator):
    data = tmp_path / "data"
    # 16 MiB: room for SQLite's WAL (up to 1000 pages, 4 MiB, before a checkpoint) once the
    # filler below is gone.
    why = try_mount(data, "16m")
    if why is not None:
        pytest.skip(f"cannot mount a tmpfs here ({why}); test_full_and_read_only_database_in_process covers it")
    bridge = BridgeProcess(tmp_path, goip_config(emulator.url, lines=2))
    receipts = None
    try:
        bridge.start()
        receipts = ReceiptCollector(lambda: bridge.port).start()
        c = client(bridge.port, timeout=30)
        c.bind_transmitter(system_id="alice", password="secret1")
        results: list[tuple[str, int, str | None]] = [submit_one(c, i, "before") for i in range(20)]

        # The disk fills up.
        filler = fill(data, leave=64 * 1024)
        i = 20
        while sum(1 for _t, s, _m in results if s != OK) < 20 and i < 2000:
            results.append(submit_one(c, i, "full"))
            i += 1
        statuses = {s for _t, s, _m in results}
        assert statuses <= {OK, SYSERR, QFULL}, statuses
        assert SYSERR in statuses or QFULL in statuses, "the disk never filled up"
        assert bridge.proc.poll() is None, "the bridge died when the disk filled up"
        # It stays full for longer than the scheduler's rescues of a failed write last
        # (MAX_RESCUES + 1 tries, RESCUE_DELAY apart): the messages acknowledged before are
        # still being sent meanwhile (2 lines, 0.3 s a send), and none of their writes land.
        time.sleep((MAX_RESCUES + 2) * RESCUE_DELAY)

        # Space returns: it accepts again, without a restart.
        filler.unlink()
        recovered = [submit_one(c, 5000 + k, "after") for k in range(10)]
        assert [s for _t, s, _m in recovered] == [OK] * 10
        c.unbind()
        c.disconnect()

        everything = results + recovered
        acked = {mid: text for text, s, mid in everything if s == OK}
        refused = [text for text, s, _m in everything if s != OK]
        # Nothing acknowledged that was not stored, nothing refused that was stored.
        stored = stored_texts(bridge)
        assert all(stored.get(mid) == text for mid, text in acked.items())
        assert not set(refused) & set(stored.values())
        # What was accepted after the space came back is sent and reported as usual.
        after = {mid for text, s, mid in recovered}
        assert wait_for_receipts(receipts, after, 30) == set()
        log = bridge.log_text()
        assert "store commit failed: database or disk is full. Free disk space" in log
        # A few lines per kind of trouble, not one per refused submit (logs.RepeatFilter).
        error_lines = [line for line in log.splitlines() if " ERROR " in line]
        assert len(error_lines) < len(refused), "\n".join(error_lines)
        # Nothing is stranded: what the scheduler was handling while it could not write is taken
        # up again once space returns, without a restart; everything acknowledged is sent and
        # reported (the rescue of a failed write waits RESCUE_DELAY, a few seconds).
        stuck = wait_for_receipts(receipts, set(acked), 60)
        assert stuck == set(), (
            f"{len(stuck)} acknowledged messages never reported without a restart: "
            + ", ".join(f"{mid} {state}" for mid, state in states_of(bridge, stuck))
        )
        # And a store that could not write is no reason to give a message up as UNKNOWN.
        unknown = [mid for mid, got in receipts.by_id().items() if mid in acked and any(st == "UNKNOWN" for _t, st in got)]
        assert unknown == [], f"given up as UNKNOWN: {unknown}"
        sent = [s["text"] for s in emulator.sent()]
        assert len(sent) == len(set(sent)), "a message went out twice"
        with bridge.db() as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        print(f"disk full: {len(acked)} acknowledged, {len(refused)} refused "
              f"({sum(1 for _t, s, _m in everything if s == SYSERR)} ESME_RSYSERR), every acknowledged one sent and "
              f"reported without a restart")
    finally:
        if receipts is not None:
            receipts.stop()
        bridge.stop()
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


# -- in process: a full and a read-only database through SQLite itself ------------------------------

IN_PROCESS_CONFIG = """
smpp:
  listeners: [{host: 127.0.0.1, port: 0}]
  timers: {session_init: 5, enquire_link: 30, inactivity: 120, response: 5, unbind_grace: 1}
esmes:
  - system_id: alice
    password: secret1
    allowed_ips: [127.0.0.1]
    max_binds: 4
store:
  path: %(db)s
admin:
  port: 0
"""
IN_PROCESS_DEVICE = """
devices:
  - name: goip1
    kind: goip_http
    url: http://127.0.0.1:%(port)d
    username: admin
    password: admin
    lines: 2
    timeout: 2
    status_poll_interval: 0.1
    status_timeout: 10
    caps: {per_minute: 0}
routes:
  - name: all
    channels: [goip1]
scheduler:
  retry_backoff: 0.2
  retry_backoff_max: 1
"""


async def pragma(app, sql: str) -> None:  # type: ignore[no-untyped-def]
    """The test hook: a PRAGMA on the store's write connection, run by its own writer task
    (between two group commits), so that the following commits see it."""
    await app.store.write(lambda conn: conn.execute(sql).fetchall())


async def start_app(nursery, tmp_path: Path, goip_port: int | None = None):  # type: ignore[no-untyped-def]
    from bridge.app import App
    from bridge.config import load_config_text

    text = IN_PROCESS_CONFIG % {"db": tmp_path / "inproc.sqlite3"}
    if goip_port is not None:
        text += IN_PROCESS_DEVICE % {"port": goip_port}
    app = App(load_config_text(text))
    await nursery.start(app.run)
    return app


async def test_full_and_read_only_database_in_process(tmp_path):
    """Runs everywhere (no mount needed): the database is made full with PRAGMA max_page_count
    and read-only with PRAGMA query_only, then normal again."""
    async with trio.open_nursery() as nursery:
        app = await start_app(nursery, tmp_path)
        c = await trio.to_thread.run_sync(lambda: client(app.smpp_ports[0], timeout=30))
        await trio.to_thread.run_sync(lambda: c.bind_transmitter(system_id="alice", password="secret1"))

        async def submits(n: int, tag: str) -> list[tuple[str, int, str | None]]:
            return [await trio.to_thread.run_sync(submit_one, c, i, tag) for i in range(n)]

        results = await submits(10, "fine")
        assert {s for _t, s, _m in results} == {OK}
        # Full: the file may not grow by a single page.
        pages = (await app.store.read(lambda conn: conn.execute("PRAGMA page_count").fetchone()))[0]
        await pragma(app, f"PRAGMA max_page_count={pages}")
        full = []
        while sum(1 for _t, s, _m in full if s != OK) < 10 and len(full) < 3000:
            full += await submits(1, f"full{len(full)}")
        await pragma(app, "PRAGMA max_page_count=1073741823")
        back = await submits(5, "space")
        # Read-only.
        await pragma(app, "PRAGMA query_only=ON")
        readonly = await submits(5, "readonly")
        # (Not through the writer: BEGIN IMMEDIATE itself is refused while query_only is on.
        # Nothing else writes here, every submit has been answered: the connection is idle.)
        await trio.to_thread.run_sync(app.store._wconn.execute, "PRAGMA query_only=OFF")
        writable = await submits(5, "writable")
        await trio.to_thread.run_sync(c.unbind)
        await trio.to_thread.run_sync(c.disconnect)
        nursery.cancel_scope.cancel()

    assert {s for _t, s, _m in full} <= {OK, SYSERR, QFULL} and SYSERR in {s for _t, s, _m in full}
    assert {s for _t, s, _m in readonly} == {SYSERR}
    assert {s for _t, s, _m in back + writable} == {OK}
    everything = results + full + back + readonly + writable
    acked = {mid: text for text, s, mid in everything if s == OK}
    refused = {text for text, s, _m in everything if s != OK}
    with sqlite3.connect(tmp_path / "inproc.sqlite3") as db:
        stored = {f"{mid:010d}": text for mid, text in db.execute("SELECT id, text FROM messages")}
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert all(stored.get(mid) == text for mid, text in acked.items())  # nothing acknowledged unstored
    assert not refused & set(stored.values())  # nothing refused stored


@pytest.mark.parametrize("outage_rescues", [1, 12], ids=["short", "longer-than-the-rescues"])
async def test_store_outage_does_not_strand_messages_being_sent(tmp_path, monkeypatch, outage_rescues):
    """Every commit fails for a while (as a full disk makes them fail) while the channels are
    sending, then the store writes again: every acknowledged message is sent exactly once and
    ends DELIVERED/ACCEPTED as usual, without a restart. The longer outage lasts many rescue
    delays: a store that cannot write says nothing about the message, so it must neither be
    given up as UNKNOWN (it was never sent, or the device can tell) nor be left waiting for a
    restart."""
    from bridge.devices.goip_http.emulator import GoipEmulator
    from bridge.scheduler import channel

    monkeypatch.setattr(channel, "RESCUE_DELAY", 0.25)
    emulator = GoipEmulator(lines=2, send_duration=0.2)
    async with trio.open_nursery() as nursery:
        goip_port = await nursery.start(emulator.serve, "127.0.0.1", 0)
        app = await start_app(nursery, tmp_path, goip_port)
        c = await trio.to_thread.run_sync(lambda: client(app.smpp_ports[0], timeout=30))
        await trio.to_thread.run_sync(lambda: c.bind_transmitter(system_id="alice", password="secret1"))
        submitted = [await trio.to_thread.run_sync(submit_one, c, i, "outage") for i in range(10)]
        ids = [mid for _t, _s, mid in submitted]
        # The store cannot write for a while (every commit fails the way a full disk makes it
        # fail), then it can again.
        commit_batch = app.store._commit_batch

        def as_a_full_disk(batch, wait=True):
            app.store._fail_all(batch, sqlite3.OperationalError("database or disk is full"))
            return True  # done (failed), on the loop or in the thread alike

        app.store._commit_batch = as_a_full_disk
        await trio.sleep(outage_rescues * channel.RESCUE_DELAY + 0.5)
        app.store._commit_batch = commit_batch
        finals = ("delivered", "acknowledged", "undeliverable", "expired", "rejected", "unknown")
        with trio.move_on_after(15):  # they need about 2 s once the store writes again
            while True:
                states = [(await app.store.get(mid)).state.value for mid in ids]
                if all(s in finals for s in states):
                    break
                await trio.sleep(0.25)
        await trio.to_thread.run_sync(c.disconnect)
        nursery.cancel_scope.cancel()
    assert all(s in finals for s in states), states
    assert "unknown" not in states, states
    sent = sorted(s.text for s in emulator.sent)
    assert sent == sorted(text for text, _s, _m in submitted), "each message sent exactly once"
