"""A real client that stops right after a submit: aiosmpplib's ``ESME.stop()`` sends unbind and
shuts its write side at once. The bridge must still answer the submit_sm and the unbind, and
store the message once (a client without its submit_sm_resp resends, and the recipient gets the
SMS twice).

aiosmpplib itself stops reading soon after stop() (its receive loop ends once it is shutting
down), so whether its hook sees the answers depends on its own timing; what the bridge
controls, and what is checked here, is that the answers are written to the socket (every
``send_all`` of the server's streams, and every direct write to a socket, is recorded) before
it closes. Before the bridge waited
for them, it wrote only the bind_transceiver_resp.

The bridge's SMPP server runs in process over real TCP (trio); the client runs in a thread
with its own asyncio loop.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import stat
import struct

import trio
from aiosmpplib import ESME, AbstractHook, PhoneNumber, SubmitSm
from aiosmpplib.broker import SimpleBroker

from bridge.config import load_config_text
from bridge.metrics import Metrics
from bridge.frontends.smpp.listener import SmppServer
from bridge.smpp.constants import CommandId, Status
from bridge.smpp.pdu import decode

C = CommandId
from bridge.store import Store

CONFIG = """
smpp:
  listeners: [{host: 127.0.0.1, port: 0}]
  timers: {session_init: 10, enquire_link: 30, inactivity: 60, response: 5, unbind_grace: 3}
esmes:
  - system_id: acme
    password: secret1
    allowed_ips: [127.0.0.0/8]
store:
  path: %s
admin:
  port: 0
"""


class _Wire:
    """Records what the server reads (PDU log hook) and what it really writes to its sockets."""

    def __init__(self) -> None:
        self.incoming: list[tuple[int, int]] = []
        self.sent = bytearray()

    def log_in(self, conn, pdu) -> None:  # type: ignore[no-untyped-def]
        self.incoming.append((pdu.command_id, pdu.command_status))

    def log_out(self, conn, pdu) -> None:  # type: ignore[no-untyped-def]
        pass

    @property
    def outgoing(self) -> list[tuple[int, int]]:
        out, data = [], bytes(self.sent)
        while len(data) >= 16:
            n = struct.unpack(">I", data[:4])[0]
            pdu = decode(data[:n])
            out.append((pdu.command_id, pdu.command_status))
            data = data[n:]
        return out


def stop_right_after_submit(port: int) -> tuple[list[str], list[BaseException]]:
    """Bind, submit one message, stop as soon as it is written. Returns what the client
    received (command names, with their status) and any send errors."""
    received: list[str] = []
    errors: list[BaseException] = []

    async def main() -> None:
        submitted = asyncio.Event()

        class Hook(AbstractHook):
            async def sending(self, smpp_message, pdu, client_id):  # type: ignore[no-untyped-def]
                if isinstance(smpp_message, SubmitSm):
                    submitted.set()

            async def received(self, smpp_message, pdu, client_id):  # type: ignore[no-untyped-def]
                header = int.from_bytes(pdu[4:8], "big"), int.from_bytes(pdu[8:12], "big")
                received.append(f"0x{header[0]:08x}/{header[1]}")

            async def send_error(self, smpp_message, error, client_id):  # type: ignore[no-untyped-def]
                errors.append(error)

        esme = ESME("127.0.0.1", port, "acme", "secret1", hook=Hook(), broker=SimpleBroker(),
                    enquire_link_interval=300.0, socket_timeout=10.0)
        runner = asyncio.create_task(esme.start())
        await esme.broker.enqueue(SubmitSm(short_message="hello", destination=PhoneNumber("+4917012345"),
                                           log_id="m1"))
        await asyncio.wait_for(submitted.wait(), 10)
        await asyncio.wait_for(esme.stop(), 20)  # unbind, write_eof, read until we close
        await asyncio.wait_for(runner, 10)

    asyncio.run(main())
    return received, errors


async def test_aiosmpplib_stop_right_after_submit_gets_every_answer(tmp_path, monkeypatch):
    wire = _Wire()
    send_all = trio.SocketStream.send_all

    async def recording_send_all(self, data):  # type: ignore[no-untyped-def]
        # Recorded before the write: aiosmpplib closes its socket as soon as its receive loop
        # ends, so the bridge's last answer may meet a closed socket; it was still given.
        wire.sent += data
        await send_all(self, data)

    monkeypatch.setattr(trio.SocketStream, "send_all", recording_send_all)
    write = os.write

    def recording_write(fd, data):  # type: ignore[no-untyped-def]
        # An answer made while the connection's writer is idle is written at once (os.write).
        n = write(fd, data)
        if stat.S_ISSOCK(os.fstat(fd).st_mode):
            wire.sent += data[:n]
        return n

    monkeypatch.setattr(os, "write", recording_write)
    config = load_config_text(CONFIG % (tmp_path / "bridge.sqlite3"))
    store = Store(config.store.path, synchronous="normal")
    store.open()
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            server = SmppServer(config, store, Metrics())
            server.pdu_log = wire
            ports = await nursery.start(server.serve)
            with trio.fail_after(60):
                received, errors = await trio.to_thread.run_sync(stop_right_after_submit, ports[0])
            nursery.cancel_scope.cancel()
    finally:
        store.close()
    assert not errors
    assert received[0] == "0x80000009/0"  # bound
    # What the client sent, and that the bridge answered every request of it, ESME_ROK.
    assert [cid for cid, _status in wire.incoming] == [C.BIND_TRANSCEIVER, C.SUBMIT_SM, C.UNBIND]
    assert wire.outgoing == [
        (C.BIND_TRANSCEIVER_RESP, Status.ROK),
        (C.SUBMIT_SM_RESP, Status.ROK),
        (C.UNBIND_RESP, Status.ROK),
    ], (wire.incoming, wire.outgoing, received)
    db = sqlite3.connect(config.store.path)
    try:
        assert db.execute("SELECT count(*) FROM messages").fetchone()[0] == 1
    finally:
        db.close()
