"""SmsGateway24 driver: pure helpers on literal cloud answers, then the driver over real sockets
against the SmsGateway24 emulator (token expiry, offline phone, faults switched mid-run)."""

from __future__ import annotations

import json
import logging
import socket
import urllib.parse
from datetime import datetime, timedelta, timezone

import httpx
import pytest
import trio

from bridge.devices.base import Capability, DeliveryState, DeviceError, Driver, SendOutcome
from bridge.devices.smsgateway24.driver import (
    SmsGateway24Driver,
    judge_status,
    parse_device_status,
    parse_inbox_rows,
    parse_php_datetime,
)
from bridge.devices.smsgateway24.emulator import SmsGateway24Emulator

EMAIL = "ops-sg24@example.org"
PASSWORD = "Sg24-Pa55!sekret"
WRONG_PASSWORD = "WrongPass-9x"
DEVICE = 4711
SECRETS = [EMAIL, PASSWORD, WRONG_PASSWORD, urllib.parse.quote(PASSWORD, safe="")]
FAST = (0.05, 0.05, 0.05, 0.05)


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            message = record.getMessage()
            for secret in SECRETS:
                assert secret not in message, f"secret in log record {record.name}: {message!r}"


def assert_no_secret(obj: object, *extra: str) -> None:
    text = repr(obj)
    for secret in [*SECRETS, *extra]:
        assert secret not in text, f"secret leaked into {text!r}"


@pytest.fixture
async def emu(nursery):
    emulator = SmsGateway24Emulator(EMAIL, PASSWORD, DEVICE, sims=2, timeline=FAST, seed=3)
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


def make_driver(emulator, **kwargs) -> SmsGateway24Driver:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("sims", 2)
    password = kwargs.pop("password", PASSWORD)
    return SmsGateway24Driver(
        "phone-1", f"http://127.0.0.1:{emulator.test_port}", EMAIL, password, DEVICE, **kwargs
    )


@pytest.fixture
async def driver(emu):
    d = make_driver(emu)
    yield d
    await d.aclose()


def tokens(emulator) -> list[str]:
    return list(emulator._tokens)


async def wait_state(driver, ref, state, channel="1", limit=3.0):
    with trio.fail_after(limit):
        while True:
            result = await driver.status(channel, ref)
            assert_no_secret(result)
            if result.state is state:
                return result
            assert result.state in (DeliveryState.PENDING, DeliveryState.SENT), result
            await trio.sleep(0.02)


# ============================================================================================
# pure helpers


@pytest.mark.parametrize(
    "status, state, code",
    [
        (1, DeliveryState.PENDING, None),
        (2, DeliveryState.PENDING, None),
        (3, DeliveryState.PENDING, None),
        ("3", DeliveryState.PENDING, None),  # PHP numbers as strings
        (6, DeliveryState.SENT, None),
        (7, DeliveryState.DELIVERED, None),
        (8, DeliveryState.FAILED, "8"),
        (9, DeliveryState.FAILED, "9"),
        (10, DeliveryState.FAILED, "10"),
        (11, DeliveryState.FAILED, "11"),
        (12, DeliveryState.FAILED, "12"),
        (100, DeliveryState.FAILED, "100"),
        ("101", DeliveryState.FAILED, "101"),
        (5, DeliveryState.UNKNOWN, None),
    ],
)
def test_judge_status_every_documented_code(status, state, code):
    result = judge_status(status, "whatever")
    assert result.state is state and result.error_code == code
    assert not result.poll_failed
    if code in ("100", "101"):
        assert "permission" in result.detail


@pytest.mark.parametrize("status", [4, 13, 0, None, "sent", 99])
def test_judge_status_unfamiliar_keeps_polling(status):
    result = judge_status(status, "brand new state")
    assert result.state is DeliveryState.UNKNOWN and result.poll_failed
    assert "unfamiliar" in result.detail


def test_parse_php_datetime_variants():
    utc = timezone.utc
    paris = {"date": "2023-11-02 22:44:43.000000", "timezone_type": 3, "timezone": "Europe/Paris"}
    assert parse_php_datetime(paris) == datetime(2023, 11, 2, 21, 44, 43, tzinfo=utc)
    summer = {"date": "2024-07-01 12:00:00.500000", "timezone_type": 3, "timezone": "Europe/Paris"}
    assert parse_php_datetime(summer) == datetime(2024, 7, 1, 10, 0, 0, 500000, tzinfo=utc)
    offset = {"date": "2024-07-01 12:00:00.000000", "timezone_type": 1, "timezone": "+02:00"}
    assert parse_php_datetime(offset) == datetime(2024, 7, 1, 10, tzinfo=utc)
    abbrev = {"date": "2024-07-01 12:00:00.000000", "timezone_type": 2, "timezone": "CEST"}
    assert parse_php_datetime(abbrev, timezone(timedelta(hours=2))).hour == 10
    assert parse_php_datetime("2020-04-23 17:02:21") == datetime(2020, 4, 23, 17, 2, 21, tzinfo=utc)
    for bad in ("yesterday", {"date": None}, 17):
        with pytest.raises(ValueError):
            parse_php_datetime(bad)


