"""kill -9 while a device call is in flight: after a restart the ambiguity policy is applied
and nothing is sent twice."""

from __future__ import annotations

import pytest

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
    e = EmulatorProcess(lines=1, send_duration=0.2)
    yield e
    e.stop()


def crash_mid_send(tmp_path, emulator, *, processed: bool) -> tuple[BridgeProcess, str]:
    """Submit one message and kill -9 the bridge while its send.html call is unanswered."""
    if processed:
        emulator.faults(delay=30, endpoints=["send"])  # the device sends, its answer is slow
    else:
        emulator.faults(hang=True, hang_after_processing=False, endpoints=["send"])
    bridge = BridgeProcess(tmp_path, goip_config(emulator.url, lines=1, extra="")).start()
    c = client(bridge.port)
    c.bind_transmitter(system_id="alice", password="secret1")
    mid = submit(c, b"in flight at the crash", registered_delivery=1).message_id.decode()
    with bridge.db() as db:
        wait_for(lambda: db.execute("SELECT count(*) FROM parts WHERE state='submitting'").fetchone()[0] == 1)
    if processed:
        wait_for(lambda: len(emulator.sent()) == 1)
    bridge.kill()
    emulator.faults(delay=0, hang=False)
    return bridge, mid


def restart_and_get_receipt(bridge: BridgeProcess, mid: str) -> dict:
    bridge.start()
    return restart_and_get_receipt_started(bridge, mid)


def test_device_took_it_before_the_crash_is_reconciled_not_resent(tmp_path, emulator):
    bridge, mid = crash_mid_send(tmp_path, emulator, processed=True)
    try:
        f = restart_and_get_receipt(bridge, mid)
        assert f["stat"] == "DELIVRD"
        assert [s["text"] for s in emulator.sent()] == ["in flight at the crash"]  # once
        assert "reconciled_sent" in bridge.log_text()
    finally:
        bridge.stop()


def test_device_never_got_it_is_sent_after_the_restart(tmp_path, emulator):
    bridge, mid = crash_mid_send(tmp_path, emulator, processed=False)
    try:
        assert emulator.sent() == []
        f = restart_and_get_receipt(bridge, mid)
        assert f["stat"] == "DELIVRD"
        assert [s["text"] for s in emulator.sent()] == ["in flight at the crash"]
        assert "reconciled_not_sent" in bridge.log_text()
    finally:
        bridge.stop()


def test_when_the_device_cannot_tell_the_default_policy_never_resends(tmp_path, emulator):
    bridge, mid = crash_mid_send(tmp_path, emulator, processed=True)
    emulator.faults(malformed_status_xml=True)  # the status slot cannot be read after restart
    try:
        f = restart_and_get_receipt(bridge, mid)
        assert f["stat"] == "UNKNOWN"
        assert len(emulator.sent()) == 1  # not sent a second time
        assert "policy_unknown" in bridge.log_text()
        with bridge.db() as db:
            assert db.execute("SELECT state FROM messages WHERE id=?", (int(mid),)).fetchone() == ("unknown",)
    finally:
        bridge.stop()


@pytest.mark.parametrize("processed", [True, False], ids=["device-took-it", "device-never-took-it"])
def test_a_device_unreadable_for_a_moment_after_the_restart_still_decides(tmp_path, emulator, processed):
    """Issue 12: the status slot unreadable when the bridge comes back, readable moments later.
    The bridge asks again (until status_timeout) instead of deciding UNKNOWN at the first
    unreadable page: the device can tell, so nothing ends UNKNOWN and nothing goes out twice."""
    bridge, mid = crash_mid_send(tmp_path, emulator, processed=processed)
    emulator.faults(malformed_status_xml=True)
    try:
        before = emulator.state()["requests"]
        bridge.start()
        # Several status reads fail before the page heals (the recovery asks at once).
        wait_for(lambda: emulator.state()["requests"] >= before + 4, timeout=15)
        emulator.faults(malformed_status_xml=False)
        f = restart_and_get_receipt_started(bridge, mid)
        assert f["stat"] == "DELIVRD"
        assert [s["text"] for s in emulator.sent()] == ["in flight at the crash"]  # once
        assert ("reconciled_sent" if processed else "reconciled_not_sent") in bridge.log_text()
        assert "policy_unknown" not in bridge.log_text()
    finally:
        bridge.stop()


def restart_and_get_receipt_started(bridge: BridgeProcess, mid: str) -> dict:
    rx = client(bridge.port)
    rx.bind_receiver(system_id="alice", password="secret1")
    (dlr,) = receive_deliver_sm(rx, 1, timeout=20)
    rx.unbind()
    f = receipt_fields(dlr)
    assert f["id"] == mid
    return f
