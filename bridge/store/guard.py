"""What protects the store against writes the disk lost: the id guard, the start checks, the watch.

An SD card can lose what it was told was written (a power cut, a worn card), and a person can
delete or replace the database file under a running bridge. SQLite alone then starts silently
from whatever is left, hands out message ids an ESME already holds, or keeps acknowledging into
an unlinked file. This module makes each of these either harmless or loud.

Rules
-----
* The id guard ``<db>.ids`` (JSON; written to a temporary file, fsynced, renamed, directory
  fsynced) holds ``store`` (a random id of this database, also in ``meta.store_id``),
  ``reserved`` (no message id above it has been handed out) and ``floor`` (every id up to it was
  committed and fsynced in the database when the guard was written).
* Before an id above ``reserved`` is handed out, ``reserved`` moves ahead by ``RESERVE_BLOCK`` and
  the guard is synced. After any restart, ids start above ``reserved``: an id handed to an ESME
  is never handed out again, even if the database lost its last transactions or was lost whole.
  A clean close writes ``reserved`` down to the last id used, so a clean restart skips nothing.
* ``<db>.ids-last`` holds the last committed id, rewritten in place after every commit and never
  synced (one small write per group commit). It survives kill -9 (the page cache keeps it) and,
  on hardware that honours flushes, can only be lost, never be ahead of what is durable, because
  it is written after the commit's fsync. A copy that does not pass its checksum is ignored.
* Both floors are kept only with ``synchronous: full`` (with ``normal`` a commit is not fsynced,
  so no floor would be honest). The start check refuses a database whose last id is below the
  highest floor: acknowledged messages are missing.
* At start (``check_at_open``): a database file that is missing or empty while a guard says it
  held messages, a ``meta.store_id`` different from the guard's (the file was replaced), a
  ``PRAGMA quick_check`` that is not ok, or a database that cannot be opened at all, are refused
  with ``StoreDamaged``, whose message says what happened and what to run.
* A database (or its directory) that is read-only at start is refused (``StoreError``): SQLite
  cannot even open a WAL database it cannot write, and a bridge that acknowledges nothing must
  not look started.
* While running (``FileWatch``): the database file's identity (device, inode) and writability are
  checked before every group commit and every few seconds when idle. Deleted or replaced is final
  until a restart (what would be written now is lost at the next start); read-only clears when the
  file is writable again.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import struct
import zlib
from pathlib import Path
from typing import Any

from .records import StoreError

RESERVE_BLOCK = 1000
WHAT_TO_RUN = (
    "Run `smpp-bridge store check --config FILE` for the details, then `smpp-bridge store recover "
    "--config FILE` (copies what is readable into a new store, keeps the damaged one, and keeps "
    "message ids above every id handed out; to use a backup, put it in place first, then recover)"
)


class StoreDamaged(StoreError):
    """The store cannot be trusted: starting would lose acknowledged messages or reuse ids."""


def guard_path(db: Path) -> Path:
    return db.with_name(db.name + ".ids")


def last_path(db: Path) -> Path:
    return db.with_name(db.name + ".ids-last")


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(str(d), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class IdGuard:
    """The two guard files of one database (see the module rules)."""

    def __init__(self, db: Path, *, floors: bool = True) -> None:
        self.db = db
        self.path = guard_path(db)
        self.last = last_path(db)
        self.floors = floors
        self.store: str | None = None
        self.reserved = 0
        self.floor = 0
        self.exists = False
        self._last_fd: int | None = None

    # -- reading ---------------------------------------------------------------------------------

    def load(self) -> None:
        try:
            raw = self.path.read_text()
        except FileNotFoundError:
            self.exists = False
            return
        try:
            data = json.loads(raw)
            self.store = str(data["store"])
            self.reserved = int(data["reserved"])
            self.floor = int(data.get("floor", 0))
        except (ValueError, KeyError, TypeError) as exc:
            raise StoreDamaged(
                f"the id guard {self.path} cannot be read ({exc}); it keeps message ids from being "
                f"handed out twice. {WHAT_TO_RUN}"
            ) from exc
        self.exists = True

    def last_committed(self) -> int:
        """The unsynced last-commit record, or 0 if missing or torn."""
        try:
            raw = self.last.read_bytes()
        except OSError:
            return 0
        return _unpack_last(raw, self.store)

    # -- writing ---------------------------------------------------------------------------------

    def write(self) -> None:
        """Write the guard durably (temporary file, fsync, rename, fsync of the directory)."""
        data = {"store": self.store, "reserved": self.reserved, "floor": self.floor if self.floors else 0}
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(str(tmp), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, (json.dumps(data) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        _fsync_dir(self.path.parent)
        self.exists = True

    def reserve(self, upto: int) -> None:
        """Make sure ids up to ``upto`` may be handed out (synced before this returns)."""
        if upto <= self.reserved:
            return
        self.reserved = upto + RESERVE_BLOCK - 1
        self.write()

    def committed(self, last_id: int) -> None:
        """After a commit that is durable: record ``last_id`` in the unsynced last-commit file."""
        if not self.floors or self.store is None:
            return
        try:
            if self._last_fd is None:
                self._last_fd = os.open(str(self.last), os.O_WRONLY | os.O_CREAT, 0o600)
            os.pwrite(self._last_fd, _pack_last(last_id, self.store), 0)
        except OSError:
            pass  # only a hint for the next start; the commit itself succeeded

    def close(self, last_id: int) -> None:
        """A clean close: every commit is durable; the next start need skip no ids."""
        if self._last_fd is not None:
            os.close(self._last_fd)
            self._last_fd = None
        if self.store is None:
            return
        if self.floors:
            self.floor = max(self.floor, last_id)
        self.reserved = max(last_id, self.floor)
        try:
            self.write()
        except OSError:
            pass  # reserved stays ahead: the next start skips a few ids, nothing worse


_LAST = struct.Struct("<QI")


def _pack_last(last_id: int, store: str) -> bytes:
    body = struct.pack("<Q", last_id) + store.encode()
    return _LAST.pack(last_id, zlib.crc32(body))


def _unpack_last(raw: bytes, store: str | None) -> int:
    if store is None or len(raw) < _LAST.size:
        return 0
    last_id, crc = _LAST.unpack(raw[: _LAST.size])
    if zlib.crc32(struct.pack("<Q", last_id) + store.encode()) != crc:
        return 0
    return last_id


def new_store_id() -> str:
    return secrets.token_hex(8)


# -- start checks ---------------------------------------------------------------------------------


def db_state(db: Path) -> str:
    """'missing', 'empty' (0 bytes) or 'present'."""
    try:
        st = os.stat(db)
    except FileNotFoundError:
        return "missing"
    return "empty" if st.st_size == 0 else "present"


def check_before_open(db: Path, guard: IdGuard) -> None:
    """Refuse a database file that is gone or emptied while its guard says it held messages."""
    if not guard.exists:
        return
    state = db_state(db)
    if state == "present":
        return
    held = max(guard.floor, guard.reserved)
    raise StoreDamaged(
        f"the database {db} is {'missing' if state == 'missing' else 'empty (0 bytes)'}, but its "
        f"id guard {guard.path} shows it held messages (ids up to {held}): the store was lost. "
        f"{WHAT_TO_RUN}"
    )


def quick_check(conn: sqlite3.Connection) -> list[str]:
    """Problems ``PRAGMA quick_check`` finds (empty: ok)."""
    rows = [r[0] for r in conn.execute("PRAGMA quick_check(20)").fetchall()]
    return [] if rows == ["ok"] else rows


def check_integrity(db: Path, conn: sqlite3.Connection) -> None:
    try:
        problems = quick_check(conn)
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems:
        raise StoreDamaged(
            f"the database {db} is damaged (integrity check: {'; '.join(problems[:3])}). {WHAT_TO_RUN}"
        )


def highest_id(conn: sqlite3.Connection) -> int:
    ids = [conn.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0] for t in ("messages", "partials")]
    row = conn.execute("SELECT value FROM meta WHERE key='last_id'").fetchone()
    return max(*ids, int(row[0]) if row else 0)


def _has_table(conn: sqlite3.Connection, name: str) -> bool:
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def open_read_only(db: Path) -> sqlite3.Connection:
    """A connection that cannot change the file: closing it checkpoints nothing, so a refused
    store (and its damaged write-ahead log) stays exactly as it was found."""
    from urllib.parse import quote

    return sqlite3.connect(f"file:{quote(str(db))}?mode=ro", uri=True, check_same_thread=False)


def verify(db: Path, conn: sqlite3.Connection, guard: IdGuard) -> None:
    """The start checks on the database as found (a read-only connection; see module rules)."""
    check_integrity(db, conn)
    if not _has_table(conn, "meta"):
        stored, last = None, 0
    else:
        row = conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()
        stored, last = (row[0] if row else None), highest_id(conn)
    if not guard.exists:
        return
    if stored is not None and stored != guard.store:
        raise StoreDamaged(
            f"the database {db} is not the one its id guard {guard.path} belongs to (store id "
            f"{stored}, guard {guard.store}): the file was replaced. {WHAT_TO_RUN}"
        )
    if stored is None and max(guard.floor, guard.reserved) > 0:
        raise StoreDamaged(
            f"the database {db} has no store id but its id guard {guard.path} shows a store that "
            f"held ids up to {guard.reserved}: the file was replaced or recreated. {WHAT_TO_RUN}"
        )
    if guard.floors:
        floor = max(guard.floor, guard.last_committed())
        if last < floor:
            raise StoreDamaged(
                f"the database {db} ends at message id {last}, but ids up to {floor} were committed "
                f"and acknowledged: the last {floor - last} ids' transactions were lost (a damaged "
                f"or missing write-ahead log {db}-wal, or a disk that lost flushed writes). "
                f"{WHAT_TO_RUN}"
            )


def adopt(conn: sqlite3.Connection, guard: IdGuard) -> int:
    """After ``verify`` and the migrations: give the database (and the guard) a store id if it has
    none yet; return the last id that may not be handed out again."""
    row = conn.execute("SELECT value FROM meta WHERE key='store_id'").fetchone()
    stored = row[0] if row else None
    last = highest_id(conn)
    if stored is None:
        stored = guard.store if guard.exists and guard.store else new_store_id()
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('store_id', ?)", (stored,))
    if not guard.exists or guard.store != stored:
        guard.store = stored
        guard.reserved = max(guard.reserved, last)
        guard.floor = last if guard.floors else 0
        guard.write()
    return max(last, guard.reserved)


# -- while running ----------------------------------------------------------------------------------


def file_identity(path: Path | str) -> tuple[int, int]:
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def writable_problem(path: Path) -> str | None:
    """Why the database file (or the directory it is to be made in) cannot be written, or None."""
    d = path if path.is_dir() else path.parent
    return _writable_problem(str(path), str(d))


def _writable_problem(path: str, directory: str) -> str | None:
    # Three system calls and no path objects: FileWatch runs this before every commit.
    try:
        vfs = os.statvfs(directory)
    except OSError as exc:
        return f"its directory cannot be read ({exc.strerror})"
    if vfs.f_flag & os.ST_RDONLY:
        return "its file system is mounted read-only"
    if not os.access(path, os.W_OK) or not os.access(directory, os.W_OK):
        return "the file or its directory is not writable for this user"
    return None


class FileWatch:
    """The database file's identity and writability, as checked before each commit."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file, self._dir = str(path), str(path.parent)
        self.identity: tuple[int, int] | None = None
        self.lost: str | None = None  # deleted or replaced: final until a restart
        self.readonly: str | None = None

    def start(self) -> None:
        self.identity = file_identity(self.path)
        self.lost = None
        self.check()

    def check(self) -> str | None:
        """The current fault (what stops acknowledging), or None."""
        if self.lost is None and self.identity is not None:
            try:
                ident: Any = file_identity(self._file)
            except FileNotFoundError:
                ident = None
            except OSError as exc:
                ident = exc
            if ident is None:
                self.lost = (
                    f"the database file {self.path} was deleted while the bridge ran; what is "
                    f"written now would be lost at the next start. Restart the bridge (it will "
                    f"refuse to start and say what to run)"
                )
            elif isinstance(ident, OSError):
                return f"the database file {self.path} cannot be examined ({ident.strerror})"
            elif ident != self.identity:
                self.lost = (
                    f"the database file {self.path} was replaced by another file while the bridge "
                    f"ran; restart the bridge (it checks the new file and says what to run)"
                )
        if self.lost is not None:
            return self.lost
        problem = _writable_problem(self._file, self._dir)
        self.readonly = (
            None if problem is None
            else f"the database {self.path} is read-only: {problem}. Make it writable; submits are refused meanwhile"
        )
        return self.readonly
