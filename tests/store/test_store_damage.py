"""A store the disk damaged, lost or replaced is refused, never used silently (issue 12).

A "crash" here is a copy of the store's files taken while the store is open and has acknowledged
everything: what kill -9 leaves on disk (the page cache keeps every write). The copy is then
damaged the way an SD card or a person would damage it, and opened as the bridge would at start.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
import trio

from bridge.store import NewMessage, Store, StoreDamaged, StoreError
from bridge.store.guard import guard_path, last_path


def msg(text: str) -> NewMessage:
    return NewMessage(esme="app", destination_addr="+491701", body=text.encode())


from damage_support import crashed_store, open_store, refused  # noqa: E402


async def test_a_crash_alone_loses_nothing_and_starts(tmp_path):
    crashed, ids = await crashed_store(tmp_path)
    s = open_store(crashed)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(s.run)
            for mid in ids:
                assert await s.get(mid) is not None
            new = await s.accept(msg("after"))
            nursery.cancel_scope.cancel()
        assert int(new.message_id) > max(map(int, ids))
    finally:
        s.close()


async def test_wal_tail_truncated_is_refused(tmp_path):
    crashed, _ids = await crashed_store(tmp_path)
    wal = Path(str(crashed) + "-wal")
    size = wal.stat().st_size
    os.truncate(wal, size - size // 3)
    text = refused(crashed)
    assert "were lost" in text and "-wal" in text


async def test_wal_byte_flipped_is_refused(tmp_path):
    crashed, _ids = await crashed_store(tmp_path)
    wal = Path(str(crashed) + "-wal")
    data = bytearray(wal.read_bytes())
    data[len(data) // 2] ^= 0x40
    wal.write_bytes(bytes(data))
    assert "were lost" in refused(crashed)


async def test_wal_deleted_is_refused(tmp_path):
    crashed, _ids = await crashed_store(tmp_path, clean_first=30)
    Path(str(crashed) + "-wal").unlink()
    assert "were lost" in refused(crashed)


async def test_database_page_overwritten_is_refused(tmp_path):
    crashed, _ids = await crashed_store(tmp_path, n=5, clean_first=300)
    with open(crashed, "r+b") as f:
        f.seek(4096 * 3)
        f.write(os.urandom(4096))
    text = refused(crashed)
    assert "damaged" in text or "cannot be opened" in text


async def test_database_truncated_to_zero_is_refused(tmp_path):
    crashed, _ids = await crashed_store(tmp_path, n=5, clean_first=20)
    os.truncate(crashed, 0)
    Path(str(crashed) + "-wal").unlink()
    assert "empty (0 bytes)" in refused(crashed)


async def test_database_deleted_at_rest_is_refused(tmp_path):
    crashed, _ids = await crashed_store(tmp_path, n=5)
    crashed.unlink()
    Path(str(crashed) + "-wal").unlink()
    assert "is missing" in refused(crashed)


async def test_database_replaced_by_another_store_is_refused(tmp_path):
    crashed, _ids = await crashed_store(tmp_path, n=5, clean_first=5)
    other = tmp_path / "other" / "b.sqlite3"
    s = open_store(other)
    s.close()
    for suffix in ("", "-wal"):
        Path(str(crashed) + suffix).unlink(missing_ok=True)
    shutil.copyfile(other, crashed)
    assert "was replaced" in refused(crashed)


async def test_lost_guard_is_refused_only_if_unreadable(tmp_path):
    crashed, ids = await crashed_store(tmp_path, n=5)
    guard_path(crashed).write_text("{not json")
    assert "cannot be read" in refused(crashed)


def _delete(path: Path) -> None:
    path.unlink()


def _replace(path: Path) -> None:
    copy = path.with_name("copy")
    shutil.copyfile(path, copy)
    os.replace(copy, path)


@pytest.mark.parametrize(("damage", "says"), [(_delete, "was deleted"), (_replace, "was replaced")],
                         ids=["deleted", "replaced"])
async def test_deleted_or_replaced_while_running_stops_acknowledging(tmp_path, damage, says):
    path = tmp_path / "b.sqlite3"
    s = open_store(path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(s.run)
            await s.accept(msg("before"))
            await s.ping()
            damage(path)
            with pytest.raises(StoreError, match=says):
                await s.accept(msg("into the void"))
            with pytest.raises(StoreError, match=says):
                await s.ping()
            assert s.fault is not None
            nursery.cancel_scope.cancel()
    finally:
        s.close()
    if damage is _delete:
        # What it had acknowledged is gone with the file: the next start says so.
        Path(str(path) + "-wal").unlink(missing_ok=True)
        Path(str(path) + "-shm").unlink(missing_ok=True)
        assert "is missing" in refused(path)


async def test_deleted_while_idle_is_noticed_without_a_write(tmp_path, autojump_clock):
    from bridge.store import run_inline

    path = tmp_path / "b.sqlite3"
    s = Store(path, run_sync=run_inline)
    s.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(s.run)
            path.unlink()
            while s.fault is None:
                await trio.sleep(1)
            assert "was deleted" in s.fault
            nursery.cancel_scope.cancel()
    finally:
        s.close()


def _mount(where: Path) -> str | None:
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(where)], capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip() or "mount failed")


async def test_read_only_at_start_is_refused(tmp_path):
    data = tmp_path / "data"
    why = _mount(data)
    if why is not None:
        pytest.skip(f"cannot mount a tmpfs here ({why})")
    try:
        path = data / "b.sqlite3"
        s = open_store(path)
        s.close()
        subprocess.run(["mount", "-o", "remount,ro", str(data)], check=True)
        with pytest.raises(StoreError, match="read-only: its file system is mounted read-only") as info:
            open_store(path)
        assert not isinstance(info.value, StoreDamaged)
        subprocess.run(["mount", "-o", "remount,rw", str(data)], check=True)
        s = open_store(path)
        s.close()
    finally:
        subprocess.run(["umount", "-l", str(data)], capture_output=True)


async def test_read_only_while_running_stops_acknowledging(tmp_path, monkeypatch):
    """The kernel refuses to remount a file system read-only while the store has files open for
    writing (only its own error handling does, errors=remount-ro); so here the file system's
    flags are what statvfs reports, the one thing the watch reads."""
    import bridge.store.guard as guard

    real = os.statvfs
    ro = {"on": False}

    class Ro:
        def __init__(self, st):
            self._st = st

        def __getattr__(self, name):
            return getattr(self._st, name)

        @property
        def f_flag(self):
            return self._st.f_flag | os.ST_RDONLY

    monkeypatch.setattr(guard.os, "statvfs", lambda p: Ro(real(p)) if ro["on"] else real(p))
    path = tmp_path / "b.sqlite3"
    s = open_store(path)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(s.run)
            await s.accept(msg("before"))
            ro["on"] = True
            with pytest.raises(StoreError, match="read-only"):
                await s.accept(msg("refused"))
            with pytest.raises(StoreError, match="read-only"):
                await s.ping()
            ro["on"] = False  # writable again: acknowledged again, without a restart
            await s.ping()
            await s.accept(msg("after"))
            assert s.fault is None
            nursery.cancel_scope.cancel()
    finally:
        s.close()
    texts = [r[0] for r in sqlite3.connect(path).execute("SELECT text FROM messages ORDER BY id")]
    assert texts == ["before", "after"]
