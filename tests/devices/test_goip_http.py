"""GoIP HTTP driver: pure parsers on literal device answers, then the driver over real sockets
against the GoIP emulator (quirks and faults switched on and off mid-run)."""

from __future__ import annotations

import base64
import logging
import socket
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest
import trio

from bridge.devices.base import (
    Capability,
    DeliveryState,
    DeviceError,
    Driver,
    Redactor,
    SendOutcome,
    install_httpx_log_redaction,
)
from bridge.devices.goip_http.driver import (
    GoipHttpDriver,
    LineSlot,
    infer_received_at,
    judge_slot,
    parse_health_xml,
    parse_inbox_entry,
    parse_inbox_page,
    parse_send_answer,
    parse_send_status_xml,
)
from bridge.devices.goip_http.emulator import GoipEmulator

USER = "gw-user-7"
PASSWORD = "Pa55-w0rd!sekret"
WRONG_PASSWORD = "WrongPass-9x"
SECRETS = [
    PASSWORD,
    WRONG_PASSWORD,
    "Pa55-w0rd%21sekret",  # URL-encoded
    base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode(),
    f"u={USER}",
]


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


@pytest.fixture
async def emu(nursery):
    emulator = GoipEmulator(lines=4, username=USER, password=PASSWORD, send_duration=0.05, seed=7)
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


def make_driver(emulator: GoipEmulator, **kwargs) -> GoipHttpDriver:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("status_max_age", 0.0)
    password = kwargs.pop("password", PASSWORD)
    return GoipHttpDriver(
        "goip-test",
        f"http://127.0.0.1:{emulator.test_port}",
        USER,
        password,
        emulator.lines,
        **kwargs,
    )


@pytest.fixture
async def driver(emu):
    d = make_driver(emu)
    yield d
    await d.aclose()


async def wait_final(driver, channel, ref, limit=2.0):
    with trio.fail_after(limit):
        while True:
            result = await driver.status(channel, ref)
            assert_no_secret(result)
            if result.state is not DeliveryState.PENDING:
                return result
            await trio.sleep(0.02)


# ============================================================================================
# pure parsers


@pytest.mark.parametrize(
    "body, outcome, ref",
    [
        ("Sending,L1 Send SMS to:999999999; ID:00000e7c", SendOutcome.ACCEPTED, "00000e7c"),
        ("Sending,L1 Send SMS to:999; ID:6a52acc8", SendOutcome.ACCEPTED, "6a52acc8"),
        ("\nSending,L1 Send SMS to:999999999; ID:0000006d\n", SendOutcome.ACCEPTED, "0000006d"),
        ("ERROR,L1 busy", SendOutcome.BUSY, None),
        ("ERROR,L2 GSM logout", SendOutcome.CHANNEL_DOWN, None),
        ("ERROR,L10 GSM logout", SendOutcome.CHANNEL_DOWN, None),
        ("\r\nERROR,L1 busy\r\n", SendOutcome.BUSY, None),
        ("ERROR,user or password error", SendOutcome.AUTH_FAILED, None),
        ("ERROR,L1 something new", SendOutcome.ERROR, None),
        ("<html>\x00\xffwhat</html>", SendOutcome.AMBIGUOUS, None),
        ("", SendOutcome.AMBIGUOUS, None),
    ],
)
def test_parse_send_answer_literals(body, outcome, ref):
    result = parse_send_answer(
        200, body, line=1 if "L10" not in body and "L2" not in body else 2, text="hi"
    )
    assert result.outcome is outcome
    assert result.ref == ref
    assert result.http_status == 200
    assert "\x00" not in result.detail and "\n" not in result.detail


def test_parse_send_answer_http_500():
    rejected = parse_send_answer(500, "<html>500</html>", line=1, text="[alert] disk full")
    assert rejected.outcome is SendOutcome.REJECTED and "'['" in rejected.detail
    assert parse_send_answer(500, "", line=1, text="plain").outcome is SendOutcome.ERROR
    assert parse_send_answer(401, "", line=1, text="x").outcome is SendOutcome.AUTH_FAILED
    assert parse_send_answer(404, "nope", line=1, text="x").outcome is SendOutcome.ERROR


