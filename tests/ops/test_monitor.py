"""Driver instrumentation and the health/count poller, against the real GoIP emulator."""

from __future__ import annotations

from prometheus_client import generate_latest

from bridge.config import load_config_text
from bridge.devices import build_driver
from bridge.devices.base import SendOutcome
from bridge.devices.goip_http.emulator import GoipEmulator
from bridge.metrics import Metrics
from bridge.monitor import Monitor, instrument
from bridge.store import Store


def sample(m: Metrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def config(url: str):  # type: ignore[no-untyped-def]
    return load_config_text(f"""
esmes:
  - system_id: alice
    password: alicepw1
devices:
  - name: goip1
    kind: goip_http
    url: {url}
    password: admin
    lines: 3
    timeout: 1
    channels:
      "3": {{enabled: false}}
routes:
  - name: all
    channels: [goip1]
""")


async def test_every_driver_call_is_timed_and_failures_counted(nursery, tmp_path):
    emu = GoipEmulator(lines=3, send_duration=0.01)
    port = await nursery.start(emu.serve, "127.0.0.1", 0)
    cfg = config(f"http://127.0.0.1:{port}")
    m = Metrics()
    driver = instrument(build_driver(cfg.devices[0]), m)
    try:
        assert (await driver.send("1", "+4917000000", "hello")).outcome is SendOutcome.ACCEPTED
        assert sample(m, "smpp_bridge_device_request_latency_seconds_count", device="goip1", operation="send") == 1
        assert sample(m, "smpp_bridge_device_request_errors_total", device="goip1", operation="send") is None
        emu.faults.garbage = True
        result = await driver.send("2", "+4917000000", "hello")
        assert result.outcome in (SendOutcome.ERROR, SendOutcome.AMBIGUOUS)
        assert sample(m, "smpp_bridge_device_request_errors_total", device="goip1", operation="send") == 1
        status = await driver.status("1", None)
        assert status.poll_failed
        assert sample(m, "smpp_bridge_device_request_errors_total", device="goip1", operation="status") == 1
        emu.faults.garbage = False
        health = await driver.health()
        assert health.ok
        assert sample(m, "smpp_bridge_device_request_latency_seconds_count", device="goip1", operation="health") == 1
        assert driver.lines == 3  # anything else passes through to the driver
    finally:
        await driver.aclose()


async def test_monitor_reports_device_up_registration_signal_and_state_counts(nursery, tmp_path):
    emu = GoipEmulator(lines=3, send_duration=0.01)
    port = await nursery.start(emu.serve, "127.0.0.1", 0)
    cfg = config(f"http://127.0.0.1:{port}")
    m = Metrics()
    driver = instrument(build_driver(cfg.devices[0]), m)
    store = Store(tmp_path / "s.sqlite3")
    store.open()
    await nursery.start(store.run)
    mon = Monitor(cfg, {"goip1": driver}, store, m)
    try:
        emu.set_signal(2, 7)
        emu.logout(1, 60)
        await mon.check("goip1", driver)
        assert sample(m, "smpp_bridge_device_up", device="goip1") == 1
        assert sample(m, "smpp_bridge_channel_registered", device="goip1", channel="1") == 0
        assert sample(m, "smpp_bridge_channel_registered", device="goip1", channel="2") == 1
        assert sample(m, "smpp_bridge_channel_signal", device="goip1", channel="2") == 7
        # Channel 3 is disabled in the config: no series for it.
        assert sample(m, "smpp_bridge_channel_registered", device="goip1", channel="3") is None
        emu.faults.raw_garbage = True
        health = await mon.check("goip1", driver)
        assert not health.ok and mon.health["goip1"][0] is health
        assert sample(m, "smpp_bridge_device_up", device="goip1") == 0
        # Unknown now: the series go rather than show stale values.
        assert sample(m, "smpp_bridge_channel_signal", device="goip1", channel="2") is None
        counts = await mon.count()
        assert counts == {}
        assert sample(m, "smpp_bridge_store_messages", state="queued") == 0
        mon.init_series(cfg)
        text = generate_latest(m.registry).decode()
        assert 'smpp_bridge_throttled_segments_total{esme="alice"} 0.0' in text
        assert 'smpp_bridge_channel_failures_total{channel="2",device="goip1",reason="device_failed"} 0.0' in text
        assert 'smpp_bridge_config_reloads_total{result="invalid"} 0.0' in text
    finally:
        await driver.aclose()
        nursery.cancel_scope.cancel()
