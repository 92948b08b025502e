"""The schema: migrations and the version check."""

import hashlib
import sqlite3

import pytest

from bridge.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, migrate


async def test_schema_version_is_recorded(store, tmp_path):
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    db = sqlite3.connect(tmp_path / "b.sqlite3")
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(tmp_path / "b.sqlite3").open()


# The text of every migration that has shipped. A database out there was built by exactly this
# text; changing it would give new installs a schema that old ones never get. Add a migration.
SHIPPED = [
    "f5da4bdcb40b62a3c712f8ff426580f9089440d01f4912bb336a88050eef0cfe",
    "ef566ad1092cecfe4fe4e27a1ba7a6d85d7046ced66f98240b1cd6c5ee62ee18",
    "3c587d314a103df1a5efe993dd75afb7484ffdec3bc47b6f145c23bd70e14038",
    "1b5b0ac16c14e03cf7d797007dac275d2721ca827f2769e7449065f262253f71",
    "56451142294eea5af5a4747625efbdb820c7919a8be6f179fae47ea316515e0c",
]


def test_shipped_migrations_are_never_edited():
    assert len(MIGRATIONS) >= len(SHIPPED)
    for version, digest in enumerate(SHIPPED):
        assert hashlib.sha256(MIGRATIONS[version].encode()).hexdigest() == digest, (
            f"migration {version + 1} has shipped: add a new migration instead of editing it"
        )


def schema_of(db):
    return sorted(db.execute("SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%'"))


@pytest.mark.parametrize("start", range(SCHEMA_VERSION))
def test_a_database_of_any_older_version_migrates_to_the_same_schema_keeping_its_rows(tmp_path, start):
    fresh = sqlite3.connect(tmp_path / "fresh.sqlite3", isolation_level=None)
    assert migrate(fresh) == 0
    old = sqlite3.connect(tmp_path / "old.sqlite3", isolation_level=None)
    for version in range(start):
        old.executescript(MIGRATIONS[version])
    old.execute(f"PRAGMA user_version={start}")
    if start >= 1:
        old.execute("INSERT INTO messages (id, esme, state, created_at, updated_at, destination_addr, body) "
                    "VALUES (7, 'app', 'queued', 1.0, 1.0, '+49', x'6869')")
    assert migrate(old) == start
    assert old.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert schema_of(old) == schema_of(fresh)
    if start >= 1:
        assert old.execute("SELECT id, state, body FROM messages").fetchall() == [(7, "queued", b"hi")]
    assert migrate(old) == SCHEMA_VERSION  # nothing left to do