def test_parse_send_answer_truncates_garbage():
    result = parse_send_answer(200, "x" * 5000, line=1, text="hi")
    # An unreadable 200 answer: the device got the request, so whether it sent is unknown.
    assert result.outcome is SendOutcome.AMBIGUOUS
    assert len(result.detail) < 200


STATUS_XML = """<?xml version="1.0" encoding="utf-8"?>
<send-sms-status>
 <id1>00000e7c</id1><status1>DONE</status1><error1></error1>
 <id2></id2><status2></status2><error2></error2>
 <id3>00000E80</id3><status3>STARTED</status3><error3></error3>
 <id4>00000e81</id4><status4>DONE</status4><error4>2172</error4>
 <id10>0000abcd</id10><status10>DONE</status10><error10></error10>
</send-sms-status>
"""


def test_parse_send_status_xml_and_judge():
    slots = parse_send_status_xml("\n\n" + STATUS_XML + "\n")
    assert slots["1"] == LineSlot("00000e7c", "DONE", "")
    assert slots["10"].ref == "0000abcd"  # two-digit lines (reading only the last character of the tag would break)
    assert judge_slot("1", slots["1"], "00000e7c").state is DeliveryState.SENT
    assert judge_slot("1", slots["1"], "00000E7C").state is DeliveryState.SENT
    assert judge_slot("1", slots["1"], "00000e7b").state is DeliveryState.UNKNOWN
    assert judge_slot("2", slots["2"], "00000e7f").state is DeliveryState.UNKNOWN
    assert judge_slot("3", slots["3"], "00000e80").state is DeliveryState.PENDING
    failed = judge_slot("4", slots["4"], "e81")
    assert failed.state is DeliveryState.FAILED and failed.error_code == "2172"
    assert judge_slot("9", None, "1").state is DeliveryState.UNKNOWN


@pytest.mark.parametrize(
    "body",
    [
        "<?xml version='1.0'?><send-sms-status><id1>0000<status1>DONE</id1>",
        "ERROR,user or password error",
        "",
        "<html><body>login</body></html>",
    ],
)
def test_parse_send_status_xml_rejects_garbage(body):
    with pytest.raises(ValueError):
        parse_send_status_xml(body)


INBOX_PAGE = """<html><script>
var sms, pos;
sms= ["07-12 10:11:12,+491701234567,Body, may contain commas","","07-13 08:00:00,+491709999999,second"];
pos=3;
sms_row_insert(l1_sms_store, sms, pos, 1);
sms= ["","",""];
pos=0;
sms_row_insert(l2_sms_store, sms, pos, 2);
sms=["12-31 23:59:59,INFO,Frohes neues Jahr! Gr\u00c3\u00bc\u00c3\u009fe"];pos=1;sms_row_insert(l3_sms_store, sms, pos, 3);
</script></html>"""


def test_parse_inbox_page_reference_format():
    now = datetime(2025, 1, 1, 0, 5, tzinfo=timezone.utc)
    items = parse_inbox_page(INBOX_PAGE, now=now)
    assert [(i.channel, i.slot) for i in items] == [("1", 0), ("1", 2), ("3", 0)]
    first, second, third = items
    assert first.sender == "+491701234567"
    assert first.text == "Body, may contain commas"
    assert first.received_at == datetime(2024, 7, 12, 10, 11, 12, tzinfo=timezone.utc)
    assert first.raw == "07-12 10:11:12,+491701234567,Body, may contain commas"
    assert first.concat_ref is None and first.concat_total is None and first.concat_seq is None
    assert first.device_key.startswith("1|07-12 10:11:12|+491701234567|")
    digest, slot = first.device_key.rsplit("|", 1)[1].split("#")
    assert len(digest) == 12 and slot == "0"
    assert third.text == "Frohes neues Jahr! Grüße"  # latin-1 mojibake repaired
    assert third.received_at == datetime(2024, 12, 31, 23, 59, 59, tzinfo=timezone.utc)
    # Stable keys: parsing again later gives the same keys.
    later = parse_inbox_page(INBOX_PAGE, now=datetime(2025, 3, 1, tzinfo=timezone.utc))
    assert [i.device_key for i in later] == [i.device_key for i in items]


