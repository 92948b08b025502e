"""The sans-IO SMPP session, server side: bridge/smpp/session.py."""

from __future__ import annotations

import struct
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.smpp.constants import CommandId as C
from bridge.smpp.constants import Status, Tag
from bridge.smpp.pdu import Pdu, decode, encode, generic_nack, make_response
from bridge.smpp.session import (
    NEED_DATA,
    Closed,
    LocalProtocolError,
    Rejected,
    ServerSession,
    SessionState,
)

S = SessionState
RESP = 0x80000000
BINDS = {C.BIND_TRANSMITTER, C.BIND_RECEIVER, C.BIND_TRANSCEIVER}
BIND_STATE = {C.BIND_TRANSMITTER: S.BOUND_TX, C.BIND_RECEIVER: S.BOUND_RX, C.BIND_TRANSCEIVER: S.BOUND_TRX}
NO_RESP = {C.OUTBIND, C.ALERT_NOTIFICATION}
REQUESTS = [c for c in C if not c & RESP]
RESPONSES = [c for c in C if c & RESP]


def wire(cid: int, seq: int = 1, status: int = 0, **params: Any) -> bytes:
    return encode(Pdu(cid, status, seq, params))


def events(session: ServerSession) -> list[Any]:
    out = []
    while True:
        ev = session.next_event()
        if ev is NEED_DATA:
            return out
        out.append(ev)
        if ev is Closed:
            return out


def one_event(session: ServerSession, data: bytes) -> Any:
    session.receive_data(data)
    evs = events(session)
    assert len(evs) == 1, evs
    return evs[0]


def bound(bind: int = C.BIND_TRANSCEIVER, version: int = 0x34) -> ServerSession:
    s = ServerSession()
    ev = one_event(s, wire(bind, 1, system_id="esme", password="pw", interface_version=version))
    assert isinstance(ev, Pdu) and ev.command_id == bind
    assert s.state is S.OPEN  # not bound until we say so
    assert s.interface_version == version
    s.send(make_response(ev, system_id="bridge"))
    assert s.state is BIND_STATE[bind]
    assert s.bound
    return s


def session_in(state: SessionState) -> ServerSession:
    if state is S.OPEN:
        return ServerSession()
    if state in (S.BOUND_TX, S.BOUND_RX, S.BOUND_TRX):
        return bound({v: k for k, v in BIND_STATE.items()}[state])
    s = bound()
    ev = one_event(s, wire(C.UNBIND, 50))
    assert ev.command_id == C.UNBIND and s.state is S.UNBINDING
    if state is S.UNBINDING:
        return s
    s.send(make_response(ev))
    assert s.state is S.CLOSED
    return s


# -------------------------------------------------------------------------------------------
# The table, written again here from the spec (§2.3) as the second source of truth.
# -------------------------------------------------------------------------------------------

