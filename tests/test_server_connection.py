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
from bridge.dlr import Dispatcher, encode_payload
from bridge.metrics import Metrics
from bridge.server import Connection, SmppServer
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


def stored_messages(config) -> int:  # type: ignore[no-untyped-def]
    db = sqlite3.connect(config.store.path)
    try:
        return db.execute("SELECT count(*) FROM messages").fetchone()[0]
    finally:
        db.close()


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
        dispatcher = Dispatcher(store, server, server.metrics, config)
        store.on_outbox = dispatcher.wake
        await nursery.start(dispatcher.run)
        with trio.fail_after(20):
            await total.wait()
        nursery.cancel_scope.cancel()
    assert counts == [10, 10, 10]
