"""SMPP PDUs as plain data, and their wire codec (filled in below the data class)."""

from __future__ import annotations

from typing import Any

import attrs


@attrs.define(slots=True, eq=True)
class Pdu:
    """One SMPP PDU.

    ``params`` holds the mandatory body fields under their spec names (``system_id``,
    ``short_message`` ...). C-Octet strings are ``str`` (ASCII/latin-1), ``short_message`` is
    ``bytes``, integers are ``int``. ``tlvs`` maps a TLV tag to its value: known integer TLVs
    decode to ``int``, known C-string TLVs to ``str``, everything else (and every unknown tag)
    to ``bytes``.
    """

    command_id: int
    command_status: int = 0
    sequence_number: int = 0
    params: dict[str, Any] = attrs.Factory(dict)
    tlvs: dict[int, Any] = attrs.Factory(dict)

    def get(self, name: str, default: Any = None) -> Any:
        return self.params.get(name, default)