# A transmitter bind carries messages ESME -> SMSC, a receiver bind SMSC -> ESME; data_sm goes
# each way only over the bind type that carries that direction.
ESME_TX = {C.SUBMIT_SM, C.SUBMIT_MULTI, C.DATA_SM, C.QUERY_SM, C.CANCEL_SM, C.REPLACE_SM}
ANY_BOUND = {C.ENQUIRE_LINK, C.UNBIND}
EXPECTED_IN = {
    S.OPEN: BINDS,
    S.BOUND_TX: ESME_TX | ANY_BOUND | {C.ENQUIRE_LINK_RESP, C.GENERIC_NACK},
    S.BOUND_RX: ANY_BOUND | {C.DELIVER_SM_RESP, C.DATA_SM_RESP, C.ENQUIRE_LINK_RESP, C.GENERIC_NACK},
    S.BOUND_TRX: ESME_TX
    | ANY_BOUND
    | {C.DELIVER_SM_RESP, C.DATA_SM_RESP, C.ENQUIRE_LINK_RESP, C.GENERIC_NACK},
    S.UNBINDING: {
        C.UNBIND,
        C.UNBIND_RESP,
        C.ENQUIRE_LINK,
        C.ENQUIRE_LINK_RESP,
        C.DELIVER_SM_RESP,
        C.DATA_SM_RESP,
        C.GENERIC_NACK,
    },
    S.CLOSED: set(),
}
ESME_TX_RESP = {c | RESP for c in ESME_TX}
EXPECTED_OUT = {
    S.OPEN: {C.GENERIC_NACK, C.OUTBIND},  # + bind_*_resp answering the pending bind (tested separately); outbind: rule 9
    S.BOUND_TX: ESME_TX_RESP | {C.ENQUIRE_LINK, C.ENQUIRE_LINK_RESP, C.UNBIND, C.GENERIC_NACK},
    S.BOUND_RX: {
        C.DELIVER_SM,
        C.ALERT_NOTIFICATION,
        C.DATA_SM,
        C.ENQUIRE_LINK,
        C.ENQUIRE_LINK_RESP,
        C.UNBIND,
        C.GENERIC_NACK,
    },
    S.BOUND_TRX: ESME_TX_RESP
    | {
        C.DELIVER_SM,
        C.ALERT_NOTIFICATION,
        C.DATA_SM,
        C.ENQUIRE_LINK,
        C.ENQUIRE_LINK_RESP,
        C.UNBIND,
        C.GENERIC_NACK,
    },
    S.UNBINDING: ESME_TX_RESP | {C.UNBIND_RESP, C.ENQUIRE_LINK_RESP, C.GENERIC_NACK},
    S.CLOSED: set(),
}


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("cid", list(C), ids=[c.name.lower() for c in C])
def test_receive_table(state: SessionState, cid: int) -> None:
    s = session_in(state)
    ev = one_event(s, wire(cid, 777))
    if cid in EXPECTED_IN[state]:
        assert isinstance(ev, Pdu) and ev.command_id == cid and ev.sequence_number == 777
        after = {C.UNBIND: S.UNBINDING, C.UNBIND_RESP: S.CLOSED}.get(cid, state)
        assert s.state is after
        return
    assert isinstance(ev, Rejected), ev
    assert ev.pdu is not None and ev.pdu.command_id == cid and ev.pdu.sequence_number == 777
    assert s.state is state  # refusing changes nothing
    if state is S.CLOSED:
        assert ev.answer is None and ev.close
        return
    assert not ev.close
    if cid & RESP:
        assert ev.answer is None  # never answer a response or a generic_nack
        return
    want_status = Status.RALYBND if cid in BINDS and state in BIND_STATE.values() else Status.RINVBNDSTS
    want_id = C.GENERIC_NACK if cid in NO_RESP else cid | RESP
    assert ev.answer == Pdu(want_id, want_status, 777)
    # the answer can always be sent, and is a valid PDU
    sent = decode(s.send(ev.answer))
    assert (sent.command_id, sent.command_status, sent.sequence_number) == (want_id, want_status, 777)
    assert s.state is state


@pytest.mark.parametrize("state", list(S))
@pytest.mark.parametrize("cid", list(C), ids=[c.name.lower() for c in C])
def test_send_table(state: SessionState, cid: int) -> None:
    s = session_in(state)
    pdu = Pdu(cid, 0, 5)
    if cid in EXPECTED_OUT[state] or cid == C.GENERIC_NACK:  # generic_nack: always (rule 6)
        data = s.send(pdu)
        assert decode(data).command_id == cid
        after = {C.UNBIND: S.UNBINDING, C.UNBIND_RESP: S.CLOSED}.get(cid, state)
        assert s.state is after
    else:
        with pytest.raises(LocalProtocolError):
            s.send(pdu)
        assert s.state is state
    # Error answers (a *_resp with a non-zero status, generic_nack) are always allowed.
    if cid & RESP:
        s2 = session_in(state)
        assert decode(s2.send(Pdu(cid, Status.RSYSERR, 6))).command_status == Status.RSYSERR
        assert s2.state is state