def test_identical_sms_in_the_same_second_are_two_entries():
    """Two identical SMS from one sender on one line within a second: the stamp cannot tell them
    apart, their slots do. Before, both had one key and the second was dropped as a duplicate."""
    same = "07-12 10:11:12,+491701234567,Ja"
    page = f'sms= ["{same}","{same}","07-12 10:11:12,+491701234567,Nein"];pos=3;sms_row_insert(l1_sms_store, sms, pos, 1);'
    items = parse_inbox_page(page, now=datetime(2025, 8, 1, tzinfo=timezone.utc))
    assert len({i.device_key for i in items}) == 3
    again = parse_inbox_page(page, now=datetime(2025, 8, 2, tzinfo=timezone.utc))
    assert [i.device_key for i in again] == [i.device_key for i in items]


def test_parse_inbox_page_tolerates_unescaped_quotes_and_rejects_non_inbox():
    page = 'sms= ["07-12 10:11:12,+4917,he said "hi" ok",""];\npos=1;\nsms_row_insert(l1_sms_store, sms, pos, 1);'
    items = parse_inbox_page(page, now=datetime(2025, 8, 1, tzinfo=timezone.utc))
    assert [(i.slot, i.sender, i.text) for i in items] == [(0, "+4917", 'he said "hi" ok')]
    page = 'sms= ["07-12 10:11:12,+4917,a \\"b\\" "c"","","07-12 10:11:13,+4918,d"];pos=1;sms_row_insert(l1_sms_store, sms, pos, 1);'
    items = parse_inbox_page(page, now=datetime(2025, 8, 1, tzinfo=timezone.utc))
    assert [(i.slot, i.text) for i in items] == [(0, 'a "b" "c"'), (2, "d")]
    with pytest.raises(ValueError):
        parse_inbox_page("<html>login please</html>", now=datetime.now(timezone.utc))


def test_parse_inbox_entry():
    assert parse_inbox_entry("") is None
    assert parse_inbox_entry("garbage") is None
    assert parse_inbox_entry("01-02 03:04:05,+1,a,b,c") == ("01-02 03:04:05", "+1", "a,b,c")
    assert parse_inbox_entry("01-02 03:04:05,+1,") == ("01-02 03:04:05", "+1", "")


def test_mojibake_repair_keeps_real_latin1():
    page = 'sms= ["01-02 03:04:05,+1,Gr\u00fc\u00dfe","01-02 03:04:06,+1,caf\u00c3\u00a9"];pos=2;sms_row_insert(l1_sms_store, sms, pos, 1);'
    items = parse_inbox_page(page, now=datetime(2025, 1, 3, tzinfo=timezone.utc))
    assert [i.text for i in items] == ["Grüße", "café"]


def test_infer_year_across_new_year():
    utc = timezone.utc
    new_year = datetime(2025, 1, 1, 0, 10, tzinfo=utc)
    assert infer_received_at("12-31 23:59:00", new_year) == datetime(
        2024, 12, 31, 23, 59, tzinfo=utc
    )
    assert infer_received_at("01-01 00:05:00", new_year) == datetime(2025, 1, 1, 0, 5, tzinfo=utc)
    # A device clock a few hours ahead is still this year.
    assert infer_received_at("01-01 10:00:00", new_year).year == 2025
    # 29 February goes back to the last leap year.
    assert infer_received_at("02-29 12:00:00", datetime(2025, 3, 1, tzinfo=utc)).year == 2024
    assert infer_received_at("02-29 12:00:00", datetime(2028, 3, 1, tzinfo=utc)).year == 2028
    with pytest.raises(ValueError):
        infer_received_at("13-45 99:00:00", new_year)


def test_infer_year_uses_device_zone():
    berlin = ZoneInfo("Europe/Berlin")
    now = datetime(2024, 12, 31, 23, 30, tzinfo=timezone.utc)  # 00:30 on 1 January in Berlin
    got = infer_received_at("01-01 00:20:00", now, berlin)
    assert got == datetime(2024, 12, 31, 23, 20, tzinfo=timezone.utc)
    assert got.tzinfo is timezone.utc


