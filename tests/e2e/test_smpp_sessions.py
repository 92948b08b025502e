"""End to end: TLS, limits, timers, shutdown and the less common PDUs, against the real process."""

from __future__ import annotations

import socket
import ssl
import time

import pytest
import smpplib.consts as sc
import smpplib.exceptions
import trustme

from bridge.smpp.constants import CommandId, Status, Tag
from bridge.smpp.pdu import Pdu, decode, encode
from e2e_support import BridgeProcess, base_config, client, raw_connect, read_until, recv_pdu, submit

ESMES = """
- system_id: alice
  password: secret1
  allowed_ips: [127.0.0.1]
  max_binds: 5
- system_id: slowpoke
  password: secret2
  allowed_ips: [127.0.0.1]
  throughput: 2
"""


def send_raw(s: socket.socket, pdu: Pdu) -> Pdu:
    s.sendall(encode(pdu))
    while True:
        got = recv_pdu(s)
        assert got is not None, "connection closed"
        cid, status, seq, body = got
        length = 16 + len(body)
        raw = b"".join(x.to_bytes(4, "big") for x in (length, cid, status, seq)) + body
        answer = decode(raw)
        if answer.sequence_number == pdu.sequence_number and answer.command_id & 0x80000000:
            return answer


def raw_bind(port: int, system_id="alice", password="secret1", version=0x34, cid=CommandId.BIND_TRANSCEIVER) -> tuple[socket.socket, Pdu]:
    s = raw_connect(port)
    resp = send_raw(s, Pdu(cid, 0, 1, {"system_id": system_id, "password": password, "interface_version": version}))
    assert resp.command_status == 0
    return s, resp


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("sessions")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(workdir / "server.pem"))
    ca.cert_pem.write_to_path(str(workdir / "ca.pem"))
    config = base_config(esmes=ESMES, extra=f"""
limits:
  queue_depth: 40
""").replace(
        "    - host: 127.0.0.1\n      port: 0\n",
        f"    - host: 127.0.0.1\n      port: 0\n    - host: 127.0.0.1\n      port: 0\n      tls: {{cert: {workdir}/server.pem, key: {workdir}/server.pem}}\n",
    )
    b = BridgeProcess(workdir, config).start()
    b.ca_path = workdir / "ca.pem"
    yield b
    b.stop()


def test_tls_listener_with_smpplib(bridge):
    ctx = ssl.create_default_context(cafile=str(bridge.ca_path))
    ctx.check_hostname = False  # smpplib wraps without server_hostname; the chain is still verified
    c = smpplib.client.Client("127.0.0.1", bridge.ports[1], ssl_context=ctx, allow_unknown_opt_params=True)
    c.connect()
    c.bind_transceiver(system_id="alice", password="secret1")
    assert submit(c, b"over TLS").status == 0
    c.unbind()


def test_plain_smpp_on_the_tls_port_does_not_bind(bridge):
    s = raw_connect(bridge.ports[1])
    s.sendall(encode(Pdu(CommandId.BIND_TRANSMITTER, 0, 1, {"system_id": "alice", "password": "secret1"})))
    s.settimeout(5)
    try:
        data = s.recv(100)
    except (ConnectionResetError, socket.timeout):
        data = b""
    assert not data.startswith(b"\x00\x00\x00")  # no SMPP answer in clear text
    s.close()


def test_throughput_limit_answers_throttled_per_segment(bridge):
    c = client(bridge.port)
    c.bind_transmitter(system_id="slowpoke", password="secret2")
    statuses = [submit(c, b"fast").status for _ in range(6)]
    assert statuses[:2] == [0, 0]
    assert sc.SMPP_ESME_RTHROTTLED in statuses
    # A two-segment message costs two tokens.
    time.sleep(1.1)
    long_text = b"x" * 200
    assert submit(c, long_text).status == 0  # 2 segments = the whole bucket
    assert submit(c, b"y").status == sc.SMPP_ESME_RTHROTTLED
    c.unbind()


def test_queue_full_answers_msgqful(bridge):
    c = client(bridge.port)
    c.bind_transmitter(system_id="alice", password="secret1")
    statuses = [submit(c, f"fill {i}".encode(), dest="+4999").status for i in range(60)]
    assert sc.SMPP_ESME_RMSGQFUL in statuses
    accepted = statuses.count(0)
    assert accepted <= 40
    assert all(s in (0, sc.SMPP_ESME_RMSGQFUL) for s in statuses)
    # Cancelling frees room: cancel_sm works against the store.
    with bridge.db() as db:
        (mid,) = db.execute("SELECT id FROM messages WHERE state='accepted' LIMIT 1").fetchone()
    s, _ = raw_bind(bridge.port)
    resp = send_raw(s, Pdu(CommandId.CANCEL_SM, 0, 2, {"message_id": f"{mid:010d}", "source_addr": "app"}))
    assert resp.command_status == Status.ROK
    assert submit(c, b"room again", dest="+4999").status == 0
    # cancel_sm without a message_id cancels everything from source to destination.
    resp = send_raw(s, Pdu(CommandId.CANCEL_SM, 0, 3, {"source_addr": "app", "destination_addr": "+4999"}))
    assert resp.command_status == Status.ROK
    with bridge.db() as db:
        assert db.execute("SELECT count(*) FROM messages WHERE destination_addr='+4999' AND state='accepted'").fetchone() == (0,)
    s.close()
    c.unbind()


