"""One SMPP connection, either side, as a sans-IO state machine.

One state machine serves both roles (as h11 serves client and server): ``ServerSession`` is the
SMSC side (our SMPP front end, which ESMEs bind to), ``ClientSession`` the ESME side (our
upstream connectors, which bind to a provider's SMSC). The rules below are written from the
SMSC's point of view; the ESME role uses the same tables mirrored (what the SMSC may send, the
ESME may receive, and the reverse), and the same transitions, whichever side sends the PDU
that causes them: a bind is pending once it is on the wire, the session is bound once an
ESME_ROK bind_*_resp answering it is, an unbind moves to UNBINDING and an ESME_ROK
unbind_resp to CLOSED. Fed each other's bytes, a client and a server session always agree on
the state (tests/smpp/test_session_roles.py).

Feed it the bytes the peer sent (``receive_data``), pull events (``next_event``); hand it the
PDUs you want to send (``send``), write the bytes it returns. No sockets, no trio, no clocks:
timers (session_init, enquire_link, inactivity, response) belong to the caller.

The rules (SMPP 3.4 §2.2-2.3; docs/smpp.md, Sessions and bind types)
--------------------------------------------------------------------

States: OPEN (TCP up, not bound) -> BOUND_TX / BOUND_RX / BOUND_TRX -> UNBINDING -> CLOSED.

1. In OPEN the ESME may only bind (bind_transmitter, bind_receiver, bind_transceiver). The
   session moves to BOUND_* when *we send* the bind_*_resp with ESME_ROK answering that bind;
   an error bind_*_resp leaves it in OPEN (the caller normally closes). A second bind while
   the first is unanswered is refused with ESME_RINVBNDSTS.
2. What each bind may carry follows from who sends messages to whom. A transmitter bind
   carries messages from the ESME to us: submit_sm, submit_multi, data_sm, query_sm,
   cancel_sm and replace_sm come from the ESME only in BOUND_TX or BOUND_TRX. A receiver bind
   carries messages from us to the ESME: deliver_sm, data_sm and alert_notification go from
   us only to BOUND_RX or BOUND_TRX. So data_sm goes either way, but each way only over the
   bind type that carries that direction: a receiver that sends data_sm is refused with
   ESME_RINVBNDSTS like one that sends submit_sm, and data_sm_resp is expected from the ESME
   only where we may have sent it a data_sm. enquire_link, unbind and generic_nack go either
   way in every bound state. A bind in a bound state gets ESME_RALYBND.
3. A request that the table below does not allow in the current state is answered with its
   own *_resp carrying ESME_RINVBNDSTS (generic_nack ESME_RINVBNDSTS for the requests that
   have no *_resp: outbind, alert_notification). Responses and generic_nack are never
   answered, whatever happens to them; one the table does not expect is reported and dropped.
   A response that matches no outstanding request is still delivered: the session does not
   track sequence numbers, the caller does.
4. Receiving an unbind, or sending one, moves a bound session to UNBINDING. In UNBINDING we
   still answer what the ESME sent before (submit_sm_resp ...) and enquire_link, and we still
   accept the responses to what we sent before (deliver_sm_resp ...). Sending an ESME_ROK
   unbind_resp, or receiving an unbind_resp, moves to CLOSED. After CLOSED nothing more is
   accepted: every further PDU is reported with close=True and no answer.
8. Half-close: the peer may shut its writing side (EOF) right after its last request and
   still wait for the answers; some clients do exactly that when they stop. EOF ends the
   input (``next_event`` returns Closed once the complete PDUs before it are consumed; a
   partial PDU is dropped) but not the output: the state is kept, and every answer to what
   was read before the EOF may still be sent. Requests of our own (deliver_sm, enquire_link,
   unbind) are refused after EOF: the peer can no longer answer them. ``peer_closed`` tells.
5. Framing: command_length below 16 or above ``max_pdu_len`` means the byte stream can no
   longer be trusted: answer generic_nack ESME_RINVCMDLEN, close, and produce no more events.
   An unknown command_id gets generic_nack ESME_RINVCMDID; a known request with a malformed
   body gets its own *_resp with the status the codec chose (``PduError.status``). Neither
   closes the session: the PDU boundary is still known.
6. Error answers are always sendable: a generic_nack, or any *_resp with a non-zero
   command_status, may be sent in every state (it refuses something and changes nothing), so
   the answers in ``Rejected`` events can always go through ``send``. Everything else we send
   must be in the SEND table for the current state, or ``send`` raises LocalProtocolError.
7. TLVs are dropped from everything we send when the bind said interface_version < 0x34
   (SMPP 3.3 knows no TLVs). 0x50 (SMPP 5.0, npm smpp's default) is treated as 3.4.
9. Outbind (SMPP 3.4 2.2.1 and 4.1.7): an SMSC that opened the connection to the ESME may send
   ``outbind`` in OPEN, and only there; it has no response. The ESME answers it by binding
   (bind_receiver) on that connection, which then goes on like any bind. An SMSC receives
   outbind never (generic_nack ESME_RINVBNDSTS).
"""