SEED_GETALLSMS = {
    "smss": {
        "62050971": {
            "id": 62050971,
            "sendto": "+4912312312332",
            "body": "Hello! Thank you for Order! ",
            "status": 2,
            "deviceid": 11231,
            "created": {
                "date": "2023-11-02 22:44:43.000000",
                "timezone_type": 3,
                "timezone": "Europe/Paris",
            },
        },
        "62051117": {
            "id": "62051117",
            "sendto": "+4915700000000",
            "body": "STOP",
            "status": "5",
            "sim": "1",
            "deviceid": 11231,
            "created": {
                "date": "2023-11-02 22:46:09.000000",
                "timezone_type": 3,
                "timezone": "Europe/Paris",
            },
        },
    }
}


def test_parse_inbox_rows_documented_shape_and_php_empty_list():
    items = parse_inbox_rows(SEED_GETALLSMS, channels=("1", "2"))
    assert len(items) == 1  # the outgoing row (status 2) is not inbox
    sms = items[0]
    assert (sms.channel, sms.sender, sms.text) == ("2", "+4915700000000", "STOP")
    assert sms.device_key == "sg24:62051117"
    assert sms.received_at == datetime(2023, 11, 2, 21, 46, 9, tzinfo=timezone.utc)
    # A single-SIM driver puts a slot-1 SMS on its only channel.
    assert parse_inbox_rows(SEED_GETALLSMS, channels=("1",))[0].channel == "1"
    assert parse_inbox_rows({"error": 0, "smss": []}) == []
    assert parse_inbox_rows({"error": 0}) == []
    with pytest.raises(ValueError):
        parse_inbox_rows({"smss": "nope"})


def test_parse_device_status():
    now = datetime(2020, 4, 23, 18, 2, 21, tzinfo=timezone.utc)
    lastseen = {"date": "2020-04-23 17:02:21.000000", "timezone_type": 3, "timezone": "UTC"}
    seen = parse_device_status({"online": False, "lastseen": lastseen}, now=now)
    assert seen.seconds_ago == 3600 and seen.online is False
    seen = parse_device_status({"lastseen": lastseen, "diffseconds": "28851900"}, now=now)
    assert seen.seconds_ago == 28851900  # the cloud's own count wins
    with pytest.raises(ValueError):
        parse_device_status({"error": 0}, now=now)


# ============================================================================================
# protocol surface


async def test_driver_protocol_and_config_errors(driver):
    assert isinstance(driver, Driver)
    assert driver.kind == "smsgateway24"
    assert driver.channels == ("1", "2")
    assert driver.capabilities == {Capability.DELIVERY_REPORTS, Capability.INBOX}
    with pytest.raises(DeviceError):
        await driver.send("3", "+1", "x")
    with pytest.raises(DeviceError):
        await driver.status("0", "1")
    with pytest.raises(DeviceError):
        await driver.delete_inbox([])
    with pytest.raises(DeviceError):
        SmsGateway24Driver("bad", f"http://{EMAIL}:{PASSWORD}@h", EMAIL, PASSWORD, 1)
    with pytest.raises(DeviceError):
        SmsGateway24Driver("bad", "http://h", EMAIL, PASSWORD, 1, sims=3)
    with pytest.raises(DeviceError):
        SmsGateway24Driver("bad", "ftp://h", EMAIL, PASSWORD, 1)
    assert await driver.last_ref("1") is None
    closed = make_driver_at("http://127.0.0.1:9")
    await closed.aclose()
    with pytest.raises(DeviceError):
        await closed.send("1", "+1", "x")


def make_driver_at(url: str, **kwargs) -> SmsGateway24Driver:
    kwargs.setdefault("timeout", 1.0)
    return SmsGateway24Driver("phone-x", url, EMAIL, PASSWORD, DEVICE, **kwargs)


# ============================================================================================
# against the emulator