def test_parse_health_xml():
    body = """<?xml version="1.0" encoding="utf-8"?><status>
    <l1_gsm_sim>Y</l1_gsm_sim><l1_gsm_status>Y</l1_gsm_status><l1_gsm_signal>23</l1_gsm_signal>
    <l1_gsm_cur_oper>Vodafone.de</l1_gsm_cur_oper>
    <l2_gsm_status>N</l2_gsm_status><l2_gsm_signal></l2_gsm_signal><l2_gsm_cur_oper></l2_gsm_cur_oper>
    </status>"""
    health = parse_health_xml(body, 3)
    assert health["1"].registered is True and health["1"].signal == 23
    assert health["1"].operator == "Vodafone.de"
    assert (
        health["2"].registered is False
        and health["2"].signal is None
        and health["2"].operator is None
    )
    assert health["3"].registered is None
    with pytest.raises(ValueError):
        parse_health_xml("<status><l1_gsm_status>", 1)


def test_redactor_and_httpx_filter():
    redact = Redactor([PASSWORD], basic_auth=[(USER, PASSWORD)])
    text = f"GET /x?u={USER}&p=Pa55-w0rd%21sekret failed; body said {PASSWORD}"
    cleaned = redact(text)
    assert_no_secret(cleaned)
    assert "u=***" in cleaned and "p=***" in cleaned
    install_httpx_log_redaction()
    install_httpx_log_redaction()  # idempotent
    ours = [f for f in logging.getLogger("httpx").filters if "Redaction" in type(f).__name__]
    assert len(ours) == 1
    record = logging.LogRecord(
        "httpx",
        logging.INFO,
        __file__,
        1,
        "HTTP Request: %s %s",
        ("GET", f"http://h/s?u={USER}&p=x1&l=1"),
        None,
    )
    ours[0].filter(record)
    assert record.getMessage() == "HTTP Request: GET http://h/s?u=***&p=***&l=1"


# ============================================================================================
# driver protocol surface


async def test_driver_protocol_and_config_errors(driver):
    assert isinstance(driver, Driver)
    assert driver.kind == "goip_http"
    assert driver.channels == ("1", "2", "3", "4")
    assert Capability.DELETE_INBOX in driver.capabilities
    with pytest.raises(DeviceError):
        await driver.send("5", "+1", "x")
    with pytest.raises(DeviceError):
        await driver.status("0", "00000001")
    with pytest.raises(DeviceError):
        GoipHttpDriver("bad", f"http://{USER}:{PASSWORD}@10.0.0.1", USER, PASSWORD, 4)
    with pytest.raises(DeviceError):
        GoipHttpDriver("bad", "ftp://10.0.0.1", USER, PASSWORD, 4)
    other = GoipHttpDriver("closed", "http://127.0.0.1:9", USER, PASSWORD, 1)
    await other.aclose()
    with pytest.raises(DeviceError):
        await other.send("1", "+1", "x")


# ============================================================================================
# driver against the emulator


async def test_send_accepted_and_recorded(emu, driver):
    text = "Hällo wörld + & = ? % ünïcødé 😀"
    result = await driver.send("2", "+49 170 1234567", text)
    assert_no_secret(result)
    assert result.outcome is SendOutcome.ACCEPTED and result.accepted
    assert result.http_status == 200
    assert len(result.ref) == 8 and int(result.ref, 16) >= 0
    assert len(emu.sent) == 1
    sent = emu.sent[0]
    assert (sent.line, sent.destination, sent.text, sent.id) == (
        2,
        "+49 170 1234567",
        text,
        result.ref,
    )


async def test_busy_while_in_flight_then_free(emu, driver):
    emu.send_duration = 0.3
    first = await driver.send("1", "+1", "one")
    assert first.outcome is SendOutcome.ACCEPTED
    busy = await driver.send("1", "+1", "two")
    assert busy.outcome is SendOutcome.BUSY and "busy" in busy.detail
    other_line = await driver.send("2", "+1", "three")  # other lines are independent
    assert other_line.outcome is SendOutcome.ACCEPTED
    assert (await driver.status("1", first.ref)).state is DeliveryState.PENDING
    assert (await wait_final(driver, "1", first.ref)).state is DeliveryState.SENT
    assert (await driver.send("1", "+1", "two again")).outcome is SendOutcome.ACCEPTED
    assert [s.text for s in emu.sent] == ["one", "three", "two again"]