from __future__ import annotations

import enum
import struct
from typing import Any

import attrs

from bridge.smpp.constants import HEADER_LEN, MAX_PDU_LEN, NO_RESPONSE, RESPONSE_BIT, CommandId, Status
from bridge.smpp.pdu import KNOWN_COMMAND_IDS, Pdu, PduError, decode, encode, generic_nack

__all__ = [
    "SessionState",
    "Role",
    "Session",
    "ServerSession",
    "ClientSession",
    "Rejected",
    "NEED_DATA",
    "Closed",
    "LocalProtocolError",
    "RECEIVE",
    "SEND",
]


class SessionState(enum.Enum):
    OPEN = "OPEN"
    BOUND_TX = "BOUND_TX"
    BOUND_RX = "BOUND_RX"
    BOUND_TRX = "BOUND_TRX"
    UNBINDING = "UNBINDING"
    CLOSED = "CLOSED"


class Role(enum.Enum):
    SMSC = "SMSC"  # we take binds (server)
    ESME = "ESME"  # we bind (client)


class LocalProtocolError(Exception):
    """We (the local side) tried to send something the protocol does not allow now."""


class _SentinelType(type):
    def __repr__(cls) -> str:
        return cls.__name__


def _sentinel(name: str) -> Any:
    # A class that is an instance of itself: both ``event is NEED_DATA`` and
    # ``isinstance(event, NEED_DATA)`` hold.
    cls = _SentinelType(name, (_SentinelType,), {})
    cls.__class__ = cls
    return cls


NEED_DATA = _sentinel("NEED_DATA")
"""next_event(): no whole PDU buffered; call receive_data() first."""

Closed = _sentinel("Closed")
"""next_event(): no more events will come (the peer closed its side (EOF), or framing was lost)."""


@attrs.frozen(slots=True)
class Rejected:
    """next_event(): a PDU the session refused, and what to do about it.

    ``pdu``: the PDU as decoded; when its body could not be decoded, a header-only Pdu (empty
    params); None when framing was lost. ``answer``: send this (via ``send``), or nothing when
    None. ``close``: close the connection after sending the answer. ``reason``: for the log.
    """

    pdu: Pdu | None
    answer: Pdu | None
    close: bool
    reason: str


# ---------------------------------------------------------------------------------------------
# The table (rules 1-4). RECEIVE: command ids the ESME may send us in each state. SEND: command
# ids we may send in each state (error answers are always allowed, rule 6).
# ---------------------------------------------------------------------------------------------

C = CommandId
S = SessionState

BIND_REQUESTS = frozenset({C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER})
# Requests the ESME issues, only over a transmitter-capable bind (messages ESME -> SMSC).
_ESME_TX = frozenset({C.SUBMIT_SM, C.SUBMIT_MULTI, C.DATA_SM, C.QUERY_SM, C.CANCEL_SM, C.REPLACE_SM})
_ESME_TX_RESP = frozenset(c | RESPONSE_BIT for c in _ESME_TX)
# Requests we (the SMSC) issue, only over a receiver-capable bind (messages SMSC -> ESME).
_SMSC_RX = frozenset({C.DELIVER_SM, C.DATA_SM, C.ALERT_NOTIFICATION})
_SMSC_RX_RESP = frozenset({C.DELIVER_SM_RESP, C.DATA_SM_RESP})  # alert_notification has none
# Either side, any bound state. (unbind_resp is not here: once an unbind has gone either way
# the session is UNBINDING, and only there is an unbind_resp due.)
_BOTH = frozenset({C.ENQUIRE_LINK, C.UNBIND})
_BOTH_RESP = frozenset({C.ENQUIRE_LINK_RESP})

_RECV_TX = _ESME_TX | _BOTH | _BOTH_RESP | {C.GENERIC_NACK}
_RECV_RX = _SMSC_RX_RESP | _BOTH | _BOTH_RESP | {C.GENERIC_NACK}
_SEND_TX = _ESME_TX_RESP | _BOTH | _BOTH_RESP | {C.GENERIC_NACK}
_SEND_RX = _SMSC_RX | _BOTH | _BOTH_RESP | {C.GENERIC_NACK}

