"""``smpp-bridge store check`` and ``smpp-bridge store recover``: what an operator runs when the
bridge refused its store.

Rules
-----
* Neither command changes the files it examines: ``check`` works on a scratch copy (opening a
  WAL database can replay and checkpoint it), ``recover`` renames the damaged files aside
  (``<db>.damaged-<time>``, with their ``-wal``/``-shm``) and reads a scratch copy of them.
* ``check`` runs what the bridge runs at start (``Store.open``) plus a full ``PRAGMA
  integrity_check``, prints what it found and what to run, and exits 0 (the bridge will start on
  this store) or 1.
* ``recover`` copies every row it can read, table by table (row by row around damaged pages),
  into a new store at the configured path, and keeps message ids above every id ever handed out:
  above the id guard's reservation, or, if the guard is gone too, a wide gap above the highest id
  found (``UNGUARDED_GAP``). Stop the bridge first: the command does not know whether one runs.
"""

from __future__ import annotations

import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import Store
from .guard import IdGuard, StoreDamaged, db_state, last_path, new_store_id
from .records import StoreError
from .schema import open_db, migrate

#: Ids skipped when the id guard is gone too: more than a bridge hands out between two starts.
UNGUARDED_GAP = 1_000_000
CHUNK = 256

Print = Callable[[str], None]


def _copy_files(db: Path, to: Path, suffixes: tuple[str, ...] = ("", "-wal")) -> None:
    for suffix in suffixes:
        src = Path(str(db) + suffix)
        if src.exists():
            shutil.copyfile(src, str(to) + suffix)


def check(db: Path, out: Print = print) -> int:
    """Examine the store at ``db`` (unchanged); 0 if the bridge will start on it."""
    state = db_state(db)
    out(f"store {db}: {state}")
    with tempfile.TemporaryDirectory(prefix="smpp-bridge-check-", dir=db.parent if db.parent.exists() else None) as tmp:
        copy = Path(tmp) / db.name
        _copy_files(db, copy, ("", "-wal", ".ids", ".ids-last"))
        guard = IdGuard(copy)
        try:
            guard.load()
            out(f"id guard: {'store ' + str(guard.store) + ', ids reserved up to ' + str(guard.reserved) if guard.exists else 'none yet'}")
        except StoreDamaged as exc:
            out(f"id guard: {exc}")
        problems: list[str] = []
        if copy.exists():
            try:
                conn = sqlite3.connect(str(copy))
                rows = [r[0] for r in conn.execute("PRAGMA integrity_check(20)").fetchall()]
                conn.close()
                if rows != ["ok"]:
                    problems.append("integrity check: " + "; ".join(rows[:5]))
                else:
                    out("integrity check: ok")
            except sqlite3.DatabaseError as exc:
                problems.append(f"cannot be read by SQLite: {exc}")
        s = Store(copy)
        try:
            s.open()
            out(f"start check: ok; {s.active_count} messages not final; next id above {s._last_id}")
        except StoreError as exc:
            problems.append(str(exc).replace(str(copy), str(db)))
        finally:
            s.close()
    for p in problems:
        out(f"PROBLEM: {p}")
    if problems:
        out(f"the bridge will not start on {db}. Run `smpp-bridge store recover` (with the same --config "
            f"or --db) to copy what is readable into a new store; to use a backup instead, put it in "
            f"place first, then recover (message ids then continue above every id handed out)")
        return 1
    out("ok: the bridge will start on this store")
    return 0


def _readable_rows(conn: sqlite3.Connection, table: str, columns: list[str], max_rowid: int) -> tuple[list[tuple], int]:
    """Every row of ``table`` that can be read, and how many rowid ranges could not be."""
    cols = ", ".join(columns)
    try:
        return conn.execute(f"SELECT {cols} FROM {table}").fetchall(), 0
    except sqlite3.DatabaseError:
        pass
    rows: list[tuple] = []
    bad = 0
    for lo in range(0, max_rowid + 1, CHUNK):
        try:
            rows += conn.execute(f"SELECT {cols} FROM {table} WHERE rowid BETWEEN ? AND ?", (lo, lo + CHUNK - 1)).fetchall()
            continue
        except sqlite3.DatabaseError:
            pass
        for rowid in range(lo, lo + CHUNK):
            try:
                rows += conn.execute(f"SELECT {cols} FROM {table} WHERE rowid = ?", (rowid,)).fetchall()
            except sqlite3.DatabaseError:
                bad += 1
    return rows, bad


