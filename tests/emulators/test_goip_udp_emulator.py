"""The GoIP SMS-server (UDP) emulator, spoken to by a raw UDP socket that plays the server."""

from __future__ import annotations

import logging

import pytest
import trio

from bridge.devices.goip_udp.emulator import GoipUdpEmulator, run_goip_udp_emulator

PASSWORD = "udp-Secr3t!pw"


@pytest.fixture(autouse=True)
def no_password_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            assert PASSWORD not in record.getMessage(), record.getMessage()


class FakeServer:
    """A UDP socket standing in for the bridge."""

    def __init__(self) -> None:
        self.sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
        self.port = 0

    async def open(self) -> FakeServer:
        await self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        return self

    async def recv(self, timeout: float = 2.0) -> tuple[str, tuple]:
        with trio.fail_after(timeout):
            data, addr = await self.sock.recvfrom(65535)
        return data.decode("utf-8"), addr

    async def recv_matching(self, prefix: str, timeout: float = 2.0) -> tuple[str, tuple]:
        with trio.fail_after(timeout):
            while True:
                text, addr = await self.recv(timeout)
                if text.startswith(prefix):
                    return text, addr

    async def nothing(self, prefix: str, seconds: float) -> None:
        """Assert that no datagram starting with ``prefix`` arrives for ``seconds``."""
        with trio.move_on_after(seconds):
            while True:
                text, _ = await self.recv(seconds + 1)
                assert not text.startswith(prefix), text

    async def send(self, text: str | bytes, addr: tuple) -> None:
        await self.sock.sendto(text.encode("utf-8") if isinstance(text, str) else text, addr)

    async def register(self) -> tuple:
        """Answer the first keepalive; returns the line's address."""
        text, addr = await self.recv_matching("req:")
        seq = text.split(";")[0].split(":")[1]
        await self.send(f"reg:{seq};status:200;", addr)
        return addr

    async def start_send(self, addr: tuple, sendid: int, text: str) -> None:
        body = text.encode("utf-8")
        await self.send(b"MSG %d %d " % (sendid, len(body)) + body, addr)
        assert (await self.recv_matching(f"PASSWORD {sendid}"))[0] == f"PASSWORD {sendid}"
        await self.send(f"PASSWORD {sendid} {PASSWORD}", addr)
        assert (await self.recv_matching(f"SEND {sendid}"))[0] == f"SEND {sendid}"


@pytest.fixture
async def server():
    s = await FakeServer().open()
    yield s
    s.sock.close()


async def start(nursery, server, **kwargs) -> GoipUdpEmulator:
    kwargs.setdefault("send_duration", 0.0)
    kwargs.setdefault("keepalive_interval", 30.0)
    kwargs.setdefault("retransmit_interval", 0.1)
    kwargs.setdefault("delivery_delay", 0.05)
    lines = kwargs.pop("lines", {"1": "gw1"})
    emu = GoipUdpEmulator("127.0.0.1", server.port, lines, PASSWORD, seed=3, **kwargs)
    emu.test_ports = await nursery.start(emu.run)
    return emu


async def test_keepalive_fields_and_registration(nursery, server):
    emu = await start(nursery, server, lines={"1": "gw1", "2": "gw2"})
    seen = {}
    with trio.fail_after(2):
        while len(seen) < 2:
            text, addr = await server.recv_matching("req:")
            fields = dict(part.split(":", 1) for part in text.rstrip(";").split(";"))
            seen[fields["id"]] = (fields, addr)
    (f1, a1), (f2, a2) = seen["gw1"], seen["gw2"]
    assert a1 != a2  # each line has its own source port
    assert {a1[1], a2[1]} == set(emu.test_ports.values())
    assert f1["pass"] == PASSWORD and f1["gsm_status"] == "LOGIN" and f1["signal"] == "25"
    assert f1["CELLINFO"] == "LAC:7E5,CELL ID:5E5B"
    assert emu.registered("1") is None
    await server.send(f"reg:{f1['req']};status:200;", a1)
    await server.send(f"reg:{f2['req']};status:400;", a2)
    with trio.fail_after(1):
        while emu.registered("1") is None or emu.registered("2") is None:
            await trio.sleep(0.01)
    assert emu.registered("1") is True and emu.registered("2") is False

    emu.logout("1")
    emu.keepalive_now("1")
    text, _ = await server.recv_matching("req:")
    assert "gsm_status:LOGOUT" in text and "signal:0" in text


