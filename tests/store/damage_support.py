"""Stores that crashed, for the damage and recovery tests: what kill -9 leaves on disk."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from bridge.store import NewMessage, Store, StoreDamaged


def msg(text: str) -> NewMessage:
    return NewMessage(esme="app", destination_addr="+491701", body=text.encode())


FILES = ("", "-wal", ".ids", ".ids-last")


def snapshot(src: Path, dst: Path) -> None:
    """Copy the store's files as they stand (the shared-memory index SQLite rebuilds itself)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    for suffix in FILES:
        f = Path(str(src) + suffix)
        if f.exists():
            shutil.copyfile(f, str(dst) + suffix)


async def crashed_store(tmp_path: Path, n: int = 120, *, clean_first: int = 0) -> tuple[Path, list[str]]:
    """A store that acknowledged ``clean_first`` messages and was closed cleanly (they are in the
    database file), then acknowledged ``n`` more one commit each and crashed; returns the path
    of what the crash left, and every id acknowledged."""
    live = tmp_path / "live" / "b.sqlite3"
    ids: list[str] = []
    if clean_first:
        s = Store(live)
        s.open()
        async with trio.open_nursery() as nursery:
            await nursery.start(s.run)
            ids += [(await s.accept(msg(f"clean {i}"))).message_id for i in range(clean_first)]
            nursery.cancel_scope.cancel()
        s.close()
    crashed = tmp_path / "crashed" / "b.sqlite3"
    s = Store(live)
    s.checkpoint_after = (10**9, 10**9)  # the WAL holds every commit since the open: what is cut
    s.open()
    async with trio.open_nursery() as nursery:
        await nursery.start(s.run)
        ids += [(await s.accept(msg(f"m {i}"))).message_id for i in range(n)]
        snapshot(live, crashed)
        nursery.cancel_scope.cancel()
    s.close()
    return crashed, ids


def open_store(path: Path) -> Store:
    s = Store(path)
    s.open()
    return s


def _as_found(path: Path) -> dict[str, bytes]:
    return {
        suffix: Path(str(path) + suffix).read_bytes()
        for suffix in FILES
        if Path(str(path) + suffix).exists() and Path(str(path) + suffix).stat().st_size
    }  # SQLite may create an empty -wal where none was: the same as none


def refused(path: Path) -> str:
    """Open as the bridge does at start: it must refuse, say what to run, and leave every file
    as it found it (the damaged write-ahead log is evidence, and what recover reads)."""
    before = _as_found(path)
    with pytest.raises(StoreDamaged) as info:
        open_store(path)
    assert _as_found(path) == before
    text = str(info.value)
    assert "smpp-bridge store recover" in text and "smpp-bridge store check" in text, text
    return text