async def test_status_started_then_done(emu, driver):
    result = await driver.send("3", "+1", "hello")
    pending = await driver.status("3", result.ref)
    assert pending.state is DeliveryState.PENDING and "STARTED" in pending.detail
    final = await wait_final(driver, "3", result.ref)
    assert final.state is DeliveryState.SENT and final.error_code is None and not final.poll_failed


async def test_slot_overwritten_is_unknown(emu, driver):
    old = await driver.send("1", "+1", "old")
    await wait_final(driver, "1", old.ref)
    new = await driver.send("1", "+1", "new")
    assert new.ref != old.ref
    gone = await driver.status("1", old.ref)
    assert gone.state is DeliveryState.UNKNOWN and not gone.poll_failed
    assert "overwritten" in gone.detail
    assert (await wait_final(driver, "1", new.ref)).state is DeliveryState.SENT


async def test_error_code_2172_is_failed(emu, driver):
    emu.fail_next(3, count=1, code="2172")
    failing = await driver.send("3", "+1", "will fail")
    result = await wait_final(driver, "3", failing.ref)
    assert result.state is DeliveryState.FAILED and result.error_code == "2172"
    assert emu.sent[-1].error == "2172"
    ok = await driver.send("3", "+1", "will pass")
    assert (await wait_final(driver, "3", ok.ref)).state is DeliveryState.SENT
    # A permanent line error switched on mid-run, then off.
    emu.set_line_error(3, "500")
    bad = await driver.send("3", "+1", "x")
    assert (await wait_final(driver, "3", bad.ref)).error_code == "500"
    emu.set_line_error(3, None)
    good = await driver.send("3", "+1", "y")
    assert (await wait_final(driver, "3", good.ref)).state is DeliveryState.SENT


async def test_gsm_logout_spell_then_recovery(emu, driver):
    emu.logout(2, 0.25)
    down = await driver.send("2", "+1", "x")
    assert down.outcome is SendOutcome.CHANNEL_DOWN and "logout" in down.detail
    health = await driver.health()
    assert health.reachable and health.channels["2"].registered is False
    assert health.channels["1"].registered is True and health.channels["1"].signal == 25
    assert "2" in health.detail
    await trio.sleep(0.3)
    assert (await driver.send("2", "+1", "x")).outcome is SendOutcome.ACCEPTED
    assert (await driver.health()).channels["2"].registered is True
    assert [s.line for s in emu.sent] == [2]


async def test_wrong_password_is_auth_failed_everywhere(emu):
    bad = make_driver(emu, password=WRONG_PASSWORD)
    try:
        result = await bad.send("1", "+1", "x")
        assert result.outcome is SendOutcome.AUTH_FAILED
        assert_no_secret(result)
        status = await bad.status("1", "00000001")
        assert status.state is DeliveryState.UNKNOWN and status.poll_failed
        assert await bad.inbox() == []
        health = await bad.health()
        assert health.reachable and health.auth_failed and not health.ok
        assert health.consecutive_errors >= 1
        assert_no_secret(health)
        assert emu.sent == []
    finally:
        await bad.aclose()


async def test_http_500_for_bracket_text(emu, driver):
    result = await driver.send("1", "+1", "[ALERT] pump 3 stopped")
    assert result.outcome is SendOutcome.REJECTED and result.http_status == 500
    assert "'['" in result.detail
    assert emu.sent == []
    emu.faults.http500_on_bracket = False  # other firmware
    assert (await driver.send("1", "+1", "[ALERT] again")).outcome is SendOutcome.ACCEPTED


async def test_hang_is_ambiguous_within_timeout(emu):
    d = make_driver(emu, timeout=0.3)
    try:
        emu.faults.hang = True  # the device takes the SMS but the answer never comes
        started = time.monotonic()
        result = await d.send("1", "+1", "lost answer")
        elapsed = time.monotonic() - started
        assert result.outcome is SendOutcome.AMBIGUOUS and result.ref is None
        assert 0.25 < elapsed < 1.5
        assert_no_secret(result)
        assert [s.text for s in emu.sent] == ["lost answer"]  # it really went out
        emu.faults.hang_after_processing = False
        await trio.sleep(0.06)
        assert (await d.send("1", "+1", "lost request")).outcome is SendOutcome.AMBIGUOUS
        assert len(emu.sent) == 1
        status = await d.status("1", "00000001")
        assert status.poll_failed and status.state is DeliveryState.UNKNOWN
        assert (await d.health()).reachable is False
        emu.faults.hang = False
        assert (await d.send("1", "+1", "back")).outcome is SendOutcome.ACCEPTED
        assert (await d.health()).reachable
    finally:
        await d.aclose()


