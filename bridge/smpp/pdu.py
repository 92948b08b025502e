"""SMPP PDUs as plain data, and their wire codec (filled in below the data class).

Long on purpose (~800 lines): the body layout of every SMPP 3.4 PDU and its TLVs, in one
table-driven codec; splitting it by PDU would repeat the shared field readers."""

from __future__ import annotations

import struct
from typing import Any

import attrs

from bridge.smpp.constants import (
    HEADER_LEN,
    NO_RESPONSE,
    RESPONSE_BIT,
    CommandId,
    Status,
    Tag,
    response_id,
)


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


# ---------------------------------------------------------------------------------------------
# Wire codec (SMPP 3.4, §3 and §4). Everything below is bytes in, PDUs out, and back.
#
# Each command id has a precomputed *spec*: a tuple of operations that walk the body in order.
# Consecutive one-octet integers are merged into one ``struct.Struct`` so that a submit_sm
# body is ten steps, not seventeen. Decoding never builds per-call tables. submit_sm and
# deliver_sm (the hot path) also have a straight-line decoder and encoder of the same layout;
# the generic walker stays the reference and reports every error.
# ---------------------------------------------------------------------------------------------

__all__ = [
    "Pdu",
    "PduError",
    "decode",
    "encode",
    "make_response",
    "generic_nack",
    "KNOWN_COMMAND_IDS",
    "FIELD_NAMES",
]


