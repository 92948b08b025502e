"""GoIP SMS-server (UDP) driver: its UDP server over real sockets on 127.0.0.1 - against raw
datagrams and against the GoIP UDP emulator. The codec alone: test_goip_udp_protocol.py."""

from __future__ import annotations

import logging
from collections import Counter

import pytest
import trio

from bridge.devices.base import (
    Capability,
    DeliveryState,
    DeviceError,
    Driver,
    SendOutcome,
)
from bridge.devices.goip_udp.driver import GoipUdpDriver
from bridge.devices.goip_udp.protocol import inbound_device_key
from bridge.devices.goip_udp.emulator import GoipUdpEmulator

PASSWORD = "Udp-Pa55!w0rd:x,y"
WRONG = "Wr0ng-Pass-77"
SECRETS = [PASSWORD, WRONG, PASSWORD + "-wrong"]
LINES = {"1": "gw1", "2": "gw2"}

def assert_no_secret(obj: object) -> None:
    text = repr(obj)
    for secret in SECRETS:
        assert secret not in text, f"secret leaked into {text!r}"


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            message = record.getMessage()
            for secret in SECRETS:
                assert secret not in message, f"secret in log record {record.name}: {message!r}"


async def wait_for(predicate, limit: float = 3.0, step: float = 0.01):
    with trio.fail_after(limit):
        while True:
            value = predicate()
            if value:
                return value
            await trio.sleep(step)


def test_constructor_checks():
    with pytest.raises(DeviceError):
        GoipUdpDriver("d", lines={}, password="x")
    with pytest.raises(DeviceError):
        GoipUdpDriver("d", lines={"1": "a", "2": "a"}, password="x")
    with pytest.raises(DeviceError):
        GoipUdpDriver("d", lines={"1": "a;b"}, password="x")
    with pytest.raises(DeviceError):
        GoipUdpDriver("d", lines={"1": "a"}, password="")
    for bad in ("semi;colon", "with space", "tab\t"):
        with pytest.raises(DeviceError):
            GoipUdpDriver("d", lines={"1": "a"}, password=bad)
    d = GoipUdpDriver("d", lines=LINES, password="x")
    assert isinstance(d, Driver)
    assert d.channels == ("1", "2") and d.kind == "goip_udp"
    assert d.capabilities == {
        Capability.INBOX,
        Capability.DELETE_INBOX,
        Capability.ACK_INBOX,
        Capability.DELIVERY_REPORTS,
    }


# ============================================================================================
# the driver's UDP server, spoken to with raw datagrams