async def test_deadline_while_waiting_for_a_pooled_connection_is_error(emu):
    # Two drivers share one single-connection pool: the first holds the connection with a hung
    # send; the second times out waiting for the pool - its request never left.
    transport = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=1))
    holder = make_driver(emu, timeout=1.0, transport=transport)
    waiter = make_driver(emu, timeout=0.2, transport=transport)
    emu.faults.hang = True
    results = {}

    async def run(name, d, channel):
        results[name] = await d.send(channel, "+1", name)

    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "holder", holder, "1")
            await trio.sleep(0.05)
            nursery.start_soon(run, "waiter", waiter, "2")
    finally:
        await waiter.aclose()
        await holder.aclose()
    assert results["holder"].outcome is SendOutcome.AMBIGUOUS
    assert results["waiter"].outcome is SendOutcome.ERROR
    assert [s.text for s in emu.sent] == ["holder"]


async def test_slow_answer_within_timeout_is_fine(emu, driver):
    emu.faults.delay = 0.15
    emu.faults.endpoints = {"send"}
    result = await driver.send("1", "+1", "slow")
    assert result.outcome is SendOutcome.ACCEPTED


async def test_connection_refused_is_error_not_ambiguous():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = GoipHttpDriver("gone", f"http://127.0.0.1:{port}", USER, PASSWORD, 2, timeout=1.0)
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is SendOutcome.ERROR and "not sent" in result.detail
        assert_no_secret(result)
        health = await d.health()
        assert not health.reachable and health.consecutive_errors == 1
        assert await d.inbox() == []
        assert (await d.health()).consecutive_errors == 2
    finally:
        await d.aclose()


async def test_garbage_body_is_ambiguous_and_counted(emu, driver):
    emu.faults.garbage = True
    result = await driver.send("1", "+1", "x")
    assert result.outcome is SendOutcome.AMBIGUOUS and "unrecognised" in result.detail
    assert "\x00" not in result.detail
    assert await driver.inbox() == []
    emu.faults.garbage = False
    health = await driver.health()
    assert health.protocol_errors == 2 and health.consecutive_errors == 2
    assert "2 failed call(s) in a row" in health.detail and health.ok


async def test_raw_non_http_garbage_after_request_is_ambiguous(emu, driver):
    emu.faults.raw_garbage = True
    emu.faults.hang_after_processing = False
    result = await driver.send("1", "+1", "x")
    assert result.outcome is SendOutcome.AMBIGUOUS
    emu.faults.raw_garbage = False
    assert (await driver.send("1", "+1", "y")).outcome is SendOutcome.ACCEPTED


async def test_malformed_status_xml_is_unknown_and_counted(emu, driver):
    sent = await driver.send("1", "+1", "x")
    emu.faults.malformed_status_xml = True
    result = await driver.status("1", sent.ref)
    assert result.state is DeliveryState.UNKNOWN and result.poll_failed
    assert result.detail == "malformed status XML"
    emu.faults.malformed_status_xml = False
    assert (await wait_final(driver, "1", sent.ref)).state is DeliveryState.SENT
    assert (await driver.health()).protocol_errors == 1


@pytest.mark.parametrize(
    "faults",
    [
        {"bare_lf": True},
        {"bare_lf": True, "drip": 1},  # every byte its own TCP write: LF LF split across reads
        {"bare_lf": False},
        {"bare_lf": True, "keep_alive": False},  # HTTP/1.0 style: no Content-Length, close
        {"bare_lf": True, "wrap_newlines": True},
    ],
)
async def test_wire_variants(emu, driver, faults):
    for key, value in faults.items():
        setattr(emu.faults, key, value)
    emu.inject_sms(1, "+4917", "hi, there")
    result = await driver.send("1", "+1", "x")
    assert result.outcome is SendOutcome.ACCEPTED
    assert (await wait_final(driver, "1", result.ref)).state is DeliveryState.SENT
    assert [i.text for i in await driver.inbox()] == ["hi, there"]
    assert (await driver.health()).reachable


