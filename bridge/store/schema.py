"""The store's schema: migrations, and how a connection to the database file is opened.

Rules
-----
* ``MIGRATIONS[i]`` moves the schema from version i to i+1; the version is ``PRAGMA
  user_version``. Each migration runs in its own transaction with the version bump.
* Never edit a migration that has shipped: add a new one at the end.
* A database newer than this code knows is refused (``StoreError``), never downgraded.
* Connections run in WAL mode (readers beside the one writer), ``synchronous`` FULL or NORMAL as
  configured, foreign keys on.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from .records import StoreError

log = logging.getLogger("bridge.store")


# ---------------------------------------------------------------------------------------------
# Schema and migrations. Each entry moves the schema from version i to i+1 (PRAGMA user_version).
# Never edit a migration that has shipped: add a new one.

MIGRATIONS: list[str] = [
    # 1: messages, aliases, partial parts, events, meta
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        state TEXT NOT NULL,
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        service_type TEXT NOT NULL DEFAULT '',
        source_addr_ton INTEGER NOT NULL DEFAULT 0,
        source_addr_npi INTEGER NOT NULL DEFAULT 0,
        source_addr TEXT NOT NULL DEFAULT '',
        dest_addr_ton INTEGER NOT NULL DEFAULT 0,
        dest_addr_npi INTEGER NOT NULL DEFAULT 0,
        destination_addr TEXT NOT NULL,
        esm_class INTEGER NOT NULL DEFAULT 0,
        protocol_id INTEGER NOT NULL DEFAULT 0,
        priority INTEGER NOT NULL DEFAULT 0,
        data_coding INTEGER NOT NULL DEFAULT 0,
        registered_delivery INTEGER NOT NULL DEFAULT 0,
        receipt_id INTEGER,
        schedule_at REAL,
        expire_at REAL,
        body BLOB NOT NULL,
        text TEXT,
        esme_parts INTEGER NOT NULL DEFAULT 1,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        route TEXT,
        channel TEXT,
        error TEXT,
        final_at REAL
    );
    CREATE INDEX messages_active ON messages(state, priority, id)
        WHERE state NOT IN ('delivered','acknowledged','undeliverable','expired','rejected',
                            'unknown','deleted');
    CREATE INDEX messages_dest ON messages(destination_addr);
    CREATE TABLE aliases (alias INTEGER PRIMARY KEY, message INTEGER NOT NULL);
    CREATE TABLE partials (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        concat_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        total INTEGER NOT NULL,
        received_at REAL NOT NULL,
        fields TEXT NOT NULL,
        body BLOB NOT NULL,
        UNIQUE (esme, concat_key, seq)
    );
    CREATE INDEX partials_age ON partials(received_at);
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        message INTEGER NOT NULL,
        at REAL NOT NULL,
        state TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_message ON events(message);
    """,
    # 2: device parts of each message, and the outbox of deliver_sm waiting for ESMEs
    """
    CREATE TABLE parts (
        message INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        total INTEGER NOT NULL,
        state TEXT NOT NULL,
        device TEXT NOT NULL,
        channel TEXT NOT NULL,
        pre_ref TEXT,
        ref TEXT,
        error TEXT,
        started_at REAL NOT NULL,
        sent_at REAL,
        done_at REAL,
        PRIMARY KEY (message, seq)
    );
    CREATE INDEX parts_channel ON parts(device, channel, started_at);
    CREATE TABLE outbox (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        kind TEXT NOT NULL,
        message INTEGER,
        created_at REAL NOT NULL,
        expire_at REAL NOT NULL,
        payload TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        delivered_at REAL
    );
    CREATE INDEX outbox_pending ON outbox(esme, id) WHERE delivered_at IS NULL;
    ALTER TABLE messages ADD COLUMN device TEXT;
    """,
    # 3: inbound SMS (de-duplicated per device, long ones reassembled) and the opt-out list
    """
    CREATE TABLE inbound (
        id INTEGER PRIMARY KEY,
        device TEXT NOT NULL,
        channel TEXT NOT NULL,
        sender TEXT NOT NULL,
        recipient TEXT,
        text TEXT NOT NULL,
        received_at REAL NOT NULL,
        device_key TEXT NOT NULL,
        concat_ref INTEGER,
        concat_total INTEGER,
        concat_seq INTEGER,
        esme TEXT,
        state TEXT NOT NULL,
        mo INTEGER,
        incomplete INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        done_at REAL,
        UNIQUE (device, device_key)
    );
    CREATE INDEX inbound_pending ON inbound(created_at) WHERE state = 'pending';
    CREATE INDEX inbound_mo ON inbound(mo);
    CREATE TABLE optouts (
        number TEXT PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        keyword TEXT,
        at REAL NOT NULL,
        source TEXT NOT NULL
    );
    CREATE INDEX outbox_message ON outbox(kind, message);
    """,
    # 4: deliver_sm an ESME refused for good (with its status), a back-off per outbox row, and
    # the destinations of a submit_multi found by the one id the ESME was given (receipt_id)
    """
    ALTER TABLE outbox ADD COLUMN refused_status INTEGER;
    ALTER TABLE outbox ADD COLUMN next_try_at REAL;
    CREATE INDEX messages_receipt ON messages(receipt_id) WHERE receipt_id IS NOT NULL;
    """,
    # 5: the parts of assembled long messages, remembered for partial_timeout so that a part the
    # client sends again (its submit_sm_resp was lost) is recognised instead of opening a group;
    # inbound parts by sender and reference (the network's resends of a part are found by them)
    """
    CREATE TABLE assembled_parts (
        id INTEGER PRIMARY KEY,
        esme TEXT NOT NULL,
        concat_key TEXT NOT NULL,
        seq INTEGER NOT NULL,
        digest TEXT NOT NULL,
        assembled_at REAL NOT NULL
    );
    CREATE INDEX assembled_parts_key ON assembled_parts(esme, concat_key, seq);
    CREATE INDEX assembled_parts_age ON assembled_parts(assembled_at);
    CREATE INDEX inbound_concat ON inbound(sender, concat_ref, concat_seq) WHERE concat_ref IS NOT NULL;
    """,
    # 6: the scheduler pages its queues from the store instead of holding the backlog in memory:
    # each route's queued messages by priority and id, the timers by due time and id (the
    # expression is messages._DUE, letter for letter); the expiry sweep finds the waiting
    # messages whose validity ended without reading every waiting row
    """
    CREATE INDEX messages_expiry ON messages(expire_at)
        WHERE state IN ('accepted','scheduled','queued','retry_wait') AND expire_at IS NOT NULL;
    CREATE INDEX messages_queue ON messages(route, priority, id) WHERE state='queued';
    CREATE INDEX messages_timer ON messages(
        coalesce(CASE state WHEN 'scheduled' THEN schedule_at ELSE next_attempt_at END, 0), id)
        WHERE state IN ('scheduled','retry_wait');
    """,
    # 7: the HTTP send API's Idempotency-Key: the first answer to a POST, committed with its
    # messages, so a retried POST gets that answer and never a second SMS (api_requests.py);
    # outbox rows for webhooks beside those for SMPP binds (channel), one row per way out; the
    # index holds only webhook rows still waiting, so SMPP-only outbox writes do not touch it
    """
    ALTER TABLE outbox ADD COLUMN channel TEXT NOT NULL DEFAULT 'smpp';
    CREATE INDEX outbox_webhook ON outbox(id) WHERE channel='webhook' AND delivered_at IS NULL;
    CREATE TABLE api_requests (
        esme TEXT NOT NULL,
        key TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_at REAL NOT NULL,
        answer TEXT NOT NULL,
        PRIMARY KEY (esme, key)
    );
    CREATE INDEX api_requests_age ON api_requests(created_at);
    """,
    # 8: receipts from upstream SMSCs, committed before their deliver_sm_resp (upstream.py):
    # one row per connector and receipt id, with the submitted id it matched (NULL while it
    # waits for its submit_sm_resp); the parts still waiting for a receipt by their device ref;
    # the newest intermediate stat of a SENT message
    """
    CREATE TABLE upstream_receipts (
        device TEXT NOT NULL,
        id_key TEXT NOT NULL,
        smsc_id TEXT NOT NULL,
        stat TEXT NOT NULL,
        error TEXT,
        received_at REAL NOT NULL,
        matched TEXT,
        PRIMARY KEY (device, id_key)
    );
    CREATE INDEX upstream_receipts_age ON upstream_receipts(received_at);
    CREATE INDEX parts_waiting_ref ON parts(device, ref) WHERE state='sent';
    ALTER TABLE messages ADD COLUMN network_stat TEXT;
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)

# "Not final", spelled as the partial index messages_active (migration 1) spells it: SQLite uses
# a partial index only for a query whose WHERE has the index's condition in the same words, and a
# scan of a million-row table instead takes seconds (counting the active messages at open, finding
# those with a device at start). tests/store/test_store_schema.py checks that SQLite takes them for the same.
NOT_FINAL = "state NOT IN ('delivered','acknowledged','undeliverable','expired','rejected','unknown','deleted')"


#: How long a statement waits for a lock another connection holds (a `store check`, a backup).
BUSY_TIMEOUT_MS = 30_000


def open_db(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        str(path), isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
    )
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; return the version found before."""
    (found,) = conn.execute("PRAGMA user_version").fetchone()
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the database has schema version {found}, newer than this bridge knows "
            f"({SCHEMA_VERSION}); upgrade smpp-bridge or restore a matching backup"
        )
    for version in range(found, SCHEMA_VERSION):
        conn.execute("BEGIN IMMEDIATE")
        for statement in _split_sql(MIGRATIONS[version]):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version={version + 1}")
        conn.execute("COMMIT")
        log.info("store schema migrated to version %d", version + 1)
    return found


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]

