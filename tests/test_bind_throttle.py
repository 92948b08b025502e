"""Bind brute force, on the wire (a real ``Connection`` over memory streams, trio's MockClock):
the failing credentials are slowed, not every ESME of their address, and a bind waiting for its
turn is answered, never cut by the session_init timer.
"""

from __future__ import annotations

import trio
import trio.testing

from bridge.config import load_config_text
from bridge.frontends.smpp import protocol as proto
from bridge.smpp.constants import CommandId, Status
from bridge.smpp.pdu import Pdu
from tests.test_server_connection import CONFIG, _NoStore, connect, start

C = CommandId

TWO_ESMES = CONFIG.replace(
    "esmes:\n",
    "esmes:\n  - {system_id: bob, password: secret2, allowed_ips: [127.0.0.0/8]}\n",
)


def config_with(tmp_path):  # type: ignore[no-untyped-def]
    return load_config_text(TWO_ESMES % (tmp_path / "bridge.sqlite3"))


def bind_pdu(system_id: str, password: str) -> Pdu:
    return Pdu(C.BIND_TRANSCEIVER, params={"system_id": system_id, "password": password,
                                           "interface_version": 0x34})


async def test_a_full_guess_queue_for_one_esme_does_not_refuse_another_esme_of_that_address(tmp_path, mock_clock):
    config = config_with(tmp_path)
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        for i in range(proto.FAIL_LIMIT):  # the first failures are answered at once
            peer, _, _ = connect(nursery, server)
            resp = await peer.bind(password=f"guess{i}")
            assert resp.command_status == Status.RINVPASWD
        # Parallel guesses for acme's password take every turn within session_init (10 s)...
        waiting = []
        for i in range(int(config.smpp.timers.session_init // proto.FAIL_DELAY)):
            peer, _, _ = connect(nursery, server)
            await peer.send(bind_pdu("acme", f"par{i}"))
            waiting.append(peer)
        await trio.testing.wait_all_tasks_blocked()
        peer, _, _ = connect(nursery, server)
        resp = await peer.bind(password="onemore")
        assert resp.command_status == Status.RBINDFAIL  # ...so one more guess is refused unchecked.
        # bob, a real ESME on the same (shared) host, binds at once: its credentials never failed.
        bob, _, _ = connect(nursery, server)
        await bob.send(bind_pdu("bob", "secret2"))
        with trio.fail_after(1):  # the clock does not move: "at once"
            resp = await bob.recv()
        assert resp is not None and resp.command_status == Status.ROK
        nursery.cancel_scope.cancel()


async def test_unknown_system_ids_share_one_queue_per_address(tmp_path, autojump_clock):
    """Guessing system_ids is slowed like guessing a password (one queue for all unknown ids)."""
    config = config_with(tmp_path)
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        for i in range(proto.FAIL_LIMIT):
            peer, _, _ = connect(nursery, server)
            await peer.send(bind_pdu(f"nobody{i}", "x"))
            resp = await peer.recv()
            assert resp is not None and resp.command_status == Status.RINVSYSID
        peer, _, _ = connect(nursery, server)
        await peer.send(bind_pdu("nobody-else", "x"))
        got = None
        with trio.move_on_after(proto.FAIL_DELAY / 2):
            got = await peer.recv()
        assert got is None  # not answered before its turn
        with trio.fail_after(proto.FAIL_DELAY):
            resp = await peer.recv()
        assert resp is not None and resp.command_status == Status.RINVSYSID
        nursery.cancel_scope.cancel()


async def test_a_bind_waiting_for_its_turn_gets_its_bind_resp_not_a_cut(tmp_path, autojump_clock):
    config = config_with(tmp_path)
    session_init = config.smpp.timers.session_init
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config, _NoStore())
        for i in range(proto.FAIL_LIMIT):
            peer, _, _ = connect(nursery, server)
            assert (await peer.bind(password=f"guess{i}")).command_status == Status.RINVPASWD
        # A connection that binds late: its turn (FAIL_DELAY away) comes after its session_init.
        peer, _, ended = connect(nursery, server)
        await trio.sleep(session_init - proto.FAIL_DELAY / 4)
        await peer.send(bind_pdu("acme", "late"))
        with trio.fail_after(3600):
            answers = await peer.recv_all()
            await ended.wait()
        assert [(p.command_id, p.command_status) for p in answers][:1] == [
            (C.BIND_TRANSCEIVER_RESP, Status.RINVPASWD)
        ], answers
        # The right password, equally late, binds.
        peer, _, _ = connect(nursery, server)
        await trio.sleep(session_init - proto.FAIL_DELAY / 4)
        await peer.send(bind_pdu("acme", "secret1"))
        with trio.fail_after(3600):
            resp = await peer.recv()
        assert resp is not None and resp.command_status == Status.ROK
        nursery.cancel_scope.cancel()