@pytest.mark.parametrize("state", list(S))
def test_unknown_command_id(state: SessionState) -> None:
    s = session_in(state)
    ev = one_event(s, struct.pack(">IIII", 16, 0x00000099, 0, 31))
    assert isinstance(ev, Rejected)
    assert ev.pdu == Pdu(0x99, 0, 31)
    if state is S.CLOSED:
        assert ev.answer is None and ev.close
    else:
        assert ev.answer == generic_nack(Status.RINVCMDID, 31) and not ev.close
        s.send(ev.answer)
    # an unknown *response* id is never answered
    ev = one_event(s, struct.pack(">IIII", 16, 0x80000099, 0, 32))
    assert isinstance(ev, Rejected) and ev.answer is None


# -------------------------------------------------------------------------------------------
# bind
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bind", sorted(BINDS))
def test_bind_flow(bind: int) -> None:
    s = bound(bind)
    assert s.state is BIND_STATE[bind]


def test_bind_resp_must_answer_the_pending_bind() -> None:
    s = ServerSession()
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.BIND_TRANSMITTER_RESP, 0, 1, {"system_id": "x"}))  # nothing pending
    ev = one_event(s, wire(C.BIND_RECEIVER, 8))
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.BIND_TRANSMITTER_RESP, 0, 8))  # wrong kind
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.BIND_RECEIVER_RESP, 0, 9))  # wrong sequence_number
    assert s.state is S.OPEN
    s.send(make_response(ev))
    assert s.state is S.BOUND_RX


def test_refused_bind_stays_open_and_may_bind_again() -> None:
    s = ServerSession()
    ev = one_event(s, wire(C.BIND_TRANSMITTER, 1))
    data = s.send(make_response(ev, Status.RINVPASWD, system_id="bridge"))
    assert decode(data).command_status == Status.RINVPASWD
    assert s.state is S.OPEN
    ev = one_event(s, wire(C.BIND_TRANSCEIVER, 2))
    assert isinstance(ev, Pdu)
    s.send(make_response(ev))
    assert s.state is S.BOUND_TRX


def test_second_bind_while_first_pending() -> None:
    s = ServerSession()
    one_event(s, wire(C.BIND_TRANSMITTER, 1))
    ev = one_event(s, wire(C.BIND_RECEIVER, 2))
    assert isinstance(ev, Rejected)
    assert ev.answer == Pdu(C.BIND_RECEIVER_RESP, Status.RINVBNDSTS, 2)
    s.send(ev.answer)
    s.send(Pdu(C.BIND_TRANSMITTER_RESP, 0, 1))
    assert s.state is S.BOUND_TX


def test_malformed_bind_gets_bind_resp_with_field_status() -> None:
    s = ServerSession()
    body = b"A" * 20 + b"\0pw\0\0\x34\0\0\0"
    ev = one_event(s, struct.pack(">IIII", 16 + len(body), C.BIND_TRANSCEIVER, 0, 4) + body)
    assert isinstance(ev, Rejected) and not ev.close
    assert ev.answer == Pdu(C.BIND_TRANSCEIVER_RESP, Status.RINVSYSID, 4)
    assert ev.pdu == Pdu(C.BIND_TRANSCEIVER, 0, 4)  # header only
    assert decode(s.send(ev.answer)) == Pdu(C.BIND_TRANSCEIVER_RESP, Status.RINVSYSID, 4, {"system_id": ""})
    assert s.state is S.OPEN


def test_submit_before_bind() -> None:
    s = ServerSession()
    ev = one_event(s, wire(C.SUBMIT_SM, 3, short_message=b"hi"))
    assert isinstance(ev, Rejected)
    assert ev.pdu.params["short_message"] == b"hi"  # decoded for the log
    assert ev.answer == Pdu(C.SUBMIT_SM_RESP, Status.RINVBNDSTS, 3)
    assert decode(s.send(ev.answer)).params == {"message_id": ""}


