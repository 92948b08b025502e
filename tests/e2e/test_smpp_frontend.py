"""End to end: smpplib (a real third-party SMPP client) against the bridge in its own process."""

from __future__ import annotations

import socket
import time

import pytest
import smpplib.consts as sc
import smpplib.exceptions
import smpplib.gsm

from e2e_support import (
    BridgeProcess,
    base_config,
    bind_body,
    client,
    header,
    pdu_bytes,
    raw_connect,
    read_until,
    recv_pdu,
    submit,
    wait_for,
)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    b = BridgeProcess(
        tmp_path_factory.mktemp("bridge"),
        base_config(
            esmes="""
            - system_id: alice
              password: secret1
              allowed_ips: [127.0.0.1]
              max_binds: 3
            - system_id: bob
              password: secret2
              allowed_ips: [127.0.0.1]
            - system_id: faraway
              password: secret3
              allowed_ips: [10.9.8.0/24]
            """
        ),
    ).start()
    yield b
    assert b.stop() == 0, b.log_text()


def stored(bridge, message_id: str):
    with bridge.db() as db:
        return db.execute(
            "SELECT state, destination_addr, text, data_coding, esme_parts FROM messages WHERE id=?",
            (int(message_id),),
        ).fetchone()


@pytest.mark.parametrize("kind", ["bind_transmitter", "bind_receiver", "bind_transceiver"])
def test_bind_each_type_then_unbind(bridge, kind):
    c = client(bridge.port)
    resp = getattr(c, kind)(system_id="alice", password="secret1")
    assert resp.status == 0
    assert resp.system_id == b"smpp-bridge"
    resp = c.unbind()
    c.disconnect()


def test_wrong_password_is_refused_and_closed(bridge):
    c = client(bridge.port)
    with pytest.raises(smpplib.exceptions.PDUError) as err:
        c.bind_transmitter(system_id="alice", password="nope")
    assert err.value.args[1] == sc.SMPP_ESME_RINVPASWD
    # The bridge closes the session after a failed bind.
    c._socket.settimeout(3)
    assert c._socket.recv(16) == b""
    assert "secret1" not in bridge.log_text() and "nope" not in bridge.log_text()


def test_unknown_system_id(bridge):
    c = client(bridge.port)
    with pytest.raises(smpplib.exceptions.PDUError) as err:
        c.bind_transceiver(system_id="mallory", password="x")
    assert err.value.args[1] == sc.SMPP_ESME_RINVSYSID


def test_disallowed_ip_cannot_bind_even_with_the_right_password(bridge):
    c = client(bridge.port)
    with pytest.raises(smpplib.exceptions.PDUError) as err:
        c.bind_transceiver(system_id="faraway", password="secret3")
    assert err.value.args[1] == sc.SMPP_ESME_RBINDFAIL


def test_too_many_binds(bridge):
    clients = []
    try:
        for _ in range(3):
            c = client(bridge.port)
            c.bind_transmitter(system_id="alice", password="secret1")
            clients.append(c)
        extra = client(bridge.port)
        with pytest.raises(smpplib.exceptions.PDUError) as err:
            extra.bind_transmitter(system_id="alice", password="secret1")
        assert err.value.args[1] == sc.SMPP_ESME_RBINDFAIL
        # Another ESME is not affected by alice's limit.
        other = client(bridge.port)
        other.bind_transmitter(system_id="bob", password="secret2")
        other.unbind()
    finally:
        for c in clients:
            c.unbind()
            c.disconnect()
    # Once alice's binds are gone she can bind again (the bridge frees a bind when it has seen
    # the connection close: wait for that, not a guessed number of milliseconds).
    def bind_again():  # type: ignore[no-untyped-def]
        c = client(bridge.port)
        try:
            c.bind_transmitter(system_id="alice", password="secret1")
        except smpplib.exceptions.PDUError as err:
            assert err.args[1] == sc.SMPP_ESME_RBINDFAIL
            c.disconnect()
            return None
        return c

    again = wait_for(bind_again, timeout=10, interval=0.1)
    again.unbind()