async def test_send_sim_selection_urgent_and_full_lifecycle(emu, driver):
    text = "Hällo + & = ? % 😀"
    first = await driver.send("1", "+4915752982212", text)
    second = await driver.send("2", "+4917642111111", "OTP 1234", urgent=True)
    for result in (first, second):
        assert result.outcome is SendOutcome.ACCEPTED and result.ref.isdigit()
        assert_no_secret(result, *tokens(emu))
    assert [(s.sms_id, s.sim, s.urgent, s.body, s.sendto) for s in emu.sent] == [
        (int(first.ref), 0, False, text, "+4915752982212"),
        (int(second.ref), 1, True, "OTP 1234", "+4917642111111"),
    ]
    assert emu.calls["gettoken"] == 1  # one token for everything
    seen = set()
    with trio.fail_after(3):
        while True:
            result = await driver.status("1", first.ref)
            seen.add(result.state)
            if result.state is DeliveryState.DELIVERED:
                break
            await trio.sleep(0.01)
    assert {DeliveryState.PENDING, DeliveryState.SENT} <= seen
    assert (await driver.status("2", second.ref)).state in (
        DeliveryState.PENDING,
        DeliveryState.SENT,
        DeliveryState.DELIVERED,
    )


@pytest.mark.parametrize("code", [8, 9, 10, 11, 12, 100, 101])
async def test_failure_codes_end_failed_with_the_code(emu, driver, code):
    emu.fail_next(1, code)
    sent = await driver.send("1", "+1", "doomed")
    result = await wait_state(driver, sent.ref, DeliveryState.FAILED)
    assert result.error_code == str(code) and not result.poll_failed
    if code == 8:
        assert emu.status_of(int(sent.ref)) == 8


async def test_no_delivery_report_stays_sent(emu, driver):
    emu.set_final_status(6)
    sent = await driver.send("1", "+1", "x")
    await wait_state(driver, sent.ref, DeliveryState.SENT)
    await trio.sleep(0.3)
    assert (await driver.status("1", sent.ref)).state is DeliveryState.SENT


async def test_unknown_sms_id_is_unknown_not_poll_failure(driver):
    result = await driver.status("1", "999")
    assert result.state is DeliveryState.UNKNOWN and not result.poll_failed
    assert (await driver.status("1", None)).state is DeliveryState.UNKNOWN


async def test_incoming_id_polled_as_status_is_unknown(emu, driver):
    sms_id = emu.inject_sms("+4917", "hi")
    result = await driver.status("1", str(sms_id))
    assert result.state is DeliveryState.UNKNOWN and not result.poll_failed


async def test_token_renewal_after_n_calls(emu, driver):
    emu.token_ttl_calls = 2
    refs = [(await driver.send("1", "+1", f"m{i}")).ref for i in range(5)]
    assert all(refs) and len(emu.sent) == 5  # every send went through, none twice
    assert driver.token_renewals >= 2
    assert emu.calls["gettoken"] == driver.token_renewals + 1
    assert emu.calls["addsms"] == 5 + driver.token_renewals  # one retry per renewal


async def test_token_renewal_after_expiry_and_concurrent_calls_share_one(emu, driver):
    sent = await driver.send("1", "+1", "x")
    emu.expire_tokens()
    async with trio.open_nursery() as nursery:
        for _ in range(4):
            nursery.start_soon(driver.status, "1", sent.ref)
    assert emu.calls["gettoken"] == 2  # the four refused calls shared one renewal
    emu.token_ttl_seconds = 0.05
    await trio.sleep(0.1)
    assert (await driver.health()).ok
    assert emu.calls["gettoken"] == 3
    assert_no_secret(await driver.health(), *tokens(emu))


async def test_fresh_token_refused_at_once_is_auth_failure(emu, driver):
    emu.faults.error_message = "Token is wrong or expired"
    emu.faults.endpoints = {"addsms"}
    result = await driver.send("1", "+1", "x")
    assert result.outcome is SendOutcome.AUTH_FAILED
    assert emu.calls["addsms"] == 2 and emu.calls["gettoken"] == 2
    assert emu.sent == []


async def test_wrong_password_is_auth_failed_and_redacted(emu):
    d = make_driver(emu, password=WRONG_PASSWORD)
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is SendOutcome.AUTH_FAILED
        assert "Login or password incorrect" in result.detail
        assert_no_secret(result)
        status = await d.status("1", "1")
        assert status.poll_failed
        health = await d.health()
        assert health.auth_failed and not health.ok
        assert_no_secret(health)
        assert await d.inbox() == []
        assert emu.sent == []
    finally:
        await d.aclose()