class PduError(Exception):
    """A PDU that cannot be decoded, with the answer it deserves.

    ``status``: the command_status to answer with. ``command_id``: the id read from the header
    (None when not even that was readable). ``sequence_number``: echoed in the answer (0 when
    unreadable). ``nack``: True -> answer with generic_nack (bad command_length, unknown or
    invalid command_id, §4.3); False -> answer with the request's own *_resp carrying
    ``status`` (a known request with a malformed body). Responses are never answered, whatever
    ``nack`` says. ``message``: human-readable reason.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        command_id: int | None = None,
        sequence_number: int = 0,
        nack: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.command_id = command_id
        self.sequence_number = sequence_number
        self.nack = nack

    def __repr__(self) -> str:
        cid = "None" if self.command_id is None else f"0x{self.command_id:08X}"
        return (
            f"PduError(status=0x{self.status:02X}, command_id={cid}, "
            f"sequence_number={self.sequence_number}, nack={self.nack}, message={self.message!r})"
        )


_HEADER = struct.Struct(">IIII")
_TL = struct.Struct(">HH")

# Operation kinds of a body spec.
_CSTR = 0  # (kind, name, max_len_including_nul, status_if_bad)
_INTS = 1  # (kind, struct, names, size)
_SM = 2  # (kind,)  sm_length (1 octet) then short_message
_DESTS = 3  # (kind,)  submit_multi: number_of_dests then dest_address list
_UNSUCC = 4  # (kind,)  submit_multi_resp: no_unsuccess then unsuccess_sme list

_MAX_SM = 254  # §5.2.22: short_message is 0..254 octets


def _c(name: str, max_len: int, status: int = Status.RINVCMDLEN) -> tuple:
    return ("c", name, max_len, int(status))


def _i(name: str, fmt: str = "B") -> tuple:
    return ("i", name, fmt)


_SM_FIELD = ("sm",)
_DESTS_FIELD = ("dests",)
_UNSUCC_FIELD = ("unsucc",)

_SERVICE_TYPE = _c("service_type", 6, Status.RINVSERTYP)
_SRC21 = (_i("source_addr_ton"), _i("source_addr_npi"), _c("source_addr", 21, Status.RINVSRCADR))
_DST21 = (_i("dest_addr_ton"), _i("dest_addr_npi"), _c("destination_addr", 21, Status.RINVDSTADR))
_SRC65 = (_i("source_addr_ton"), _i("source_addr_npi"), _c("source_addr", 65, Status.RINVSRCADR))
_DST65 = (_i("dest_addr_ton"), _i("dest_addr_npi"), _c("destination_addr", 65, Status.RINVDSTADR))
_MESSAGE_ID = _c("message_id", 65, Status.RINVMSGID)
_SCHED = _c("schedule_delivery_time", 17, Status.RINVSCHED)
_VALIDITY = _c("validity_period", 17, Status.RINVEXPIRY)

_BIND_BODY = (
    _c("system_id", 16, Status.RINVSYSID),
    _c("password", 9, Status.RINVPASWD),
    _c("system_type", 13, Status.RINVSYSTYP),
    _i("interface_version"),
    _i("addr_ton"),
    _i("addr_npi"),
    _c("address_range", 41),
)
_BIND_RESP_BODY = (_c("system_id", 16, Status.RINVSYSID),)

# submit_sm and deliver_sm share one layout (§4.4.1, §4.6.1).
_SM_BODY = (
    _SERVICE_TYPE,
    *_SRC21,
    *_DST21,
    _i("esm_class"),
    _i("protocol_id"),
    _i("priority_flag"),
    _SCHED,
    _VALIDITY,
    _i("registered_delivery"),
    _i("replace_if_present_flag"),
    _i("data_coding"),
    _i("sm_default_msg_id"),
    _SM_FIELD,
)

_SUBMIT_MULTI_BODY = (
    _SERVICE_TYPE,
    *_SRC21,
    _DESTS_FIELD,
    _i("esm_class"),
    _i("protocol_id"),
    _i("priority_flag"),
    _SCHED,
    _VALIDITY,
    _i("registered_delivery"),
    _i("replace_if_present_flag"),
    _i("data_coding"),
    _i("sm_default_msg_id"),
    _SM_FIELD,
)

# command id -> (mandatory body, may carry TLVs per the 3.4 spec)
_BODIES: dict[CommandId, tuple[tuple, bool]] = {
    CommandId.GENERIC_NACK: ((), False),
    CommandId.BIND_RECEIVER: (_BIND_BODY, False),
    CommandId.BIND_TRANSMITTER: (_BIND_BODY, False),
    CommandId.BIND_TRANSCEIVER: (_BIND_BODY, False),
    CommandId.BIND_RECEIVER_RESP: (_BIND_RESP_BODY, True),
    CommandId.BIND_TRANSMITTER_RESP: (_BIND_RESP_BODY, True),
    CommandId.BIND_TRANSCEIVER_RESP: (_BIND_RESP_BODY, True),
    CommandId.OUTBIND: ((_c("system_id", 16, Status.RINVSYSID), _c("password", 9, Status.RINVPASWD)), False),
    CommandId.UNBIND: ((), False),
    CommandId.UNBIND_RESP: ((), False),
    CommandId.SUBMIT_SM: (_SM_BODY, True),
    CommandId.SUBMIT_SM_RESP: ((_MESSAGE_ID,), False),
    CommandId.SUBMIT_MULTI: (_SUBMIT_MULTI_BODY, True),
    CommandId.SUBMIT_MULTI_RESP: ((_MESSAGE_ID, _UNSUCC_FIELD), False),
    CommandId.DELIVER_SM: (_SM_BODY, True),
    CommandId.DELIVER_SM_RESP: ((_MESSAGE_ID,), False),
    CommandId.DATA_SM: (
        (_SERVICE_TYPE, *_SRC65, *_DST65, _i("esm_class"), _i("registered_delivery"), _i("data_coding")),
        True,
    ),
    CommandId.DATA_SM_RESP: ((_MESSAGE_ID,), True),
    CommandId.QUERY_SM: ((_MESSAGE_ID, *_SRC21), False),
    CommandId.QUERY_SM_RESP: (
        (_MESSAGE_ID, _c("final_date", 17), _i("message_state"), _i("error_code")),
        False,
    ),
    CommandId.CANCEL_SM: ((_SERVICE_TYPE, _MESSAGE_ID, *_SRC21, *_DST21), False),
    CommandId.CANCEL_SM_RESP: ((), False),
    CommandId.REPLACE_SM: (
        (
            _MESSAGE_ID,
            *_SRC21,
            _SCHED,
            _VALIDITY,
            _i("registered_delivery"),
            _i("sm_default_msg_id"),
            _SM_FIELD,
        ),
        False,
    ),
    CommandId.REPLACE_SM_RESP: ((), False),
    CommandId.ENQUIRE_LINK: ((), False),
    CommandId.ENQUIRE_LINK_RESP: ((), False),
    CommandId.ALERT_NOTIFICATION: (
        (
            *_SRC65,
            _i("esme_addr_ton"),
            _i("esme_addr_npi"),
            _c("esme_addr", 65, Status.RINVDSTADR),
        ),
        True,
    ),
}


class _Spec:
    """The compiled body layout of one command id."""

    __slots__ = ("command", "ops", "is_response", "tlv_status", "field_names")

    def __init__(self, command: CommandId, fields: tuple, tlvs_allowed: bool) -> None:
        self.command = command
        self.is_response = bool(command & RESPONSE_BIT)
        # Trailing bytes that do not form a TLV stream: a bad TLV stream where the spec allows
        # TLVs, otherwise simply a bad command_length.
        self.tlv_status = int(Status.RINVOPTPARSTREAM if tlvs_allowed else Status.RINVCMDLEN)
        ops: list[tuple] = []
        names: list[str] = []
        run_fmt, run_names = "", []

        def flush() -> None:
            nonlocal run_fmt, run_names
            if run_names:
                st = struct.Struct(">" + run_fmt)
                ops.append((_INTS, st, tuple(run_names), st.size))
                run_fmt, run_names = "", []

        for f in fields:
            if f[0] == "i":
                run_fmt += f[2]
                run_names.append(f[1])
                names.append(f[1])
                continue
            flush()
            if f[0] == "c":
                ops.append((_CSTR, f[1], f[2], f[3]))
                names.append(f[1])
            elif f[0] == "sm":
                ops.append((_SM,))
                names.append("short_message")
            elif f[0] == "dests":
                ops.append((_DESTS,))
                names.append("dest_addresses")
            elif f[0] == "unsucc":
                ops.append((_UNSUCC,))
                names.append("unsuccess_smes")
        flush()
        self.ops = tuple(ops)
        self.field_names = tuple(names)


_SPECS: dict[int, _Spec] = {int(cid): _Spec(cid, body, tl) for cid, (body, tl) in _BODIES.items()}

# Public read-only views, for the session layer and for tests.
KNOWN_COMMAND_IDS = frozenset(_SPECS)
FIELD_NAMES: dict[int, tuple[str, ...]] = {cid: s.field_names for cid, s in _SPECS.items()}

_DEST_SME = struct.Struct(">BBB")  # dest_flag=1, dest_addr_ton, dest_addr_npi
_UNSUCC_HEAD = struct.Struct(">BB")
_U32 = struct.Struct(">I")

# ---------------------------------------------------------------------------------------------
# TLVs (§5.3.2). tag -> (kind, min_len, max_len). Integers have min == max == their width.
# C-strings: max_len includes the NUL. Octet strings: the spec's bounds. Tags not listed here
# (vendor-specific or unknown) decode to bytes and are kept.
# ---------------------------------------------------------------------------------------------

_T_INT, _T_STR, _T_OCT = 0, 1, 2

_TLV_TYPES: dict[int, tuple[int, int, int]] = {
    Tag.DEST_ADDR_SUBUNIT: (_T_INT, 1, 1),
    Tag.DEST_NETWORK_TYPE: (_T_INT, 1, 1),
    Tag.DEST_BEARER_TYPE: (_T_INT, 1, 1),
    Tag.DEST_TELEMATICS_ID: (_T_INT, 2, 2),
    Tag.SOURCE_ADDR_SUBUNIT: (_T_INT, 1, 1),
    Tag.SOURCE_NETWORK_TYPE: (_T_INT, 1, 1),
    Tag.SOURCE_BEARER_TYPE: (_T_INT, 1, 1),
    Tag.SOURCE_TELEMATICS_ID: (_T_INT, 1, 1),  # sic: 1 octet in §5.3.2.9 (dest is 2)
    Tag.QOS_TIME_TO_LIVE: (_T_INT, 4, 4),
    Tag.PAYLOAD_TYPE: (_T_INT, 1, 1),
    Tag.ADDITIONAL_STATUS_INFO_TEXT: (_T_STR, 1, 256),
    Tag.RECEIPTED_MESSAGE_ID: (_T_STR, 1, 65),
    Tag.MS_MSG_WAIT_FACILITIES: (_T_INT, 1, 1),
    Tag.PRIVACY_INDICATOR: (_T_INT, 1, 1),
    Tag.SOURCE_SUBADDRESS: (_T_OCT, 2, 23),
    Tag.DEST_SUBADDRESS: (_T_OCT, 2, 23),
    Tag.USER_MESSAGE_REFERENCE: (_T_INT, 2, 2),
    Tag.USER_RESPONSE_CODE: (_T_INT, 1, 1),
    Tag.SOURCE_PORT: (_T_INT, 2, 2),
    Tag.DESTINATION_PORT: (_T_INT, 2, 2),
    Tag.SAR_MSG_REF_NUM: (_T_INT, 2, 2),
    Tag.LANGUAGE_INDICATOR: (_T_INT, 1, 1),
    Tag.SAR_TOTAL_SEGMENTS: (_T_INT, 1, 1),
    Tag.SAR_SEGMENT_SEQNUM: (_T_INT, 1, 1),
    Tag.SC_INTERFACE_VERSION: (_T_INT, 1, 1),
    Tag.CALLBACK_NUM_PRES_IND: (_T_INT, 1, 1),
    Tag.CALLBACK_NUM_ATAG: (_T_OCT, 0, 65),
    Tag.NUMBER_OF_MESSAGES: (_T_INT, 1, 1),
    Tag.CALLBACK_NUM: (_T_OCT, 4, 19),
    Tag.DPF_RESULT: (_T_INT, 1, 1),
    Tag.SET_DPF: (_T_INT, 1, 1),
    Tag.MS_AVAILABILITY_STATUS: (_T_INT, 1, 1),
    Tag.NETWORK_ERROR_CODE: (_T_OCT, 3, 3),  # network type + 2-octet code: kept as bytes
    Tag.MESSAGE_PAYLOAD: (_T_OCT, 0, 0xFFFF),
    Tag.DELIVERY_FAILURE_REASON: (_T_INT, 1, 1),
    Tag.MORE_MESSAGES_TO_SEND: (_T_INT, 1, 1),
    Tag.MESSAGE_STATE: (_T_INT, 1, 1),
    Tag.CONGESTION_STATE: (_T_INT, 1, 1),
    Tag.USSD_SERVICE_OP: (_T_INT, 1, 1),  # "Octet String" of 1 in the table; the values are codes
    Tag.DISPLAY_TIME: (_T_INT, 1, 1),
    Tag.SMS_SIGNAL: (_T_INT, 2, 2),
    Tag.MS_VALIDITY: (_T_INT, 1, 1),
    # Spec length 0 (a flag), SMPP 5.0 allows 1 octet: keep it as bytes, accept both.
    Tag.ALERT_ON_MESSAGE_DELIVERY: (_T_OCT, 0, 1),
    Tag.ITS_REPLY_TYPE: (_T_INT, 1, 1),
    Tag.ITS_SESSION_INFO: (_T_OCT, 2, 2),
}
_TLV_TYPES = {int(k): v for k, v in _TLV_TYPES.items()}


def _tlv_name(tag: int) -> str:
    try:
        return f"{Tag(tag).name.lower()} (0x{tag:04X})"
    except ValueError:
        return f"0x{tag:04X}"


# ---------------------------------------------------------------------------------------------
# decode
# ---------------------------------------------------------------------------------------------


def decode(data: bytes) -> Pdu:
    """Decode exactly one whole PDU (16-byte header included). Raises :class:`PduError`."""
    if data.__class__ is not bytes:
        data = bytes(data)  # bytearray, memoryview: slices of the result must be bytes
    n = len(data)
    if n < HEADER_LEN:
        raise PduError(
            Status.RINVCMDLEN, f"PDU of {n} octets is shorter than the 16-octet header", nack=True
        )
    length, cid, status, seq = _HEADER.unpack_from(data)
    if length != n:
        raise PduError(
            Status.RINVCMDLEN,
            f"command_length {length} does not match the {n} octets given",
            command_id=cid,
            sequence_number=seq,
            nack=True,
        )
    spec = _SPECS.get(cid)
    if spec is None:
        raise PduError(
            Status.RINVCMDID,
            f"unknown command_id 0x{cid:08X}",
            command_id=cid,
            sequence_number=seq,
            nack=True,
        )
    if cid == 4 or cid == 5:  # submit_sm, deliver_sm: the hot path
        pdu = _decode_sm_fast(spec, status, seq, data, n)
        if pdu is not None:
            return pdu
    return _decode_body(spec, status, seq, data, n)


_B2 = struct.Struct(">BB")
_B3 = struct.Struct(">BBB")
_B5 = struct.Struct(">BBBBB")


def _decode_sm_fast(spec: _Spec, status: int, seq: int, data: bytes, end: int) -> Pdu | None:
    """submit_sm/deliver_sm (``_SM_BODY``) written out straight, for well-formed input.

    Returns None at the first irregularity; the generic walker (``_decode_body``) then decodes
    the same bytes again and raises the precise PduError. Tests check both agree.
    """
    find = data.find
    try:
        n0 = find(0, 16, 22)  # service_type, max 6
        if n0 < 0:
            return None
        p = n0 + 1
        sa_ton, sa_npi = _B2.unpack_from(data, p)
        p += 2
        n1 = find(0, p, p + 21)  # source_addr
        if n1 < 0:
            return None
        p = n1 + 1
        da_ton, da_npi = _B2.unpack_from(data, p)
        p += 2
        n2 = find(0, p, p + 21)  # destination_addr
        if n2 < 0:
            return None
        p = n2 + 1
        esm_class, protocol_id, priority_flag = _B3.unpack_from(data, p)
        p += 3
        n3 = find(0, p, p + 17)  # schedule_delivery_time
        if n3 < 0:
            return None
        n4 = find(0, n3 + 1, n3 + 18)  # validity_period
        if n4 < 0:
            return None
        p = n4 + 1
        registered_delivery, replace_if_present_flag, data_coding, sm_default_msg_id, sm_len = (
            _B5.unpack_from(data, p)
        )
        p += 5
        q = p + sm_len
        if q > end or sm_len > _MAX_SM:
            return None  # the general path says what is wrong
        tlvs = _decode_tlvs(spec, data, q, end) if q < end else {}
    except (struct.error, PduError):
        return None
    params = {
        "service_type": data[16:n0].decode("latin-1"),
        "source_addr_ton": sa_ton,
        "source_addr_npi": sa_npi,
        "source_addr": data[n0 + 3 : n1].decode("latin-1"),
        "dest_addr_ton": da_ton,
        "dest_addr_npi": da_npi,
        "destination_addr": data[n1 + 3 : n2].decode("latin-1"),
        "esm_class": esm_class,
        "protocol_id": protocol_id,
        "priority_flag": priority_flag,
        "schedule_delivery_time": data[n2 + 4 : n3].decode("latin-1"),
        "validity_period": data[n3 + 1 : n4].decode("latin-1"),
        "registered_delivery": registered_delivery,
        "replace_if_present_flag": replace_if_present_flag,
        "data_coding": data_coding,
        "sm_default_msg_id": sm_default_msg_id,
        "short_message": data[p:q],
    }
    return Pdu(spec.command, status, seq, params, tlvs)


def _decode_body(spec: _Spec, status: int, seq: int, data: bytes, end: int) -> Pdu:
    params: dict[str, Any] = {}
    pos = HEADER_LEN
    try:
        for op in spec.ops:
            kind = op[0]
            if kind == _CSTR:
                nul = data.find(0, pos, pos + op[2])
                if nul < 0:
                    if pos >= end and spec.is_response:
                        break  # liberal on responses: missing trailing fields stay absent
                    raise _cstr_error(spec, op, data, pos, end)
                params[op[1]] = data[pos:nul].decode("latin-1")
                pos = nul + 1
            elif kind == _INTS:
                nxt = pos + op[3]
                if nxt > end:
                    if spec.is_response:
                        break
                    raise _truncated(spec, op[2][0])
                params.update(zip(op[2], op[1].unpack_from(data, pos)))
                pos = nxt
            elif kind == _SM:
                if pos >= end:
                    if spec.is_response:
                        break
                    raise _truncated(spec, "sm_length")
                sm_len = data[pos]
                if sm_len > _MAX_SM:
                    # One octet holds 255, but the field is 0..254: a longer text goes in
                    # message_payload. Refused here, as the encoder refuses it, so that what is
                    # taken in can always be written out again (a receipt's text, a forward).
                    raise PduError(Status.RINVMSGLEN, f"sm_length {sm_len} is over {_MAX_SM}")
                pos += 1
                nxt = pos + sm_len
                if nxt > end:
                    raise PduError(
                        Status.RINVMSGLEN,
                        f"sm_length {sm_len} runs past the end of the PDU",
                    )
                params["short_message"] = data[pos:nxt]
                pos = nxt
            elif kind == _DESTS:
                pos = _decode_dests(spec, data, pos, end, params)
            else:  # _UNSUCC
                if pos >= end:
                    break  # only in submit_multi_resp: a response, be liberal
                pos = _decode_unsucc(spec, data, pos, end, params)
        tlvs = _decode_tlvs(spec, data, pos, end) if pos < end else {}
    except PduError as exc:
        exc.command_id = int(spec.command)
        exc.sequence_number = seq
        exc.nack = False
        raise
    return Pdu(spec.command, status, seq, params, tlvs)


def _cstr_error(spec: _Spec, op: tuple, data: bytes, pos: int, end: int) -> PduError:
    name, max_len, status = op[1], op[2], op[3]
    if pos >= end:
        return _truncated(spec, name)
    if pos + max_len <= end:
        return PduError(status, f"{name} is longer than {max_len - 1} octets (no NUL within {max_len})")
    return PduError(status, f"{name} has no terminating NUL before the end of the PDU")


def _truncated(spec: _Spec, name: str) -> PduError:
    return PduError(
        Status.RINVCMDLEN, f"{spec.command.name.lower()} body ends before {name}"
    )


def _decode_dests(spec: _Spec, data: bytes, pos: int, end: int, params: dict) -> int:
    if pos >= end:
        raise _truncated(spec, "number_of_dests")
    count = data[pos]
    pos += 1
    if count > 254:
        raise PduError(Status.RINVNUMDESTS, f"number_of_dests {count} is more than 254")
    dests = []
    for _ in range(count):
        if pos >= end:
            raise _truncated(spec, "dest_address")
        flag = data[pos]
        if flag == 1:
            if pos + 3 > end:
                raise _truncated(spec, "dest_address")
            _, ton, npi = _DEST_SME.unpack_from(data, pos)
            pos += 3
            nul = data.find(0, pos, pos + 21)
            if nul < 0:
                raise _cstr_error(spec, (_CSTR, "destination_addr", 21, Status.RINVDSTADR), data, pos, end)
            dests.append(
                {
                    "dest_flag": 1,
                    "dest_addr_ton": ton,
                    "dest_addr_npi": npi,
                    "destination_addr": data[pos:nul].decode("latin-1"),
                }
            )
        elif flag == 2:
            pos += 1
            nul = data.find(0, pos, pos + 21)
            if nul < 0:
                raise _cstr_error(spec, (_CSTR, "dl_name", 21, Status.RINVDLNAME), data, pos, end)
            dests.append({"dest_flag": 2, "dl_name": data[pos:nul].decode("latin-1")})
        else:
            raise PduError(Status.RINVDESTFLAG, f"dest_flag {flag} is neither 1 (SME) nor 2 (list)")
        pos = nul + 1
    params["dest_addresses"] = dests
    return pos


def _decode_unsucc(spec: _Spec, data: bytes, pos: int, end: int, params: dict) -> int:
    count = data[pos]
    pos += 1
    smes = []
    for _ in range(count):
        if pos + 2 > end:
            raise _truncated(spec, "unsuccess_sme")
        ton, npi = _UNSUCC_HEAD.unpack_from(data, pos)
        pos += 2
        nul = data.find(0, pos, pos + 21)
        if nul < 0:
            raise _cstr_error(spec, (_CSTR, "destination_addr", 21, Status.RINVDSTADR), data, pos, end)
        addr = data[pos:nul].decode("latin-1")
        pos = nul + 1
        if pos + 4 > end:
            raise _truncated(spec, "error_status_code")
        (code,) = _U32.unpack_from(data, pos)
        pos += 4
        smes.append(
            {
                "dest_addr_ton": ton,
                "dest_addr_npi": npi,
                "destination_addr": addr,
                "error_status_code": code,
            }
        )
    params["unsuccess_smes"] = smes
    return pos


def _decode_tlvs(spec: _Spec, data: bytes, pos: int, end: int) -> dict[int, Any]:
    tlvs: dict[int, Any] = {}
    types = _TLV_TYPES
    while pos < end:
        if pos + 4 > end:
            raise PduError(spec.tlv_status, f"{end - pos} stray octets where a TLV header was expected")
        tag, ln = _TL.unpack_from(data, pos)
        pos += 4
        vend = pos + ln
        if vend > end:
            raise PduError(
                spec.tlv_status,
                f"TLV {_tlv_name(tag)} claims {ln} octets, only {end - pos} remain",
            )
        info = types.get(tag)
        if info is None:
            tlvs[tag] = data[pos:vend]
        else:
            kind, lo, hi = info
            if ln < lo or ln > hi:
                want = f"{lo}" if lo == hi else f"{lo}..{hi}"
                raise PduError(Status.RINVPARLEN, f"TLV {_tlv_name(tag)} has length {ln}, expected {want}")
            if kind == _T_INT:
                tlvs[tag] = int.from_bytes(data[pos:vend], "big")
            elif kind == _T_STR:
                # Liberal: accept a value whose NUL terminator is missing.
                nul = data.find(0, pos, vend)
                tlvs[tag] = data[pos : vend if nul < 0 else nul].decode("latin-1")
            else:
                tlvs[tag] = data[pos:vend]
        pos = vend
    return tlvs


# ---------------------------------------------------------------------------------------------
# encode
# ---------------------------------------------------------------------------------------------


def encode(pdu: Pdu, include_tlvs: bool = True) -> bytes:
    """Encode a PDU. Missing params default to 0 / "" / b"". Raises ValueError on bad values.

    ``include_tlvs=False`` drops every TLV (for SMPP 3.3 peers). Error responses
    (command_status != 0) still carry their body (e.g. submit_sm_resp with an empty
    message_id, bind_*_resp with system_id): the spec says the body "is not returned", but
    clients we meet accept both forms and some parse the body unconditionally.
    """
    spec = _SPECS.get(pdu.command_id)
    if spec is None:
        raise ValueError(f"cannot encode unknown command_id {pdu.command_id!r}")
    params = pdu.params
    if spec.command is CommandId.SUBMIT_SM or spec.command is CommandId.DELIVER_SM:
        parts = _encode_sm_fast(params)
    else:
        parts = _encode_walk(spec, params)
    if include_tlvs and pdu.tlvs:
        for tag, value in pdu.tlvs.items():
            parts.append(_enc_tlv(tag, value))
    try:
        parts[0] = _HEADER.pack(
            HEADER_LEN + sum(map(len, parts)), pdu.command_id, pdu.command_status, pdu.sequence_number
        )
    except struct.error as exc:
        raise ValueError(f"cannot encode the header of {pdu!r}: {exc}") from None
    return b"".join(parts)


def _encode_sm_fast(params: dict[str, Any]) -> list[bytes]:
    """submit_sm/deliver_sm (``_SM_BODY``) written out straight; same result as the walker."""
    get = params.get
    sm = get("short_message", b"")
    if len(sm) > _MAX_SM:
        raise ValueError(
            f"short_message of {len(sm)} octets is longer than {_MAX_SM}; use the message_payload TLV"
        )
    try:
        return [
            b"",  # header, filled in by encode()
            _enc_cstr(get("service_type", ""), "service_type", 6),
            _B2.pack(get("source_addr_ton", 0), get("source_addr_npi", 0)),
            _enc_cstr(get("source_addr", ""), "source_addr", 21),
            _B2.pack(get("dest_addr_ton", 0), get("dest_addr_npi", 0)),
            _enc_cstr(get("destination_addr", ""), "destination_addr", 21),
            _B3.pack(get("esm_class", 0), get("protocol_id", 0), get("priority_flag", 0)),
            _enc_cstr(get("schedule_delivery_time", ""), "schedule_delivery_time", 17),
            _enc_cstr(get("validity_period", ""), "validity_period", 17),
            _B5.pack(
                get("registered_delivery", 0),
                get("replace_if_present_flag", 0),
                get("data_coding", 0),
                get("sm_default_msg_id", 0),
                len(sm),
            ),
            bytes(sm),
        ]
    except struct.error as exc:
        raise ValueError(f"cannot encode short message PDU: {exc}") from None


def _encode_walk(spec: _Spec, params: dict[str, Any]) -> list[bytes]:
    parts: list[bytes] = [b""]  # placeholder for the header
    try:
        for op in spec.ops:
            kind = op[0]
            if kind == _CSTR:
                parts.append(_enc_cstr(params.get(op[1], ""), op[1], op[2]))
            elif kind == _INTS:
                get = params.get
                parts.append(op[1].pack(*[get(name, 0) for name in op[2]]))
            elif kind == _SM:
                sm = params.get("short_message", b"")
                if len(sm) > _MAX_SM:
                    raise ValueError(
                        f"short_message of {len(sm)} octets is longer than {_MAX_SM}; "
                        "use the message_payload TLV"
                    )
                parts.append(bytes((len(sm),)))
                parts.append(bytes(sm))
            elif kind == _DESTS:
                parts.append(_enc_dests(params.get("dest_addresses", ())))
            else:
                parts.append(_enc_unsucc(params.get("unsuccess_smes", ())))
    except struct.error as exc:
        raise ValueError(f"cannot encode {spec.command.name.lower()}: {exc}") from None
    return parts


def _enc_cstr(value: str, name: str, max_len: int) -> bytes:
    raw = (value.encode("latin-1") if isinstance(value, str) else bytes(value)) + b"\0"
    if len(raw) > max_len or raw.find(0) != len(raw) - 1:
        if len(raw) > max_len:
            raise ValueError(f"{name} {value!r} is longer than {max_len - 1} octets")
        raise ValueError(f"{name} {value!r} contains a NUL")
    return raw


def _enc_dests(dests: Any) -> bytes:
    if len(dests) > 254:
        raise ValueError(f"{len(dests)} dest_addresses, at most 254")
    out = [bytes((len(dests),))]
    for d in dests:
        flag = d.get("dest_flag", 1 if "destination_addr" in d else 2)
        if flag == 1:
            out.append(_DEST_SME.pack(1, d.get("dest_addr_ton", 0), d.get("dest_addr_npi", 0)))
            out.append(_enc_cstr(d.get("destination_addr", ""), "destination_addr", 21))
        elif flag == 2:
            out.append(b"\x02")
            out.append(_enc_cstr(d.get("dl_name", ""), "dl_name", 21))
        else:
            raise ValueError(f"dest_flag {flag!r} is neither 1 nor 2")
    return b"".join(out)


def _enc_unsucc(smes: Any) -> bytes:
    if len(smes) > 255:
        raise ValueError(f"{len(smes)} unsuccess_smes, at most 255")
    out = [bytes((len(smes),))]
    for s in smes:
        out.append(_UNSUCC_HEAD.pack(s.get("dest_addr_ton", 0), s.get("dest_addr_npi", 0)))
        out.append(_enc_cstr(s.get("destination_addr", ""), "destination_addr", 21))
        out.append(_U32.pack(s.get("error_status_code", 0)))
    return b"".join(out)


def _enc_tlv(tag: int, value: Any) -> bytes:
    if isinstance(value, int):
        info = _TLV_TYPES.get(tag)
        if info is None or info[0] != _T_INT:
            raise ValueError(f"TLV {_tlv_name(tag)}: integer value but no known integer width")
        try:
            raw = value.to_bytes(info[1], "big")
        except OverflowError:
            raise ValueError(f"TLV {_tlv_name(tag)}: {value} does not fit in {info[1]} octets") from None
    elif isinstance(value, str):
        raw = value.encode("latin-1") + b"\0"
    else:
        raw = bytes(value)
    if len(raw) > 0xFFFF:
        raise ValueError(f"TLV {_tlv_name(tag)} value of {len(raw)} octets does not fit")
    if not 0 <= tag <= 0xFFFF:
        raise ValueError(f"TLV tag {tag!r} is not a 16-bit integer")
    return _TL.pack(tag, len(raw)) + raw


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------

_ENUM_IDS: dict[int, CommandId] = {int(c): c for c in CommandId}


def make_response(
    request: Pdu, status: int = 0, *, tlvs: dict[int, Any] | None = None, **params: Any
) -> Pdu:
    """The *_resp answering ``request``: response command id, same sequence_number."""
    if request.command_id & RESPONSE_BIT or request.command_id in NO_RESPONSE:
        raise ValueError(f"{request.command_id!r} has no response PDU")
    rid = response_id(request.command_id)
    return Pdu(_ENUM_IDS.get(rid, rid), status, request.sequence_number, params, dict(tlvs or {}))


def generic_nack(status: int, sequence_number: int) -> Pdu:
    """A generic_nack (header only), §4.3."""
    return Pdu(CommandId.GENERIC_NACK, status, sequence_number)
