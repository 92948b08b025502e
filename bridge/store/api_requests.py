"""The HTTP send API's side of the store: messages accepted together with their Idempotency-Key.

Rules
-----
* A POST with an ``Idempotency-Key`` commits its messages and the key (with the answer given)
  in one transaction: after a kill -9 either both are there or neither, so a client that
  retries after a lost answer gets the first answer, and the SMS goes out once.
* The key is the client's own per ESME; a retry whose body differs (``fingerprint``) is not the
  same request: the caller answers 422 instead of pretending.
* Keys are kept ``keep`` seconds (the receipt retention), then swept by ``expire_api_requests``.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

from .records import Accepted, NewMessage


class ApiRequests:
    """Part of ``Store``; relies on ``write``, ``read``, ``clock`` and Messages' inserts."""

    async def api_answer(self, esme: str, key: str) -> tuple[str, dict[str, Any]] | None:
        """(fingerprint, answer) stored for this ESME's key, or None."""

        def fn(conn: sqlite3.Connection) -> tuple[str, dict[str, Any]] | None:
            row = conn.execute("SELECT fingerprint, answer FROM api_requests WHERE esme=? AND key=?",
                               (esme, key)).fetchone()
            return None if row is None else (row[0], json.loads(row[1]))

        return await self.read(fn)  # type: ignore[attr-defined]

    async def accept_api(
        self,
        esme: str,
        msgs: list[NewMessage],
        key: str | None,
        fingerprint: str,
        answer_for: Callable[[list[str]], dict[str, Any]],
    ) -> tuple[dict[str, Any], bool, str]:
        """Store ``msgs`` (one message each) and, with a key, the answer ``answer_for(ids)``, in
        one transaction; returns after the commit ``(answer, replayed, fingerprint)``: ``replayed``
        when the key was already there (nothing was stored this time; ``fingerprint`` is the
        first request's)."""

        def op(conn: sqlite3.Connection) -> tuple[dict[str, Any], bool, str]:
            if key is not None:
                row = conn.execute("SELECT fingerprint, answer FROM api_requests WHERE esme=? AND key=?",
                                   (esme, key)).fetchone()
                if row is not None:
                    return json.loads(row[1]), True, row[0]
            ids: list[str] = []
            for m in msgs:
                accepted: Accepted = self._insert_whole(conn, m)  # type: ignore[attr-defined]
                ids.append(accepted.message_id)
            answer = answer_for(ids)
            if key is not None:
                conn.execute(
                    "INSERT INTO api_requests (esme, key, fingerprint, created_at, answer) VALUES (?,?,?,?,?)",
                    (esme, key, fingerprint, self.clock(), json.dumps(answer)),  # type: ignore[attr-defined]
                )
            return answer, False, fingerprint

        return await self.write(op)  # type: ignore[attr-defined]

    async def expire_api_requests(self, keep: float) -> int:
        """Forget keys older than ``keep`` seconds; returns how many."""

        def op(conn: sqlite3.Connection) -> int:
            cur = conn.execute("DELETE FROM api_requests WHERE created_at < ?", (self.clock() - keep,))  # type: ignore[attr-defined]
            return cur.rowcount

        return await self.write(op)  # type: ignore[attr-defined]