def test_submit_from_receiver() -> None:
    s = bound(C.BIND_RECEIVER)
    ev = one_event(s, wire(C.SUBMIT_SM, 3))
    assert isinstance(ev, Rejected) and ev.answer == Pdu(C.SUBMIT_SM_RESP, Status.RINVBNDSTS, 3)
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.SUBMIT_SM_RESP, 0, 3, {"message_id": "x"}))


def test_deliver_only_to_receivers() -> None:
    tx = bound(C.BIND_TRANSMITTER)
    with pytest.raises(LocalProtocolError):
        tx.send(Pdu(C.DELIVER_SM, 0, tx.next_sequence()))
    for bind in (C.BIND_RECEIVER, C.BIND_TRANSCEIVER):
        s = bound(bind)
        seq = s.next_sequence()
        s.send(Pdu(C.DELIVER_SM, 0, seq, {"short_message": b"x"}))
        ev = one_event(s, wire(C.DELIVER_SM_RESP, seq))
        assert isinstance(ev, Pdu) and ev.sequence_number == seq


# -------------------------------------------------------------------------------------------
# SMPP 3.3 peers: no TLVs
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("version", "kept"), [(0x33, False), (0x00, False), (0x34, True), (0x50, True)])
def test_tlvs_dropped_for_33(version: int, kept: bool) -> None:
    s = ServerSession()
    ev = one_event(s, wire(C.BIND_TRANSCEIVER, 1, interface_version=version))
    assert s.interface_version == version
    resp = make_response(ev, system_id="bridge", tlvs={Tag.SC_INTERFACE_VERSION: 0x34})
    assert bool(decode(s.send(resp)).tlvs) is kept
    dlv = Pdu(C.DELIVER_SM, 0, 2, {"short_message": b"x"}, {Tag.MESSAGE_STATE: 2, Tag.RECEIPTED_MESSAGE_ID: "m"})
    got = decode(s.send(dlv))
    assert (got.tlvs == dlv.tlvs) if kept else (got.tlvs == {})
    assert got.params["short_message"] == b"x"


# -------------------------------------------------------------------------------------------
# unbind
# -------------------------------------------------------------------------------------------


def test_esme_unbinds_with_submits_outstanding() -> None:
    s = bound(C.BIND_TRANSMITTER)
    s.receive_data(wire(C.SUBMIT_SM, 10) + wire(C.UNBIND, 11))
    sub, unb = events(s)
    assert s.state is S.UNBINDING
    # a late submit is refused, the outstanding one still gets its answer
    ev = one_event(s, wire(C.SUBMIT_SM, 12))
    assert isinstance(ev, Rejected) and ev.answer.command_status == Status.RINVBNDSTS
    s.send(make_response(sub, message_id="abc"))
    s.send(ev.answer)
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.DELIVER_SM, 0, 1))
    s.send(make_response(unb))
    assert s.state is S.CLOSED
    ev = one_event(s, wire(C.ENQUIRE_LINK, 13))
    assert isinstance(ev, Rejected) and ev.answer is None and ev.close


def test_server_unbinds() -> None:
    s = bound(C.BIND_TRANSCEIVER)
    seq = s.next_sequence()
    s.send(Pdu(C.DELIVER_SM, 0, seq))
    s.send(Pdu(C.UNBIND, 0, s.next_sequence()))
    assert s.state is S.UNBINDING
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.UNBIND, 0, s.next_sequence()))  # once is enough
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.UNBIND_RESP, 0, 99))  # nobody asked
    assert isinstance(one_event(s, wire(C.DELIVER_SM_RESP, seq)), Pdu)  # late answers still count
    assert isinstance(one_event(s, wire(C.UNBIND_RESP, seq + 1)), Pdu)
    assert s.state is S.CLOSED