async def test_send_exchange_and_idempotent_repeats(nursery, server):
    emu = await start(nursery, server)
    addr = await server.register()
    await server.start_send(addr, 8622, "Grüße; a:b")
    # a repeated MSG / PASSWORD only repeats the prompt
    await server.send(b"MSG 8622 12 Hello world!", addr)
    assert (await server.recv_matching("SEND 8622"))[0] == "SEND 8622"
    await server.send("SEND 8622 1 +491701234567", addr)
    ok, _ = await server.recv_matching("OK 8622")
    assert ok == "OK 8622 1 1"
    # a repeated SEND gets the same answer and sends nothing new
    await server.send("SEND 8622 1 +491701234567", addr)
    assert (await server.recv_matching("OK 8622"))[0] == "OK 8622 1 1"
    await server.send("DONE 8622", addr)
    assert (await server.recv_matching("DONE"))[0] == "DONE 8622"
    assert [(s.text, s.destination, s.sms_no) for s in emu.sent] == [
        ("Grüße; a:b", "+491701234567", 1)
    ]
    # next message: sms_no counts up
    await server.start_send(addr, 8623, "second")
    await server.send("SEND 8623 1 999", addr)
    assert (await server.recv_matching("OK 8623"))[0] == "OK 8623 1 2"
    await server.send("DONE 8623", addr)
    # DELIVER reports for both, acked -> not repeated
    reports = {}
    with trio.fail_after(2):
        while len(reports) < 2:
            text, _ = await server.recv_matching("DELIVER:")
            fields = dict(p.split(":", 1) for p in text.split(";"))
            reports[fields["sms_no"]] = fields
            await server.send(f"DELIVER {fields['DELIVER']} OK", addr)
    assert reports["1"]["state"] == "0" and reports["1"]["num"] == "+491701234567"
    assert reports["1"]["password"] == PASSWORD and reports["1"]["id"] == "gw1"
    await server.nothing("DELIVER:", 0.3)


async def test_wait_while_busy_then_pushed_result(nursery, server):
    emu = await start(nursery, server, send_duration=0.3)
    addr = await server.register()
    await server.start_send(addr, 1, "first")
    await server.send("SEND 1 1 111", addr)
    await server.start_send(addr, 2, "second")
    await server.send("SEND 2 1 222", addr)
    assert (await server.recv_matching("WAIT 2"))[0] == "WAIT 2 1"  # module busy with #1
    await server.send("SEND 2 1 222", addr)  # asked again: still WAIT, no second SMS
    assert (await server.recv_matching("WAIT 2"))[0] == "WAIT 2 1"
    assert (await server.recv_matching("OK 1"))[0] == "OK 1 1 1"
    await server.send("DONE 1", addr)
    assert (await server.recv_matching("OK 2", timeout=2))[0] == "OK 2 1 2"
    await server.send("DONE 2", addr)
    assert [s.text for s in emu.sent] == ["first", "second"]


async def test_without_pushed_results_the_server_must_repeat_send(nursery, server):
    emu = await start(nursery, server, send_duration=0.2, push_results=False)
    addr = await server.register()
    await server.start_send(addr, 1, "first")
    await server.send("SEND 1 1 111", addr)
    await server.start_send(addr, 2, "second")
    await server.send("SEND 2 1 222", addr)
    assert (await server.recv_matching("WAIT 2"))[0] == "WAIT 2 1"
    await server.nothing("OK 2", 0.6)
    await server.send("SEND 2 1 222", addr)
    assert (await server.recv_matching("OK 2"))[0] == "OK 2 1 2"
    assert len(emu.sent) == 2