def _max_rowid(conn: sqlite3.Connection, table: str, fallback: int) -> int:
    try:
        return int(conn.execute(f"SELECT coalesce(max(rowid), 0) FROM {table}").fetchone()[0])
    except sqlite3.DatabaseError:
        return fallback


def recover(db: Path, out: Print = print, *, now: Callable[[], float] = time.time) -> int:
    """Move the store at ``db`` aside and copy what is readable into a new one there."""
    guard = IdGuard(db)
    guarded = True
    try:
        guard.load()
        guarded = guard.exists
    except StoreDamaged as exc:
        out(f"id guard unreadable ({exc}); ids will skip {UNGUARDED_GAP} above the highest found")
        guarded = False
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now()))
    kept = db.with_name(f"{db.name}.damaged-{stamp}")
    moved = False
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(db) + suffix)
        if src.exists():
            src.rename(str(kept) + suffix)
            moved = True
    if moved:
        out(f"the old store is kept as {kept} (with its -wal/-shm files)")
    new = open_db(db, "full")
    migrate(new)
    tables = [r[0] for r in new.execute("SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'")]
    highest = 0
    copied_total = 0
    with tempfile.TemporaryDirectory(prefix="smpp-bridge-recover-", dir=db.parent) as tmp:
        scratch = Path(tmp) / db.name
        if moved:
            _copy_files(kept, scratch)
        old: sqlite3.Connection | None = None
        if scratch.exists() and scratch.stat().st_size > 0:
            try:
                old = sqlite3.connect(str(scratch))
                old.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.DatabaseError as exc:
                out(f"the old database cannot be read at all ({exc}); starting an empty store")
                old = None
        new.execute("BEGIN IMMEDIATE")
        for table in tables:
            if old is None:
                break
            columns = [r[1] for r in new.execute(f"PRAGMA table_info({table})")]
            try:
                old_cols = {r[1] for r in old.execute(f"PRAGMA table_info({table})")}
            except sqlite3.DatabaseError:
                old_cols = set()
            columns = [c for c in columns if c in old_cols]
            if not columns:
                out(f"{table}: not readable")
                continue
            rows, bad = _readable_rows(old, table, columns, _max_rowid(old, table, guard.reserved))
            if table == "meta":
                rows = [r for r in rows if r[columns.index("key")] not in ("store_id",)]
            marks = ", ".join("?" * len(columns))
            new.executemany(f"INSERT OR IGNORE INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows)
            if table in ("messages", "partials") and rows and "id" in columns:
                highest = max(highest, max(r[columns.index("id")] for r in rows))
            copied_total += len(rows)
            out(f"{table}: {len(rows)} rows copied" + (f", {bad} rows unreadable" if bad else ""))
        if old is not None:
            old.close()
        row = new.execute("SELECT value FROM meta WHERE key='last_id'").fetchone()
        highest = max(highest, int(row[0]) if row else 0)
        reserved = max(guard.reserved, highest) if guarded else highest + UNGUARDED_GAP
        store_id = new_store_id()
        for key, value in (("last_id", str(reserved)), ("store_id", store_id)):
            new.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))
        new.execute("COMMIT")
    new.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    new.close()
    guard.store, guard.reserved, guard.floor = store_id, reserved, reserved
    guard.write()
    last_path(db).unlink(missing_ok=True)
    out(f"new store {db}: {copied_total} rows copied; message ids continue above {reserved}")
    out("messages acknowledged but not found (look for them in the ESMEs' records) cannot be recovered here; "
        "start the bridge again")
    return 0