def test_crossed_unbinds() -> None:
    s = bound()
    s.send(Pdu(C.UNBIND, 0, s.next_sequence()))
    ev = one_event(s, wire(C.UNBIND, 40))
    assert isinstance(ev, Pdu) and s.state is S.UNBINDING
    s.send(make_response(ev))
    assert s.state is S.CLOSED
    ev = one_event(s, wire(C.UNBIND_RESP, 1))  # the answer to ours, too late: harmless
    assert isinstance(ev, Rejected) and ev.answer is None and ev.close


def test_unbind_in_open() -> None:
    s = ServerSession()
    ev = one_event(s, wire(C.UNBIND, 3))
    assert isinstance(ev, Rejected) and ev.answer == Pdu(C.UNBIND_RESP, Status.RINVBNDSTS, 3)
    s.send(ev.answer)
    assert s.state is S.OPEN


# -------------------------------------------------------------------------------------------
# framing
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 15, 101, 0xFFFFFFFF])
def test_bad_command_length_closes(length: int) -> None:
    s = ServerSession(max_pdu_len=100)
    s.receive_data(struct.pack(">IIII", length, C.SUBMIT_SM, 0, 55) + wire(C.ENQUIRE_LINK, 2))
    ev = s.next_event()
    assert isinstance(ev, Rejected)
    assert ev.pdu is None and ev.close
    assert ev.answer == generic_nack(Status.RINVCMDLEN, 55)
    assert s.send(ev.answer) == encode(ev.answer)
    assert s.state is S.CLOSED
    assert s.next_event() is Closed  # nothing after lost framing
    s.receive_data(wire(C.ENQUIRE_LINK, 3))
    assert s.next_event() is Closed


def test_max_pdu_len_is_inclusive() -> None:
    data = wire(C.BIND_TRANSMITTER, 1)
    s = ServerSession(max_pdu_len=len(data))
    s.receive_data(data)
    assert isinstance(s.next_event(), Pdu)
    s = ServerSession(max_pdu_len=len(data) - 1)
    s.receive_data(data)
    ev = s.next_event()
    assert isinstance(ev, Rejected) and ev.close and "framing" in ev.reason


def test_malformed_body_does_not_lose_framing() -> None:
    s = bound(C.BIND_TRANSMITTER)
    body = b"\0\x01\x01" + b"1" * 30 + b"\0"  # source_addr too long
    bad = struct.pack(">IIII", 16 + len(body), C.SUBMIT_SM, 0, 21) + body
    s.receive_data(bad + wire(C.ENQUIRE_LINK, 22))
    rej, ok = events(s)
    assert isinstance(rej, Rejected) and not rej.close
    assert rej.answer == Pdu(C.SUBMIT_SM_RESP, Status.RINVSRCADR, 21)
    assert isinstance(ok, Pdu) and ok.command_id == C.ENQUIRE_LINK


def test_malformed_response_is_never_answered() -> None:
    s = bound()
    bad = struct.pack(">IIII", 18, C.DELIVER_SM_RESP, 0, 5) + b"ab"  # message_id without NUL
    ev = one_event(s, bad)
    assert isinstance(ev, Rejected) and ev.answer is None and not ev.close
    assert ev.pdu == Pdu(C.DELIVER_SM_RESP, 0, 5)


def test_empty_error_response_is_delivered() -> None:
    s = bound()
    ev = one_event(s, struct.pack(">IIII", 16, C.DELIVER_SM_RESP, Status.RSYSERR, 5))
    assert ev == Pdu(C.DELIVER_SM_RESP, Status.RSYSERR, 5)


def stream() -> tuple[bytes, list[tuple[int, int]]]:
    pdus = [
        wire(C.BIND_TRANSCEIVER, 1, system_id="a"),
        wire(C.SUBMIT_SM, 2, short_message=b"x" * 200),
        wire(C.ENQUIRE_LINK, 3),
        wire(C.DATA_SM, 4),
        wire(C.SUBMIT_SM, 5, short_message=b"y"),
        wire(C.GENERIC_NACK, 6, Status.RINVCMDID),
        struct.pack(">IIII", 16, 0x77, 0, 7),
        wire(C.UNBIND, 8),
    ]
    return b"".join(pdus), [(decode_id(p), struct.unpack(">I", p[12:16])[0]) for p in pdus]


