"""What the SMPP front end leaves to the acceptance step, and answers it owes, on the wire (a
real ``Connection`` and store over memory streams):

* replace_sm's times go through the acceptance step like a submit's: a validity_period is cut
  to scheduler.max_validity; empty times keep the message's own;
* the queue-depth limit is the acceptance step's (every front end shares it), counted per ESME;
* a second unbind read while the first is being answered gets its unbind_resp (ESME_RINVBNDSTS:
  the session is no longer bound), not silence;
* a long message's part resent by the client is not counted again as accepted.
"""

from __future__ import annotations

import sqlite3

import pytest
import trio

from bridge.acceptance import Acceptance, Refused, SUBMIT_SM
from bridge.config import load_config_text
from bridge.metrics import Metrics
from bridge.smpp.constants import CommandId, Status
from bridge.smpp.pdu import Pdu, encode
from tests.test_server_connection import CONFIG, connect, start

C = CommandId
HOUR = 3600.0


@pytest.fixture
def config(tmp_path):  # type: ignore[no-untyped-def]
    return load_config_text(CONFIG % (tmp_path / "bridge.sqlite3"))


def stored(config, column: str):  # type: ignore[no-untyped-def]
    db = sqlite3.connect(config.store.path)
    try:
        return [r[0] for r in db.execute(f"SELECT {column} FROM messages ORDER BY id")]
    finally:
        db.close()


def submit(text: bytes = b"hello", **params) -> Pdu:  # type: ignore[no-untyped-def]
    return Pdu(C.SUBMIT_SM, params={"destination_addr": "+4917012345", "short_message": text, **params})


async def submit_then_replace(config, replace_params: dict) -> tuple[Pdu, float]:  # type: ignore[type-arg]
    """Submit a message scheduled an hour ahead, replace it; (replace_sm_resp, time of replace)."""
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, _ended = connect(nursery, server)
        await peer.bind()
        await peer.send(submit(schedule_delivery_time="000000010000000R"))
        resp = await peer.recv()
        assert resp is not None and resp.command_status == Status.ROK
        now = server.clock()
        await peer.send(Pdu(C.REPLACE_SM, params={"message_id": resp.params["message_id"],
                                                  "short_message": b"new text", **replace_params}))
        with trio.fail_after(10):
            answer = await peer.recv()
        nursery.cancel_scope.cancel()
    server.store.close()
    assert answer is not None and answer.command_id == C.REPLACE_SM_RESP
    return answer, now


async def test_replace_sm_validity_is_cut_to_max_validity(config):
    answer, now = await submit_then_replace(config, {"validity_period": "010000000000000R"})  # a year
    assert answer.command_status == Status.ROK
    (expire,) = stored(config, "expire_at")
    (schedule,) = stored(config, "schedule_at")
    assert schedule == pytest.approx(now + HOUR, abs=5)
    assert expire == pytest.approx(schedule + config.scheduler.max_validity, abs=5)
    assert stored(config, "text") == ["new text"]


async def test_replace_sm_without_a_validity_keeps_the_messages_own(config):
    # Scheduled in an hour with the default validity (48 h); moved to three days ahead: an
    # empty validity_period keeps the original (SMPP 3.4 4.10.1), so the message expires unsent.
    answer, now = await submit_then_replace(config, {"schedule_delivery_time": "000003000000000R"})
    assert answer.command_status == Status.ROK
    (expire,) = stored(config, "expire_at")
    assert expire == pytest.approx(now + HOUR + config.scheduler.default_validity, abs=5)


async def test_replace_sm_with_an_unreadable_time_is_refused_by_acceptance(config):
    answer, _ = await submit_then_replace(config, {"validity_period": "99999999999999"})
    assert answer.command_status == Status.RINVEXPIRY
    assert stored(config, "text") == ["hello"]


def test_the_queue_depth_limit_is_the_acceptance_steps(config):
    metrics = Metrics()
    waiting = [config.limits.queue_depth]
    acceptance = Acceptance(config, metrics=metrics, queued=lambda: waiting[0])
    params = {"destination_addr": "+4917012345"}
    acme = config.esme("acme")
    with pytest.raises(Refused) as refused:
        acceptance.decide(acme, SUBMIT_SM, params, b"hello")
    assert refused.value.status == Status.RMSGQFUL
    assert metrics.registry.get_sample_value("smpp_bridge_queue_full_segments_total", {"esme": "acme"}) == 1
    waiting[0] -= 1
    acceptance.pending = 1  # a commit in flight (a front end's) counts too
    with pytest.raises(Refused):
        acceptance.decide(acme, SUBMIT_SM, params, b"hello")
    acceptance.pending = 0
    assert len(acceptance.decide(acme, SUBMIT_SM, params, b"hello").messages) == 1


async def test_a_second_unbind_is_answered(config):
    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, ended = connect(nursery, server)
        await peer.bind()
        # Both in one segment: the second is read while the first is being answered (UNBINDING).
        first, second = Pdu(C.UNBIND, sequence_number=11), Pdu(C.UNBIND, sequence_number=12)
        await peer.stream.send_all(encode(first) + encode(second))
        with trio.fail_after(10):
            answers = await peer.recv_all()
            await ended.wait()
        nursery.cancel_scope.cancel()
    server.store.close()
    got = sorted((p.sequence_number, p.command_id, p.command_status) for p in answers)
    assert got == [
        (first.sequence_number, C.UNBIND_RESP, Status.ROK),
        (second.sequence_number, C.UNBIND_RESP, Status.RINVBNDSTS),
    ]


async def test_a_resent_long_message_part_is_not_counted_again(config):
    def part(seq: int) -> Pdu:
        udh = bytes([5, 0, 3, 0x42, 2, seq])
        return submit(udh + f"part {seq}".encode(), esm_class=0x40)

    async with trio.open_nursery() as nursery:
        server = await start(nursery, config)
        peer, _conn, _ended = connect(nursery, server)
        await peer.bind()
        ids = []
        for seq in (1, 1, 2):  # part 1 resent (its resp was lost, say), then part 2
            await peer.send(part(seq))
            resp = await peer.recv()
            assert resp is not None and resp.command_status == Status.ROK
            ids.append(resp.params["message_id"])
        nursery.cancel_scope.cancel()
    server.store.close()
    assert ids[0] == ids[1]  # the resend got the same id: nothing new was stored
    accepted = server.metrics.registry.get_sample_value("smpp_bridge_segments_accepted_total", {"esme": "acme"})
    assert accepted == 2


def test_replace_decisions_keep_read_and_bound_the_times(config):
    now = 1_000_000.0
    acceptance = Acceptance(config, clock=lambda: now)
    keep = acceptance.decide_replace({"short_message": b"x"}, data_coding=0, schedule_at=None, expire_at=now + 60)
    assert (keep.schedule_at, keep.expire_at) == (None, None)  # empty times: the message's own
    with pytest.raises(Refused) as bad:
        acceptance.decide_replace({"schedule_delivery_time": "garbage"}, data_coding=0, schedule_at=None,
                                  expire_at=None)
    assert bad.value.status == Status.RINVSCHED
    with pytest.raises(Refused) as binary:  # replace_sm cannot change the coding: text only
        acceptance.decide_replace({"short_message": b"\x01\x02"}, data_coding=4, schedule_at=None, expire_at=None)
    assert binary.value.status == Status.RREPLACEFAIL
