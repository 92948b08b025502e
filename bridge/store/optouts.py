"""The opt-out list: numbers that asked not to be sent any more messages.

Rules
-----
* One row per number in ``optouts``, matched by ``optout_key`` (digits, without ``+`` or
  ``00``): ``+491701234567``, ``00491701234567`` and ``491701234567`` are one number; a national
  number is not matched to its international form.
* A STOP/START keyword changes the list in the transaction that completes its MO (inbound.py);
  the admin API changes it through ``add_optout`` / ``remove_optout``.
* ``is_opted_out`` reads an in-memory copy (the submit and send paths ask it for every message):
  loaded at open, updated after each commit that changed the list, never before.
* Every change is announced (``on_optout``) after its commit.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from .inbound import InboundResult

def canonical_number(number: str) -> str:
    """A phone number as the opt-out list shows it: separators dropped, ``00`` -> ``+``."""
    s = "".join(ch for ch in number.strip() if ch not in " -./()\t")
    if s.startswith("00") and s[2:].isdigit():
        return "+" + s[2:]
    return s


def optout_key(number: str) -> str:
    """What opt-out matching compares: ``+491701234567``, ``00491701234567`` and
    ``491701234567`` (an ESME writing an international number without ``+``) are one number.
    A national number (``01701234567``) is not matched to its international form."""
    return canonical_number(number).removeprefix("+")



class Optouts:
    """The opt-out list and its in-memory copy.

    Part of ``Store`` (see ``bridge/store/__init__.py``): it relies on the engine's ``write``,
    ``write_nowait``, ``read``, ``after_commit``, ``clock`` and on the other pieces' methods named
    in the module docstring."""

    on_optout: Callable[[str, str], None] | None
    _optout_keys: set[str]

    @staticmethod
    def _load_optout_keys(conn: sqlite3.Connection) -> set[str]:
        return {r[0] for r in conn.execute("SELECT key FROM optouts")}

    # -- opt-outs -------------------------------------------------------------------------------

    def is_opted_out(self, number: str) -> bool:
        """True if ``number`` (as an ESME or a device writes it) is on the opt-out list."""
        return bool(self._optout_keys) and optout_key(number) in self._optout_keys

    @property
    def optout_count(self) -> int:
        return len(self._optout_keys)

    async def list_optouts(self) -> list[dict[str, Any]]:
        """Every opted-out number, oldest first: {number, keyword, at, source}."""

        def fn(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute("SELECT number, keyword, at, source FROM optouts ORDER BY at, number")
            return [{"number": r[0], "keyword": r[1], "at": r[2], "source": r[3]} for r in rows]

        return await self.read(fn)

    async def add_optout(self, number: str, source: str = "admin", keyword: str | None = None) -> bool:
        """Put ``number`` on the opt-out list; False if it was already there."""
        if not optout_key(number):
            raise ValueError("expected a phone number, got an empty one")

        def op(conn: sqlite3.Connection) -> bool:
            res = InboundResult()
            self._change_optout(conn, number, "optout", source, keyword, res)
            return bool(res.optouts)

        return await self.write(op)

    async def remove_optout(self, number: str) -> bool:
        """Take ``number`` off the opt-out list; False if it was not on it."""

        def op(conn: sqlite3.Connection) -> bool:
            res = InboundResult()
            self._change_optout(conn, number, "optin", "admin", None, res)
            return bool(res.optouts)

        return await self.write(op)

    def _change_optout(
        self, conn: sqlite3.Connection, number: str, action: str, source: str, keyword: str | None,
        res: InboundResult,
    ) -> None:
        key = optout_key(number)
        if not key:
            return
        if action == "optout":
            cur = conn.execute(
                "INSERT OR IGNORE INTO optouts (number, key, keyword, at, source) VALUES (?,?,?,?,?)",
                (canonical_number(number), key, keyword, self.clock(), source),
            )
        else:
            cur = conn.execute("DELETE FROM optouts WHERE key=?", (key,))
        if cur.rowcount == 0:
            return
        res.optouts.append((action, canonical_number(number)))
        keys = self._optout_keys
        hook = self.on_optout

        def apply() -> None:
            if action == "optout":
                keys.add(key)
            else:
                keys.discard(key)
            if hook is not None:
                hook(action, canonical_number(number))

        self.after_commit(apply)