async def test_errors(nursery, server):
    emu = await start(nursery, server)
    addr = await server.register()
    emu.fail_next("1", 1, 38)
    await server.start_send(addr, 5, "x")
    await server.send("SEND 5 1 123", addr)
    assert (await server.recv_matching("ERROR 5"))[0] == "ERROR 5 1 errorstatus:38"
    assert emu.sent[-1].error == "38" and emu.sent[-1].sms_no is None

    emu.logout("1")
    await server.start_send(addr, 6, "y")
    await server.send("SEND 6 1 123", addr)
    assert (await server.recv_matching("ERROR 6"))[0] == "ERROR 6 GSM_LOGOUT"
    emu.login("1")

    await server.send("SEND 77 1 123", addr)
    assert (await server.recv_matching("ERROR 77"))[0] == "ERROR 77 SENDID"

    await server.send(b"MSG 8 1 z", addr)
    await server.recv_matching("PASSWORD 8")
    await server.send("PASSWORD 8 not-the-password", addr)
    assert (await server.recv_matching("ERROR 8"))[0] == "ERROR 8 password error"
    assert len(emu.sent) == 1  # only the failed one was attempted


async def test_receive_pushed_until_acked(nursery, server):
    emu = await start(nursery, server)
    addr = await server.register()
    seq = emu.inject_sms("1", "+4917000", "hi; there: x", smscnum="+49176000")
    first, _ = await server.recv_matching("RECEIVE:")
    assert first == (
        f"RECEIVE:{seq};id:gw1;password:{PASSWORD};srcnum:+4917000;smscnum:+49176000;"
        "msg:hi; there: x"
    )
    again, _ = await server.recv_matching("RECEIVE:")
    assert again == first
    await server.send(f"RECEIVE {seq} ERROR not find this id:gw1, or password error", addr)
    await server.recv_matching("RECEIVE:")  # still retried
    await server.send(f"RECEIVE {seq} OK", addr)
    with trio.fail_after(1):
        while not emu.acked(seq):
            await trio.sleep(0.01)
    attempts = emu.push_attempts(seq)
    await server.nothing("RECEIVE:", 0.35)
    assert emu.push_attempts(seq) == attempts
    assert emu.push_errors(seq) == ["not find this id:gw1, or password error"]


async def test_state_push_and_phone_off(nursery, server):
    emu = await start(nursery, server)
    addr = await server.register()
    seq = emu.push_state("1", "DIALING:999")
    text, _ = await server.recv_matching("STATE:")
    assert text.endswith(";gsm_remain_state:DIALING:999")
    await server.send(f"STATE {seq} OK", addr)
    emu.set_delivery("555", None)
    await server.start_send(addr, 9, "nobody home")
    await server.send("SEND 9 1 555", addr)
    await server.recv_matching("OK 9")
    await server.send("DONE 9", addr)
    await server.nothing("DELIVER:", 0.4)


async def test_silent_line_and_drop_fault(nursery, server):
    emu = await start(nursery, server, keepalive_interval=0.05)
    await server.register()
    emu.silence("1")
    await trio.sleep(0.1)
    await server.nothing("req:", 0.3)
    emu.silence("1", False)
    await server.recv_matching("req:")
    emu.faults.drop = 1.0
    await server.nothing("req:", 0.3)
    assert emu.dropped["out"] > 0


async def test_run_function_starts_and_stops(server):
    with trio.move_on_after(0.3):
        await run_goip_udp_emulator(
            "127.0.0.1", server.port, {"1": "gwx"}, PASSWORD, keepalive_interval=10
        )
    text, _ = await server.recv_matching("req:")
    assert ";id:gwx;" in text