async def test_bare_lf_really_on_the_wire(emu):
    stream = await trio.open_tcp_stream("127.0.0.1", emu.test_port)
    async with stream:
        await stream.send_all(
            f"GET /default/en_US/send.html?u={USER}&p=nope HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        )
        data = b""
        with trio.fail_after(2):
            while b"\n\n" not in data:
                data += await stream.receive_some(4096)
    assert data.startswith(b"HTTP/1.1 200 OK\n") and b"\r" not in data
    assert data.endswith(b"ERROR,user or password error")


async def test_keep_alive_connection_reuse(emu, driver):
    for i in range(3):
        sent = await driver.send(str(i + 1), "+1", f"m{i}")
        await driver.status(str(i + 1), sent.ref)
    await driver.inbox()
    await driver.health()
    assert emu.server.stats.requests == 8
    assert emu.connections_opened == 1


async def test_status_polls_coalesce_but_never_predate_a_send(nursery):
    # The GoIP's own time stands still unless the test moves it: a send stays PENDING however
    # slowly this machine runs (it ran out under load with a real 50 ms send).
    gsm_now = [0.0]
    emu = GoipEmulator(lines=4, username=USER, password=PASSWORD, send_duration=0.05, seed=7,
                       clock=lambda: gsm_now[0])
    emu.test_port = await nursery.start(emu.serve)
    d = make_driver(emu, status_max_age=5.0)
    try:
        refs = {}
        for ch in d.channels:
            refs[ch] = (await d.send(ch, "+1", "x")).ref
        before = emu.server.stats.requests
        async with trio.open_nursery() as nursery:
            for ch, ref in refs.items():
                nursery.start_soon(d.status, ch, ref)
        assert emu.server.stats.requests == before + 1  # 4 concurrent polls, 1 request
        assert all(r.state is DeliveryState.PENDING for r in (await d.status_many(refs)).values())
        assert emu.server.stats.requests == before + 1  # served from the fresh snapshot
        gsm_now[0] += 0.08  # the first sends are done at the GoIP; line 2 takes another
        # A send on line 2 makes the cached snapshot too old for line 2 (not for line 1).
        new_ref = (await d.send("2", "+1", "y")).ref
        assert (await d.status("1", refs["1"])).state is DeliveryState.PENDING  # cached, 5 s
        result = await d.status("2", new_ref)
        assert result.state is DeliveryState.PENDING  # fresh poll shows the new id
        slots = await d.status_all(max_age=0)
        assert set(slots) >= {"1", "2", "3", "4", "8"}  # GoIP lists at least 8 slots
        assert slots["2"].ref == new_ref
    finally:
        await d.aclose()


async def test_inbox_commas_empty_slots_mojibake_and_delete(emu, driver):
    when = datetime(2025, 6, 15, 18, 15, 47, tzinfo=timezone.utc)
    emu.inject_sms(1, "+491701234567", "some message, with, commas", when)
    emu.inject_sms(1, "+491709999999", "Grüße aus Köln 😀", when.replace(second=50), mojibake=True)
    emu.inject_sms(3, "INFO", 'quote " and \\ backslash', when.replace(minute=20))
    items = await driver.inbox()
    assert [(i.channel, i.slot, i.sender, i.text) for i in items] == [
        ("1", 0, "+491701234567", "some message, with, commas"),
        ("1", 1, "+491709999999", "Grüße aus Köln 😀"),
        ("3", 0, "INFO", 'quote " and \\ backslash'),
    ]
    assert items[0].received_at.tzinfo is not None
    assert items[0].received_at.replace(year=2025) == when
    keys = [i.device_key for i in items]
    assert len(set(keys)) == 3
    assert [i.device_key for i in await driver.inbox()] == keys  # stable between polls

    # The slot of item 0 gets overwritten before we delete (ring moved on): it must survive.
    for k in range(emu.inbox_slots):
        emu.inject_sms(1, "+4900", f"filler {k}", when.replace(hour=19, second=k))
    await driver.delete_inbox(items)
    assert emu.deleted == [(3, 0)]
    remaining = await driver.inbox()
    assert all(i.channel == "1" for i in remaining) and len(remaining) == emu.inbox_slots


async def test_inbox_delete_highest_position_first(emu, driver):
    for k in range(3):
        emu.inject_sms(2, "+1", f"m{k}")
    items = await driver.inbox()
    await driver.delete_inbox(items)
    assert emu.deleted == [(2, 2), (2, 1), (2, 0)]
    assert await driver.inbox() == []


# ============================================================================================
# failure classification with httpx.MockTransport (no emulator needed)


def mock_driver(handler) -> GoipHttpDriver:
    return GoipHttpDriver(
        "mock",
        "http://goip.invalid",
        USER,
        PASSWORD,
        2,
        timeout=1.0,
        transport=httpx.MockTransport(handler),
    )


@pytest.mark.parametrize(
    "exc, outcome",
    [
        (httpx.ConnectError("refused"), SendOutcome.ERROR),
        (httpx.ConnectTimeout("slow connect"), SendOutcome.ERROR),
        (httpx.PoolTimeout("pool"), SendOutcome.ERROR),
        (httpx.ReadTimeout("slow read"), SendOutcome.AMBIGUOUS),
        (
            httpx.RemoteProtocolError("Server disconnected without sending a response."),
            SendOutcome.AMBIGUOUS,
        ),
        (httpx.ReadError(f"boom p={PASSWORD}"), SendOutcome.AMBIGUOUS),
    ],
)
async def test_transport_failure_classification(exc, outcome):
    def handler(request):
        raise exc

    d = mock_driver(handler)
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is outcome
        assert_no_secret(result)
    finally:
        await d.aclose()


async def test_http_500_without_bracket_is_error():
    d = mock_driver(lambda request: httpx.Response(500, text="oops"))
    try:
        result = await d.send("1", "+1", "no bracket")
        assert result.outcome is SendOutcome.ERROR and result.http_status == 500
    finally:
        await d.aclose()


async def test_answer_echoing_credentials_is_redacted():
    def handler(request):
        return httpx.Response(200, text=f"Bad request {request.url} password {PASSWORD}")

    d = mock_driver(handler)
    try:
        result = await d.send("1", "+1", "x")
        assert result.outcome is SendOutcome.AMBIGUOUS
        assert_no_secret(result)
        assert "***" in result.detail
    finally:
        await d.aclose()


async def test_query_encoding_uses_percent_20():
    seen = []

    def handler(request):
        seen.append(request.url.raw_path.decode())
        return httpx.Response(200, text="Sending,L1 Send SMS to:+1; ID:00000001")

    d = mock_driver(handler)
    try:
        await d.send("1", "+1 2", "a b+c&d=é")
    finally:
        await d.aclose()
    assert seen[0].endswith("&l=1&n=%2B1%202&m=a%20b%2Bc%26d%3D%C3%A9")


async def test_a_keep_alive_connection_the_device_closed_is_not_the_device_down(emu, driver):
    """The GoIP drops idle keep-alive connections; when its close crosses our next request on
    the pooled connection, that request finds the connection gone (emulator fault
    ``idle_close``). A status poll (a read) is asked again once on a fresh connection; a send
    is never sent again blind: it may have reached the device."""
    first = await driver.send("1", "+1", "before")
    assert first.outcome is SendOutcome.ACCEPTED
    emu.faults.idle_close = 0.0  # every request on an already used connection is dropped
    status = await driver.status("1", first.ref)
    assert status.state is not DeliveryState.UNKNOWN, status
    health = await driver.health()
    assert health.reachable and health.consecutive_errors == 0, health
    assert await driver.inbox() == []
    # A send on a reused connection: the device may have seen it; not resent, AMBIGUOUS.
    sent_before = len(emu.sent)
    await driver.status("1", first.ref)  # leaves a used connection in the pool
    again = await driver.send("2", "+2", "after")
    assert again.outcome is SendOutcome.AMBIGUOUS, again
    assert len(emu.sent) == sent_before  # the emulator dropped it unprocessed, and no resend came
