"""End to end: smpplib <-> bridge process <-> GoIP emulator process, all over real sockets."""

from __future__ import annotations

import time

import pytest
import smpplib.consts as sc
import smpplib.gsm

from e2e_support import (
    BridgeProcess,
    EmulatorProcess,
    client,
    goip_config,
    receipt_fields,
    receive_deliver_sm,
    submit,
    wait_for,
)


@pytest.fixture
def emulator():
    e = EmulatorProcess(lines=4, send_duration=0.2)
    yield e
    e.stop()


def start(tmp_path, emulator, **kw) -> BridgeProcess:
    return BridgeProcess(tmp_path, goip_config(emulator.url, **kw)).start()


def trx(bridge):
    c = client(bridge.port)
    c.bind_transceiver(system_id="alice", password="secret1")
    return c


def test_submit_goes_out_and_the_receipt_comes_back_with_its_tlvs(tmp_path, emulator):
    bridge = start(tmp_path, emulator)
    try:
        c = trx(bridge)
        resp = submit(c, b"Hello from the bridge", dest="+491701112233", registered_delivery=1)
        assert resp.status == 0
        mid = resp.message_id.decode()
        (dlr,) = receive_deliver_sm(c, 1)
        sent = emulator.sent()
        assert [(s["destination"], s["text"]) for s in sent] == [("+491701112233", "Hello from the bridge")]
        f = receipt_fields(dlr)
        assert f["id"] == mid and f["stat"] == "DELIVRD" and f["err"] == "000"
        assert dlr.esm_class == 0x04  # SMSC delivery receipt
        assert dlr.receipted_message_id.decode() == mid  # byte-identical to submit_sm_resp
        assert dlr.message_state == 2  # DELIVERED
        assert dlr.source_addr.decode() == "+491701112233"
        assert "Text:Hello from the brid" in f["text"]
        with bridge.db() as db:
            assert db.execute("SELECT state FROM messages WHERE id=?", (int(mid),)).fetchone() == ("delivered",)
        c.unbind()
    finally:
        bridge.stop()


def test_no_receipt_unless_asked_and_failure_only_mode(tmp_path, emulator):
    bridge = start(tmp_path, emulator)
    try:
        c = trx(bridge)
        submit(c, b"no receipt please", registered_delivery=0)
        ok = submit(c, b"failure-only, succeeds", registered_delivery=2)
        # The failure is armed only once the first two went out (armed earlier, a slow machine
        # could still be sending the second: it would take the failure meant for the third).
        wait_for(lambda: len(emulator.sent()) == 2)
        emulator.faults(fail_next={"1": [1, "2172"], "2": [1, "2172"], "3": [1, "2172"], "4": [1, "2172"]})
        bad = submit(c, b"failure-only, fails", registered_delivery=2)
        (dlr,) = receive_deliver_sm(c, 1)
        f = receipt_fields(dlr)
        assert f["id"] == bad.message_id.decode() and f["stat"] == "UNDELIV"
        wait_for(lambda: len(emulator.sent()) == 3)
        c._socket.settimeout(1)
        with pytest.raises(TimeoutError):
            receive_deliver_sm(c, 1, timeout=1.5)  # nothing for the two others
        assert ok.status == 0
        c.unbind()
    finally:
        bridge.stop()


def test_error_2172_gives_undeliv_with_network_error_code(tmp_path, emulator):
    bridge = start(tmp_path, emulator, scheduler="  max_attempts: 1")
    try:
        emulator.faults(line_errors={str(n): "2172" for n in range(1, 5)})
        c = trx(bridge)
        mid = submit(c, b"will fail", registered_delivery=1).message_id.decode()
        (dlr,) = receive_deliver_sm(c, 1)
        f = receipt_fields(dlr)
        assert (f["id"], f["stat"], f["err"]) == (mid, "UNDELIV", "172")
        assert dlr.message_state == 5
        assert bytes(dlr.network_error_code) == bytes([8, 0x08, 0x7C])  # MC-specific, 2172
        assert len(emulator.sent()) == 1  # a device failure is final: not sent again
        c.unbind()
    finally:
        bridge.stop()


