"""Input generators for fuzzing the SMPP stack: a corpus of valid PDUs of every command, and
mutations of them (what a broken or hostile client sends: flipped bits, wrong lengths, cut and
glued PDUs, random bytes). Deterministic for a seed, so a failure can be replayed.

tests/smpp/ holds hypothesis property tests over the codec and the session table (a few
hundred examples each). The fuzzers here build on the same promises but run as plain loops over
``random.Random``: fast enough for a million inputs in the full form, and they drive the layer
above too (the trio ``Connection`` of bridge/frontends/smpp/connection.py, with the real store).
"""

from __future__ import annotations

import random
import struct
from typing import Any

from bridge.smpp import pdu as pdu_mod
from bridge.smpp.constants import RESPONSE_BIT, CommandId, Tag
from bridge.smpp.pdu import Pdu, encode

C = CommandId
HEAD = struct.Struct(">IIII")

# Field values a client might send; some at the limits of their field.
_STRINGS = {
    "system_id": ["fuzz", "", "x" * 15],
    "password": ["secret1", "", "p" * 8],
    "system_type": ["", "VMA"],
    "address_range": ["", "^49"],
    "service_type": ["", "CMT", "x" * 5],
    "schedule_delivery_time": ["", "000000000100000R", "2401011200000+04", "991231235959999-"],
    "validity_period": ["", "000001000000000R", "not a time at all"],
    "final_date": [""],
    "message_id": ["", "0000000001", "9" * 64, "abc"],
    "source_addr": ["app", "", "+4917012345678", "A" * 20],
    "destination_addr": ["+4917012345678", "49170", "", "not-a-number", "9" * 20],
    "esme_addr": ["", "+49170"],
}
_SHORT_MESSAGES = [b"", b"hello", b"\x05\x00\x03\x2a\x02\x01part one", bytes(range(256))[:254], "Grüße €".encode("utf-16-be")]


