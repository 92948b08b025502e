"""The durable store: SQLite in WAL mode, written through group commits.

``Store`` is the one public face; each concern lives in its own module, each with its rules at
the top:

* ``engine.py``      the group-commit engine: one writer, batches, rollback of one bad operation
* ``guard.py``       ids never handed out twice, start checks of a damaged store, the file watch
* ``schema.py``      migrations (never edit a shipped one) and how connections are opened
* ``records.py``     message ids (``format_id`` / ``parse_id``), ``NewMessage``, the records handed out
* ``messages.py``    accepting submits, long-message assembly, submit_multi, lookups
* ``transitions.py`` state changes, cancel_sm / replace_sm, the scheduler's side (device parts)
* ``outbox.py``      deliver_sm (receipts, MO) waiting for ESMEs
* ``inbound.py``     inbound SMS: de-duplication, reassembly, MO
* ``optouts.py``     the opt-out list
* ``api_requests.py`` the HTTP send API's idempotency keys, committed with their messages
* ``upstream.py``    receipts from upstream SMSCs, committed before they are answered

Raw SQL and the id format stay behind this package: callers use ``Store`` methods and
``format_id`` / ``parse_id``, never the connections.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .api_requests import ApiRequests
from .engine import Done, Engine, Op, run_inline
from .guard import StoreDamaged
from .inbound import (
    INBOUND_RESEND_WINDOW,
    INBOUND_STATES,
    MISSING_PART,
    Inbound,
    InboundPolicy,
    InboundResult,
    MoMessage,
)
from .messages import Messages
from .optouts import Optouts, canonical_number, optout_key
from .outbox import Outbox
from .records import (
    ID_WIDTH,
    SUBMIT_FIELDS,
    Accepted,
    Event,
    MessageRecord,
    NewMessage,
    OutboxItem,
    PartRecord,
    QueueEntry,
    ClaimedElsewhere,
    Superseded,
    StoreError,
    StoreUnwritable,
    format_id,
    parse_id,
    summarise,
)
from .schema import MIGRATIONS, SCHEMA_VERSION, migrate
from .transitions import Transitions
from .upstream import UpstreamReceipts


class Store(Messages, Transitions, Outbox, Inbound, Optouts, ApiRequests, UpstreamReceipts, Engine):
    """The bridge's SQLite store. Create, ``open()``, then start ``store.run`` (the writer) in a
    nursery."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "full",
        partial_timeout: float = 600.0,
        clock: Callable[[], float] = time.time,
        on_commit: Callable[[int, float], None] | None = None,
        run_sync: Callable[..., Awaitable[Any]] | None = None,
    ) -> None:
        """``run_sync(fn, *args)`` runs SQLite work away from the event loop (default: a worker
        thread). Tests on trio's autojump MockClock pass one that runs ``fn`` inline, so the
        clock never jumps while a commit is under way."""
        super().__init__(path, synchronous=synchronous, clock=clock, on_commit=on_commit, run_sync=run_sync)
        self.partial_timeout = partial_timeout
        # Told about every new logical message that is waiting for a device (the scheduler),
        # and about every ESME that has a new deliver_sm in the outbox (receipts.delivery.OutboxDelivery).
        self.on_new_message: Callable[[QueueEntry], None] | None = None
        self.on_outbox: Callable[[str], None] | None = None
        # Builds the receipt rows (esme, kind, payload, expire_at) for a message the store
        # itself makes final (cancel_sm, parts that never completed, a transition() to a final
        # state): queued in the same transaction as the state (receipts.policy.Receipts.final).
        self.final_receipts: Callable[[MessageRecord], list[tuple[str, str, str, float]]] | None = None
        # Told about every change of the opt-out list: ("optout" | "optin", number).
        self.on_optout: Callable[[str, str], None] | None = None
        # optout_key of every opted-out number (the submit and send paths read this).
        self._optout_keys: set[str] = set()
        # Parts a client sent again (answered with their first id), and waiting groups ended
        # because a new message reused their reference (messages.py). Read by metrics.
        self.resent_parts = 0
        self.superseded_groups = 0

    def open(self) -> None:
        """Open (creating if needed) and migrate. Synchronous: call before starting tasks."""
        super().open()
        assert self._wconn is not None
        self._optout_keys = self._load_optout_keys(self._wconn)


__all__ = [
    "Accepted",
    "Done",
    "Event",
    "ID_WIDTH",
    "INBOUND_RESEND_WINDOW",
    "INBOUND_STATES",
    "InboundPolicy",
    "InboundResult",
    "MIGRATIONS",
    "MISSING_PART",
    "MessageRecord",
    "MoMessage",
    "NewMessage",
    "Op",
    "OutboxItem",
    "PartRecord",
    "QueueEntry",
    "SCHEMA_VERSION",
    "SUBMIT_FIELDS",
    "Store",
    "ClaimedElsewhere",
    "Superseded",
    "StoreDamaged",
    "StoreError",
    "StoreUnwritable",
    "canonical_number",
    "format_id",
    "migrate",
    "optout_key",
    "parse_id",
    "run_inline",
    "summarise",
]