async def test_offline_phone_is_unhealthy_and_messages_wait(emu, driver):
    health = await driver.health()
    assert health.ok and health.reachable and "last seen" in health.detail
    emu.set_online(False, seen_ago=600)
    health = await driver.health()
    assert not health.reachable and not health.ok
    assert all(ch.registered is False for ch in health.channels.values())
    assert "offline" in health.detail
    sent = await driver.send("1", "+1", "waits for the phone")
    assert sent.outcome is SendOutcome.ACCEPTED  # the cloud takes it
    await trio.sleep(0.3)
    assert (await driver.status("1", sent.ref)).state is DeliveryState.PENDING
    emu.set_online(True)
    assert (await driver.health()).ok
    await wait_state(driver, sent.ref, DeliveryState.DELIVERED)


async def test_offline_after_threshold(emu):
    d = make_driver(emu, offline_after=1000)
    try:
        emu.set_online(False, seen_ago=600)
        assert (await d.health()).reachable  # 600 s < 1000 s: still counts as online
    finally:
        await d.aclose()


async def test_inbox_keys_channels_times_and_no_outgoing(emu, driver):
    assert await driver.inbox() == []  # "smss": [] (PHP's empty map)
    when = datetime(2025, 6, 15, 18, 15, 47, tzinfo=timezone.utc)
    await driver.send("1", "+1", "outgoing, not inbox")
    a = emu.inject_sms("+491701234567", "Hallo, Grüße", sim=0, when=datetime.now(timezone.utc))
    b = emu.inject_sms("+491709999999", "second", sim=1, when=datetime.now(timezone.utc))
    emu.inject_sms("+4900", "too old", when=when)  # outside inbox_lookback
    items = await driver.inbox()
    assert [(i.channel, i.sender, i.text, i.device_key) for i in items] == [
        ("1", "+491701234567", "Hallo, Grüße", f"sg24:{a}"),
        ("2", "+491709999999", "second", f"sg24:{b}"),
    ]
    assert all(i.received_at.tzinfo is not None for i in items)
    assert abs(items[0].received_at - datetime.now(timezone.utc)) < timedelta(seconds=5)
    again = await driver.inbox()
    assert [i.device_key for i in again] == [i.device_key for i in items]  # stable keys
    d = make_driver(emu, inbox_lookback=10 * 365 * 86400.0)
    try:
        old = await d.inbox()
        assert len(old) == 3 and old[0].received_at == when
    finally:
        await d.aclose()


async def test_string_numbers_quirk(emu, driver):
    emu.faults.string_numbers = True
    sent = await driver.send("1", "+1", "x")
    assert sent.outcome is SendOutcome.ACCEPTED and sent.ref.isdigit()
    await wait_state(driver, sent.ref, DeliveryState.DELIVERED)
    emu.inject_sms("+4917", "hi", sim=1)
    assert [i.channel for i in await driver.inbox()] == ["2"]
    assert (await driver.health()).ok


async def test_hang_on_addsms_is_ambiguous(emu):
    d = make_driver(emu, timeout=0.3)
    try:
        await d.health()  # token first
        emu.faults.hang = True
        emu.faults.endpoints = {"addsms"}
        result = await d.send("1", "+1", "lost answer")
        assert result.outcome is SendOutcome.AMBIGUOUS
        assert len(emu.sent) == 1  # it was saved: exactly why this is ambiguous
        emu.faults.hang_after_processing = False
        assert (await d.send("1", "+1", "lost request")).outcome is SendOutcome.AMBIGUOUS
        assert len(emu.sent) == 1
        emu.faults.hang = False
        assert (await d.send("1", "+1", "back")).outcome is SendOutcome.ACCEPTED
    finally:
        await d.aclose()


async def test_hang_on_gettoken_is_error_not_ambiguous(emu):
    d = make_driver(emu, timeout=0.3)
    try:
        emu.faults.hang = True
        emu.faults.endpoints = {"gettoken"}
        result = await d.send("1", "+1", "x")
        assert result.outcome is SendOutcome.ERROR  # addsms was never called
        assert emu.calls["addsms"] == 0
    finally:
        await d.aclose()


async def test_http500_garbage_and_error_bodies(emu, driver):
    await driver.health()
    emu.faults.http_error = 500
    result = await driver.send("1", "+1", "x")
    assert result.outcome is SendOutcome.ERROR and result.http_status == 500
    emu.faults.http_error = 0
    emu.faults.garbage = True
    result = await driver.send("1", "+1", "x")
    assert result.outcome is SendOutcome.AMBIGUOUS and "not JSON" in result.detail
    status = await driver.status("1", result.ref or "1")
    assert status.poll_failed and status.state is DeliveryState.UNKNOWN
    assert await driver.inbox() == []
    emu.faults.garbage = False
    emu.faults.error_message = "Device not found"
    result = await driver.send("1", "+1", "x")
    assert result.outcome is SendOutcome.ERROR and "Device not found" in result.detail
    emu.faults.error_message = None
    health = await driver.health()
    assert health.protocol_errors == 3 and health.consecutive_errors == 5
    assert "5 failed call(s) in a row" in health.detail
    assert (await driver.send("1", "+1", "ok")).outcome is SendOutcome.ACCEPTED
    assert (await driver.health()).consecutive_errors == 0


