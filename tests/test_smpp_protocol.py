"""The SMPP front end's decisions without sockets: ``bridge/frontends/smpp/protocol.py`` called
as plain functions (binds, submits, query/cancel/replace answers, the session timers), and the
connection's timers driven by trio's MockClock over an in-memory stream.

What an ESME relies on, checked here:

* a bind is refused for the first reason in a fixed order, with that reason's status, and a
  brute force from one address is slowed to one checked guess per FAIL_DELAY;
* a submit is refused at once and specifically (bad input, queue full per segment) or goes to
  the store and is answered from the store's result;
* an idle bound session is probed with enquire_link, and closed when the probe goes unanswered
  or when nothing at all comes in for the inactivity timer.
"""

from __future__ import annotations

import struct

import pytest
import trio
import trio.testing

from bridge.config import load_config_text
from bridge.frontends.smpp import protocol as proto
from bridge.frontends.smpp.connection import Connection
from bridge.frontends.smpp.listener import SmppServer
from bridge.metrics import Metrics
from bridge.smpp.constants import CommandId, Status, Tag
from bridge.smpp.pdu import Pdu, decode, encode, make_response
from bridge.smpp.session import SessionState
from bridge.store import Accepted

C = CommandId

CONFIG = """
smpp:
  listeners: [{host: 127.0.0.1, port: 0}]
  timers: {session_init: 10, enquire_link: %s, inactivity: %s, response: 5, unbind_grace: 3}
esmes:
  - system_id: acme
    password: secret1
    allowed_ips: [127.0.0.0/8]
    max_binds: 2
  - system_id: paused
    password: secret1
    enabled: false
store:
  path: %s
limits:
  queue_depth: 10
admin:
  port: 0
"""


@pytest.fixture
def config(tmp_path):  # type: ignore[no-untyped-def]
    return load_config_text(CONFIG % (30, 60, tmp_path / "bridge.sqlite3"))


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- binds ---------------------------------------------------------------------------------------


def test_binds_are_refused_for_the_first_failing_check(config):
    acme = config.esme("acme")
    allowed = "127.0.0.1"
    cases = [
        (dict(esme=acme, peer=allowed, shutting_down=True, delay=0.0), Status.RBINDFAIL, "shutting_down"),
        (dict(esme=acme, peer=allowed, shutting_down=False, delay=None), Status.RBINDFAIL, "other"),
        (dict(esme=None, peer=allowed, shutting_down=False, delay=0.0), Status.RINVSYSID, "unknown_system_id"),
        (dict(esme=config.esme("paused"), peer=allowed, shutting_down=False, delay=0.0), Status.RBINDFAIL, "disabled"),
        (dict(esme=acme, peer="10.1.2.3", shutting_down=False, delay=0.0), Status.RBINDFAIL, "ip_not_allowed"),
    ]
    for kwargs, status, label in cases:
        esme = kwargs.pop("esme")
        refusal = proto.bind_refusal(esme, kwargs.pop("peer"), **kwargs)
        assert refusal is not None and (refusal.status, refusal.label) == (status, label), (kwargs, refusal)
        assert refusal.hint  # every refusal tells the operator what to do
    assert proto.bind_refusal(acme, allowed, shutting_down=False, delay=0.0) is None

    wrong = proto.bind_refusal_after_password(acme, False, 0)
    assert wrong is not None and wrong.status == Status.RINVPASWD and wrong.counts_as_guess
    full = proto.bind_refusal_after_password(acme, True, 2)
    assert full is not None and full.status == Status.RBINDFAIL and full.label == "max_binds"
    assert not full.counts_as_guess
    assert proto.bind_refusal_after_password(acme, True, 1) is None


