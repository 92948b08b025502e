"""`smpp-bridge store check` and `smpp-bridge store recover` on damaged stores (issue 12)."""

from __future__ import annotations

import os
import shutil
import sqlite3
from pathlib import Path

import trio

from bridge.cli import main
from bridge.store import NewMessage, Store

from damage_support import crashed_store, refused


def msg(text: str) -> NewMessage:
    return NewMessage(esme="app", destination_addr="+491701", body=text.encode())


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


async def test_check_says_ok_for_a_healthy_store_and_changes_nothing(tmp_path, capsys):
    crashed, _ids = await crashed_store(tmp_path, n=20)
    before = files(crashed.parent)
    assert main(["store", "check", "--db", str(crashed)]) == 0
    out = capsys.readouterr().out
    assert "ok: the bridge will start on this store" in out
    assert files(crashed.parent) == before


async def test_check_names_a_lost_wal_tail_and_what_to_run(tmp_path, capsys):
    crashed, _ids = await crashed_store(tmp_path)
    wal = Path(str(crashed) + "-wal")
    os.truncate(wal, wal.stat().st_size // 2)
    before = files(crashed.parent)
    assert main(["store", "check", "--db", str(crashed)]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM:" in out and "were lost" in out and "smpp-bridge store recover" in out
    assert str(crashed) in out and "pytest" not in out.split("smpp-bridge-check-")[0][-1:]
    assert files(crashed.parent) == before


async def accept_after(path: Path, n: int = 3) -> list[str]:
    s = Store(path)
    s.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(s.run)
            ids = [(await s.accept(msg(f"after {i}"))).message_id for i in range(n)]
            nursery.cancel_scope.cancel()
    finally:
        s.close()
    return ids


async def test_recover_after_a_lost_wal_tail_keeps_what_remains_and_never_reuses_an_id(tmp_path, capsys):
    crashed, ids = await crashed_store(tmp_path, n=150, clean_first=50)
    wal = Path(str(crashed) + "-wal")
    os.truncate(wal, wal.stat().st_size // 2)
    refused(crashed)
    assert main(["store", "recover", "--db", str(crashed)]) == 0
    out = capsys.readouterr().out
    kept = [p.name for p in crashed.parent.iterdir() if ".damaged-" in p.name]
    assert any(n.endswith("-wal") for n in kept) and any(not n.endswith(("-wal", "-shm")) for n in kept)
    texts = {r[0] for r in sqlite3.connect(crashed).execute("SELECT text FROM messages")}
    # The checkpointed messages and the WAL's surviving commits are all there.
    assert {f"clean {i}" for i in range(50)} <= texts
    assert 50 < len(texts) < 200
    assert "message ids continue above" in out
    new = await accept_after(crashed)
    assert min(map(int, new)) > max(map(int, ids)), "an id handed out before was handed out again"


async def test_recover_copies_the_readable_rows_around_an_overwritten_page(tmp_path, capsys):
    crashed, ids = await crashed_store(tmp_path, n=5, clean_first=400)
    with open(crashed, "r+b") as f:
        f.seek(4096 * 5)
        f.write(os.urandom(4096))
    refused(crashed)
    assert main(["store", "check", "--db", str(crashed)]) == 1
    assert main(["store", "recover", "--db", str(crashed)]) == 0
    db = sqlite3.connect(crashed)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    n = db.execute("SELECT count(*) FROM messages").fetchone()[0]
    assert 300 < n <= 405
    db.close()
    assert main(["store", "check", "--db", str(crashed)]) == 0
    new = await accept_after(crashed)
    assert min(map(int, new)) > max(map(int, ids))


async def test_recover_a_lost_database_and_guard_skips_a_wide_gap(tmp_path, capsys):
    crashed, ids = await crashed_store(tmp_path, n=5, clean_first=5)
    for p in list(crashed.parent.iterdir()):
        if p.name != crashed.name:
            p.unlink()
    os.truncate(crashed, 0)  # the guard is gone too, and the database emptied
    assert main(["store", "recover", "--db", str(crashed)]) == 0
    new = await accept_after(crashed)
    assert min(map(int, new)) > 1_000_000


async def test_a_restored_backup_is_refused_until_recovered_and_ids_stay_above_the_guard(tmp_path, capsys):
    live = tmp_path / "b.sqlite3"
    first = await accept_after(live, 5)
    backup = tmp_path / "backup.sqlite3"
    shutil.copyfile(live, backup)  # after a clean close: the database file is whole
    later = await accept_after(live, 5)
    shutil.copyfile(backup, live)  # the operator goes back to the backup
    assert "were lost" in refused(live)
    assert main(["store", "recover", "--db", str(live)]) == 0
    texts = {r[0] for r in sqlite3.connect(live).execute("SELECT text FROM messages")}
    assert texts == {f"after {i}" for i in range(5)}  # what the backup held
    new = await accept_after(live, 1)
    assert int(new[0]) > max(map(int, first + later)), "an id handed out after the backup was reused"