RECEIVE: dict[SessionState, frozenset[int]] = {
    S.OPEN: BIND_REQUESTS,
    S.BOUND_TX: _RECV_TX,
    S.BOUND_RX: _RECV_RX,
    S.BOUND_TRX: _RECV_TX | _RECV_RX,
    # The peer's answers to what we sent before the unbind; its own unbind (crossed unbinds);
    # keep-alives.
    S.UNBINDING: frozenset(
        {
            C.UNBIND,
            C.UNBIND_RESP,
            C.ENQUIRE_LINK,
            C.ENQUIRE_LINK_RESP,
            C.DELIVER_SM_RESP,
            C.DATA_SM_RESP,
            C.GENERIC_NACK,
        }
    ),
    S.CLOSED: frozenset(),
}

SEND: dict[SessionState, frozenset[int]] = {
    S.OPEN: frozenset(c | RESPONSE_BIT for c in BIND_REQUESTS) | {C.GENERIC_NACK, C.OUTBIND},  # rule 9
    S.BOUND_TX: _SEND_TX,
    S.BOUND_RX: _SEND_RX,
    S.BOUND_TRX: _SEND_TX | _SEND_RX,
    # Answers to what the ESME sent before the unbind, and the unbind_resp itself.
    S.UNBINDING: _ESME_TX_RESP
    | frozenset({C.UNBIND_RESP, C.ENQUIRE_LINK_RESP, C.DATA_SM_RESP, C.GENERIC_NACK}),
    S.CLOSED: frozenset(),
}

# The ESME role: the same tables, mirrored.
ESME_RECEIVE: dict[SessionState, frozenset[int]] = dict(SEND)
ESME_SEND: dict[SessionState, frozenset[int]] = dict(RECEIVE)
_TABLES = {Role.SMSC: (RECEIVE, SEND), Role.ESME: (ESME_RECEIVE, ESME_SEND)}

_BOUND_BY_BIND = {
    C.BIND_TRANSMITTER_RESP: S.BOUND_TX,
    C.BIND_RECEIVER_RESP: S.BOUND_RX,
    C.BIND_TRANSCEIVER_RESP: S.BOUND_TRX,
}
_BOUND = frozenset({S.BOUND_TX, S.BOUND_RX, S.BOUND_TRX})
_ENUM_IDS: dict[int, CommandId] = {int(c): c for c in CommandId}

_HEAD = struct.Struct(">IIII")
_SEQ_MAX = 0x7FFFFFFF
_COMPACT_AT = 1 << 16  # drop consumed bytes from the buffer once this many have piled up


def _name(command_id: int) -> str:
    c = _ENUM_IDS.get(command_id)
    return c.name.lower() if c is not None else f"command_id 0x{command_id:08X}"


