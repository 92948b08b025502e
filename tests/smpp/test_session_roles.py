"""The ESME role of the sans-IO session, and both roles talking to each other."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.smpp.constants import CommandId as C
from bridge.smpp.pdu import Pdu, make_response
from bridge.smpp.session import (
    NEED_DATA,
    ClientSession,
    LocalProtocolError,
    Rejected,
    ServerSession,
    Session,
    SessionState,
)

S = SessionState
BIND_STATE = {C.BIND_TRANSMITTER: S.BOUND_TX, C.BIND_RECEIVER: S.BOUND_RX, C.BIND_TRANSCEIVER: S.BOUND_TRX}


def drain(session: Session) -> list[Any]:
    out = []
    while (ev := session.next_event()) is not NEED_DATA:
        out.append(ev)
    return out


def bind_pdu(cid: int = C.BIND_TRANSCEIVER, seq: int = 1, version: int = 0x34) -> Pdu:
    return Pdu(cid, 0, seq, {"system_id": "me", "password": "pw", "interface_version": version})


@pytest.mark.parametrize("bind", sorted(BIND_STATE))
def test_client_binds(bind: int) -> None:
    c = ClientSession()
    data = c.send(bind_pdu(bind, 7))
    assert c.state is S.OPEN
    [ev] = _feed(c, Pdu(bind | 0x80000000, 0, 7, {"system_id": "smsc"}))
    assert isinstance(ev, Pdu) and ev.sequence_number == 7
    assert c.state is BIND_STATE[bind]
    assert data  # bytes to write


def _feed(session: Session, pdu: Pdu) -> list[Any]:
    # What a peer session would put on the wire for ``pdu``.
    from bridge.smpp.pdu import encode

    session.receive_data(encode(pdu))
    return drain(session)


def test_client_refused_bind_stays_open_and_may_bind_again() -> None:
    c = ClientSession()
    c.send(bind_pdu(seq=1))
    [ev] = _feed(c, Pdu(C.BIND_TRANSCEIVER_RESP, 0x0E, 1, {"system_id": ""}))  # ESME_RINVPASWD
    assert isinstance(ev, Pdu) and ev.command_status == 0x0E
    assert c.state is S.OPEN
    c.send(bind_pdu(seq=2))  # the refused bind is no longer pending


def test_client_generic_nack_refuses_the_bind() -> None:
    c = ClientSession()
    c.send(bind_pdu(seq=3))
    [ev] = _feed(c, Pdu(C.GENERIC_NACK, 0x03, 3))
    assert isinstance(ev, Pdu) and c.state is S.OPEN
    c.send(bind_pdu(seq=4))


def test_client_may_not_bind_twice_at_once() -> None:
    c = ClientSession()
    c.send(bind_pdu(seq=1))
    with pytest.raises(LocalProtocolError):
        c.send(bind_pdu(seq=2))


def test_client_bind_resp_for_no_pending_bind_is_dropped() -> None:
    c = ClientSession()
    c.send(bind_pdu(seq=1))
    [ev] = _feed(c, Pdu(C.BIND_TRANSCEIVER_RESP, 0, 99, {"system_id": "x"}))
    assert isinstance(ev, Rejected) and ev.answer is None
    assert c.state is S.OPEN


def test_client_may_not_submit_before_bind_or_over_receiver() -> None:
    c = ClientSession()
    sm = Pdu(C.SUBMIT_SM, 0, 2, {"destination_addr": "1", "short_message": b"x"})
    with pytest.raises(LocalProtocolError):
        c.send(sm)
    c.send(bind_pdu(C.BIND_RECEIVER, 1))
    _feed(c, Pdu(C.BIND_RECEIVER_RESP, 0, 1, {"system_id": "s"}))
    with pytest.raises(LocalProtocolError):
        c.send(sm)


def test_client_refuses_deliver_over_transmitter() -> None:
    c = ClientSession()
    c.send(bind_pdu(C.BIND_TRANSMITTER, 1))
    _feed(c, Pdu(C.BIND_TRANSMITTER_RESP, 0, 1, {"system_id": "s"}))
    [ev] = _feed(c, Pdu(C.DELIVER_SM, 0, 5, {"short_message": b"hi"}))
    assert isinstance(ev, Rejected)
    assert ev.answer == Pdu(C.DELIVER_SM_RESP, 0x04, 5)  # ESME_RINVBNDSTS


def test_client_unbind_waits_for_submit_resps() -> None:
    c = ClientSession()
    c.send(bind_pdu(seq=1))
    _feed(c, Pdu(C.BIND_TRANSCEIVER_RESP, 0, 1, {"system_id": "s"}))
    c.send(Pdu(C.SUBMIT_SM, 0, 2, {"destination_addr": "1", "short_message": b"x"}))
    c.send(Pdu(C.UNBIND, 0, 3))
    assert c.state is S.UNBINDING
    [ev] = _feed(c, Pdu(C.SUBMIT_SM_RESP, 0, 2, {"message_id": "abc"}))
    assert isinstance(ev, Pdu) and ev.params["message_id"] == "abc"
    _feed(c, Pdu(C.UNBIND_RESP, 0, 3))
    assert c.state is S.CLOSED


def test_client_sends_no_tlvs_to_a_33_smsc() -> None:
    c = ClientSession()
    c.send(bind_pdu(seq=1, version=0x33))
    _feed(c, Pdu(C.BIND_TRANSCEIVER_RESP, 0, 1, {"system_id": "s"}))
    sm = Pdu(C.SUBMIT_SM, 0, 2, {"destination_addr": "1", "short_message": b"x"}, {0x020C: 1})
    s = ServerSession()
    s.receive_data(ClientSession().send(bind_pdu(seq=1, version=0x33)))
    drain(s)
    s.send(Pdu(C.BIND_TRANSCEIVER_RESP, 0, 1, {"system_id": "s"}))
    s.receive_data(c.send(sm))
    [got] = drain(s)
    assert got.tlvs == {}


# ---------------------------------------------------------------------------------------------
# Both roles, fed each other's bytes, agree on the state.
# ---------------------------------------------------------------------------------------------

# What either side may try to send; sequence numbers and answers are filled in at run time.
ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["esme", "smsc"]),
        st.sampled_from(
            [
                "bind_tx",
                "bind_rx",
                "bind_trx",
                "bind_resp_ok",
                "bind_resp_err",
                "submit",
                "deliver",
                "data_sm",
                "enquire",
                "unbind",
                "answer",
                "nack",
            ]
        ),
    ),
    max_size=40,
)


def _make(kind: str, seq: int, last: Pdu | None) -> Pdu | None:
    if kind.startswith("bind_") and not kind.startswith("bind_resp"):
        cid = {"bind_tx": C.BIND_TRANSMITTER, "bind_rx": C.BIND_RECEIVER, "bind_trx": C.BIND_TRANSCEIVER}[kind]
        return bind_pdu(cid, seq)
    if kind.startswith("bind_resp"):
        if last is None or last.command_id not in BIND_STATE:
            return None
        return Pdu(last.command_id | 0x80000000, 0 if kind.endswith("ok") else 0x0D, last.sequence_number, {"system_id": "s"})
    if kind == "submit":
        return Pdu(C.SUBMIT_SM, 0, seq, {"destination_addr": "1", "short_message": b"x"})
    if kind == "deliver":
        return Pdu(C.DELIVER_SM, 0, seq, {"source_addr": "1", "short_message": b"y"})
    if kind == "data_sm":
        return Pdu(C.DATA_SM, 0, seq, {"destination_addr": "1"})
    if kind == "enquire":
        return Pdu(C.ENQUIRE_LINK, 0, seq)
    if kind == "unbind":
        return Pdu(C.UNBIND, 0, seq)
    if kind == "nack":
        return Pdu(C.GENERIC_NACK, 0x03, seq)
    if kind == "answer" and last is not None and not last.command_id & 0x80000000:
        return make_response(last)
    return None


@settings(max_examples=300, deadline=None)
@given(ACTIONS)
def test_client_and_server_agree_on_state(actions: list[tuple[str, str]]) -> None:
    sides = {"esme": ClientSession(), "smsc": ServerSession()}
    peer = {"esme": "smsc", "smsc": "esme"}
    last_received: dict[str, Pdu | None] = {"esme": None, "smsc": None}
    for who, kind in actions:
        me, other = sides[who], sides[peer[who]]
        pdu = _make(kind, me.next_sequence(), last_received[who])
        if pdu is None:
            continue
        try:
            data = me.send(pdu)
        except LocalProtocolError:
            continue
        # What one side may send, the other accepts: never a refusal for a PDU sent legally.
        # Error answers may always be sent (they change nothing); one that answers nothing
        # the receiver sent is reported and dropped, never answered.
        other.receive_data(data)
        evs = drain(other)
        assert len(evs) == 1
        if isinstance(evs[0], Rejected):
            assert pdu.command_id & 0x80000000 and pdu.command_status != 0, evs[0]
            assert evs[0].answer is None
        else:
            assert isinstance(evs[0], Pdu)
            last_received[peer[who]] = evs[0]
        assert me.state is other.state, (who, kind, me.state, other.state)
    assert sides["esme"].state is sides["smsc"].state


def test_server_generic_nack_refusing_a_bind_clears_it() -> None:
    # Found by the property above: the server's generic_nack answering a bind left the bind
    # pending, so the ESME's next bind was refused as "an earlier bind is still unanswered".
    s = ServerSession()
    s.receive_data(ClientSession().send(bind_pdu(seq=1)))
    drain(s)
    s.send(Pdu(C.GENERIC_NACK, 0x03, 1))
    s.receive_data(ClientSession().send(bind_pdu(seq=2)))
    [ev] = drain(s)
    assert isinstance(ev, Pdu) and ev.sequence_number == 2
