"""The outbox row format of a deliver_sm (receipt or MO): its params and TLVs as JSON, bytes as
base64. Written by the receipt policy and inbound, read by delivery."""

from __future__ import annotations

import base64
import json
from typing import Any

from ..smpp.constants import CommandId
from ..smpp.pdu import Pdu


def _enc(v: Any) -> Any:
    if isinstance(v, bytes):
        return {"b64": base64.b64encode(v).decode("ascii")}
    return v


def _dec(v: Any) -> Any:
    if isinstance(v, dict) and "b64" in v:
        return base64.b64decode(v["b64"])
    return v


def encode_payload(p: dict[str, Any]) -> str:
    return json.dumps(
        {
            "params": {k: _enc(v) for k, v in p["params"].items()},
            "tlvs": {str(int(k)): _enc(v) for k, v in p.get("tlvs", {}).items()},
        },
        separators=(",", ":"),
    )


def decode_payload(payload: str) -> Pdu:
    d = json.loads(payload)
    return Pdu(
        CommandId.DELIVER_SM,
        params={k: _dec(v) for k, v in d["params"].items()},
        tlvs={int(k): _dec(v) for k, v in d.get("tlvs", {}).items()},
    )