def test_bind_answers_carry_our_system_id_and_interface_version():
    bind = Pdu(C.BIND_TRANSCEIVER, sequence_number=7, params={"system_id": "acme", "password": "x"})
    ok = proto.bind_answer(bind, None, "bridge")
    assert (ok.command_id, ok.command_status, ok.sequence_number) == (C.BIND_TRANSCEIVER_RESP, Status.ROK, 7)
    assert ok.params["system_id"] == "bridge" and ok.tlvs[Tag.SC_INTERFACE_VERSION] == 0x34
    refused = proto.bind_answer(bind, proto.BindRefusal(Status.RINVPASWD, "wrong password"), "bridge")
    assert refused.command_status == Status.RINVPASWD and Tag.SC_INTERFACE_VERSION not in refused.tlvs


def test_bind_throttle_lets_one_guess_through_per_fail_delay_after_the_limit():
    clock = FakeClock()
    throttle = proto.BindThrottle(clock)
    ip = ("203.0.113.9", "acme")
    for _ in range(proto.FAIL_LIMIT):
        assert throttle.delay(ip, 10.0) == 0.0
        throttle.note_failure(ip)
    # Parallel attempts queue up one FAIL_DELAY apart, until the queue would outlast session_init.
    delays = [throttle.delay(ip, 10.0) for _ in range(8)]
    turns = int(10.0 // proto.FAIL_DELAY)
    assert delays[:turns] == [proto.FAIL_DELAY * (n + 1) for n in range(turns)]
    assert delays[turns:] == [None] * (8 - turns)  # refused unchecked
    assert throttle.delay(("198.51.100.1", "acme"), 10.0) == 0.0  # other addresses are not slowed
    assert throttle.delay(("203.0.113.9", "bob"), 10.0) == 0.0  # nor other ESMEs of that address
    clock.now += proto.FAIL_WINDOW + 30  # the failures age out of the window
    assert throttle.delay(ip, 10.0) == 0.0


def test_a_right_bind_gives_its_turn_back_so_the_guesses_keep_their_pace():
    clock = FakeClock()
    throttle = proto.BindThrottle(clock)
    ip = ("203.0.113.9", "acme")
    for _ in range(proto.FAIL_LIMIT):
        throttle.note_failure(ip)
    assert throttle.delay(ip, 10.0) == proto.FAIL_DELAY  # a guess takes the first turn
    assert throttle.delay(ip, 10.0) == 2 * proto.FAIL_DELAY  # the real ESME reserves one, is right:
    throttle.give_back(ip)  # it bound at once and frees its turn
    assert throttle.delay(ip, 10.0) == 2 * proto.FAIL_DELAY  # the next guess is not pushed back
    for _ in range(5):  # however often the real ESME binds, the queue does not fill up
        throttle.delay(ip, 10.0)
        throttle.give_back(ip)
    assert throttle.delay(ip, 10.0) == 3 * proto.FAIL_DELAY
    clock.now += 10 * proto.FAIL_DELAY
    throttle.give_back(ip)  # every turn is past: nothing left to give back
    assert throttle.delay(ip, 10.0) == proto.FAIL_DELAY


def test_a_reload_closes_binds_whose_esme_changed(config, tmp_path):
    acme = config.esme("acme")
    assert proto.reload_verdict(acme, acme, "127.0.0.1") is None
    assert "disabled" in proto.reload_verdict(acme, None, "127.0.0.1")
    assert "allowed_ips" in proto.reload_verdict(acme, acme, "10.0.0.1")
    changed = load_config_text((CONFIG % (30, 60, tmp_path / "b.sqlite3")).replace("secret1", "secret2", 1))
    assert "password" in proto.reload_verdict(acme, changed.esme("acme"), "127.0.0.1")


# -- submit --------------------------------------------------------------------------------------


def _submit(dest: str = "+4917012345", text: bytes = b"hello") -> Pdu:
    return Pdu(C.SUBMIT_SM, sequence_number=3, params={"destination_addr": dest, "short_message": text})


class _Queue:
    """The store as the queue-depth check sees it: how many messages are not final."""

    def __init__(self, active_count: int = 0) -> None:
        self.active_count = active_count


def test_a_good_submit_is_planned_and_answered_from_the_store_result(config):
    server = SmppServer(config, store=_Queue(), metrics=Metrics())  # type: ignore[arg-type]
    pdu = _submit()
    plan = proto.decide_submit(server.acceptance, config.esme("acme"), pdu)
    assert isinstance(plan, proto.SubmitPlan) and not plan.multi
    assert len(plan.messages) == 1 and plan.segments == 1
    ok = proto.submit_answer(pdu, plan, Accepted("0000000042", complete=True), None)
    assert (ok.command_id, ok.command_status, ok.params["message_id"]) == (C.SUBMIT_SM_RESP, Status.ROK, "0000000042")
    failed = proto.submit_answer(pdu, plan, None, OSError("disk full"))
    assert failed.command_status == Status.RSYSERR


def test_submits_are_refused_at_once_for_bad_input_and_a_full_queue(config):
    queue = _Queue()
    metrics = Metrics()
    server = SmppServer(config, store=queue, metrics=metrics)  # type: ignore[arg-type]
    acme = config.esme("acme")
    bad = proto.decide_submit(server.acceptance, acme, _submit(dest="not a number"))
    assert isinstance(bad, proto.SubmitRefusal) and bad.answer.command_status == Status.RINVDSTADR
    queue.active_count = config.limits.queue_depth
    long_text = b"x" * 400  # three segments
    full = proto.decide_submit(server.acceptance, acme, _submit(text=long_text))
    assert isinstance(full, proto.SubmitRefusal) and full.answer.command_status == Status.RMSGQFUL
    counted = metrics.registry.get_sample_value("smpp_bridge_queue_full_segments_total", {"esme": "acme"})
    assert counted == 3  # counted per segment


# -- query / cancel / replace --------------------------------------------------------------------


def test_query_cancel_replace_answers():
    query = Pdu(C.QUERY_SM, sequence_number=4, params={"message_id": "0000000001"})
    unknown = proto.query_answer(query, [])
    assert unknown.command_status == Status.RINVMSGID and unknown.params["message_id"] == "0000000001"

    cancel = Pdu(C.CANCEL_SM, sequence_number=5, params={"message_id": "0000000001"})
    assert proto.cancel_answer(cancel, None).command_status == Status.RINVMSGID
    assert proto.cancel_answer(cancel, 0).command_status == Status.RCANCELFAIL
    assert proto.cancel_answer(cancel, 2).command_status == Status.ROK

    replace = Pdu(C.REPLACE_SM, sequence_number=6, params={"message_id": "1", "schedule_delivery_time": "garbage"})
    assert proto.replace_answer(replace, None).command_status == Status.RINVMSGID
    assert proto.replace_answer(replace, False).command_status == Status.RREPLACEFAIL
    assert proto.replace_answer(replace, True).command_status == Status.ROK


# -- timers as data ------------------------------------------------------------------------------


def test_session_timers_say_when_to_probe_and_when_to_close(config):
    t = config.smpp.timers  # session_init 10, enquire_link 30, inactivity 60, response 5
    timers = proto.SessionTimers(0.0)
    assert timers.check(9.0, SessionState.OPEN, t, closing=False) is None
    assert "session_init" in timers.check(11.0, SessionState.OPEN, t, closing=False).reason  # type: ignore[union-attr]

    timers = proto.SessionTimers(0.0)
    timers.received(1.0)  # the bind
    assert timers.check(30.0, SessionState.BOUND_TRX, t, closing=False) is None
    assert timers.check(31.5, SessionState.BOUND_TRX, t, closing=False) is proto.SEND_ENQUIRE_LINK
    timers.enquire_link_sent(9, 31.5)
    assert timers.check(36.0, SessionState.BOUND_TRX, t, closing=False) is None  # within the response timer
    assert not timers.is_enquire_link_answer(8)
    assert timers.is_enquire_link_answer(9)
    timers.received(36.0)
    assert timers.check(60.0, SessionState.BOUND_TRX, t, closing=False) is None
    timers.enquire_link_sent(10, 67.0)
    verdict = timers.check(72.5, SessionState.BOUND_TRX, t, closing=False)
    assert isinstance(verdict, proto.CloseSession) and "enquire_link" in verdict.reason
    assert timers.check(200.0, SessionState.BOUND_TRX, t, closing=True) is None  # closing has its own bounds

    # An unbind that is not followed by a close: the response timer, from when the state began.
    timers = proto.SessionTimers(0.0)
    assert timers.check(100.0, SessionState.UNBINDING, t, closing=False) is None
    verdict = timers.check(105.5, SessionState.UNBINDING, t, closing=False)
    assert isinstance(verdict, proto.CloseSession) and "unbind" in verdict.reason


# -- the connection's timers under MockClock -----------------------------------------------------


class _NoStore:
    active_count = 0

    def commit_now(self) -> None:  # nothing is ever pending
        pass


async def _read_pdu(stream: trio.abc.Stream, buf: bytearray) -> Pdu | None:
    while True:
        if len(buf) >= 4:
            n = struct.unpack(">I", buf[:4])[0]
            if len(buf) >= n:
                wire = bytes(buf[:n])
                del buf[:n]
                return decode(wire)
        data = await stream.receive_some(65536)
        if not data:
            return None
        buf += data


async def _bound_session(nursery: trio.Nursery, config) -> tuple[trio.abc.Stream, bytearray, Connection, trio.Event]:  # type: ignore[no-untyped-def]
    server = SmppServer(config, _NoStore(), Metrics())  # type: ignore[arg-type]
    client, server_side = trio.testing.memory_stream_pair()
    conn = Connection(server, server_side, "127.0.0.1", "test")
    ended = trio.Event()

    async def run() -> None:
        try:
            await conn.run()
        finally:
            ended.set()

    nursery.start_soon(run)
    buf = bytearray()
    await client.send_all(
        encode(Pdu(C.BIND_TRANSCEIVER, sequence_number=1, params={"system_id": "acme", "password": "secret1"}))
    )
    resp = await _read_pdu(client, buf)
    assert resp is not None and resp.command_status == Status.ROK
    return client, buf, conn, ended


async def test_an_idle_session_is_probed_and_closed_when_the_probe_goes_unanswered(config, autojump_clock):
    async with trio.open_nursery() as nursery:
        client, buf, conn, ended = await _bound_session(nursery, config)
        bound_at = trio.current_time()
        probe = await _read_pdu(client, buf)
        assert probe is not None and probe.command_id == C.ENQUIRE_LINK
        assert 30 <= trio.current_time() - bound_at <= 31.5  # enquire_link 30 s, checked every second
        # The peer stays silent: the connection closes once the response timer (5 s) has run out.
        assert await _read_pdu(client, buf) is None
        await ended.wait()
        assert 35 <= trio.current_time() - bound_at <= 45  # + CLOSE_LINGER at most
    assert "enquire_link" in conn._close_reason


async def test_a_peer_that_answers_the_probes_stays_bound(config, autojump_clock):
    async with trio.open_nursery() as nursery:
        client, buf, conn, ended = await _bound_session(nursery, config)
        bound_at = trio.current_time()
        probes = 0
        while trio.current_time() - bound_at < 300:
            probe = await _read_pdu(client, buf)
            assert probe is not None and probe.command_id == C.ENQUIRE_LINK
            probes += 1
            await client.send_all(encode(make_response(probe)))
        assert conn.bound and not ended.is_set()
        assert probes >= 300 // 31
        nursery.cancel_scope.cancel()


async def test_inactivity_closes_a_session_that_sends_nothing_at_all(tmp_path, autojump_clock):
    # inactivity 32 s comes before the unanswered probe (sent after 30 s) could time out (5 s).
    config = load_config_text(CONFIG % (30, 32, tmp_path / "bridge.sqlite3"))
    async with trio.open_nursery() as nursery:
        client, buf, conn, ended = await _bound_session(nursery, config)
        bound_at = trio.current_time()
        probe = await _read_pdu(client, buf)
        assert probe is not None and probe.command_id == C.ENQUIRE_LINK
        assert await _read_pdu(client, buf) is None
        await ended.wait()
        assert 32 <= trio.current_time() - bound_at <= 40
    assert "inactivity" in conn._close_reason