def test_busy_line_is_retried_and_the_message_still_goes_out(tmp_path, emulator):
    bridge = start(tmp_path, emulator, lines=1)
    try:
        # Someone else keeps line 1 busy for a moment (a send straight to the device).
        import httpx

        httpx.get(emulator.url + "/default/en_US/send.html", params={"u": "admin", "p": "admin", "l": "1", "n": "+1", "m": "other"})
        c = trx(bridge)
        mid = submit(c, b"after the busy line", registered_delivery=1).message_id.decode()
        (dlr,) = receive_deliver_sm(c, 1)
        assert receipt_fields(dlr)["id"] == mid and receipt_fields(dlr)["stat"] == "DELIVRD"
        texts = [s["text"] for s in emulator.sent()]
        assert texts.count("after the busy line") == 1
        c.unbind()
    finally:
        bridge.stop()


def test_gsm_logout_then_recovery(tmp_path, emulator):
    emulator.faults(logout={str(n): 2 for n in range(1, 5)})
    bridge = start(tmp_path, emulator)
    try:
        c = trx(bridge)
        mid = submit(c, b"wait for the network", registered_delivery=1).message_id.decode()
        (dlr,) = receive_deliver_sm(c, 1, timeout=20)
        f = receipt_fields(dlr)
        assert (f["id"], f["stat"]) == (mid, "DELIVRD")
        assert [s["text"] for s in emulator.sent()] == ["wait for the network"]
        c.unbind()
    finally:
        bridge.stop()


@pytest.mark.slow
def test_validity_period_expires_a_message_that_cannot_go_out(tmp_path, emulator):
    emulator.faults(logout={str(n): None for n in range(1, 5)})  # logged out until further notice
    bridge = start(tmp_path, emulator)
    try:
        c = trx(bridge)
        mid = submit(c, b"too late", registered_delivery=1, validity_period="000000000003000R").message_id.decode()
        (dlr,) = receive_deliver_sm(c, 1, timeout=30)
        f = receipt_fields(dlr)
        assert (f["id"], f["stat"]) == (mid, "EXPIRED")
        assert dlr.message_state == 3
        assert emulator.sent() == []
        c.unbind()
    finally:
        bridge.stop()


def test_unreadable_answer_is_reconciled_not_resent(tmp_path, emulator):
    bridge = start(tmp_path, emulator, lines=2)
    try:
        # The device takes the SMS but answers garbage: the bridge must not send it twice.
        emulator.faults(garbage=True, endpoints=["send"])
        c = trx(bridge)
        mid = submit(c, b"sent exactly once", registered_delivery=1).message_id.decode()
        (dlr,) = receive_deliver_sm(c, 1, timeout=20)
        assert receipt_fields(dlr)["stat"] == "DELIVRD" and receipt_fields(dlr)["id"] == mid
        assert [s["text"] for s in emulator.sent()] == ["sent exactly once"]
        c.unbind()
    finally:
        bridge.stop()


def test_transient_error_is_retried_on_another_line(tmp_path, emulator):
    bridge = start(tmp_path, emulator, lines=2)
    try:
        # The device answers non-HTTP bytes before doing anything: not sent, retry later.
        emulator.faults(raw_garbage=True, endpoints=["send"])
        c = trx(bridge)
        mid = submit(c, b"second time lucky", registered_delivery=1).message_id.decode()
        wait_for(lambda: bridge_events(bridge, mid).count("retry_wait") >= 1, timeout=15)
        emulator.faults(raw_garbage=False)
        (dlr,) = receive_deliver_sm(c, 1, timeout=20)
        assert receipt_fields(dlr)["stat"] == "DELIVRD" and receipt_fields(dlr)["id"] == mid
        assert [s["text"] for s in emulator.sent()] == ["second time lucky"]
        c.unbind()
    finally:
        bridge.stop()


