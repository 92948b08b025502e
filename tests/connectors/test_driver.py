"""The connector driver against our SMSC emulator (bridge/connectors/)."""

from __future__ import annotations

from typing import Any

import pytest
import trio

from bridge.connectors.config import build_driver
from bridge.connectors.emulator import SmscEmulator
from bridge.devices.base import DeliveryState, SendOutcome
from bridge.smpp.concat import parse_udh

from connector_support import connector_device


async def wait_for(cond: Any, timeout: float = 30.0) -> None:
    with trio.fail_after(timeout):
        while not cond():
            await trio.sleep(0.01)


async def start(nursery: trio.Nursery, emu: SmscEmulator | None = None, **extra: Any) -> tuple[SmscEmulator, Any]:
    emu = emu or SmscEmulator()
    port = await nursery.start(emu.serve)
    drv = build_driver(connector_device(port, **extra))
    await nursery.start(drv.serve)
    await wait_for(lambda: drv.binds_up == 1)
    return emu, drv


async def final_status(drv: Any, ref: str) -> Any:
    with trio.fail_after(30):
        while True:
            st = await drv.status("1", ref)
            if st.state is not DeliveryState.PENDING:
                return st
            await trio.sleep(0.01)


async def test_submit_and_receipt() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n)
        res = await drv.send("1", "+15551234", "hello", source="Shop")
        assert res.outcome is SendOutcome.ACCEPTED
        assert res.ref == emu.sent[0].message_id
        assert (emu.sent[0].source, emu.sent[0].destination, emu.sent[0].body) == ("Shop", "15551234", b"hello")
        st = await final_status(drv, res.ref)
        assert st.state is DeliveryState.DELIVERED
        assert drv.stats.receipts["matched"] == 1
        await drv.aclose()
        assert emu.unbinds == 1  # graceful unbind
        n.cancel_scope.cancel()


@pytest.mark.parametrize("fmt", ["both", "text", "tlv"])
@pytest.mark.parametrize("style", ["same", "lower", "padded", "decimal"])
async def test_receipts_in_every_id_format(fmt: str, style: str) -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n)
        emu.apply_faults({"receipt_format": fmt, "receipt_id": style, "receipt_stat": "UNDELIV", "receipt_err": 34})
        res = await drv.send("1", "+15551234", "hi")
        st = await final_status(drv, res.ref)
        assert st.state is DeliveryState.FAILED
        assert st.error_code == "34"  # the provider's error: into network_error_code
        n.cancel_scope.cancel()


async def test_receipt_before_resp_and_duplicates() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n)
        emu.apply_faults({"receipt_first": True, "duplicate_receipts": 2})
        res = await drv.send("1", "+15551234", "hi")
        assert (await final_status(drv, res.ref)).state is DeliveryState.DELIVERED
        await wait_for(lambda: drv.stats.receipts["duplicate"] == 2)
        assert drv.stats.receipts["matched"] == 1
        n.cancel_scope.cancel()


async def test_long_message_as_udh_parts() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n)
        text = "x" * 200
        res = await drv.send("1", "+15551234", text)
        assert res.outcome is SendOutcome.ACCEPTED
        assert res.ref.split() == [s.message_id for s in emu.sent]
        bodies = []
        for s in emu.sent:
            assert s.esm_class & 0x40
            ies, body = parse_udh(s.body)
            assert ies[0][0] == 0 and ies[0][1][1:] == bytes((2, len(bodies) + 1))
            bodies.append(body)
        assert b"".join(bodies) == text.encode()
        assert (await final_status(drv, res.ref)).state is DeliveryState.DELIVERED
        n.cancel_scope.cancel()


async def test_throttled_goes_back_busy_and_backs_off() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n, throttle_backoff=0.2)
        emu.apply_faults({"throttle": 1})
        t0 = trio.current_time()  # before the throttled send: the back-off counts from its answer
        res = await drv.send("1", "+15551234", "hi")
        assert res.outcome is SendOutcome.BUSY
        res = await drv.send("1", "+15551234", "hi")
        assert res.outcome is SendOutcome.ACCEPTED
        assert trio.current_time() - t0 >= 0.2  # waited for the back-off
        assert drv.stats.throttled == 1
        n.cancel_scope.cancel()


async def test_resp_never_comes_is_ambiguous() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n, response_timeout=0.3)
        emu.apply_faults({"hang": True})
        res = await drv.send("1", "+15551234", "hi")
        assert res.outcome is SendOutcome.AMBIGUOUS
        assert len(emu.sent) == 1  # it did reach the SMSC: resending would double it
        n.cancel_scope.cancel()


async def test_drop_mid_window_is_ambiguous_and_rebinds() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n, rebind_min=0.1)
        emu.apply_faults({"drop_after": 0})
        res = await drv.send("1", "+15551234", "hi")
        assert res.outcome is SendOutcome.AMBIGUOUS
        await wait_for(lambda: emu.binds_total == 2 and drv.binds_up == 1)
        assert (await drv.send("1", "+15551234", "again")).outcome is SendOutcome.ACCEPTED
        n.cancel_scope.cancel()