def _value(rng: random.Random, cid: int, name: str) -> Any:
    if name in _STRINGS:
        return rng.choice(_STRINGS[name])
    if name == "short_message":
        return rng.choice(_SHORT_MESSAGES)
    if name == "dest_addresses":
        out = []
        for _ in range(rng.randrange(0, 4)):
            if rng.random() < 0.8:
                out.append({"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1,
                            "destination_addr": rng.choice(_STRINGS["destination_addr"])})
            else:
                out.append({"dest_flag": 2, "dl_name": "list"})
        return out
    if name == "unsuccess_smes":
        return [{"dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "+49", "error_status_code": 11}]
    if name == "interface_version":
        return rng.choice([0x34, 0x33, 0x50, 0])
    if name == "data_coding":
        return rng.choice([0, 3, 8, 4, 0xF0, 0xFF])
    if name == "registered_delivery":
        return rng.choice([0, 1, 2, 0x11])
    if name == "esm_class":
        return rng.choice([0, 0x40, 0x04, 0xFF])
    if name == "priority_flag":
        return rng.choice([0, 1, 3, 4, 0xFF])
    return rng.randrange(0, 256)


_TLVS = [
    (Tag.SAR_MSG_REF_NUM, 7), (Tag.SAR_TOTAL_SEGMENTS, 2), (Tag.SAR_SEGMENT_SEQNUM, 1),
    (Tag.MESSAGE_PAYLOAD, b"payload " * 40), (Tag.RECEIPTED_MESSAGE_ID, "0000000001"),
    (Tag.USER_MESSAGE_REFERENCE, 5), (0x1400, b"vendor"),
]


def valid_pdu(rng: random.Random, cid: int | None = None, seq: int | None = None) -> Pdu:
    """A well-formed PDU (any command, or ``cid``) with plausible field values."""
    if cid is None:
        cid = rng.choice(list(C))
    params = {name: _value(rng, cid, name) for name in pdu_mod.FIELD_NAMES[cid]}
    status = rng.choice([0, 0, 0, 8, 0x45]) if cid & RESPONSE_BIT else 0
    tlvs: dict[int, Any] = {}
    if pdu_mod._BODIES[C(cid)][1] and rng.random() < 0.3:
        for tag, value in rng.sample(_TLVS, rng.randrange(1, 3)):
            tlvs[int(tag)] = value
    return Pdu(cid, status, rng.randrange(1, 0x7FFFFFFF) if seq is None else seq, params, tlvs)


def valid_bytes(rng: random.Random, cid: int | None = None) -> bytes:
    while True:
        try:
            return encode(valid_pdu(rng, cid))
        except ValueError:  # a combination the encoder refuses (e.g. TLV on a 3.3 shape)
            continue


def bind_bytes(system_id: str, password: str, seq: int = 1, cid: int = C.BIND_TRANSCEIVER) -> bytes:
    return encode(Pdu(cid, 0, seq, {"system_id": system_id, "password": password, "interface_version": 0x34}))


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four mutations of ``data``, the kinds that break parsers."""
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 2, 3, 4))):
        kind = rng.randrange(11)
        if kind == 0 and b:  # flip bits
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and b:  # overwrite a byte with an interesting value
            b[rng.randrange(len(b))] = rng.choice([0, 1, 0x7F, 0x80, 0xFF, rng.randrange(256)])
        elif kind == 2 and b:  # cut the tail
            del b[rng.randrange(len(b)):]
        elif kind == 3:  # append junk
            b += rng.randbytes(rng.randrange(1, 40))
        elif kind == 4 and len(b) >= 4:  # command_length: consistent, off by a little, or wild
            length = rng.choice([len(b), len(b) + rng.randrange(-3, 4), 0, 15, 16, 0xFFFFFFFF, rng.randrange(1 << 32)])
            b[0:4] = struct.pack(">I", length & 0xFFFFFFFF)
        elif kind == 5 and len(b) >= 8:  # command_id: another command's, a response's, unknown
            b[4:8] = struct.pack(">I", rng.choice([int(rng.choice(list(C))), rng.randrange(1 << 32), 0x80000000 | rng.randrange(0x200)]))
        elif kind == 6 and len(b) >= 16:  # remove every NUL of the body (unterminated strings)
            b[16:] = b[16:].replace(b"\x00", b"A")
        elif kind == 7 and b:  # delete a slice
            i = rng.randrange(len(b))
            del b[i:i + rng.randrange(1, 8)]
        elif kind == 8:  # insert random bytes
            i = rng.randrange(len(b) + 1)
            b[i:i] = rng.randbytes(rng.randrange(1, 8))
        elif kind == 9 and len(b) > 16:  # a TLV header with a lying length at the end
            b += struct.pack(">HH", rng.choice([int(Tag.MESSAGE_PAYLOAD), int(Tag.SAR_MSG_REF_NUM), rng.randrange(1 << 16)]), rng.randrange(1 << 16))
        elif kind == 10:  # duplicate a prefix (glued half-PDUs)
            b += b[: rng.randrange(len(b) + 1)]
    return bytes(b)


def fix_length(data: bytes) -> bytes:
    """Make command_length match the data (the body is then parsed, not the framing)."""
    if len(data) < 4:
        return data
    return struct.pack(">I", len(data)) + data[4:]


def decoder_input(rng: random.Random) -> bytes:
    r = rng.random()
    if r < 0.05:
        return rng.randbytes(rng.randrange(0, 64))  # plain random bytes
    data = mutate(rng, valid_bytes(rng))
    return fix_length(data) if r < 0.7 else data


def stream_input(rng: random.Random, bind: bytes | None = None) -> list[bytes]:
    """A byte stream a client might send over one connection, cut into the chunks it arrives
    in: mostly valid PDUs (a bind first, often), some mutated, some glued, some split."""
    pieces = [bind] if bind is not None and rng.random() < 0.85 else []
    for _ in range(rng.randrange(1, 9)):
        r = rng.random()
        if r < 0.55:
            pieces.append(valid_bytes(rng, rng.choice([C.SUBMIT_SM, C.ENQUIRE_LINK, C.QUERY_SM, C.SUBMIT_MULTI,
                                                       C.DATA_SM, C.DELIVER_SM_RESP, C.CANCEL_SM, C.REPLACE_SM,
                                                       C.UNBIND, C.GENERIC_NACK, C.BIND_TRANSMITTER]) if rng.random() < 0.7 else None))
        elif r < 0.9:
            pieces.append(fix_length(mutate(rng, valid_bytes(rng))))
        else:
            pieces.append(mutate(rng, valid_bytes(rng)))  # framing may be lost from here on
    data = b"".join(pieces)
    chunks: list[bytes] = []
    pos = 0
    mode = rng.random()
    while pos < len(data):
        if mode < 0.15:
            n = 1  # byte by byte
        elif mode < 0.5:
            n = rng.randrange(1, 64)
        else:
            n = len(data) - pos  # all glued together
        chunks.append(data[pos:pos + n])
        pos += n
    return chunks


def split_pdus(data: bytes) -> tuple[list[bytes], bytes]:
    """Cut a byte stream at command_length boundaries: (whole PDUs, what is left over)."""
    out = []
    pos = 0
    while len(data) - pos >= 16:
        (length,) = struct.unpack_from(">I", data, pos)
        if length < 16 or len(data) - pos < length:
            break
        out.append(data[pos:pos + length])
        pos += length
    return out, data[pos:]