def bridge_events(bridge, mid: str) -> list[str]:
    with bridge.db() as db:
        return [r[0] for r in db.execute("SELECT state FROM events WHERE message=? ORDER BY id", (int(mid),))]


def test_per_minute_cap_is_respected(tmp_path, emulator):
    bridge = start(tmp_path, emulator, lines=1, caps="per_minute: 2, jitter: 0")
    try:
        c = trx(bridge)
        for i in range(4):
            assert submit(c, f"capped {i}".encode()).status == 0
        wait_for(lambda: len(emulator.sent()) >= 1)
        time.sleep(3)  # functional: within a minute the cap allows 2 sends, never more
        assert len(emulator.sent()) <= 2
        c.unbind()
    finally:
        bridge.stop()


def test_multipart_message_gets_one_combined_receipt(tmp_path, emulator):
    bridge = start(tmp_path, emulator)
    try:
        c = trx(bridge)
        text = "This long message is split by the client into UDH parts and reassembled by the bridge. " * 3
        parts, encoding, esm_class = smpplib.gsm.make_parts(text)
        assert len(parts) >= 2
        ids = []
        for i, part in enumerate(parts):
            r = submit(c, part, data_coding=encoding, esm_class=esm_class, registered_delivery=1 if i == 0 else 0)
            ids.append(r.message_id.decode())
        (dlr,) = receive_deliver_sm(c, 1, timeout=20)
        f = receipt_fields(dlr)
        assert f["id"] == ids[0] and f["stat"] == "DELIVRD"
        assert f["sub"] == f"{len(parts):03d}" and f["dlvrd"] == f"{len(parts):03d}"
        sent = emulator.sent()
        assert "".join(s["text"] for s in sent) == text  # re-split for the device, in order
        assert len({s["line"] for s in sent}) == 1  # all parts on the same line, in order
        c.unbind()
    finally:
        bridge.stop()


def test_receipts_wait_for_a_receiver_bind(tmp_path, emulator):
    bridge = start(tmp_path, emulator)
    try:
        tx = client(bridge.port)
        tx.bind_transmitter(system_id="alice", password="secret1")
        ids = [submit(tx, f"tx only {i}".encode(), registered_delivery=1).message_id.decode() for i in range(3)]
        wait_for(lambda: len(emulator.sent()) == 3)
        with bridge.db() as db:
            wait_for(lambda: db.execute("SELECT count(*) FROM outbox WHERE delivered_at IS NULL").fetchone()[0] == 3)
        rx = client(bridge.port)
        rx.bind_receiver(system_id="alice", password="secret1")
        got = receive_deliver_sm(rx, 3)
        assert sorted(receipt_fields(d)["id"] for d in got) == sorted(ids)
        rx.unbind()
        tx.unbind()
    finally:
        bridge.stop()


def test_no_resplit_part_starts_with_a_bracket_the_goip_refuses(tmp_path, emulator):
    # The bridge's own split for a GoIP (separate plain SMS) would start part 2 with "[", which
    # the firmware answers with HTTP 500 (the emulator does too): half delivered, UNDELIV.
    bridge = start(tmp_path, emulator)
    try:
        c = trx(bridge)
        text = "a" * 153 + "[ticket 42] is resolved."
        parts, encoding, esm_class = smpplib.gsm.make_parts(text)
        for i, part in enumerate(parts):
            submit(c, part, data_coding=encoding, esm_class=esm_class, registered_delivery=1 if i == 0 else 0)
        (dlr,) = receive_deliver_sm(c, 1, timeout=20)
        assert receipt_fields(dlr)["stat"] == "DELIVRD"
        sent = [s["text"] for s in emulator.sent()]
        assert "".join(sent) == text and len(sent) == 2
        assert not any(s.startswith("[") for s in sent)
        c.unbind()
    finally:
        bridge.stop()