async def test_bad_credentials_reported_and_not_hammered(autojump_clock: Any) -> None:
    async with trio.open_nursery() as n:
        emu = SmscEmulator(password="other")
        port = await n.start(emu.serve)
        drv = build_driver(connector_device(port, rebind_min=0.1, auth_retry=60))
        await n.start(drv.serve)
        await wait_for(lambda: drv.stats.bind_refusals["auth"] == 1)
        await wait_for(lambda: emu.connections == 0)  # not kept connected while it waits
        health = await drv.health()
        assert health.auth_failed and not health.ok
        assert (await drv.send("1", "+1555", "hi")).outcome is SendOutcome.AUTH_FAILED
        await trio.sleep(59)
        assert drv.stats.bind_refusals["auth"] == 1  # not retried every second
        await trio.sleep(2)
        assert drv.stats.bind_refusals["auth"] == 2  # but retried after auth_retry
        n.cancel_scope.cancel()


async def test_dead_peer_detected_by_enquire_link(autojump_clock: Any) -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n, enquire_link=30, response_timeout=10, rebind_min=1)
        emu.apply_faults({"hang": True, "hang_after_processing": False})
        await wait_for(lambda: drv.stats.dead_peers == 1, timeout=120)
        assert trio.current_time() >= 40  # enquire_link after 30 s idle, then 10 s without answer
        emu.apply_faults({"hang": False})
        await wait_for(lambda: emu.binds_total == 2 and drv.binds_up == 1)
        n.cancel_scope.cancel()


async def test_mo_waits_until_stored_then_answered() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n)
        assert await emu.inject_mo("+4917000", "12345", "reply text") == 1
        await wait_for(lambda: drv.stats.mo == 1)
        [sms] = await drv.inbox()
        assert (sms.sender, sms.text) == ("+4917000", "reply text")
        await drv.delete_inbox([sms])
        assert await drv.inbox() == []
        n.cancel_scope.cancel()


async def _tls_start(nursery: trio.Nursery, tmp_path: Any, **extra: Any) -> tuple[SmscEmulator, Any]:
    import ssl

    import trustme

    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("smsc.test").configure_cert(server_ctx)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    emu = SmscEmulator()
    port = await nursery.start(lambda task_status: emu.serve(0, ssl_context=server_ctx, task_status=task_status))
    cfg = connector_device(port, **{"tls": "true", "ca_file": str(ca_file), "rebind_min": 0.1, **extra})
    drv = build_driver(cfg)
    await nursery.start(drv.serve)
    return emu, drv


async def test_tls_checks_the_ca_and_the_server_name(tmp_path: Any) -> None:
    async with trio.open_nursery() as n:
        emu, drv = await _tls_start(n, tmp_path, server_name="smsc.test")
        await wait_for(lambda: drv.binds_up == 1)
        res = await drv.send("1", "+15551234", "over tls")
        assert res.outcome is SendOutcome.ACCEPTED and emu.sent[0].body == b"over tls"
        n.cancel_scope.cancel()
    async with trio.open_nursery() as n:
        # The certificate is for smsc.test, the connector expects another name: never bound.
        emu, drv = await _tls_start(n, tmp_path, server_name="other.test")
        await wait_for(lambda: "certificate" in drv.binds[0].detail.lower() or "hostname" in drv.binds[0].detail.lower())
        assert drv.binds_up == 0 and emu.binds_total == 0
        n.cancel_scope.cancel()


async def test_data_sm_receipt_is_matched_and_answered() -> None:
    from bridge.smpp.constants import CommandId as C
    from bridge.smpp.constants import MessageState, Tag
    from bridge.smpp.pdu import Pdu

    async with trio.open_nursery() as n:
        emu, drv = await start(n)
        emu.apply_faults({"receipts": False})
        res = await drv.send("1", "+15551234", "hi")
        pdu = Pdu(C.DATA_SM, 0, 9, {"esm_class": 0x04, "data_coding": 0},
                  {Tag.RECEIPTED_MESSAGE_ID: res.ref.lower(), Tag.MESSAGE_STATE: int(MessageState.DELIVERED)})
        answer = await drv._on_deliver(drv.binds[0], pdu)
        assert answer.command_id == C.DATA_SM_RESP and answer.command_status == 0
        assert (await drv.status("1", res.ref)).state is DeliveryState.DELIVERED
        n.cancel_scope.cancel()


async def test_throughput_paces_segments(autojump_clock: Any) -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n, throughput=2)
        t0 = trio.current_time()
        res = await drv.send("1", "+15551234", "x" * 300)  # 2 parts
        res2 = await drv.send("2", "+15551234", "y")
        assert res.outcome is res2.outcome is SendOutcome.ACCEPTED
        assert len(emu.sent) == 3
        assert trio.current_time() - t0 >= 1.0  # 3 segments at 2 per second: 0, 0.5, 1.0
        n.cancel_scope.cancel()


async def test_separate_transmitter_and_receiver_binds() -> None:
    async with trio.open_nursery() as n:
        emu = SmscEmulator()
        port = await n.start(emu.serve)
        drv = build_driver(connector_device(port, binds="{tx: 2, rx: 1}"))
        await n.start(drv.serve)
        await wait_for(lambda: drv.binds_up == 3)
        assert sorted(b.mode for b in drv.binds) == ["rx", "tx", "tx"]
        results = [await drv.send(str(i), "+15551234", f"m{i}") for i in (1, 2)]
        # Submits went over the transmitters, receipts came back over the receiver.
        for res in results:
            assert (await final_status(drv, res.ref)).state is DeliveryState.DELIVERED
        assert sum(1 for b in drv.binds if b.mode == "rx") == 1
        await emu.inject_mo("+4917000", "1", "mo over rx")
        await wait_for(lambda: drv.stats.mo == 1)
        n.cancel_scope.cancel()