def decode_id(p: bytes) -> int:
    return struct.unpack(">I", p[4:8])[0]


def summary(ev: Any) -> tuple:
    if isinstance(ev, Pdu):
        return ("pdu", int(ev.command_id), ev.sequence_number)
    if isinstance(ev, Rejected):
        return ("rej", ev.pdu and int(ev.pdu.command_id), ev.answer, ev.close)
    return (ev,)


def run(chunks: list[bytes]) -> list[tuple]:
    s = ServerSession()
    out = []
    for chunk in chunks:
        s.receive_data(chunk)
        while (ev := s.next_event()) is not NEED_DATA:
            out.append(summary(ev))
            if isinstance(ev, Pdu) and ev.command_id in BINDS:
                s.send(make_response(ev))  # before the next event: the bind takes effect now
    s.receive_data(b"")
    out.extend(summary(ev) for ev in events(s))
    return out


def test_byte_by_byte_equals_whole() -> None:
    data, ids = stream()
    whole = run([data])
    assert [e[1:3] for e in whole if e[0] == "pdu"] == [
        (c, q) for c, q in ids if c != 0x77
    ]
    assert whole[-1] == (Closed,)
    assert run([data[i : i + 1] for i in range(len(data))]) == whole
    assert run([data[i : i + 7] for i in range(0, len(data), 7)]) == whole


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 300), max_size=20))
def test_any_chunking_equals_whole(cuts: list[int]) -> None:
    data, _ = stream()
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(data[pos : pos + n])
        pos += n
    chunks.append(data[pos:])
    assert run([c for c in chunks if c]) == run([data])


def test_many_glued_pdus_are_linear() -> None:
    s = bound()
    n = 50_000
    one = wire(C.ENQUIRE_LINK, 9)
    blob = one * n
    started = time.perf_counter()
    s.receive_data(blob + one[:7])  # and a partial one at the end
    count = 0
    while (ev := s.next_event()) is not NEED_DATA:
        assert isinstance(ev, Pdu)
        count += 1
    elapsed = time.perf_counter() - started
    assert count == n
    assert elapsed < 5.0  # O(n^2) copying would take minutes here
    s.receive_data(one[7:])
    assert isinstance(s.next_event(), Pdu)
    assert s.next_event() is NEED_DATA
    assert len(s._buf) - s._off == 0


def test_large_pdu_in_small_chunks() -> None:
    s = bound()
    payload = bytes(range(256)) * 200
    data = encode(Pdu(C.SUBMIT_SM, 0, 3, {}, {Tag.MESSAGE_PAYLOAD: payload}))
    for i in range(0, len(data), 1000):
        s.receive_data(data[i : i + 1000])
        ev = s.next_event()
        if i + 1000 < len(data):
            assert ev is NEED_DATA
    assert ev.tlvs[Tag.MESSAGE_PAYLOAD] == payload


def test_eof() -> None:
    s = bound()
    s.receive_data(wire(C.ENQUIRE_LINK, 1) + wire(C.ENQUIRE_LINK, 2)[:10])
    s.receive_data(b"")
    ev = s.next_event()
    assert isinstance(ev, Pdu)
    assert s.next_event() is Closed  # the partial PDU is dropped
    assert isinstance(Closed, Closed)
    assert s.peer_closed
    assert s.next_event() is Closed
    s.receive_data(b"")  # repeated EOF is fine
    with pytest.raises(LocalProtocolError):
        s.receive_data(b"more")