async def test_wrong_device_id_is_error(emu):
    d = SmsGateway24Driver(
        "wrong", f"http://127.0.0.1:{emu.test_port}", EMAIL, PASSWORD, 1, timeout=2.0
    )
    try:
        assert (await d.send("1", "+1", "x")).outcome is SendOutcome.ERROR
        health = await d.health()
        assert not health.reachable and "Device not found" in health.detail
    finally:
        await d.aclose()


async def test_connection_refused_is_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = make_driver_at(f"http://127.0.0.1:{port}")
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is SendOutcome.ERROR and "not sent" in result.detail
        health = await d.health()
        assert not health.reachable and health.consecutive_errors == 1
    finally:
        await d.aclose()


# ============================================================================================
# with httpx.MockTransport: answers the emulator never gives


def mock_driver(handler) -> SmsGateway24Driver:
    return SmsGateway24Driver(
        "mock",
        "https://smsgateway24.invalid",
        EMAIL,
        PASSWORD,
        DEVICE,
        timeout=1.0,
        transport=httpx.MockTransport(handler),
    )


def cloud(answers):
    """A mock cloud: ``answers[method]`` is a dict, or a callable(form) -> dict."""
    seen = []

    def handler(request: httpx.Request) -> httpx.Response:
        method = request.url.path.rsplit("/", 1)[-1]
        form = dict(urllib.parse.parse_qsl(request.content.decode()))
        seen.append((method, form))
        if method == "gettoken":
            return httpx.Response(200, json={"error": 0, "token": "tok-abcdef0123456789"})
        answer = answers[method]
        answer = answer(form) if callable(answer) else answer
        if isinstance(answer, httpx.Response):
            return answer
        return httpx.Response(200, text=json.dumps(answer))

    return handler, seen


async def test_mock_unfamiliar_status_and_mismatched_id():
    handler, seen = cloud({"getsmsstatus": {"error": 0, "sms_id": 5, "status": 4}})
    d = mock_driver(handler)
    try:
        result = await d.status("1", "5")
        assert result.state is DeliveryState.UNKNOWN and result.poll_failed
        result = await d.status("1", "6")
        assert result.poll_failed and "about sms 5" in result.detail
        assert ("getsmsstatus", {"token": "tok-abcdef0123456789", "sms_id": "5"}) in seen
    finally:
        await d.aclose()


async def test_mock_error0_without_id_is_ambiguous_and_http401_renews():
    calls = {"n": 0}

    def addsms(form):
        calls["n"] += 1
        if calls["n"] == 1:
            return httpx.Response(401, text="Unauthorized")
        return {"error": 0, "message": "Sms has been saved successfully"}

    handler, seen = cloud({"addsms": addsms})
    d = mock_driver(handler)
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is SendOutcome.AMBIGUOUS and "without an sms_id" in result.detail
        assert [m for m, _ in seen] == ["gettoken", "addsms", "gettoken", "addsms"]
        assert d.token_renewals == 1
    finally:
        await d.aclose()


async def test_mock_token_never_in_details():
    token = "tok-abcdef0123456789"
    handler, _ = cloud({"addsms": {"error": 1, "message": f"limit exceeded for token {token}x"}})
    d = mock_driver(handler)
    try:
        result = await d.send("1", "+1", "x")
        assert token not in result.detail
    finally:
        await d.aclose()


@pytest.mark.parametrize(
    "exc, outcome",
    [
        (httpx.ConnectError("refused"), SendOutcome.ERROR),
        (httpx.ConnectTimeout("slow"), SendOutcome.ERROR),
        (httpx.ReadTimeout("slow read"), SendOutcome.AMBIGUOUS),
        (httpx.RemoteProtocolError("Server disconnected"), SendOutcome.AMBIGUOUS),
    ],
)
async def test_mock_transport_failure_classification(exc, outcome):
    def addsms(form):
        raise exc

    handler, _ = cloud({"addsms": addsms})
    d = mock_driver(handler)
    try:
        assert (await d.send("1", "+1", "x")).outcome is outcome
    finally:
        await d.aclose()