def test_gsm7_submit_is_stored_and_queryable(bridge):
    c = client(bridge.port)
    c.bind_transceiver(system_id="alice", password="secret1")
    text = "Hello @ £ € {world}"
    parts, encoding, esm_class = smpplib.gsm.make_parts(text)
    assert len(parts) == 1 and encoding == sc.SMPP_ENCODING_DEFAULT
    resp = submit(c, parts[0], data_coding=encoding, esm_class=esm_class)
    assert resp.status == 0
    mid = resp.message_id.decode()
    assert mid.isdigit() and len(mid) <= 64
    state, dest, stored_text, dc, nparts = stored(bridge, mid)
    assert (dest, stored_text, dc, nparts) == ("+4917012345", text, 0, 1)
    c.query_message(message_id=mid, source_addr_ton=sc.SMPP_TON_ALNUM, source_addr="app")
    q = read_until(c, "query_sm_resp")
    assert q.status == 0
    assert q.message_id.decode() == mid
    assert q.message_state in (1, 6)  # ENROUTE until a device has it
    c.unbind()


def test_query_unknown_and_foreign_ids(bridge):
    a = client(bridge.port)
    a.bind_transceiver(system_id="alice", password="secret1")
    mid = submit(a, b"for alice only").message_id.decode()
    b = client(bridge.port)
    b.bind_transceiver(system_id="bob", password="secret2")
    b.query_message(message_id=mid, source_addr="app")
    q = read_until(b, "query_sm_resp")
    assert q.status == sc.SMPP_ESME_RINVMSGID  # another ESME's message is not visible
    a.query_message(message_id="9999999999", source_addr="app")
    assert read_until(a, "query_sm_resp").status == sc.SMPP_ESME_RINVMSGID
    a.unbind()
    b.unbind()


def test_ucs2_long_message_with_udh_is_one_logical_message(bridge):
    c = client(bridge.port)
    c.bind_transmitter(system_id="alice", password="secret1")
    text = "Привет, мир! 👋 " * 12  # Cyrillic + emoji, well over 70 UCS2 units
    parts, encoding, esm_class = smpplib.gsm.make_parts(text)
    assert encoding == sc.SMPP_ENCODING_ISO10646 and len(parts) > 1
    ids = []
    for part in parts:
        resp = submit(c, part, data_coding=encoding, esm_class=esm_class | sc.SMPP_MSGMODE_STOREFORWARD)
        assert resp.status == 0
        ids.append(resp.message_id.decode())
    assert len(set(ids)) == len(parts)
    state, dest, stored_text, dc, nparts = stored(bridge, ids[0])
    assert stored_text == text and nparts == len(parts) and dc == 8
    # Any part's id finds the logical message.
    c2 = client(bridge.port)
    c2.bind_transceiver(system_id="alice", password="secret1")
    c2.query_message(message_id=ids[-1], source_addr="app")
    assert read_until(c2, "query_sm_resp").status == 0
    c.unbind()
    c2.unbind()


def test_sar_tlvs_long_message(bridge):
    c = client(bridge.port)
    c.bind_transmitter(system_id="alice", password="secret1")
    chunks = [b"first part, ", b"second part, ", b"third part."]
    ids = []
    for i, chunk in enumerate(chunks, 1):
        resp = submit(
            c,
            chunk,
            sar_msg_ref_num=4242,
            sar_total_segments=len(chunks),
            sar_segment_seqnum=i,
        )
        assert resp.status == 0
        ids.append(resp.message_id.decode())
    _, _, stored_text, _, nparts = stored(bridge, ids[0])
    assert stored_text == "first part, second part, third part." and nparts == 3
    c.unbind()


def test_message_payload(bridge):
    c = client(bridge.port)
    c.bind_transmitter(system_id="alice", password="secret1")
    text = "payload " * 60  # 480 characters: too long for short_message
    resp = submit(c, b"", message_payload=text.encode())
    assert resp.status == 0
    _, _, stored_text, _, _ = stored(bridge, resp.message_id.decode())
    assert stored_text == text
    c.unbind()


def test_enquire_link(bridge):
    c = client(bridge.port)
    c.bind_transceiver(system_id="alice", password="secret1")
    pdu = smpplib.smpp.make_pdu("enquire_link", client=c)
    c.send_pdu(pdu)
    resp = read_until(c, "enquire_link_resp")
    assert resp.sequence == pdu.sequence and resp.status == 0
    c.unbind()


