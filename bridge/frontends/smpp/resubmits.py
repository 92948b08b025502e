"""Recognising a submit_sm the ESME sends again because it never got our answer (sans-IO).

An ESME (or a router such as Kannel) that loses its connection with a submit_sm unanswered sends
that message again on its next bind: it cannot know whether we took it. When we did take it (the
commit was done) but our submit_sm_resp never left this process, because the connection was
already gone or the write failed, the bridge knows the ESME is about to resend, and a second
SMS to the recipient is the result if the resend is taken as new.

So a connection that ends with such answers unwritten hands them here: per ESME, what the
message was (addresses, coding, esm_class, registered_delivery, the bytes) and the id it got,
for ``HOLD`` seconds. A later submit_sm from the same ESME, on any bind, that is the same message
is answered ESME_ROK with the first id and not stored again; each remembered answer serves once.

What this cannot tell, and so leaves alone: an answer that was written to the socket and lost on
the way (the kernel took it; whether the peer read it, nobody here knows), and answers lost when
the bridge itself stopped (the registry is in memory). Long messages need none of this: a resent
part of a concatenated message is recognised by the store (same reference and part number).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...smpp.constants import CommandId

#: How long a lost answer is remembered: routers resend within seconds to minutes of reconnecting.
HOLD = 600.0
#: Per ESME at most this many remembered answers (the oldest go first).
LIMIT = 10_000

UDHI = 0x40

Key = tuple[Any, ...]


def resubmit_key(command_id: int, params: Mapping[str, Any]) -> Key | None:
    """What makes two submit_sm the same message, or None when this one is not judged here
    (another command, or a part of a long message: the store recognises those)."""
    if command_id != CommandId.SUBMIT_SM:
        return None
    esm_class = int(params.get("esm_class", 0) or 0)
    if esm_class & UDHI or params.get("sar_msg_ref_num") is not None:
        return None
    body = params.get("message_payload") or params.get("short_message") or b""
    return (
        params.get("source_addr", ""),
        params.get("destination_addr", ""),
        int(params.get("data_coding", 0) or 0),
        esm_class,
        int(params.get("registered_delivery", 0) or 0),
        bytes(body),
    )


class UnansweredSubmits:
    """Per ESME: the answers a connection could not write, until used or ``HOLD`` has passed."""

    def __init__(self, hold: float = HOLD, limit: int = LIMIT) -> None:
        self.hold = hold
        self.limit = limit
        self._by_esme: dict[str, dict[Key, list[tuple[str, float, int]]]] = {}
        self._seq = 0  # order of remembering: the oldest goes first among equal expiry times

    def remember(self, esme: str, key: Key, message_id: str, now: float) -> None:
        if esme in self._by_esme:
            self._expire(esme, now)
        entries = self._by_esme.setdefault(esme, {})
        self._seq += 1
        entries.setdefault(key, []).append((message_id, now + self.hold, self._seq))
        while sum(len(v) for v in entries.values()) > self.limit:
            oldest = min(entries, key=lambda k: (entries[k][0][1], entries[k][0][2]))
            entries[oldest].pop(0)
            if not entries[oldest]:
                del entries[oldest]

    def take(self, esme: str, key: Key, now: float) -> str | None:
        """The id of the same message whose answer was lost, once; None if there is none."""
        if esme not in self._by_esme:
            return None
        self._expire(esme, now)
        entries = self._by_esme.get(esme)
        ids = entries.get(key) if entries else None
        if not ids:
            return None
        message_id = ids.pop(0)[0]
        if not ids:
            del entries[key]
        return message_id

    def __len__(self) -> int:
        return sum(len(v) for e in self._by_esme.values() for v in e.values())

    def _expire(self, esme: str, now: float) -> None:
        entries = self._by_esme[esme]
        for key in [k for k, ids in entries.items() if ids and ids[0][1] <= now]:
            ids = [e for e in entries[key] if e[1] > now]
            if ids:
                entries[key] = ids
            else:
                del entries[key]
        if not entries:
            del self._by_esme[esme]
