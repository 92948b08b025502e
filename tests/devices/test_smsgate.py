"""SMSGate (android-sms-gateway, Local Server) driver: pure helpers, then the driver over real
sockets against the SMSGate emulator, with the emulator's webhooks calling a tiny receiver
that forwards to ``driver.handle_webhook``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import time
from datetime import datetime, timezone

import httpx
import pytest
import trio

from bridge.devices.base import Capability, DeliveryState, DeviceError, Driver, SendOutcome
from bridge.devices.smsgate.driver import SmsGateDriver
from bridge.devices.smsgate.messages import (
    EVENTS,
    failure_code,
    judge_message_state,
    sign_webhook,
    verify_webhook_signature,
)
from bridge.emulators.http import HttpServer, Request, text_response
from bridge.devices.smsgate.emulator import SmsGateEmulator

USER = "sms-user"
PASSWORD = "Gate-Pa55!sekret"
WRONG_PASSWORD = "WrongPass-9x"
SECRET = "webhook-signing-K3y!"
SECRETS = [
    PASSWORD,
    WRONG_PASSWORD,
    SECRET,
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    base64.b64encode(f"{USER}:{WRONG_PASSWORD}".encode()).decode(),
]
LONG_GSM = "x" * 400  # 3 parts of 153 septets
LONG_UCS2 = "Привет! " * 20  # 160 UCS2 units: 3 parts of 67


@pytest.fixture(autouse=True)
def no_secrets_in_logs(caplog):
    caplog.set_level(logging.DEBUG)
    yield
    for when in ("setup", "call"):
        for record in caplog.get_records(when):
            message = record.getMessage()
            for secret in SECRETS:
                assert secret not in message, f"secret in log record {record.name}: {message!r}"


def assert_no_secret(obj: object) -> None:
    text = repr(obj)
    for secret in SECRETS:
        assert secret not in text, f"secret leaked into {text!r}"


@pytest.fixture
async def emu(nursery):
    emulator = SmsGateEmulator(
        USER,
        PASSWORD,
        sims=2,
        signing_key=SECRET,
        process_delay=0.02,
        send_delay=0.02,
        deliver_delay=0.05,
        webhook_retry_delays=(0.05, 0.1),
        seed=5,
    )
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


def make_driver(emulator, **kwargs) -> SmsGateDriver:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("sims", 2)
    kwargs.setdefault("webhook_secret", SECRET)
    password = kwargs.pop("password", PASSWORD)
    return SmsGateDriver(
        "phone-gate", f"http://127.0.0.1:{emulator.test_port}", USER, password, **kwargs
    )


@pytest.fixture
async def driver(emu):
    d = make_driver(emu)
    yield d
    await d.aclose()


async def start_receiver(nursery, driver, *, use_async=False, ack_timeout=5.0):
    """What the admin HTTP server will do: POST /webhooks/smsgate/<device> -> the driver."""
    answers = []

    async def handler(request: Request):
        if request.method != "POST" or request.path != f"/webhooks/smsgate/{driver.name}":
            return text_response("not found", status=404)
        if use_async:
            status, text = await driver.handle_webhook_async(
                request.headers, request.body, ack_timeout=ack_timeout
            )
        else:
            status, text = driver.handle_webhook(request.headers, request.body)
        answers.append(status)
        return text_response(text, status=status)

    server = HttpServer(handler, name="webhook-receiver")
    port = await nursery.start(server.serve)
    return f"http://127.0.0.1:{port}/webhooks/smsgate/{driver.name}", answers


@pytest.fixture
async def hooked(nursery, emu, driver):
    url, answers = await start_receiver(nursery, driver)
    setup = await driver.register_webhooks(url)
    assert setup.ok and set(setup.created) == set(EVENTS)
    return answers


async def wait_cached(driver, ref, *states, limit=3.0):
    with trio.fail_after(limit):
        while True:
            cached = driver.cached_status(ref)
            if cached is not None and cached.state in states:
                return cached
            await trio.sleep(0.01)


def signed(body: bytes, *, secret=SECRET, ts=None):
    ts = str(int(time.time()) if ts is None else ts)
    return {"X-Timestamp": ts, "X-Signature": sign_webhook(secret, body, ts)}


def event(name, event_id, **payload) -> bytes:
    return json.dumps(
        {"deviceId": "dev", "event": name, "id": event_id, "payload": payload, "webhookId": "w"}
    ).encode()


# ============================================================================================
# pure helpers


def test_signature_matches_the_documented_construction():
    body = b'{"event":"sms:received","id":"Ey6ECgOkVVFjz3CL48B8C"}'
    ts = "1719046000"
    expected = hmac.new(b"k", (body.decode() + ts).encode(), hashlib.sha256).hexdigest()
    assert sign_webhook("k", body, ts) == expected
    now = 1719046000.0
    assert verify_webhook_signature("k", body, ts, expected, now=now) is None
    assert verify_webhook_signature("k", body, ts, expected.upper(), now=now) is None
    assert verify_webhook_signature("k", body + b" ", ts, expected, now=now) == "bad X-Signature"
    assert verify_webhook_signature("other", body, ts, expected, now=now) == "bad X-Signature"
    assert "stale" in verify_webhook_signature("k", body, ts, expected, now=now + 301)
    assert "stale" in verify_webhook_signature("k", body, ts, expected, now=now - 301)
    assert verify_webhook_signature("k", body, ts, expected, now=now + 299) is None
    assert "missing" in verify_webhook_signature("k", body, None, expected, now=now)
    assert "missing" in verify_webhook_signature("k", body, ts, "", now=now)
    assert "Unix" in verify_webhook_signature("k", body, "1719046000.5", expected, now=now)


@pytest.mark.parametrize(
    "reason, code",
    [
        ("RESULT_ERROR_GENERIC_FAILURE", "1"),
        ("Send result: RESULT_ERROR_RADIO_OFF", "2"),
        ("RESULT_ERROR_NULL_PDU", "3"),
        ("RESULT_ERROR_NO_SERVICE", "4"),
        ("RESULT_ERROR_LIMIT_EXCEEDED", "5"),
        ("RESULT_NETWORK_REJECT", "RESULT_NETWORK_REJECT"),
        ("64", "64"),
        ("Invalid number", "failed"),
        (None, "failed"),
    ],
)
def test_failure_code(reason, code):
    assert failure_code(reason) == code


@pytest.mark.parametrize(
    "state, expected",
    [
        ("Pending", DeliveryState.PENDING),
        ("Processed", DeliveryState.PENDING),
        ("Sent", DeliveryState.SENT),
        ("Delivered", DeliveryState.DELIVERED),
        ("Failed", DeliveryState.FAILED),
    ],
)
def test_judge_message_state(state, expected):
    answer = {
        "id": "x",
        "state": state,
        "recipients": [{"phoneNumber": "+1", "state": state, "error": "RESULT_ERROR_NO_SERVICE"}],
    }
    result = judge_message_state(answer)
    assert result.state is expected and not result.poll_failed
    if expected is DeliveryState.FAILED:
        assert result.error_code == "4" and "RESULT_ERROR_NO_SERVICE" in result.detail


def test_judge_message_state_unfamiliar_and_broken():
    assert judge_message_state({"state": "Scheduled"}).poll_failed
    with pytest.raises(ValueError):
        judge_message_state({"id": "x"})


# ============================================================================================
# protocol surface


async def test_driver_protocol_and_config_errors(driver):
    assert isinstance(driver, Driver)
    assert driver.kind == "smsgate"
    assert driver.channels == ("1", "2")
    assert driver.capabilities == {
        Capability.DELIVERY_REPORTS,
        Capability.INBOX,
        Capability.DELETE_INBOX,
        Capability.ACK_INBOX,
    }
    with pytest.raises(DeviceError):
        await driver.send("3", "+1", "x")
    with pytest.raises(DeviceError):
        SmsGateDriver("bad", f"http://{USER}:{PASSWORD}@phone:8080", USER, PASSWORD)
    with pytest.raises(DeviceError):
        SmsGateDriver("bad", "http://phone:8080", USER, PASSWORD, sims=4)
    with pytest.raises(DeviceError):
        SmsGateDriver("bad", "http://phone:8080", USER, PASSWORD, webhook_secret="")
    assert await driver.last_ref("1") is None
    other = SmsGateDriver("closed", "http://127.0.0.1:9", USER, PASSWORD)
    await other.aclose()
    with pytest.raises(DeviceError):
        await other.send("1", "+1", "x")


# ============================================================================================
# sending and polling (no webhooks)


async def test_send_json_sim_urgent_and_our_id(emu, driver):
    first = await driver.send("1", "+4915752982212", "Hällo 😀")
    second = await driver.send(
        "2", "+4917642111111", "OTP 1234", urgent=True, message_id="sb-own-id-1"
    )
    for result in (first, second):
        assert result.outcome is SendOutcome.ACCEPTED and result.http_status == 202
        assert_no_secret(result)
    assert first.ref.startswith("sb-") and first.ref == first.ref.lower()
    assert second.ref == "sb-own-id-1"
    assert [
        (m.id, m.sim, m.priority, m.text, m.phone_numbers, m.with_delivery_report) for m in emu.sent
    ] == [
        (first.ref, 1, 0, "Hällo 😀", ("+4915752982212",), True),
        (second.ref, 2, 100, "OTP 1234", ("+4917642111111",), True),
    ]
    # Resending with the same id (after an ambiguous send) is safe: 409 -> ACCEPTED.
    again = await driver.send("2", "+4917642111111", "OTP 1234", message_id="sb-own-id-1")
    assert again.outcome is SendOutcome.ACCEPTED and again.ref == "sb-own-id-1"
    assert again.http_status == 409 and len(emu.sent) == 2


async def test_without_delivery_report_flag(emu):
    d = make_driver(emu, with_delivery_report=False)
    try:
        sent = await d.send("1", "+4915752982212", "no report")
        assert emu.sent[0].with_delivery_report is False
        with trio.fail_after(2):
            while (await d.status("1", sent.ref)).state is not DeliveryState.SENT:
                await trio.sleep(0.02)
        await trio.sleep(0.2)
        assert (await d.status("1", sent.ref)).state is DeliveryState.SENT
    finally:
        await d.aclose()


async def test_non_e164_is_rejected_unless_validation_skipped(emu, driver):
    result = await driver.send("1", "0157 5298 2212", "x")
    assert result.outcome is SendOutcome.REJECTED and "Invalid phone number" in result.detail
    emu.sims = 1
    result = await driver.send("2", "+4915752982212", "x")
    assert result.outcome is SendOutcome.CHANNEL_DOWN and "SIM" in result.detail
    d = make_driver(emu, skip_phone_validation=True)
    try:
        assert (await d.send("1", "0157 5298 2212", "x")).outcome is SendOutcome.ACCEPTED
    finally:
        await d.aclose()


async def test_polled_lifecycle_single_part(emu, driver):
    sent = await driver.send("1", "+4915752982212", "hi")
    seen = []
    with trio.fail_after(3):
        while True:
            result = await driver.status("1", sent.ref)
            assert not result.poll_failed
            if not seen or seen[-1] is not result.state:
                seen.append(result.state)
            if result.state is DeliveryState.DELIVERED:
                break
            await trio.sleep(0.005)
    assert seen[0] is DeliveryState.PENDING and seen[-1] is DeliveryState.DELIVERED


async def test_polled_failure_and_unknown_id(emu, driver):
    emu.fail_next(1, "RESULT_ERROR_RADIO_OFF")
    sent = await driver.send("1", "+4915752982212", "doomed")
    with trio.fail_after(3):
        while (result := await driver.status("1", sent.ref)).state is not DeliveryState.FAILED:
            await trio.sleep(0.02)
    assert result.error_code == "2" and "RADIO_OFF" in result.detail
    unknown = await driver.status("1", "sb-nope")
    assert unknown.state is DeliveryState.UNKNOWN and not unknown.poll_failed


async def test_wrong_password_is_auth_failed(emu):
    d = make_driver(emu, password=WRONG_PASSWORD)
    try:
        result = await d.send("1", "+4915752982212", "x")
        assert result.outcome is SendOutcome.AUTH_FAILED
        assert_no_secret(result)
        assert (await d.status("1", "sb-x")).poll_failed
        health = await d.health()
        assert health.auth_failed and not health.ok
        setup = await d.register_webhooks("http://127.0.0.1:1/x")
        assert not setup.ok and "401" in setup.detail
        assert emu.sent == []
    finally:
        await d.aclose()


# ============================================================================================
# webhooks end to end


async def test_register_webhooks_is_idempotent(emu, driver, hooked):
    assert sorted(w["event"] for w in emu.webhooks.values()) == sorted(EVENTS)
    url = next(iter(emu.webhooks.values()))["url"]
    again = await driver.register_webhooks(url)
    assert again.ok and again.created == () and set(again.existing) == set(EVENTS)
    assert len(emu.webhooks) == 4
    moved = await driver.register_webhooks(url + "-new")
    assert set(moved.created) == set(EVENTS)
    assert len(emu.webhooks) == 4  # fixed ids: re-pointed, not duplicated
    assert {w["url"] for w in emu.webhooks.values()} == {url + "-new"}


@pytest.mark.parametrize("text", [LONG_GSM, LONG_UCS2])
async def test_long_message_delivered_only_after_every_part(emu, driver, hooked, text):
    changes = []
    driver.on_status = lambda ref, result: changes.append((ref, result.state, result.detail))
    sent = await driver.send("1", "+4915752982212", text)
    assert emu.sent[0].parts == 3
    first_part = await wait_cached(driver, sent.ref, DeliveryState.SENT)
    await wait_cached(driver, sent.ref, DeliveryState.DELIVERED)
    states = [(s, d) for ref, s, d in changes if ref == sent.ref]
    assert [s for s, _ in states] == [DeliveryState.SENT] * 3 + [DeliveryState.DELIVERED]
    assert "1 of 3" in states[1][1] and "2 of 3" in states[2][1]
    assert first_part.state is DeliveryState.SENT
    final = await driver.status("1", sent.ref)
    assert final.state is DeliveryState.DELIVERED and "all 3 part(s)" in final.detail
    assert all(a == 200 for a in hooked)


async def test_polled_delivered_after_first_part_is_not_trusted(emu, driver, hooked):
    emu.deliver_delay = 0.3
    sent = await driver.send("1", "+4915752982212", LONG_GSM)
    with trio.fail_after(3):
        while emu.state_of(sent.ref) != "Delivered":
            await trio.sleep(0.01)
    await wait_cached(driver, sent.ref, DeliveryState.SENT)
    # The app now says Delivered (one part of three): the driver says SENT.
    result = await driver.status("1", sent.ref)
    assert result.state is DeliveryState.SENT and "of 3 parts" in result.detail
    await wait_cached(driver, sent.ref, DeliveryState.DELIVERED, limit=5)


async def test_one_part_failed_is_failed(emu, driver, hooked):
    emu.fail_next(1, "RESULT_ERROR_NO_SERVICE", part=2)
    sent = await driver.send("1", "+4915752982212", LONG_GSM)
    result = await wait_cached(driver, sent.ref, DeliveryState.FAILED)
    assert result.error_code == "4"
    assert (await driver.status("1", sent.ref)).state is DeliveryState.FAILED
    await emu.wait_webhooks_idle()
    assert (await driver.status("1", sent.ref)).state is DeliveryState.FAILED


async def test_duplicate_webhooks_are_idempotent(emu, driver, hooked):
    emu.faults.duplicate_webhooks = True
    sent = await driver.send("1", "+4915752982212", LONG_GSM)
    await wait_cached(driver, sent.ref, DeliveryState.DELIVERED)
    await emu.wait_webhooks_idle()
    delivered = [a for a in emu.webhook_log if a.event == "sms:delivered"]
    assert len(delivered) == 6 and len({a.event_id for a in delivered}) == 3
    assert driver._tracked[sent.ref].delivered == {a.event_id for a in delivered}
    emu.inject_sms("+4917000000", "twice?")
    await emu.wait_webhooks_idle()
    assert len(await driver.inbox()) == 1


async def test_out_of_order_reports_and_sent_last(emu, driver, hooked):
    emu.faults.out_of_order_parts = True
    sent = await driver.send("1", "+4915752982212", LONG_GSM)
    await wait_cached(driver, sent.ref, DeliveryState.DELIVERED)
    order = [a.event for a in emu.webhook_log if a.event != "sms:received"]
    assert order[0] == "sms:delivered" and "sms:sent" in order


async def test_parts_count_from_event_payload(emu, driver, hooked):
    emu.parts_count_in_payload = True
    # A message this driver did not send (no part count of its own): the payload tells.
    other = SmsGateDriver("other", f"http://127.0.0.1:{emu.test_port}", USER, PASSWORD, timeout=2.0)
    try:
        sent = await other.send("1", "+4915752982212", LONG_GSM)
    finally:
        await other.aclose()
    await wait_cached(driver, sent.ref, DeliveryState.SENT)
    assert driver._tracked[sent.ref].parts == 3
    await wait_cached(driver, sent.ref, DeliveryState.DELIVERED)


async def test_wrong_signature_and_stale_timestamp_are_rejected(emu, driver, hooked):
    emu.faults.wrong_signature = True
    sent = await driver.send("1", "+4915752982212", "hi")
    with trio.fail_after(3):
        while emu.state_of(sent.ref) != "Delivered":
            await trio.sleep(0.01)
    await emu.wait_webhooks_idle()
    assert hooked and set(hooked) == {401}
    assert driver.cached_status(sent.ref) is None
    assert max(a.attempt for a in emu.webhook_log) == 3  # the app retried
    emu.faults.wrong_signature = False
    emu.faults.stale_timestamp = True
    emu.inject_sms("+4917000000", "old news")
    await emu.wait_webhooks_idle()
    assert hooked[-1] == 401 and await driver.inbox() == []
    health = await driver.health()
    assert "rejected" in health.detail and "stale" in health.detail
    assert_no_secret(health)


async def test_inbound_sms_queue_keys_and_ack(emu, driver, hooked):
    when = datetime(2025, 6, 15, 18, 15, 47, tzinfo=timezone.utc)
    e1 = emu.inject_sms("+491701234567", "Hallo, Grüße", sim=2, when=when)
    e2 = emu.inject_sms("+491709999999", "second", sim=None)
    await emu.wait_webhooks_idle()
    items = await driver.inbox()
    assert [(i.channel, i.sender, i.text, i.device_key) for i in items] == [
        ("2", "+491701234567", "Hallo, Grüße", f"smsgate:{e1}"),
        ("1", "+491709999999", "second", f"smsgate:{e2}"),
    ]
    assert items[0].received_at == when and items[0].received_at.tzinfo is not None
    assert [i.device_key for i in await driver.inbox()] == [i.device_key for i in items]
    await driver.delete_inbox(items[:1])
    assert [i.device_key for i in await driver.inbox()] == [f"smsgate:{e2}"]
    # The same event again (a retry) is answered 200 but not queued again.
    body = json.dumps(
        {
            "event": "sms:received",
            "id": e1,
            "payload": {"message": "Hallo, Grüße", "phoneNumber": "+491701234567"},
        }
    ).encode()
    assert driver.handle_webhook(signed(body), body) == (200, "ok: already processed")
    assert [i.device_key for i in await driver.inbox()] == [f"smsgate:{e2}"]


async def test_async_handler_answers_after_the_sms_is_stored(nursery, emu, driver):
    url, answers = await start_receiver(nursery, driver, use_async=True, ack_timeout=0.15)
    await driver.register_webhooks(url)
    emu.inject_sms("+4917000001", "store me")
    with trio.fail_after(3):
        while len(answers) < 1:
            await trio.sleep(0.01)
    assert answers == [503]  # nobody stored it within ack_timeout: the app will retry
    items = await driver.inbox()
    assert len(items) == 1
    with trio.fail_after(3):
        while len(answers) < 2:
            await trio.sleep(0.005)
    # The retry is waiting now; storing the SMS answers it.
    await driver.delete_inbox(items)
    await emu.wait_webhooks_idle()
    assert answers[-1] == 200 and await driver.inbox() == []


async def test_handle_webhook_direct_answers(driver):
    body = event("sms:sent", "ev-1", messageId="m-1", phoneNumber="+1")
    assert driver.handle_webhook(signed(body), body) == (200, "ok")
    assert driver.handle_webhook(signed(body), body) == (200, "ok: already processed")
    assert driver.cached_status("m-1").state is DeliveryState.SENT
    lower = {k.lower(): v for k, v in signed(body).items()}
    assert (
        driver.handle_webhook(
            lower, event("sms:failed", "ev-2", messageId="m-1", reason="RESULT_ERROR_NULL_PDU")
        )[0]
        == 401
    )  # signature of another body
    failed = event("sms:failed", "ev-2", messageId="m-1", reason="RESULT_ERROR_NULL_PDU")
    assert driver.handle_webhook(signed(failed), failed)[0] == 200
    assert driver.cached_status("m-1").error_code == "3"
    assert driver.handle_webhook({}, body)[0] == 401
    stale = signed(body, ts=int(time.time()) - 600)
    assert driver.handle_webhook(stale, body)[0] == 401
    assert driver.handle_webhook(signed(b"not json"), b"not json")[0] == 400
    ping = event("system:ping", "ev-3", health={})
    assert driver.handle_webhook(signed(ping), ping) == (200, "ok")
    odd = event("mms:received", "ev-4")
    assert driver.handle_webhook(signed(odd), odd)[0] == 200
    nobody = event("sms:sent", "ev-5")
    assert driver.handle_webhook(signed(nobody), nobody)[0] == 400
    unconfigured = SmsGateDriver("n", "http://127.0.0.1:9", USER, PASSWORD)
    try:
        assert unconfigured.handle_webhook(signed(body), body)[0] == 403
    finally:
        await unconfigured.aclose()


async def test_inbound_queue_full_is_503(emu):
    d = make_driver(emu, inbox_limit=1)
    try:
        one = event("sms:received", "r-1", message="a", phoneNumber="+1")
        two = event("sms:received", "r-2", message="b", phoneNumber="+1")
        assert d.handle_webhook(signed(one), one)[0] == 200
        assert d.handle_webhook(signed(two), two)[0] == 503
        await d.delete_inbox(await d.inbox())
        assert d.handle_webhook(signed(two), two)[0] == 200  # the retry gets in
    finally:
        await d.aclose()


async def test_unacknowledged_inbound_sms_expire(emu, caplog):
    d = make_driver(emu, inbox_ttl=0.05)
    try:
        one = event("sms:received", "r-1", message="a", phoneNumber="+1")
        assert d.handle_webhook(signed(one), one)[0] == 200
        assert len(await d.inbox()) == 1
        await trio.sleep(0.1)
        assert await d.inbox() == []
        assert "never acknowledged" in caplog.text
        assert d.handle_webhook(signed(one), one) == (200, "ok: already processed")
        assert await d.inbox() == []
    finally:
        await d.aclose()


# ============================================================================================
# ambiguity and faults


async def test_ambiguous_send_is_reconciled_through_our_own_id(emu):
    d = make_driver(emu, timeout=0.3)
    try:
        before = await d.send("1", "+4915752982212", "first")
        assert await d.last_ref("1") == before.ref
        emu.faults.hang = True
        emu.faults.endpoints = {"message"}
        lost_answer = await d.send("1", "+4915752982212", "answer lost")
        assert lost_answer.outcome is SendOutcome.AMBIGUOUS
        taken = await d.last_ref("1")
        assert taken not in (None, before.ref) and taken == emu.sent[-1].id  # the phone has it
        emu.faults.hang_after_processing = False
        lost_request = await d.send("1", "+4915752982212", "request lost")
        assert lost_request.outcome is SendOutcome.AMBIGUOUS
        assert await d.last_ref("1") == taken  # unchanged: the phone did not take it
        assert len(emu.sent) == 2
    finally:
        await d.aclose()


async def test_http500_garbage_and_health(emu, driver):
    health = await driver.health()
    assert health.ok and "app pass" in health.detail
    emu.faults.http_error = 500
    result = await driver.send("1", "+4915752982212", "x")
    assert result.outcome is SendOutcome.ERROR and result.http_status == 500
    emu.faults.http_error = 0
    emu.faults.garbage = True
    emu.faults.endpoints = {"message", "status"}
    result = await driver.send("1", "+4915752982212", "x")
    assert result.outcome is SendOutcome.AMBIGUOUS and result.http_status == 202
    status = await driver.status("1", emu.sent[-1].id)
    assert status.poll_failed and status.state is DeliveryState.UNKNOWN
    emu.faults.garbage = False
    health = await driver.health()
    assert health.protocol_errors == 2 and health.consecutive_errors == 3
    emu.fail_next(1)
    await driver.send("1", "+4915752982212", "fails")
    await trio.sleep(0.2)
    assert "messages:failed=1" in (await driver.health()).detail


async def test_connection_refused_is_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = SmsGateDriver("gone", f"http://127.0.0.1:{port}", USER, PASSWORD, timeout=1.0)
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is SendOutcome.ERROR and "not sent" in result.detail
        assert not (await d.health()).reachable
        assert (await d.register_webhooks("http://x/y")).ok is False
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
    def handler(request):
        raise exc

    d = SmsGateDriver(
        "mock", "http://phone.invalid:8080", USER, PASSWORD, transport=httpx.MockTransport(handler)
    )
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is outcome
        assert_no_secret(result)
    finally:
        await d.aclose()
