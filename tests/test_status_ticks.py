"""Status polls of a device that answers every line's status with one request (a GoIP's
send_status.xml, ``Capability.STATUS_BATCH``) happen on the device's ticks, so its polls per
second are 1 / status_poll_interval however many of its lines wait for a status.

At 512 lines (bench/channels.py --many) each line polled on its own phase and a shared answer
could be reused for only 62 ms: ~150 send_status.xml requests a second for ~130 sends, each
parsed whole. Simulated time (trio's autojump clock); the real store, run inline."""

from __future__ import annotations

import trio

from bridge.config import Config, DeviceConfig, EsmeConfig, RouteConfig
from bridge.devices.base import Capabilities, Capability, DeliveryState, StatusResult
from bridge.lifecycle import State
from bridge.metrics import Metrics
from bridge.scheduler import Scheduler
from bridge.store import NewMessage, Store, run_inline
from tests.test_scheduler_races import Driver

LINES = 8
INTERVAL = 0.5
SEND_TIME = 2.0  # the line is busy this long after the device took the message


class BatchDevice(Driver):
    """``LINES`` lines; sends take a different time on each line, so that the lines' sends end
    out of step. ``polls`` records when each status poll was asked."""

    declared = Capabilities(flags=frozenset({Capability.STATUS_BATCH}), first_poll_delay=True)
    capabilities = declared.flags

    def __init__(self) -> None:
        super().__init__()
        self.channels = tuple(str(n) for n in range(1, LINES + 1))
        self.done_at: dict[str, float] = {}
        self.polls: list[float] = []

    async def send(self, channel, destination, text, **kw):
        await trio.sleep(0.037 * int(channel))
        self.done_at[channel] = trio.current_time() + SEND_TIME
        return await super().send(channel, destination, text)

    async def status(self, channel, ref) -> StatusResult:
        self.polls.append(trio.current_time())
        if trio.current_time() < self.done_at[channel]:
            return StatusResult(DeliveryState.PENDING)
        return StatusResult(DeliveryState.DELIVERED)


CONFIG = Config(
    esmes=(EsmeConfig("app"),),
    devices=(DeviceConfig(name="a", kind="router", lines=LINES, status_poll_interval=INTERVAL, status_timeout=30),),
    routes=(RouteConfig(name="r", channels=[("a", str(n)) for n in range(1, LINES + 1)]),),
)


async def test_every_busy_line_of_a_batch_device_polls_on_the_same_ticks(tmp_path, nursery, autojump_clock):
    store = Store(tmp_path / "b.sqlite3", clock=trio.current_time, run_sync=run_inline)
    store.open()
    await nursery.start(store.run)
    driver = BatchDevice()
    sched = Scheduler(CONFIG, store, {"a": driver}, Metrics(), clock=trio.current_time)
    store.on_new_message = sched.on_new_message
    await nursery.start(sched.run)
    ids = [
        (await store.accept(NewMessage(esme="app", destination_addr=f"+49{i}", body=b"x", route="r"))).message_id
        for i in range(3 * LINES)
    ]
    with trio.fail_after(600):
        for mid in ids:
            while (rec := await store.get(mid)) is None or rec.state is not State.DELIVERED:
                await trio.sleep(1)
    assert len(driver.sent) == 3 * LINES
    phase = {ch.poll_phase for ch in sched.channels.values()}
    assert len(phase) == 1  # the device's, shared by its lines
    offset = phase.pop() * INTERVAL
    ticks = {round((t - offset) / INTERVAL, 6) for t in driver.polls}
    # Every poll on a tick of the device (its phase plus a multiple of the interval) ...
    assert all(t == int(t) for t in ticks), sorted(driver.polls)[:10]
    # ... so the device was asked at most once per interval, though 8 lines polled together.
    span = (max(driver.polls) - min(driver.polls)) / INTERVAL + 1
    assert len(ticks) <= span and len(driver.polls) > 2 * len(ticks)
    # And a final status is still seen within one interval of the send's end.
    for mid in ids:
        events = await store.events(mid)
        sent = next(e.at for e in events if e.state == "sent")
        delivered = next(e.at for e in events if e.state == "delivered")
        assert delivered - sent <= SEND_TIME + INTERVAL + 0.001


def test_each_device_ticks_on_a_phase_of_its_own():
    """With the ticks of every device on the same moments, 16 GoIPs found their finished sends
    all at once at 512 lines (event-loop lag p90 6.5 ms; 1.3-2.1 ms with a phase per device).
    The phase comes from the device's name: the same for its lines, after a restart too."""
    devices = tuple(
        DeviceConfig(name=f"goip{i}", kind="router", lines=2, status_poll_interval=INTERVAL) for i in range(16)
    )
    config = Config(
        esmes=(EsmeConfig("app"),),
        devices=devices,
        routes=(RouteConfig(name="r", channels=[(d.name, "1") for d in devices]),),
    )

    def phases() -> dict[str, set[float]]:
        drivers = {}
        for d in devices:
            driver = BatchDevice()
            driver.channels = ("1", "2")
            drivers[d.name] = driver
        sched = Scheduler(config, None, drivers, Metrics())  # type: ignore[arg-type]
        found: dict[str, set[float]] = {}
        for ch in sched.channels.values():
            found.setdefault(ch.device_name, set()).add(ch.poll_phase)
        return found

    first = phases()
    assert all(len(p) == 1 for p in first.values())
    spread = sorted(p.pop() for p in first.values())
    assert len(set(spread)) >= 12  # 16 devices, hardly any two on the same moment
    assert all(0.0 <= p < 1.0 for p in spread)
    assert sorted(p.pop() for p in phases().values()) == spread
