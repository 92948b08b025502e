"""The trio connection handler of the SMPP server, in process: a real ``Connection`` (and the
real store) over ``trio.testing.memory_stream_pair()``, driven by a client that writes raw PDUs.

What a user of the gateway relies on, checked here:

* every request read before the peer's EOF is answered (a client that half-closes right after
  submit_sm, unbind or query_sm still gets its answer, and a submit is stored once);
* no connection state lasts without a timer (a peer that stays silent after unbind_resp, after
  a failed bind, or after our own unbind is disconnected within a bounded time);
* a receiver bind may not submit (data_sm included);
* once shutdown starts, new binds are refused and new connections are not accepted;
* receipts are spread evenly over an ESME's receiver binds.
"""

from __future__ import annotations

import socket
import sqlite3
import struct
import time

import pytest
import trio
import trio.testing

from bridge.config import load_config_text
from bridge.receipts.delivery import OutboxDelivery
from bridge.receipts.payload import encode_payload
from bridge.metrics import Metrics
from bridge.frontends.smpp.connection import Connection
from bridge.frontends.smpp.listener import SmppServer
from bridge.smpp.constants import CommandId, Status
from bridge.smpp.pdu import Pdu, decode, encode, make_response
from bridge.store import Store

C = CommandId

CONFIG = """
smpp:
  listeners: [{host: 127.0.0.1, port: 0}]
  timers: {session_init: 10, enquire_link: 30, inactivity: 60, response: 5, unbind_grace: 3}
esmes:
  - system_id: acme
    password: secret1
    allowed_ips: [127.0.0.0/8]
    max_binds: 10
store:
  path: %s
limits:
  queue_depth: 1000
admin:
  port: 0
"""


class Peer:
    """The ESME end of a memory stream: raw PDUs out, decoded PDUs in."""

    def __init__(self, stream: trio.abc.HalfCloseableStream) -> None:
        self.stream = stream
        self.buf = bytearray()
        self.seq = 0

    async def send(self, pdu: Pdu) -> Pdu:
        if not pdu.sequence_number:
            self.seq += 1
            pdu.sequence_number = self.seq
        await self.stream.send_all(encode(pdu))
        return pdu

    async def recv(self) -> Pdu | None:
        """The next PDU, or None when the server closed the connection."""
        while True:
            if len(self.buf) >= 4:
                n = struct.unpack(">I", self.buf[:4])[0]
                if len(self.buf) >= n:
                    wire = bytes(self.buf[:n])
                    del self.buf[:n]
                    return decode(wire)
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.buf += data

    async def recv_all(self) -> list[Pdu]:
        """Every PDU until the server closes."""
        out = []
        while (pdu := await self.recv()) is not None:
            out.append(pdu)
        return out

    async def bind(self, cid: int = C.BIND_TRANSCEIVER, password: str = "secret1") -> Pdu:
        await self.send(Pdu(cid, params={"system_id": "acme", "password": password, "interface_version": 0x34}))
        resp = await self.recv()
        assert resp is not None and resp.command_id == cid | 0x80000000
        return resp


def submit_pdu(text: bytes = b"hello") -> Pdu:
    return Pdu(C.SUBMIT_SM, params={"destination_addr": "+4917012345", "short_message": text})


@pytest.fixture
def config(tmp_path):  # type: ignore[no-untyped-def]
    return load_config_text(CONFIG % (tmp_path / "bridge.sqlite3"))


async def start(nursery: trio.Nursery, config, store=None):  # type: ignore[no-untyped-def]
    """A server (with a store unless given) and nothing else."""
    if store is None:
        store = Store(config.store.path, synchronous="normal")
        store.open()
        await nursery.start(store.run)
    return SmppServer(config, store, Metrics())


def connect(nursery: trio.Nursery, server: SmppServer) -> tuple[Peer, Connection, trio.Event]:
    """A Connection of ``server`` running over a memory stream; the event is set when it ended."""
    client, server_side = trio.testing.memory_stream_pair()
    conn = Connection(server, server_side, "127.0.0.1", "test")
    ended = trio.Event()
    server.connections.add(conn)

    async def run() -> None:
        try:
            await conn.run()
        finally:
            server.connections.discard(conn)
            ended.set()

    nursery.start_soon(run)
    return Peer(client), conn, ended


class _NoStore:
    """Binds and unbinds need no store; a test that must not commit anything uses this."""

    active_count = 0

    def commit_now(self) -> None:  # nothing is ever pending
        pass


def stored_messages(config) -> int:  # type: ignore[no-untyped-def]
    db = sqlite3.connect(config.store.path)
    try:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        db.close()