def test_cancel_replace_and_query_through_raw_pdus(bridge):
    s, _ = raw_bind(bridge.port)
    resp = send_raw(s, Pdu(CommandId.SUBMIT_SM, 0, 2, {"source_addr": "app", "destination_addr": "+4915", "short_message": b"first text"}))
    mid = resp.params["message_id"]
    r = send_raw(s, Pdu(CommandId.REPLACE_SM, 0, 3, {"message_id": mid, "source_addr": "app", "short_message": b"second text", "registered_delivery": 1}))
    assert r.command_status == Status.ROK
    with bridge.db() as db:
        assert db.execute("SELECT text, registered_delivery FROM messages WHERE id=?", (int(mid),)).fetchone() == ("second text", 1)
    r = send_raw(s, Pdu(CommandId.CANCEL_SM, 0, 4, {"message_id": mid, "source_addr": "app"}))
    assert r.command_status == Status.ROK
    q = send_raw(s, Pdu(CommandId.QUERY_SM, 0, 5, {"message_id": mid, "source_addr": "app"}))
    assert q.command_status == Status.ROK and q.params["message_state"] == 4  # DELETED
    r = send_raw(s, Pdu(CommandId.REPLACE_SM, 0, 6, {"message_id": mid, "source_addr": "app", "short_message": b"late"}))
    assert r.command_status == Status.RREPLACEFAIL
    r = send_raw(s, Pdu(CommandId.CANCEL_SM, 0, 7, {"message_id": "0000999999", "source_addr": "app"}))
    assert r.command_status == Status.RINVMSGID
    s.close()


def test_submit_multi_and_data_sm(bridge):
    s, _ = raw_bind(bridge.port)
    dests = [
        {"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "+4911"},
        {"dest_flag": 1, "dest_addr_ton": 1, "dest_addr_npi": 1, "destination_addr": "bogus!"},
        {"dest_flag": 2, "dl_name": "friends"},
    ]
    r = send_raw(s, Pdu(CommandId.SUBMIT_MULTI, 0, 2, {"source_addr": "app", "dest_addresses": dests, "short_message": b"to many"}))
    assert r.command_status == Status.ROK and r.params["message_id"]
    failed = {u["destination_addr"]: u["error_status_code"] for u in r.params["unsuccess_smes"]}
    assert failed == {"bogus!": Status.RINVDSTADR, "friends": Status.RINVDLNAME}
    d = send_raw(s, Pdu(CommandId.DATA_SM, 0, 3, {"source_addr": "app", "destination_addr": "+4912"}, {Tag.MESSAGE_PAYLOAD: b"data sm body"}))
    assert d.command_id == CommandId.DATA_SM_RESP and d.command_status == Status.ROK
    with bridge.db() as db:
        assert db.execute("SELECT text FROM messages WHERE id=?", (int(d.params["message_id"]),)).fetchone() == ("data sm body",)
    s.close()


def test_smpp_33_bind_gets_no_tlvs(bridge):
    s, resp = raw_bind(bridge.port, version=0x33, cid=CommandId.BIND_TRANSMITTER)
    assert resp.tlvs == {}
    s.close()
    s, resp = raw_bind(bridge.port, version=0x34, cid=CommandId.BIND_TRANSMITTER)
    assert resp.tlvs == {Tag.SC_INTERFACE_VERSION: 0x34}
    s.close()
    s, resp = raw_bind(bridge.port, version=0x50, cid=CommandId.BIND_TRANSMITTER)  # npm smpp's default
    assert resp.command_status == 0
    s.close()


def test_second_bind_on_a_bound_session_is_refused(bridge):
    s, _ = raw_bind(bridge.port)
    r = send_raw(s, Pdu(CommandId.BIND_TRANSMITTER, 0, 9, {"system_id": "alice", "password": "secret1"}))
    assert r.command_status == Status.RALYBND
    s.close()


def test_submit_before_bind_is_refused(bridge):
    s = raw_connect(bridge.port)
    r = send_raw(s, Pdu(CommandId.SUBMIT_SM, 0, 1, {"destination_addr": "+1", "short_message": b"x"}))
    assert r.command_status == Status.RINVBNDSTS
    s.close()


# -- timers and shutdown: their own bridge with short timers ------------------------------------


def short_timer_bridge(tmp_path) -> BridgeProcess:
    config = base_config(esmes=ESMES).replace("enquire_link: 30", "enquire_link: 1").replace("response: 5", "response: 1").replace("inactivity: 120", "inactivity: 10")
    return BridgeProcess(tmp_path, config).start()


def test_dead_peer_is_dropped_after_an_unanswered_enquire_link(tmp_path):
    bridge = short_timer_bridge(tmp_path)
    try:
        s, _ = raw_bind(bridge.port)
        s.settimeout(10)
        got = recv_pdu(s)
        assert got[0] == CommandId.ENQUIRE_LINK  # the bridge probes an idle link...
        # ...and, unanswered, closes it after the response timer.
        assert recv_pdu(s) is None
        # A live peer that answers stays bound.
        live = client(bridge.port)
        live.bind_transceiver(system_id="alice", password="secret1")
        live._socket.settimeout(0.5)
        deadline = time.time() + 4
        while time.time() < deadline:
            try:
                live.read_once()  # answers enquire_link
            except socket.timeout:
                pass
        assert submit(live, b"still bound").status == 0
        live.unbind()
    finally:
        bridge.stop()


def test_shutdown_unbinds_and_does_not_wait_forever_for_silent_clients(tmp_path):
    bridge = short_timer_bridge(tmp_path)
    s, _ = raw_bind(bridge.port)  # never answers anything
    started = time.monotonic()
    code = bridge.stop(timeout=15)
    assert code == 0
    assert time.monotonic() - started < 10  # bounded by unbind_grace, not by the client
    s.settimeout(2)
    got = recv_pdu(s)
    assert got is not None and got[0] == CommandId.UNBIND