def test_half_close_keeps_answers_sendable() -> None:
    """A peer that shuts its write side right after its requests still gets every answer;
    requests of ours are refused (it could not answer them)."""
    s = bound(C.BIND_TRANSCEIVER)
    s.receive_data(wire(C.SUBMIT_SM, 7, destination_addr="1", short_message=b"x") + wire(C.UNBIND, 8))
    s.receive_data(b"")
    sub, unbind = s.next_event(), s.next_event()
    assert s.next_event() is Closed
    assert s.state is S.UNBINDING
    s.send(make_response(sub, message_id="m1"))
    with pytest.raises(LocalProtocolError):
        s.send(Pdu(C.DELIVER_SM, 0, s.next_sequence(), {"short_message": b"x"}))
    s.send(make_response(unbind))
    assert s.state is S.CLOSED


def test_receiver_may_not_send_data_sm() -> None:
    s = bound(C.BIND_RECEIVER)
    ev = one_event(s, wire(C.DATA_SM, 3, destination_addr="1"))
    assert isinstance(ev, Rejected) and ev.answer == Pdu(C.DATA_SM_RESP, Status.RINVBNDSTS, 3)
    assert not ev.close


def test_eof_in_open() -> None:
    s = ServerSession()
    s.receive_data(b"")
    assert s.next_event() is Closed
    assert repr(Closed) == "Closed" and repr(NEED_DATA) == "NEED_DATA"


def test_next_sequence_wraps() -> None:
    s = ServerSession()
    assert [s.next_sequence() for _ in range(3)] == [1, 2, 3]
    s._seq = 0x7FFFFFFE
    assert s.next_sequence() == 0x7FFFFFFF
    assert s.next_sequence() == 1


def test_send_bad_value_keeps_state() -> None:
    s = bound()
    with pytest.raises(ValueError):
        s.send(Pdu(C.UNBIND, 0, -1))
    assert s.state is S.BOUND_TRX


# -------------------------------------------------------------------------------------------
# properties: the session never raises on anything the peer sends
# -------------------------------------------------------------------------------------------

valid_pdu_bytes = st.builds(
    lambda cid, seq, status: encode(Pdu(cid, status, seq)),
    st.sampled_from(list(C)),
    st.integers(0, 0xFFFFFFFF),
    st.sampled_from([0, 0, 0, Status.RSYSERR]),
)
noise = st.binary(max_size=40)
header_junk = st.builds(
    lambda length, cid, seq, body: struct.pack(">IIII", length, cid, 0, seq) + body,
    st.integers(0, 120),
    st.one_of(st.sampled_from(list(C)), st.integers(0, 0xFFFFFFFF)),
    st.integers(0, 0xFFFFFFFF),
    st.binary(max_size=60),
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(list(S)),
    st.lists(st.one_of(valid_pdu_bytes, noise, header_junk), max_size=12),
    st.lists(st.integers(1, 64), max_size=10),
    st.booleans(),
)
def test_session_survives_any_stream(
    start: SessionState, pieces: list[bytes], cuts: list[int], eof: bool
) -> None:
    s = session_in(start)
    s.max_pdu_len = 200
    data = b"".join(pieces)
    chunks, pos = [], 0
    for n in cuts:
        chunks.append(data[pos : pos + n])
        pos += n
    chunks.append(data[pos:])
    chunks = [c for c in chunks if c]
    if eof:
        chunks.append(b"")
    for chunk in chunks:
        s.receive_data(chunk)
        while (ev := s.next_event()) is not NEED_DATA:
            if isinstance(ev, Rejected):
                if ev.answer is not None:
                    # every answer is a response or generic_nack, sendable now, and valid
                    assert ev.answer.command_id & RESP
                    assert ev.answer.command_status != 0
                    out = s.send(ev.answer)
                    assert decode(out) is not None
                if ev.pdu is not None and ev.pdu.command_id & RESP:
                    assert ev.answer is None
            elif isinstance(ev, Pdu):
                # whatever request the session delivers, we may answer (the tables agree)
                if not ev.command_id & RESP and ev.command_id not in NO_RESP:
                    s.send(make_response(ev))
            else:
                assert ev is Closed
                return