# -- 1. every request read before the peer's EOF is answered -------------------------------------


async def test_submit_then_half_close_is_answered_and_stored_once(config):
    """aiosmpplib (and others) shut their write side right after the last request: the
    submit_sm_resp must still come, or the client resends and the recipient gets it twice."""
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        sub = await peer.send(submit_pdu())
        await peer.stream.send_eof()
        with trio.fail_after(10):
            answers = await peer.recv_all()
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert [(p.command_id, p.command_status, p.sequence_number) for p in answers] == [
        (C.SUBMIT_SM_RESP, Status.ROK, sub.sequence_number)
    ]
    assert answers[0].params["message_id"]
    server.store.close()
    assert stored_messages(config) == 1


async def test_many_submits_then_half_close_are_all_answered(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        seqs = [(await peer.send(submit_pdu(b"m%d" % i))).sequence_number for i in range(20)]
        await peer.stream.send_eof()
        with trio.fail_after(10):
            answers = await peer.recv_all()
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert sorted(p.sequence_number for p in answers) == seqs
    assert {(p.command_id, p.command_status) for p in answers} == {(C.SUBMIT_SM_RESP, Status.ROK)}
    server.store.close()
    assert stored_messages(config) == 20


async def test_submit_unbind_then_half_close_gets_both_answers(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        sub = await peer.send(submit_pdu())
        unbind = await peer.send(Pdu(C.UNBIND))
        await peer.stream.send_eof()
        with trio.fail_after(10):
            answers = await peer.recv_all()
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert [(p.command_id, p.command_status, p.sequence_number) for p in answers] == [
        (C.SUBMIT_SM_RESP, Status.ROK, sub.sequence_number),
        (C.UNBIND_RESP, Status.ROK, unbind.sequence_number),
    ]


async def test_unbind_then_half_close_gets_unbind_resp(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        unbind = await peer.send(Pdu(C.UNBIND))
        await peer.stream.send_eof()
        with trio.fail_after(10):
            answers = await peer.recv_all()
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert [(p.command_id, p.command_status, p.sequence_number) for p in answers] == [
        (C.UNBIND_RESP, Status.ROK, unbind.sequence_number)
    ]


async def test_query_then_half_close_is_answered(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        await peer.send(submit_pdu())
        resp = await peer.recv()
        assert resp is not None and resp.command_status == Status.ROK
        query = await peer.send(Pdu(C.QUERY_SM, params={"message_id": resp.params["message_id"]}))
        await peer.stream.send_eof()
        with trio.fail_after(10):
            answers = await peer.recv_all()
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert [(p.command_id, p.command_status, p.sequence_number) for p in answers] == [
        (C.QUERY_SM_RESP, Status.ROK, query.sequence_number)
    ]


async def test_submit_then_close_by_config_reload_is_answered(config):
    """A close decided on our side (here: the ESME was removed by a reload) also answers what
    was read before."""
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        server.store.inline_commit_seconds = 0  # the commit takes the writer's thread: the close comes first
        peer, conn, ended = connect(nursery, server)
        await peer.bind()
        sub = await peer.send(submit_pdu())
        await trio.testing.wait_all_tasks_blocked()  # read; its commit is under way in the thread
        conn.request_close("test: closed on our side")
        with trio.fail_after(10):
            answers = await peer.recv_all()
            await ended.wait()
        nursery.cancel_scope.cancel()
    assert [(p.command_id, p.command_status, p.sequence_number) for p in answers] == [
        (C.SUBMIT_SM_RESP, Status.ROK, sub.sequence_number)
    ]


def submit_unbind_half_close(port: int) -> list[Pdu]:
    """Over real TCP: bind, submit_sm, unbind, shutdown(SHUT_WR); read until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(encode(Pdu(C.BIND_TRANSCEIVER, 0, 1, {"system_id": "acme", "password": "secret1"})))
        s.sendall(encode(Pdu(C.SUBMIT_SM, 0, 2, {"destination_addr": "+4917012345", "short_message": b"hi"})))
        s.sendall(encode(Pdu(C.UNBIND, 0, 3)))
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    out = []
    while data:
        n = struct.unpack(">I", data[:4])[0]
        out.append(decode(data[:n]))
        data = data[n:]
    return out


async def test_real_tcp_half_close_after_submit_and_unbind(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        ports = await nursery.start(server.serve)
        with trio.fail_after(20):
            answers = await trio.to_thread.run_sync(submit_unbind_half_close, ports[0])
        nursery.cancel_scope.cancel()
    assert [(p.command_id, p.command_status, p.sequence_number) for p in answers] == [
        (C.BIND_TRANSCEIVER_RESP, Status.ROK, 1),
        (C.SUBMIT_SM_RESP, Status.ROK, 2),
        (C.UNBIND_RESP, Status.ROK, 3),
    ]
    server.store.close()
    assert stored_messages(config) == 1


# -- 2. no state without a timer ----------------------------------------------------------------


@pytest.fixture
def autojump_clock():  # type: ignore[no-untyped-def]
    return trio.testing.MockClock(autojump_threshold=0)


async def test_silent_peer_after_unbind_resp_is_disconnected(config, autojump_clock):
    """The ESME unbinds, gets its unbind_resp, and then neither closes nor says anything: we
    close within a short bounded time instead of holding the slot forever."""
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        await peer.send(Pdu(C.UNBIND))
        t0 = trio.current_time()
        resp = await peer.recv()
        assert resp is not None and resp.command_id == C.UNBIND_RESP
        with trio.fail_after(3600):
            assert await peer.recv() is None  # we closed
            await ended.wait()
        took = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    assert took <= config.smpp.timers.response + 1
    assert not server.connections and not server.binds


async def test_silent_peer_after_failed_bind_is_disconnected(config, autojump_clock):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        peer, _conn, ended = connect(nursery, server)
        t0 = trio.current_time()
        resp = await peer.bind(password="wrong")
        assert resp.command_status == Status.RINVPASWD
        with trio.fail_after(3600):
            assert await peer.recv() is None
            await ended.wait()
        took = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    assert took <= config.smpp.timers.response + 1  # not the session_init timer, nor never


async def test_silent_peer_after_our_unbind_is_disconnected(config, autojump_clock):
    """We unbind (shutdown) and the ESME never answers nor closes: closed within the grace."""
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        peer, conn, ended = connect(nursery, server)
        await peer.bind()
        t0 = trio.current_time()
        nursery.start_soon(server.shutdown)
        got = await peer.recv()
        assert got is not None and got.command_id == C.UNBIND
        with trio.fail_after(3600):
            assert await peer.recv() is None
            await ended.wait()
        took = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    assert took <= config.smpp.timers.unbind_grace + 2


async def test_silent_peer_in_unbinding_without_our_unbind_task_is_disconnected(config, autojump_clock):
    """Whatever put the session in UNBINDING, a timer ends it: here an unbind sent with
    request() whose answer never comes, and nobody closes afterwards."""
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        peer, conn, ended = connect(nursery, server)
        await peer.bind()
        t0 = trio.current_time()
        nursery.start_soon(conn.request, Pdu(C.UNBIND))
        got = await peer.recv()
        assert got is not None and got.command_id == C.UNBIND
        with trio.fail_after(3600):
            assert await peer.recv() is None
            await ended.wait()
        took = trio.current_time() - t0
        nursery.cancel_scope.cancel()
    assert took <= 2 * config.smpp.timers.response + 2


# -- 3. a receiver may not submit ---------------------------------------------------------------


@pytest.mark.parametrize("cid", [C.DATA_SM, C.SUBMIT_SM, C.SUBMIT_MULTI, C.QUERY_SM, C.CANCEL_SM, C.REPLACE_SM])
async def test_receiver_bind_may_not_submit(config, cid):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind(C.BIND_RECEIVER)
        params = {"destination_addr": "+4917012345", "short_message": b"x", "message_id": "1"}
        if cid == C.SUBMIT_MULTI:
            params = {"dest_addresses": [{"dest_flag": 1, "destination_addr": "+4917012345"}], "short_message": b"x"}
        req = await peer.send(Pdu(cid, params=params))
        with trio.fail_after(10):
            resp = await peer.recv()
        nursery.cancel_scope.cancel()
    assert resp is not None
    assert (resp.command_id, resp.command_status, resp.sequence_number) == (
        cid | 0x80000000, Status.RINVBNDSTS, req.sequence_number)
    server.store.close()
    assert stored_messages(config) == 0


# -- 4. shutdown --------------------------------------------------------------------------------


async def test_bind_during_shutdown_is_refused(config, caplog):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        bound, _c1, _e1 = connect(nursery, server)
        await bound.bind()
        nursery.start_soon(server.shutdown)
        unbind = await bound.recv()  # shutdown has started: our unbind to the bound session
        assert unbind is not None and unbind.command_id == C.UNBIND
        late, _c2, ended = connect(nursery, server)
        with trio.fail_after(10):
            resp = await late.bind()
            assert await late.recv() is None
            await ended.wait()
        await bound.send(make_response(unbind))
        nursery.cancel_scope.cancel()
    assert resp.command_status == Status.RBINDFAIL
    assert "shutting down" in caplog.text
    assert "acme" not in server.binds


async def test_no_new_connections_once_shutdown_starts(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        ports = await nursery.start(server.serve)
        # One bound session keeps shutdown busy for its unbind grace.
        with socket.create_connection(("127.0.0.1", ports[0])) as s1:
            s1.sendall(encode(Pdu(C.BIND_TRANSCEIVER, 0, 1, {"system_id": "acme", "password": "secret1"})))
            await trio.to_thread.run_sync(s1.recv, 1024)
            nursery.start_soon(server.shutdown)
            await trio.to_thread.run_sync(s1.recv, 1024)  # our unbind: shutdown has started
            outcome = await trio.to_thread.run_sync(try_to_bind, ports[0])
        nursery.cancel_scope.cancel()
    assert outcome in ("refused", "closed"), outcome


def try_to_bind(port: int) -> object:
    """Connect and bind: 'refused' (nobody listens), 'closed' (closed without an answer), or
    what came back. A socket timeout is an error: nothing may be left waiting."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
    except ConnectionRefusedError:
        return "refused"
    with s:
        s.settimeout(5)
        try:
            s.sendall(encode(Pdu(C.BIND_TRANSCEIVER, 0, 1, {"system_id": "acme", "password": "secret1"})))
            data = s.recv(1024)
        except (ConnectionResetError, BrokenPipeError):
            return "closed"
        return "closed" if data == b"" else decode(data)


# -- 5. receipts spread evenly over receiver binds ----------------------------------------------


async def test_receipts_spread_evenly_over_receiver_binds(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        store = server.store
        counts = [0, 0, 0]
        total = trio.Event()

        async def esme(i: int, peer: Peer) -> None:
            while (pdu := await peer.recv()) is not None:
                if pdu.command_id == C.DELIVER_SM:
                    counts[i] += 1
                    await peer.send(make_response(pdu))
                    if sum(counts) == 30:
                        total.set()
                elif pdu.command_id == C.ENQUIRE_LINK:
                    await peer.send(make_response(pdu))

        for i in range(3):
            peer, _conn, _ended = connect(nursery, server)
            await peer.bind(C.BIND_RECEIVER)
            nursery.start_soon(esme, i, peer)
        payload = encode_payload({"params": {"source_addr": "+49170", "destination_addr": "1234",
                                             "esm_class": 4, "short_message": b"id:1 stat:DELIVRD"}})
        for _ in range(30):
            await store.add_outbox("acme", "receipt", None, payload, time.time() + 3600)
        delivery = OutboxDelivery(store, server, server.metrics, config)
        store.on_outbox = delivery.wake
        await nursery.start(delivery.run)
        with trio.fail_after(20):
            await total.wait()
        nursery.cancel_scope.cancel()
    assert counts == [10, 10, 10]


# -- a resend after our answer was lost is the same message -------------------------------------


async def test_a_submit_resent_after_its_answer_was_lost_is_not_a_second_sms(config):
    """The ESME sends submit_sm and its connection goes before our submit_sm_resp is written
    (Kannel, and most clients, then send it again on the next bind). The bridge had committed
    it: the resend is answered with the first id, and one SMS is stored, not two. Each lost
    answer serves once: the same text sent a third time is a new message."""
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        await peer.send(submit_pdu(b"meeting moved to 5"))
        await peer.stream.aclose()  # gone before reading the answer
        with trio.fail_after(10):
            await ended.wait()
        assert len(server.unanswered) == 1

        peer2, _conn2, ended2 = connect(nursery, server)
        await peer2.bind()
        await peer2.send(submit_pdu(b"meeting moved to 5"))
        again = await peer2.recv()
        await peer2.send(submit_pdu(b"another message"))
        other = await peer2.recv()
        await peer2.send(submit_pdu(b"meeting moved to 5"))
        third = await peer2.recv()
        await peer2.stream.send_eof()
        with trio.fail_after(10):
            await peer2.recv_all()
            await ended2.wait()
        nursery.cancel_scope.cancel()
    assert again is not None and again.command_status == Status.ROK
    server.store.close()
    # the first (answered again), "another message", and the third send: without recognising
    # the resend there would be four, two of them the same SMS to the same number.
    assert stored_messages(config) == 3
    ids = [p.params["message_id"] for p in (again, other, third) if p is not None]
    assert len(set(ids)) == 3
    assert server.metrics.resubmits_recognised.labels("acme")._value.get() == 1
