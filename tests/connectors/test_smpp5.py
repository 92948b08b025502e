"""SMPP 5.0 with an upstream SMSC: the bind_resp's sc_interface_version, and congestion_state
slowing the connector's pacing (bridge/connectors/bind.py, driver.py; docs/connectors.md)."""

from __future__ import annotations

import trio
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from bridge.connectors.config import build_driver
from bridge.connectors.driver import CONGESTION_HOLD, congestion_gap
from bridge.connectors.emulator import SmscEmulator
from bridge.connectors.metrics import ConnectorCollector
from bridge.devices.base import SendOutcome
from bridge.smpp.constants import Tag

from connector_support import connector_device
from test_driver import start, wait_for


async def test_the_smscs_sc_interface_version_is_read_from_the_bind_resp() -> None:
    async with trio.open_nursery() as n:
        emu = SmscEmulator()
        emu.apply_faults({"sc_interface_version": 0x50})
        emu, drv = await start(n, emu, interface_version='"5.0"')
        (bind,) = drv.binds
        assert bind.sc_version == 0x50 and bind.session.interface_version == 0x50
        assert "the SMSC speaks SMPP 5.0" in drv.status_summary()["binds"]["up1/trx1"]["detail"]
        n.cancel_scope.cancel()


async def test_an_smsc_that_speaks_3_3_gets_no_tlvs_and_long_text_as_udh_parts() -> None:
    text = "part " * 60  # 300 characters: 2 parts
    for sc, sar in ((0x50, True), (0x33, False)):
        async with trio.open_nursery() as n:
            emu = SmscEmulator()
            emu.apply_faults({"sc_interface_version": sc})
            emu, drv = await start(n, emu, interface_version='"5.0"', long="sar")
            assert (await drv.send("1", "+15551234", text)).outcome is SendOutcome.ACCEPTED
            assert len(emu.sent) == 2
            if sar:  # it said 5.0: the configured SAR TLVs
                assert all(Tag.SAR_MSG_REF_NUM in s.tlvs and not s.esm_class & 0x40 for s in emu.sent)
            else:  # it said 3.3: UDH parts, no TLV on the wire
                assert drv.binds[0].session.interface_version == 0x33
                assert all(s.tlvs == {} and s.esm_class & 0x40 for s in emu.sent)
            n.cancel_scope.cancel()


async def test_the_smscs_congestion_state_reaches_the_connector_its_status_and_metrics() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n, interface_version='"5.0"')
        emu.apply_faults({"congestion": 90})
        assert (await drv.send("1", "+15551234", "busy")).outcome is SendOutcome.ACCEPTED
        assert drv.congestion == 90 and drv.status_summary()["congestion"] == 90
        registry = CollectorRegistry()
        registry.register(ConnectorCollector({"up1": drv}))
        assert 'smpp_bridge_connector_congestion{connector="up1"} 90.0' in generate_latest(registry).decode()
        emu.apply_faults({"congestion": 20})
        await drv.send("1", "+15551234", "calmer")
        await wait_for(lambda: drv.congestion == 20)
        n.cancel_scope.cancel()


async def test_congestion_from_80_spaces_the_segments_until_it_ends(autojump_clock) -> None:
    # No sockets here: the driver's pacing alone, on trio's simulated clock.
    drv = build_driver(connector_device(2775))

    async def gap_between_two_segments() -> float:
        await drv._pace()
        t0 = trio.current_time()
        await drv._pace()
        return trio.current_time() - t0

    assert await gap_between_two_segments() == 0  # throughput 0: no pacing
    drv.congestion_state(None, 79)
    assert await gap_between_two_segments() == 0
    drv.congestion_state(None, 95)
    assert abs(await gap_between_two_segments() - 0.8) < 1e-9
    drv.congestion_state(None, 100)
    assert abs(await gap_between_two_segments() - 1.05) < 1e-9
    await trio.sleep(CONGESTION_HOLD + 1)  # not said again: over
    assert await gap_between_two_segments() == 0 and drv.congestion is None


@given(st.integers(0, 255), st.integers(0, 255))
def test_the_congestion_gap_grows_with_the_congestion_and_stays_bounded(a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert 0 <= congestion_gap(lo) <= congestion_gap(hi) <= 1.05
    assert (congestion_gap(lo) == 0) == (lo < 80)