class Session:
    """One side of an SMPP connection. See the module docstring for the rules."""

    def __init__(self, role: Role, max_pdu_len: int = MAX_PDU_LEN) -> None:
        self.role = role
        self.max_pdu_len = max_pdu_len
        self._recv_table, self._send_table = _TABLES[role]
        # interface_version of the latest bind (received as SMSC, sent as ESME; None before
        # any): it decides whether TLVs are sent (rule 7).
        self.interface_version: int | None = None
        self._buf = bytearray()
        self._off = 0
        self._eof = False  # the peer closed its side: no more input (rule 8)
        self._dead = False  # framing lost: no more events
        self._seq = 0
        # (bind command id, sequence_number) of the bind on the wire and not yet answered.
        self._pending_bind: tuple[int, int] | None = None
        self._unbind_received = False  # an unbind_resp is due from us
        self._set_state(SessionState.OPEN)

    # -- state ---------------------------------------------------------------------------------

    def _set_state(self, state: SessionState) -> None:
        self.state = state
        self._recv_ok = self._recv_table[state]
        self._send_ok = self._send_table[state]

    @property
    def bound(self) -> bool:
        return self.state in _BOUND

    @property
    def peer_closed(self) -> bool:
        """The peer sent EOF: nothing more will be read; answers may still be sent (rule 8)."""
        return self._eof

    def next_sequence(self) -> int:
        """A fresh sequence_number for a request we originate: 1 .. 0x7FFFFFFF, wrapping."""
        self._seq = self._seq % _SEQ_MAX + 1
        return self._seq

    # -- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; b"" means the peer closed its side (EOF)."""
        if self._eof:
            if data:
                raise LocalProtocolError("receive_data() after EOF")
            return
        if not data:
            self._eof = True
        elif not self._dead:
            self._buf += data

    def next_event(self) -> Any:
        """One of: a Pdu, NEED_DATA, Closed, or a Rejected."""
        if self._dead:
            return Closed
        buf = self._buf
        off = self._off
        avail = len(buf) - off
        if avail < HEADER_LEN:
            if self._eof:
                return self._closed()
            if off:
                self._compact()
            return NEED_DATA
        length, cid, status, seq = _HEAD.unpack_from(buf, off)
        if length < HEADER_LEN or length > self.max_pdu_len:
            self._dead = True
            self._buf = bytearray()
            self._off = 0
            self._set_state(SessionState.CLOSED)
            return Rejected(
                None,
                generic_nack(Status.RINVCMDLEN, seq),
                True,
                f"command_length {length} is outside 16..{self.max_pdu_len}: framing lost",
            )
        if avail < length:
            if self._eof:
                return self._closed()
            return NEED_DATA
        end = off + length
        data = bytes(buf[off:end])
        if end == len(buf):
            buf.clear()
            self._off = 0
        else:
            self._off = end
            if end >= _COMPACT_AT and end * 2 >= len(buf):
                self._compact()
        return self._handle(cid, status, seq, data)

    def _compact(self) -> None:
        del self._buf[: self._off]
        self._off = 0

    def _closed(self) -> Any:
        # EOF (rule 8): the input is over, the state (and what may be answered) is kept.
        self._buf = bytearray()
        self._off = 0
        return Closed

    def _handle(self, cid: int, status: int, seq: int, data: bytes) -> Any:
        if cid in self._recv_ok:
            try:
                pdu = decode(data)
            except PduError as exc:
                return self._malformed(cid, status, seq, exc)
            # Transitions on receipt (rules 1 and 4).
            if cid in BIND_REQUESTS:
                if self._pending_bind is not None:
                    return Rejected(
                        pdu,
                        self._refusal(cid, seq, Status.RINVBNDSTS),
                        False,
                        f"{_name(cid)} while an earlier bind is still unanswered",
                    )
                self._pending_bind = (cid, seq)
                self.interface_version = pdu.params.get("interface_version")
            elif cid in _BOUND_BY_BIND or (cid == C.GENERIC_NACK and self.state is SessionState.OPEN):
                # The ESME role: the SMSC answers our bind (a generic_nack may refuse it too).
                pending = self._pending_bind
                matches = pending is not None and pending[1] == seq and (
                    cid == C.GENERIC_NACK or pending[0] | RESPONSE_BIT == cid
                )
                if not matches:
                    return Rejected(
                        pdu,
                        None,
                        False,
                        f"{_name(cid)} (sequence_number {seq}) answers no pending bind "
                        f"(pending: {_describe_pending(pending)}); dropped",
                    )
                self._pending_bind = None
                if status == 0 and cid != C.GENERIC_NACK:
                    self._set_state(_BOUND_BY_BIND[cid])
            elif cid == C.UNBIND:
                self._unbind_received = True
                if self.state is not SessionState.UNBINDING:
                    self._set_state(SessionState.UNBINDING)
            elif cid == C.UNBIND_RESP and status == 0:
                self._set_state(SessionState.CLOSED)
            return pdu
        return self._not_allowed(cid, status, seq, data)

    def _malformed(self, cid: int, status: int, seq: int, exc: PduError) -> Rejected:
        """A PDU whose boundary is known but whose content is bad (rule 5)."""
        header_only = Pdu(_ENUM_IDS.get(cid, cid), status, seq)
        if self.state is SessionState.CLOSED:
            return Rejected(header_only, None, True, f"{exc.message} (after the session closed)")
        reason = f"{_name(cid)}: {exc.message}"
        if cid & RESPONSE_BIT:
            return Rejected(header_only, None, False, reason)  # never answer a response
        if exc.nack:
            return Rejected(header_only, generic_nack(exc.status, seq), False, reason)
        return Rejected(header_only, self._refusal(cid, seq, exc.status), False, reason)

    def _not_allowed(self, cid: int, status: int, seq: int, data: bytes) -> Rejected:
        """A PDU the table does not allow in this state (rule 3)."""
        if cid not in KNOWN_COMMAND_IDS:
            unknown = PduError(
                Status.RINVCMDID, f"unknown command_id 0x{cid:08X}", command_id=cid, sequence_number=seq, nack=True
            )
            return self._malformed(cid, status, seq, unknown)
        try:
            pdu = decode(data)
        except PduError:
            pdu = Pdu(_ENUM_IDS[cid], status, seq)  # the state is what we refuse it for
        state = self.state
        where = f"{_name(cid)} not allowed in state {state.value}"
        if state is SessionState.CLOSED:
            return Rejected(pdu, None, True, f"{_name(cid)} after the session closed")
        if cid & RESPONSE_BIT:
            return Rejected(pdu, None, False, f"{where} (unexpected response dropped)")
        if cid in BIND_REQUESTS and state in _BOUND:
            return Rejected(pdu, self._refusal(cid, seq, Status.RALYBND), False, f"{where}: already bound")
        return Rejected(pdu, self._refusal(cid, seq, Status.RINVBNDSTS), False, where)

    @staticmethod
    def _refusal(cid: int, seq: int, status: int) -> Pdu:
        """The error answer to request ``cid``: its own *_resp, or generic_nack if it has none."""
        if cid in NO_RESPONSE:
            return generic_nack(status, seq)
        rid = cid | RESPONSE_BIT
        return Pdu(_ENUM_IDS[rid], status, seq)

    # -- output --------------------------------------------------------------------------------

    def send(self, pdu: Pdu) -> bytes:
        """Check ``pdu`` against the table, update the state, return the bytes to write.

        Raises LocalProtocolError when the PDU may not be sent now, ValueError when it
        cannot be encoded (the state is then unchanged).
        """
        cid = pdu.command_id
        ok_status = pdu.command_status == 0
        if self._eof and not cid & RESPONSE_BIT:
            raise LocalProtocolError(f"may not send {_name(cid)}: the peer closed its side and cannot answer")
        new_state = None
        clear_pending = False
        new_pending = None
        version = self.interface_version
        if (not ok_status or cid == C.GENERIC_NACK) and self._pending_bind is not None:
            # Refusing the pending bind (its own *_resp with an error, or a generic_nack with
            # its sequence_number) means it is no longer pending.
            p_cid, p_seq = self._pending_bind
            clear_pending = p_seq == pdu.sequence_number and (
                cid == C.GENERIC_NACK or p_cid | RESPONSE_BIT == cid
            )
        if cid in self._send_ok:
            if cid in BIND_REQUESTS:
                # The ESME role: our bind goes out and waits for its answer.
                if self._pending_bind is not None:
                    raise LocalProtocolError(
                        f"may not send {_name(cid)}: {_describe_pending(self._pending_bind)} is still unanswered"
                    )
                new_pending = (cid, pdu.sequence_number)
                version = pdu.params.get("interface_version", version)
            elif cid in _BOUND_BY_BIND:
                pending = self._pending_bind
                matches = (
                    pending is not None
                    and pending[0] | RESPONSE_BIT == cid
                    and pending[1] == pdu.sequence_number
                )
                if ok_status:
                    if not matches:
                        raise LocalProtocolError(
                            f"{_name(cid)} ROK (sequence_number {pdu.sequence_number}) answers no "
                            f"pending bind (pending: {_describe_pending(pending)})"
                        )
                    new_state = _BOUND_BY_BIND[cid]
                clear_pending = clear_pending or matches
            elif cid == C.UNBIND:
                new_state = SessionState.UNBINDING
            elif cid == C.UNBIND_RESP and ok_status:
                if not self._unbind_received:
                    raise LocalProtocolError("unbind_resp ROK, but the peer sent no unbind")
                new_state = SessionState.CLOSED
        elif cid & RESPONSE_BIT and (not ok_status or cid == C.GENERIC_NACK):
            pass  # Rule 6: error answers are always allowed and change nothing but the above.
        else:
            raise LocalProtocolError(f"may not send {_name(cid)} in state {self.state.value}")
        data = encode(pdu, include_tlvs=version is None or version >= 0x34)
        if clear_pending:
            self._pending_bind = None
        if new_pending is not None:
            self._pending_bind = new_pending
            self.interface_version = version
        if new_state is not None:
            self._set_state(new_state)
        return data


class ServerSession(Session):
    """The SMSC side of one SMPP connection (our front end)."""

    def __init__(self, max_pdu_len: int = MAX_PDU_LEN) -> None:
        super().__init__(Role.SMSC, max_pdu_len)


class ClientSession(Session):
    """The ESME side of one SMPP connection (our upstream connectors)."""

    def __init__(self, max_pdu_len: int = MAX_PDU_LEN) -> None:
        super().__init__(Role.ESME, max_pdu_len)


def _describe_pending(pending: tuple[int, int] | None) -> str:
    if pending is None:
        return "none"
    return f"{_name(pending[0])} sequence_number {pending[1]}"