def test_submit_from_receiver_bind_is_refused(bridge):
    # smpplib refuses this on the client side, so speak raw SMPP.
    s = raw_connect(bridge.port)
    s.sendall(pdu_bytes(0x00000001, 1, bind_body("bob", "secret2")))
    assert recv_pdu(s)[:3] == (0x80000001, 0, 1)
    body = b"\0" + b"\0\0app\0" + b"\1\1+4917012345\0" + bytes(3) + b"\0\0" + bytes(4) + b"\x02hi"
    s.sendall(pdu_bytes(0x00000004, 2, body))
    assert recv_pdu(s)[:3] == (0x80000004, sc.SMPP_ESME_RINVBNDSTS, 2)
    s.close()


def test_invalid_destination_and_schedule(bridge):
    c = client(bridge.port)
    c.bind_transmitter(system_id="alice", password="secret1")
    assert submit(c, b"x", dest="not-a-number").status == sc.SMPP_ESME_RINVDSTADR
    assert submit(c, b"x", schedule_delivery_time="2599XX").status == sc.SMPP_ESME_RINVSCHED
    assert submit(c, b"x", validity_period="bogus-value-here").status == sc.SMPP_ESME_RINVEXPIRY
    c.unbind()


# -- raw sockets: what no well-behaved client library would send ----------------------------------


def _bound_raw(port: int) -> socket.socket:
    s = raw_connect(port)
    s.sendall(pdu_bytes(0x00000009, 1, bind_body("bob", "secret2")))
    cid, status, seq, _ = recv_pdu(s)
    assert (cid, status, seq) == (0x80000009, 0, 1)
    return s


def test_unknown_command_id_gets_generic_nack_and_session_lives(bridge):
    s = _bound_raw(bridge.port)
    s.sendall(pdu_bytes(0x00000077, 7, b""))
    assert recv_pdu(s)[:3] == (0x80000000, 0x03, 7)
    s.sendall(pdu_bytes(0x00000015, 8, b""))  # enquire_link still answered
    assert recv_pdu(s)[:3] == (0x80000015, 0, 8)
    s.close()


def test_bad_command_length_nack_then_close(bridge):
    s = _bound_raw(bridge.port)
    s.sendall(header(8, 0x00000015, 0, 9))  # command_length below the header size
    cid, status, _seq, _ = recv_pdu(s)
    assert (cid, status) == (0x80000000, 0x02)
    assert recv_pdu(s) is None  # closed: framing is lost
    s.close()


def test_oversized_command_length_nack_then_close(bridge):
    s = _bound_raw(bridge.port)
    s.sendall(header(50_000_000, 0x00000004, 0, 10))
    cid, status, _seq, _ = recv_pdu(s)
    assert (cid, status) == (0x80000000, 0x02)
    assert recv_pdu(s) is None
    s.close()


def test_bad_body_of_known_pdu_gets_its_own_resp(bridge):
    s = _bound_raw(bridge.port)
    # submit_sm whose service_type C-string never ends inside the body.
    s.sendall(pdu_bytes(0x00000004, 11, b"ABCDEFGHIJ"))
    cid, status, seq, _ = recv_pdu(s)
    assert cid == 0x80000004 and seq == 11 and status != 0
    s.sendall(pdu_bytes(0x00000015, 12, b""))
    assert recv_pdu(s)[:3] == (0x80000015, 0, 12)
    s.close()


def test_pdus_split_byte_by_byte_and_glued(bridge):
    s = _bound_raw(bridge.port)
    glued = b"".join(pdu_bytes(0x00000015, n, b"") for n in range(20, 30))
    for i in range(0, 32):
        s.sendall(glued[i : i + 1])
        time.sleep(0.002)
    s.sendall(glued[32:])
    seqs = [recv_pdu(s)[2] for _ in range(10)]
    assert seqs == list(range(20, 30))
    s.close()


def test_broken_session_does_not_affect_another(bridge):
    good = client(bridge.port)
    good.bind_transceiver(system_id="alice", password="secret1")
    bad = _bound_raw(bridge.port)
    bad.sendall(header(3, 0, 0, 0) + b"\xff" * 100)
    bad.close()
    assert submit(good, b"still fine").status == 0
    good.unbind()


def test_session_init_timer_closes_idle_unbound_connection(bridge):
    s = raw_connect(bridge.port)
    s.settimeout(15)
    started = time.monotonic()
    assert s.recv(16) == b""  # closed by the bridge, not by us
    assert time.monotonic() - started >= 4
    s.close()