class Device:
    """A raw UDP socket playing one GoIP line."""

    def __init__(self, port: int):
        self.port = port
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)

    async def open(self) -> Device:
        await self.sock.bind(("127.0.0.1", 0))
        return self

    async def say(self, text: str) -> None:
        await self.sock.sendto(text.encode("utf-8"), ("127.0.0.1", self.port))

    async def hear(self, limit: float = 2.0) -> str:
        with trio.fail_after(limit):
            data, _ = await self.sock.recvfrom(65535)
        return data.decode("utf-8")

    async def silence(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            text = await self.hear(seconds + 1)
            raise AssertionError(f"unexpected datagram {text!r}")


@pytest.fixture
async def raw(nursery):
    driver = GoipUdpDriver(
        "goip-udp", host="127.0.0.1", port=0, lines=LINES, password=PASSWORD,
        retransmit=0.05, send_timeout=2.0,
    )  # fmt: skip
    driver.test_port = await nursery.start(driver.serve)
    yield driver
    await driver.aclose()


async def test_keepalive_answers_and_refusals(raw):
    dev = await Device(raw.test_port).open()
    await dev.say(f"req:5;id:gw1;pass:{PASSWORD};signal:29;gsm_status:LOGIN;pro:POL;")
    assert await dev.hear() == "reg:5;status:200;"
    await dev.say(f"req:6;id:gw1;pass:{WRONG};signal:29;gsm_status:LOGIN;")
    assert await dev.hear() == "reg:6;status:400;"
    await dev.say(f"req:7;id:nobody;pass:{PASSWORD};")
    assert await dev.hear() == "reg:7;status:400;"
    await dev.say("req:8;")  # a stranger's tiny datagram: refused without a (larger) answer
    await dev.silence(0.1)
    assert raw.counters["refused_keepalive"] == 3
    health = await raw.health()
    assert health.reachable and health.channels["1"].registered is True
    assert health.channels["1"].signal == 29 and health.channels["1"].operator == "POL"
    assert health.channels["2"].registered is False
    info = raw.line_info()
    assert info["1"]["fields"]["pro"] == "POL" and "pass" not in info["1"]["fields"]
    assert_no_secret(info)
    assert_no_secret(health)


async def test_receive_acked_only_after_delete_inbox(raw):
    dev = await Device(raw.test_port).open()
    await dev.say(f"req:1;id:gw2;pass:{PASSWORD};gsm_status:LOGIN;")
    await dev.hear()
    datagram = f"RECEIVE:441;id:gw2;password:{PASSWORD};srcnum:+4917011;msg:Tschüss; a:b;c"
    await dev.say(datagram)
    await dev.silence(0.2)  # no ack yet
    await dev.say(datagram)  # the GoIP's retransmission
    await dev.silence(0.1)
    items = await raw.inbox()
    assert len(items) == 1
    sms = items[0]
    assert (sms.channel, sms.sender, sms.text) == ("2", "+4917011", "Tschüss; a:b;c")
    assert sms.device_key == inbound_device_key("gw2", "441", "+4917011", "Tschüss; a:b;c")
    assert "password:***" in sms.raw
    assert_no_secret(sms)
    assert raw.counters["received_duplicates"] == 1
    await raw.delete_inbox(items)
    assert await dev.hear() == "RECEIVE 441 OK"
    assert await raw.inbox() == []
    # our OK was lost: the GoIP sends it again -> acked at once, not a new inbox entry
    await dev.say(datagram)
    assert await dev.hear() == "RECEIVE 441 OK"
    assert await raw.inbox() == []
    await raw.delete_inbox(items)  # idempotent
    await dev.silence(0.1)


async def test_receive_with_wrong_password_or_unknown_id(raw):
    dev = await Device(raw.test_port).open()
    await dev.say(f"RECEIVE:9;id:gw1;password:{WRONG};srcnum:1;msg:hello there, long enough")
    assert await dev.hear() == "RECEIVE 9 ERROR not find this id:gw1, or password error"
    await dev.say(f"RECEIVE:10;id:zz;password:{PASSWORD};srcnum:1;msg:hello there, long enough")
    assert await dev.hear() == "RECEIVE 10 ERROR not find this id:zz, or password error"
    assert await raw.inbox() == []
    assert raw.counters["refused"] == 2


async def test_deliver_state_and_other_pushes_are_acked(raw):
    dev = await Device(raw.test_port).open()
    await dev.say(f"DELIVER:429;id:gw1;password:{PASSWORD};sms_no:9;state:0;num:999999999")
    assert await dev.hear() == "DELIVER 429 OK"
    await dev.say(f"STATE:446;id:gw1;password:{PASSWORD};gsm_remain_state:DIALING:999")
    assert await dev.hear() == "STATE 446 OK"
    await dev.say(f"RECORD:447;id:gw1;password:{PASSWORD};dir:1;num:999")
    assert await dev.hear() == "RECORD 447 OK"
    assert raw.line_info()["1"]["state"] == "DIALING:999"
    # a report kept for a send the driver does not remember (sent before a restart)
    result = await raw.status("1", "1:9:12345")
    assert result.state is DeliveryState.DELIVERED
    assert (await raw.status("1", "1:10:12346")).state is DeliveryState.PENDING
    assert (await raw.status("1", "1::12347")).state is DeliveryState.SENT
    assert (await raw.status("1", None)).state is DeliveryState.UNKNOWN
    assert (await raw.status("1", "garbage")).state is DeliveryState.UNKNOWN
    with pytest.raises(DeviceError):
        await raw.status("9", "1:1:1")


async def test_nat_rebinding_follows_the_password(raw):
    a = await Device(raw.test_port).open()
    b = await Device(raw.test_port).open()
    await a.say(f"req:1;id:gw1;pass:{PASSWORD};gsm_status:LOGIN;")
    await a.hear()
    first = raw.line_info()["1"]["address"]
    await b.say(f"req:2;id:gw1;pass:{WRONG};gsm_status:LOGIN;")
    await b.hear()
    assert raw.line_info()["1"]["address"] == first  # a wrong password moves nothing
    await b.say(f"req:3;id:gw1;pass:{PASSWORD};gsm_status:LOGIN;")
    assert await b.hear() == "reg:3;status:200;"
    assert raw.line_info()["1"]["address"] != first


async def test_send_exchange_by_hand_and_garbage(raw):
    dev = await Device(raw.test_port).open()
    await dev.say(f"req:1;id:gw1;pass:{PASSWORD};gsm_status:LOGIN;")
    await dev.hear()
    async with trio.open_nursery() as nursery:
        results = []

        async def go():
            results.append(await raw.send("1", "+491701234567", "Hi; there"))

        nursery.start_soon(go)
        msg = await dev.hear()
        sendid = int(msg.split()[1])
        assert msg == f"MSG {sendid} 9 Hi; there"
        await dev.say("\x00\xffnot a GoIP datagram")
        await dev.say(f"PASSWORD {sendid}")
        assert await dev.hear() == f"PASSWORD {sendid} {PASSWORD}"
        await dev.say(f"SEND {sendid}")
        assert await dev.hear() == f"SEND {sendid} 1 +491701234567"
        await dev.say(f"SEND {sendid}")  # a duplicated prompt must not repeat SEND
        await dev.say(f"WAIT {sendid} 1")
        await dev.silence(0.2)
        await dev.say(f"OK {sendid} 1 17")
        assert await dev.hear() == f"DONE {sendid}"
        await dev.say(f"DONE {sendid}")
    (result,) = results
    assert result.outcome is SendOutcome.ACCEPTED and result.ref == f"1:17:{sendid}"
    assert "after WAIT" in result.detail
    assert raw.counters["protocol_errors"] >= 1
    # the device repeats its OK (our DONE lost): the driver ends it again
    await dev.say(f"OK {sendid} 1 17")
    assert await dev.hear() == f"DONE {sendid}"


# ============================================================================================
# the driver against the emulator


async def start_pair(nursery, *, emu=None, **driver_kwargs):
    driver_kwargs.setdefault("retransmit", 0.05)
    driver_kwargs.setdefault("send_timeout", 2.0)
    driver_kwargs.setdefault("keepalive_timeout", 5.0)
    driver = GoipUdpDriver(
        "goip-udp", host="127.0.0.1", port=0, lines=LINES, password=PASSWORD, **driver_kwargs
    )
    port = await nursery.start(driver.serve)
    emu_kwargs = dict(
        send_duration=0.02, keepalive_interval=10.0, retransmit_interval=0.1,
        delivery_delay=0.05, seed=11,
    )  # fmt: skip
    emu_kwargs.update(emu or {})
    emulator = GoipUdpEmulator("127.0.0.1", port, LINES, emu_kwargs.pop("password", PASSWORD), **emu_kwargs)
    await nursery.start(emulator.run)
    return driver, emulator


async def registered(driver, *channels):
    async def check():
        health = await driver.health()
        return all(health.channels[ch].registered for ch in channels)

    with trio.fail_after(3):
        while not await check():
            await trio.sleep(0.01)


async def final_status(driver, channel, ref, limit=3.0):
    with trio.fail_after(limit):
        while True:
            result = await driver.status(channel, ref)
            assert_no_secret(result)
            if result.state is not DeliveryState.PENDING:
                return result
            await trio.sleep(0.01)


async def test_registration_and_health(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1", "2")
    await wait_for(lambda: emu.registered("1") and emu.registered("2"))
    health = await driver.health()
    assert health.ok and health.detail == "ok"
    assert health.channels["1"].signal == 25 and health.channels["1"].operator == "EMU"
    info = driver.line_info()
    assert info["2"]["fields"]["imei"] and info["2"]["fields"]["gsm_status"] == "LOGIN"
    emu.logout("2")
    emu.keepalive_now("2")
    await wait_for(lambda: driver.line_info()["2"]["gsm_status"] == "LOGOUT")
    health = await driver.health()
    assert health.channels["2"].registered is False and "GSM logout on line(s) 2" in health.detail


async def test_wrong_password_is_refused(nursery):
    driver, emu = await start_pair(nursery, emu={"wrong_password": True})
    await wait_for(lambda: emu.registered("1") is False and emu.registered("2") is False)
    health = await driver.health()
    assert not health.reachable and health.auth_failed and not health.ok
    assert driver.counters["refused_keepalive"] >= 2
    result = await driver.send("1", "+4917000", "never")
    assert result.outcome is SendOutcome.CHANNEL_DOWN
    assert emu.arrivals and all(text.startswith("reg:") for _, text in emu.arrivals)
    assert emu.sent == []
    assert_no_secret(health)


async def test_send_accepted_and_delivered(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    result = await driver.send("1", "+491701234567", "Grüße; from: the bridge")
    assert result.outcome is SendOutcome.ACCEPTED, result
    ch, sms_no, sendid = result.ref.split(":")
    assert (ch, sms_no) == ("1", "1")
    assert [(s.line, s.text, s.destination, s.sendid) for s in emu.sent] == [
        ("1", "Grüße; from: the bridge", "+491701234567", int(sendid))
    ]
    status = await final_status(driver, "1", result.ref)
    assert status.state is DeliveryState.DELIVERED
    assert_no_secret(result)


async def test_wait_then_ok(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    emu.occupy("1", 0.3)
    result = await driver.send("1", "123456", "after the call")
    assert result.outcome is SendOutcome.ACCEPTED and "after WAIT" in result.detail
    assert [s.text for s in emu.sent] == ["after the call"]


async def test_wait_without_pushed_result(nursery):
    """Firmware that answers WAIT and then only answers a repeated SEND: the default driver
    never repeats SEND (AMBIGUOUS, nothing sent twice); resend_send=True gets the OK."""
    driver, emu = await start_pair(nursery, emu={"push_results": False}, send_timeout=0.8)
    await registered(driver, "1", "2")
    emu.occupy("1", 0.2)
    result = await driver.send("1", "123456", "one")
    assert result.outcome is SendOutcome.AMBIGUOUS
    assert driver.counters["ambiguous"] == 1
    assert [s.text for s in emu.sent] == ["one"]

    driver2 = GoipUdpDriver(
        "goip-udp2", host="127.0.0.1", port=0, lines=LINES, password=PASSWORD,
        retransmit=0.05, send_timeout=2.0, resend_send=True,
    )  # fmt: skip
    port2 = await nursery.start(driver2.serve)
    emu2 = GoipUdpEmulator(
        "127.0.0.1", port2, LINES, PASSWORD, send_duration=0.02, push_results=False,
        retransmit_interval=0.1, seed=2,
    )  # fmt: skip
    await nursery.start(emu2.run)
    await registered(driver2, "1")
    emu2.occupy("1", 0.2)
    result = await driver2.send("1", "123456", "two")
    assert result.outcome is SendOutcome.ACCEPTED
    assert [s.text for s in emu2.sent] == ["two"]  # repeated SENDs, one SMS
    assert sum(1 for _, t in emu2.received if t.startswith("SEND ")) > 1


@pytest.mark.parametrize(
    "errorstatus, outcome",
    [(38, SendOutcome.ERROR), (1, SendOutcome.REJECTED), (331, SendOutcome.CHANNEL_DOWN)],
)
async def test_error_status(nursery, errorstatus, outcome):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    emu.fail_next("1", 1, errorstatus)
    result = await driver.send("1", "123456", "doomed")
    assert result.outcome is outcome and f"errorstatus {errorstatus}" in result.detail
    assert [s.error for s in emu.sent] == [str(errorstatus)]
    ok = await driver.send("1", "123456", "fine")
    assert ok.outcome is SendOutcome.ACCEPTED


async def test_gsm_logout(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    emu.logout("1")  # the last keepalive still said LOGIN
    result = await driver.send("1", "123456", "x")
    assert result.outcome is SendOutcome.CHANNEL_DOWN and "GSM logout" in result.detail
    before = len(emu.arrivals)
    again = await driver.send("1", "123456", "x")
    assert again.outcome is SendOutcome.CHANNEL_DOWN
    assert len(emu.arrivals) == before  # nothing sent to the device at all
    assert emu.sent == []
    emu.login("1")
    emu.keepalive_now("1")
    await wait_for(lambda: driver.line_info()["1"]["gsm_status"] == "LOGIN")
    assert (await driver.send("1", "123456", "x")).outcome is SendOutcome.ACCEPTED


async def test_dead_line_is_channel_down_and_nothing_is_sent(nursery):
    driver, emu = await start_pair(
        nursery, emu={"keepalive_interval": 0.1}, keepalive_timeout=0.4
    )
    await registered(driver, "1", "2")
    emu.silence("2")
    await wait_for(lambda: not driver.line_info()["2"]["alive"], limit=2)
    health = await driver.health()
    assert health.reachable and health.channels["2"].registered is False
    assert "no keepalive on line(s) 2" in health.detail
    result = await driver.send("2", "123456", "into the void")
    assert result.outcome is SendOutcome.CHANNEL_DOWN and "no keepalive" in result.detail
    assert not any(line == "2" and t.startswith("MSG") for line, t in emu.arrivals)
    emu.silence("1")
    await wait_for(lambda: not driver.line_info()["1"]["alive"], limit=2)
    assert not (await driver.health()).reachable


async def test_no_answer_before_send_is_error_not_sent(nursery):
    driver, emu = await start_pair(nursery, step_attempts=3)
    await registered(driver, "1")
    emu.faults.drop = 1.0
    result = await driver.send("1", "123456", "lost")
    assert result.outcome is SendOutcome.ERROR and "no answer to MSG" in result.detail
    assert emu.sent == []


async def test_password_step_refused_and_forgotten_sendid(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    emu.faults.reject_password = True
    result = await driver.send("1", "123456", "x")
    assert result.outcome is SendOutcome.AUTH_FAILED
    assert_no_secret(result)
    emu.faults.reject_password = False
    emu.faults.forget_sendids = True
    result = await driver.send("1", "123456", "x")
    assert result.outcome is SendOutcome.ERROR and "sendid" in result.detail
    assert emu.sent == []


async def test_reports_linked_to_the_right_message(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1", "2")
    emu.set_delivery("111", 0, delay=0.4)
    emu.set_delivery("222", 0, delay=0.0)
    emu.set_delivery("333", 34, delay=0.0)
    a = await driver.send("1", "111", "first, reported last")
    b = await driver.send("1", "222", "second, reported first")
    c = await driver.send("2", "333", "other line, same sms_no")
    assert a.ref.split(":")[1] == "1" and b.ref.split(":")[1] == "2"
    assert c.ref.split(":")[:2] == ["2", "1"]  # same sms_no as a, other line
    assert (await driver.status("1", a.ref)).state is DeliveryState.PENDING
    got_b = await final_status(driver, "1", b.ref)
    assert got_b.state is DeliveryState.DELIVERED
    assert (await driver.status("1", a.ref)).state is DeliveryState.PENDING
    got_c = await final_status(driver, "2", c.ref)
    assert got_c.state is DeliveryState.FAILED and got_c.error_code == "34"
    got_a = await final_status(driver, "1", a.ref)
    assert got_a.state is DeliveryState.DELIVERED


async def test_phone_off_stays_pending_or_sent_after_delivery_timeout(nursery):
    driver, emu = await start_pair(nursery, delivery_timeout=0.3)
    await registered(driver, "1")
    emu.set_delivery("444", None)
    result = await driver.send("1", "444", "phone off")
    assert (await driver.status("1", result.ref)).state is DeliveryState.PENDING
    await trio.sleep(0.35)
    late = await driver.status("1", result.ref)
    assert late.state is DeliveryState.SENT and "no handset delivery report" in late.detail


async def test_inbound_until_acknowledged(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    seq = emu.inject_sms("1", "+4917099", "a;b:c; d", smscnum="+49176000000")
    with trio.fail_after(2):
        await driver.wait_inbox()
    await wait_for(lambda: emu.push_attempts(seq) >= 3)  # retransmitted, not acked
    inbox = await driver.inbox()
    assert len(inbox) == 1 and not emu.acked(seq)
    sms = inbox[0]
    assert (sms.channel, sms.sender, sms.text) == ("1", "+4917099", "a;b:c; d")
    assert sms.device_key == inbound_device_key("gw1", str(seq), "+4917099", "a;b:c; d")
    await driver.delete_inbox(inbox)
    await wait_for(lambda: emu.acked(seq))
    attempts = emu.push_attempts(seq)
    await trio.sleep(0.3)
    assert emu.push_attempts(seq) == attempts  # stopped retransmitting
    assert await driver.inbox() == []
    assert_no_secret(sms)


async def test_inbound_with_lost_acks_is_not_duplicated(nursery):
    driver, emu = await start_pair(nursery, emu={"drop": 0.3, "duplicate": 0.3, "keepalive_interval": 0.1})
    await registered(driver, "1")
    seqs = [emu.inject_sms("1", f"+49{n}", f"text {n}; with: stuff") for n in range(5)]
    keys = set()

    async def drain():
        items = await driver.inbox()
        keys.update(i.device_key for i in items)
        await driver.delete_inbox(items)
        return all(emu.acked(s) for s in seqs)

    with trio.fail_after(8):
        while not await drain():
            await trio.sleep(0.05)
    assert len(keys) == 5
    assert driver.counters["received"] == 5


async def test_sendids_are_unique_and_random_per_instance(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    refs = [(await driver.send("1", "123", f"m{n}")).ref for n in range(3)]
    sendids = [int(r.split(":")[2]) for r in refs]
    assert sendids == [sendids[0], sendids[0] + 1, sendids[0] + 2]
    other = GoipUdpDriver("x", lines=LINES, password=PASSWORD)
    assert abs(other._next_sendid - sendids[0]) > 3  # a random base per instance
    assert 0 < sendids[0] < 2**31


async def test_rejects_before_sending(nursery):
    driver, emu = await start_pair(nursery)
    await registered(driver, "1")
    assert (await driver.send("1", "12 34", "x")).outcome is SendOutcome.REJECTED
    assert (await driver.send("1", "", "x")).outcome is SendOutcome.REJECTED
    assert (await driver.send("1", "123", "é" * 1501)).outcome is SendOutcome.REJECTED
    assert emu.sent == []
    with pytest.raises(DeviceError):
        await driver.send("7", "123", "x")
    assert await driver.last_ref("1") is None


@pytest.mark.parametrize("resend_send", [True, False])
async def test_datagram_loss_never_sends_twice(nursery, resend_send):
    driver, emu = await start_pair(
        nursery,
        emu={
            "drop": 0.2, "duplicate": 0.1, "reorder": 0.1, "reorder_delay": 0.03,
            "keepalive_interval": 0.1, "retransmit_interval": 0.05, "send_duration": 0.01,
            "seed": 5,
        },
        step_attempts=12, send_timeout=0.6, resend_send=resend_send,
    )  # fmt: skip
    await registered(driver, "1", "2")
    results: dict[str, SendOutcome] = {}

    async def channel_worker(ch: str):
        for n in range(8):
            text = f"ch{ch} msg {n}"
            results[text] = (await driver.send(ch, f"49170{ch}{n:03d}", text)).outcome

    async with trio.open_nursery() as workers:
        for ch in ("1", "2"):
            workers.start_soon(channel_worker, ch)
    sent = Counter(s.text for s in emu.sent if not s.error)
    assert max(sent.values()) == 1, sent  # never twice
    for text, outcome in results.items():
        if outcome is SendOutcome.ACCEPTED:
            assert sent[text] == 1, text
        elif outcome is SendOutcome.ERROR:
            assert sent[text] == 0, text
        else:
            assert outcome is SendOutcome.AMBIGUOUS, (text, outcome)
    accepted = sum(o is SendOutcome.ACCEPTED for o in results.values())
    if resend_send:
        assert accepted == len(results), results
    else:
        assert accepted >= len(results) // 2, results


async def test_serve_twice_and_close(nursery):
    driver = GoipUdpDriver("d", host="127.0.0.1", port=0, lines=LINES, password=PASSWORD)
    await nursery.start(driver.serve)
    with pytest.raises(DeviceError):
        await driver.serve()
    await driver.aclose()
    with pytest.raises(DeviceError):
        await driver.send("1", "1", "x")


async def test_a_goip_not_heard_from_yet_is_starting_not_down(nursery, autojump_clock):
    # The GoIP starts the talk (its first keepalive can take up to its keepalive interval):
    # right after our start it is "waiting for the first keepalive", which the monitor logs
    # as information, not as a device down; after keepalive_timeout without a word, it is down.
    driver = GoipUdpDriver("goip-udp", host="127.0.0.1", port=0, lines=LINES, password=PASSWORD,
                           keepalive_timeout=30.0)  # fmt: skip
    await nursery.start(driver.serve)
    health = await driver.health()
    assert health.starting and not health.ok
    assert "waiting for the first keepalive" in health.detail
    await trio.sleep(31)
    health = await driver.health()
    assert not health.starting and not health.ok
    assert "no keepalive on line(s)" in health.detail
