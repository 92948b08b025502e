"""LTE router ("send SMS via URL") driver: pure parsers on literal router answers, then the
driver over real sockets against the router emulator (faults switched on and off mid-run)."""

from __future__ import annotations

import logging
import socket
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import httpx
import pytest

from bridge.devices.base import (
    Capability,
    DeliveryState,
    DeviceError,
    Driver,
    InboundSms,
    SendOutcome,
)
from bridge.devices.router.driver import (
    PART_MISSING,
    RouterDriver,
    RouterSms,
    encode_text,
    parse_router_date,
    parse_send_answer,
    parse_sms_list,
    parse_sms_total,
    router_device_key,
)
from bridge.devices.router.emulator import RouterEmulator

USER = "smsgw-user-3"
PASSWORD = "R0uter&pa55%n!"
WRONG_PASSWORD = "Wr0ng-R0uter-pw"
SECRETS = [
    USER,
    PASSWORD,
    WRONG_PASSWORD,
    "R0uter%26pa55%25n%21",  # URL-encoded
    "R0uter%26pa55",
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
    emulator = RouterEmulator(USER, PASSWORD, send_duration=0.01)
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


def make_driver(emulator: RouterEmulator, **kwargs) -> RouterDriver:
    kwargs.setdefault("timeout", 2.0)
    kwargs.setdefault("part_missing_grace", 0.0)
    password = kwargs.pop("password", PASSWORD)
    return RouterDriver(
        "rut-test", f"http://127.0.0.1:{emulator.test_port}", USER, password, **kwargs
    )


@pytest.fixture
async def driver(emu):
    d = make_driver(emu)
    yield d
    await d.aclose()


# ============================================================================================
# pure functions


def test_encode_text_line_breaks_and_percent():
    assert encode_text("Line one\nLine two") == "Line%20one%nLine%20two"  # the manual's example
    assert encode_text("a\r\nb\n\nc") == "a%nb%n%nc"
    assert encode_text("100% sure & +1 = ü") == "100%25%20sure%20%26%20%2B1%20%3D%20%C3%BC"
    assert encode_text("") == ""


@pytest.mark.parametrize(
    "status, body, outcome",
    [
        (200, "OK", SendOutcome.ACCEPTED),
        (200, "OK\n", SendOutcome.ACCEPTED),
        (200, "\r\nOK\r\n", SendOutcome.ACCEPTED),
        (200, "ERROR\n", SendOutcome.ERROR),
        (200, "TIMEOUT\n", SendOutcome.AMBIGUOUS),
        (200, "WRONG_NUMBER\n", SendOutcome.REJECTED),
        (200, "Disabled\n", SendOutcome.AUTH_FAILED),
        (200, "Bad username or password\n", SendOutcome.AUTH_FAILED),
        (401, "Bad username or password\n", SendOutcome.AUTH_FAILED),
        (403, "", SendOutcome.AUTH_FAILED),
        (404, "<html>Not Found</html>", SendOutcome.ERROR),
        (500, "CGI crashed", SendOutcome.ERROR),
        (504, "Gateway Timeout", SendOutcome.AMBIGUOUS),
        (200, "<html>\x00\xffwhat</html>", SendOutcome.AMBIGUOUS),
        (200, "", SendOutcome.AMBIGUOUS),
    ],
)
def test_parse_send_answer_literals(status, body, outcome):
    result = parse_send_answer(status, body)
    assert result.outcome is outcome
    assert result.ref is None
    assert result.http_status == status
    assert "\x00" not in result.detail and "\n" not in result.detail


def test_send_answer_details_tell_ops_what_to_do():
    disabled = parse_send_answer(200, "Disabled\n")
    assert "Services > SMS > SMS Gateway" in disabled.detail and "enable" in disabled.detail
    refused = parse_send_answer(401, "")
    assert "not the WebUI admin credentials" in refused.detail
    assert "may or may not" in parse_send_answer(200, "TIMEOUT").detail


SMS_LIST = (
    "Index: 4\n"
    "Date: Sat Oct 26 19:04:11 2024\n"
    "Sender: +491775280961\n"
    "Text: Test \n"
    "Status: read\n"
    "------------------------------\n"
    "Index: 5\n"
    "Date: Wed Dec 28 17:18:32 2022\n"
    "Sender: Tarifinfo\n"
    "Text:  <part_missing>  <part_missing> res Kontingents befinden\n"
    "Status: read\n"
    "------------------------------\n"
    "Index: 7\n"
    "Date: Sun Oct 27 08:00:00 2024\n"
    "Sender: +4917\n"
    "Text: first line\n"
    "Status: in the text\n"
    "------------------------------\n"
    "last line \n"
    "Status: unread\n"
    "------------------------------\n"
)


def test_parse_sms_list_reference_format():
    records, bad = parse_sms_list(SMS_LIST)
    assert bad == 0
    assert [r.index for r in records] == [4, 5, 7]
    first, partial, multi = records
    assert first == RouterSms(
        index=4,
        date="Sat Oct 26 19:04:11 2024",
        sender="+491775280961",
        text="Test ",  # the trailing space is the SMS's own
        status="read",
        raw="Index: 4\nDate: Sat Oct 26 19:04:11 2024\nSender: +491775280961\nText: Test \nStatus: read",
    )
    assert not first.incomplete
    assert partial.incomplete and partial.text.count(PART_MISSING) == 2
    assert partial.text == " <part_missing>  <part_missing> res Kontingents befinden"
    # A multi-line text keeps its lines, even one that looks like a field or a separator.
    assert multi.text == (
        "first line\nStatus: in the text\n------------------------------\nlast line "
    )
    assert multi.status == "unread"


@pytest.mark.parametrize("body", ["", "\n", "NO MESSAGES\n", "NO MESSAGES", b"NO MESSAGE"])
def test_parse_sms_list_empty(body):
    assert parse_sms_list(body) == ([], 0)


def test_parse_sms_list_crlf_no_final_separator_and_bad_records():
    body = (
        "Index: 1\r\nDate: Mon Jan 06 10:00:00 2025\r\nSender: A\r\nText: x\r\nStatus: read\r\n"
        "------------------------------\r\n"
        "Index: two\r\nDate: ?\r\nSender: B\r\nText: y\r\nStatus: read\r\n"
        "------------------------------\r\n"
        "Index: 3\r\nDate: Mon Jan 06 10:00:01 2025\r\nSender: C\r\nText: z\r\nStatus: read\r\n"
    )
    records, bad = parse_sms_list(body)
    assert [(r.index, r.sender, r.text) for r in records] == [(1, "A", "x"), (3, "C", "z")]
    assert bad == 1


@pytest.mark.parametrize(
    "body",
    ["<html><body>Login</body></html>", "\x00\xff garbage", "Index: 1\nwhat is this\n"],
)
def test_parse_sms_list_rejects_non_listings(body):
    with pytest.raises(ValueError):
        parse_sms_list(body)


def test_parse_router_date():
    utc = timezone.utc
    assert parse_router_date("Sat Oct 26 19:04:11 2024") == datetime(
        2024, 10, 26, 19, 4, 11, tzinfo=utc
    )
    assert parse_router_date("Sun Oct  6 01:02:03 2024").day == 6  # ctime-style padding
    berlin = parse_router_date("Sat Oct 26 19:04:11 2024", ZoneInfo("Europe/Berlin"))
    assert berlin == datetime(2024, 10, 26, 17, 4, 11, tzinfo=utc) and berlin.tzinfo is utc
    for bad in ("", "yesterday", "Sat Foo 26 19:04:11 2024", "Sat Oct 26 25:04:11 2024"):
        with pytest.raises(ValueError):
            parse_router_date(bad)


def test_device_key_is_stable_and_ignores_the_index():
    a = RouterSms(4, "Sat Oct 26 19:04:11 2024", "+49", "Test ", "read", "raw")
    reused = RouterSms(0, "Sat Oct 26 19:04:11 2024", "+49", "Test ", "unread", "other raw")
    other_text = RouterSms(4, "Sat Oct 26 19:04:11 2024", "+49", "Test", "read", "raw")
    assert router_device_key("1", a) == router_device_key("1", reused)
    assert router_device_key("1", a) != router_device_key("1", other_text)
    assert router_device_key("1", a).startswith("1|Sat Oct 26 19:04:11 2024|+49|")


def test_parse_sms_total():
    assert parse_sms_total("Used: 3\nTotal: 30\n") == (3, 30)
    assert parse_sms_total("Total: 7\n") == (7, None)
    assert parse_sms_total("12") == (12, None)
    assert parse_sms_total("NO MESSAGES") == (0, None)
    with pytest.raises(ValueError):
        parse_sms_total("<html>")


# ============================================================================================
# driver protocol surface


async def test_driver_protocol_and_config_errors(driver):
    assert isinstance(driver, Driver)
    assert driver.kind == "router" and driver.channels == ("1",)
    assert driver.capabilities == frozenset({Capability.INBOX, Capability.DELETE_INBOX})
    assert Capability.DELIVERY_REPORTS not in driver.capabilities
    assert await driver.last_ref("1") is None  # no message ids on this device
    with pytest.raises(DeviceError):
        await driver.send("2", "+1", "x")
    with pytest.raises(DeviceError):
        await driver.status("0", None)
    with pytest.raises(DeviceError):
        RouterDriver("bad", "http://10.0.0.1", USER, PASSWORD, method="put")
    with pytest.raises(DeviceError):
        RouterDriver("bad", f"http://{USER}:{PASSWORD}@10.0.0.1", USER, PASSWORD)
    with pytest.raises(DeviceError):
        RouterDriver("bad", "http://10.0.0.1", USER, PASSWORD, verify_tls="/no/such/ca.pem")
    closed = RouterDriver("closed", "http://127.0.0.1:9", USER, PASSWORD)
    await closed.aclose()
    with pytest.raises(DeviceError):
        await closed.send("1", "+1", "x")


# ============================================================================================
# driver against the emulator


async def test_send_post_keeps_credentials_out_of_the_url(emu, driver):
    text = "Hällo wörld + & = ? ünïcødé 😀"
    result = await driver.send("1", "+37060000001", text)
    assert_no_secret(result)
    assert result.outcome is SendOutcome.ACCEPTED and result.ref is None
    assert [(s.number, s.text, s.method) for s in emu.sent] == [("+37060000001", text, "POST")]
    request = emu.requests[-1]
    assert request.method == "POST" and request.target == "/cgi-bin/sms_send"
    status = await driver.status("1", None)
    assert status.state is DeliveryState.SENT and not status.poll_failed
    assert (await driver.status_many({"1": None}))["1"].state is DeliveryState.SENT


async def test_send_get_puts_parameters_in_the_query(emu):
    d = make_driver(emu, method="get")
    try:
        result = await d.send("1", "0037060000001", "Line one\nLine two")
        assert result.outcome is SendOutcome.ACCEPTED
        assert_no_secret(result)
    finally:
        await d.aclose()
    request = emu.requests[-1]
    assert request.method == "GET"
    assert request.target.startswith("/cgi-bin/sms_send?username=")
    assert "&text=Line%20one%nLine%20two" in request.target  # raw %n, as in the manual's example
    assert emu.sent[-1].text == "Line one\nLine two" and emu.sent[-1].method == "GET"


@pytest.mark.parametrize("method", ["post", "get"])
async def test_line_breaks_and_percent_signs(emu, method):
    d = make_driver(emu, method=method)
    try:
        for text in ["one\ntwo\r\nthree", "100 % sure", "%", "trailing newline\n"]:
            assert (await d.send("1", "+4917", text)).outcome is SendOutcome.ACCEPTED
        # Known limit of the device: a literal "%n" inside a text reads as a line break.
        assert (await d.send("1", "+4917", "50%nice")).outcome is SendOutcome.ACCEPTED
    finally:
        await d.aclose()
    assert [s.text for s in emu.sent] == [
        "one\ntwo\nthree",
        "100 % sure",
        "%",
        "trailing newline\n",
        "50\nice",
    ]


async def test_router_answers_error_timeout_wrong_number(emu, driver):
    emu.fail_next(1, "ERROR")
    error = await driver.send("1", "+4917", "a")
    assert error.outcome is SendOutcome.ERROR and "not sent" in error.detail
    assert emu.sent == []

    emu.fail_next(1, "TIMEOUT")  # the modem sent it, the router stopped waiting
    timeout = await driver.send("1", "+4917", "b")
    assert timeout.outcome is SendOutcome.AMBIGUOUS and "TIMEOUT" in timeout.detail
    assert [(s.text, s.answer) for s in emu.sent] == [("b", "TIMEOUT")]

    emu.faults.wrong_number = r"^\+99"
    rejected = await driver.send("1", "+99123456", "c")
    assert rejected.outcome is SendOutcome.REJECTED and "WRONG_NUMBER" in rejected.detail
    malformed = await driver.send("1", "call me", "d")
    assert malformed.outcome is SendOutcome.REJECTED

    assert (await driver.send("1", "+4917", "e")).outcome is SendOutcome.ACCEPTED
    assert [s.text for s in emu.sent] == ["b", "e"]
    health = await driver.health()
    assert health.ok and health.consecutive_errors == 0
    assert_no_secret([error, timeout, rejected, health])


async def test_disabled_api_is_a_device_problem_with_a_fix(emu, driver):
    emu.enabled = False
    result = await driver.send("1", "+4917", "x")
    assert result.outcome is SendOutcome.AUTH_FAILED
    assert "Services > SMS > SMS Gateway" in result.detail
    assert await driver.inbox() == []
    health = await driver.health()
    assert health.reachable and health.auth_failed and not health.ok
    assert "Services > SMS > SMS Gateway" in health.detail
    emu.enabled = True
    assert (await driver.health()).ok
    assert (await driver.send("1", "+4917", "y")).outcome is SendOutcome.ACCEPTED
    assert [s.text for s in emu.sent] == ["y"]


@pytest.mark.parametrize("auth_style", ["401", "403", "body"])
async def test_wrong_password_is_auth_failed_everywhere(emu, auth_style):
    emu.faults.auth_style = auth_style
    bad = make_driver(emu, password=WRONG_PASSWORD)
    try:
        result = await bad.send("1", "+4917", "x")
        assert result.outcome is SendOutcome.AUTH_FAILED
        assert "not the WebUI admin credentials" in result.detail
        assert_no_secret(result)
        emu.inject_sms("+4917", "hello")
        assert await bad.inbox() == []
        health = await bad.health()
        assert health.reachable and health.auth_failed and not health.ok
        assert health.consecutive_errors == 2
        assert_no_secret(health)
        assert emu.sent == []
    finally:
        await bad.aclose()


async def test_hang_is_ambiguous_within_timeout(emu):
    d = make_driver(emu, timeout=0.3)
    try:
        emu.faults.hang = True  # the router sends, but its answer never comes
        started = time.monotonic()
        result = await d.send("1", "+4917", "lost answer")
        assert result.outcome is SendOutcome.AMBIGUOUS and result.ref is None
        assert 0.25 < time.monotonic() - started < 1.5
        assert_no_secret(result)
        assert [s.text for s in emu.sent] == ["lost answer"]
        emu.faults.hang_after_processing = False  # request swallowed: still unknowable
        assert (await d.send("1", "+4917", "lost request")).outcome is SendOutcome.AMBIGUOUS
        assert len(emu.sent) == 1
        assert (await d.health()).reachable is False
        emu.faults.hang = False
        assert (await d.send("1", "+4917", "back")).outcome is SendOutcome.ACCEPTED
    finally:
        await d.aclose()


async def test_slow_modem_within_timeout_is_fine(emu, driver):
    emu.send_duration = 0.1
    emu.faults.delay = 0.1
    emu.faults.endpoints = {"send"}
    assert (await driver.send("1", "+4917", "slow")).outcome is SendOutcome.ACCEPTED


async def test_connection_refused_is_error_not_ambiguous():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = RouterDriver("gone", f"http://127.0.0.1:{port}", USER, PASSWORD, timeout=1.0)
    try:
        result = await d.send("1", "+4917", "x")
        assert result.outcome is SendOutcome.ERROR and "not sent" in result.detail
        assert_no_secret(result)
        health = await d.health()
        assert not health.reachable and health.consecutive_errors == 1
        assert await d.inbox() == []
        assert (await d.health()).consecutive_errors == 2
    finally:
        await d.aclose()


async def test_garbage_is_ambiguous_and_counted(emu, driver):
    emu.faults.garbage = True
    result = await driver.send("1", "+4917", "x")
    assert result.outcome is SendOutcome.AMBIGUOUS and "unrecognised" in result.detail
    assert "\x00" not in result.detail
    emu.inject_sms("+4917", "hi")
    assert await driver.inbox() == []
    emu.faults.garbage = False
    health = await driver.health()
    assert health.protocol_errors == 2 and health.consecutive_errors == 2
    assert "2 failed call(s) in a row" in health.detail and health.ok
    emu.faults.raw_garbage = True
    emu.faults.hang_after_processing = False
    assert (await driver.send("1", "+4917", "y")).outcome is SendOutcome.AMBIGUOUS


async def test_get_only_firmware_and_wire_variants(emu):
    emu.faults.get_only = True
    post = make_driver(emu)
    get = make_driver(emu, method="get")
    try:
        refused = await post.send("1", "+4917", "x")
        assert refused.outcome is SendOutcome.ERROR and "405" in refused.detail
        assert (await get.send("1", "+4917", "x")).outcome is SendOutcome.ACCEPTED
        emu.faults.trailing_newline = False
        emu.faults.keep_alive = False
        emu.faults.drip = 1
        emu.inject_sms("+4917", "hi")
        assert (await get.send("1", "+4917", "y")).outcome is SendOutcome.ACCEPTED
        assert [i.text for i in await get.inbox()] == ["hi"]
        assert (await get.health()).ok
    finally:
        await post.aclose()
        await get.aclose()


async def test_modem_parameter_and_flash_keyword(emu):
    d = make_driver(emu, modem="2-1")
    try:
        assert (await d.send("1", "+4917", "x", flash=True)).outcome is SendOutcome.ACCEPTED
    finally:
        await d.aclose()
    assert emu.sent[-1].modem == "2-1"  # flash cannot be expressed: sent as a normal SMS


async def test_keep_alive_connection_reuse(emu, driver):
    await driver.send("1", "+4917", "a")
    await driver.inbox()
    await driver.health()
    await driver.send("1", "+4917", "b")
    assert emu.server.stats.requests == 4 and emu.connections_opened == 1


# ---------------------------------------------------------------- inbox


async def test_inbox_trailing_spaces_multiline_and_empty(emu, driver):
    assert await driver.inbox() == []  # "NO MESSAGES"
    emu.empty_answer = ""
    assert await driver.inbox() == []  # other firmware: an empty body
    when = datetime(2025, 6, 15, 18, 15, 47, tzinfo=timezone.utc)
    emu.inject_sms("+491775280961", "Test ", when)
    emu.inject_sms("+4917", "two\nlines, and\n------------------------------\n", when.replace(second=50))
    items = await driver.inbox()
    assert [(i.channel, i.slot, i.sender, i.text) for i in items] == [
        ("1", 0, "+491775280961", "Test "),
        ("1", 1, "+4917", "two\nlines, and\n------------------------------\n"),
    ]
    assert items[0].received_at == when
    assert items[0].raw.startswith("Index: 0\nDate: Sun Jun 15 18:15:47 2025\n")
    keys = [i.device_key for i in items]
    assert len(set(keys)) == 2
    assert [i.device_key for i in await driver.inbox()] == keys  # stable ("unread" -> "read")
    assert_no_secret(items)


async def test_inbox_uses_the_router_time_zone(emu):
    tz = ZoneInfo("Europe/Vilnius")
    emu.device_tz = tz
    d = make_driver(emu, device_tz=tz)
    try:
        when = datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        emu.inject_sms("+370", "labas", when)
        (item,) = await d.inbox()
        assert item.received_at == when and "Thu Jan 02 05:04:05 2025" in item.raw
    finally:
        await d.aclose()


async def test_part_missing_waits_then_is_delivered_with_a_placeholder(emu):
    clock = [100.0]
    d = make_driver(emu, part_missing_grace=60.0, clock=lambda: clock[0])
    try:
        index = emu.inject_sms("Tarifinfo", "Mit der inkludierten", part_missing=True)
        emu.inject_sms("+4917", "complete one")
        assert [i.text for i in await d.inbox()] == ["complete one"]  # held back
        clock[0] += 30
        assert [i.text for i in await d.inbox()] == ["complete one"]
        emu.complete_sms(index, " Roaming-Option")  # the missing part arrives in time
        items = await d.inbox()
        assert sorted(i.text for i in items) == ["Mit der inkludierten Roaming-Option", "complete one"]
        assert all(PART_MISSING not in i.text for i in items)

        late = emu.inject_sms("+4918", "first half", part_missing=True)
        assert len(await d.inbox()) == 2
        clock[0] += 61  # grace over: delivered, the gap marked
        items = await d.inbox()
        partial = next(i for i in items if i.slot == late)
        assert partial.text == "first half [...] "
        assert PART_MISSING in partial.raw
        # Should the part still come, the complete text is a different message (new key).
        emu.complete_sms(late, "second half")
        completed = next(i for i in await d.inbox() if i.slot == late)
        assert completed.text == "first halfsecond half"
        assert completed.device_key != partial.device_key
    finally:
        await d.aclose()


async def test_delete_rereads_and_spares_a_reused_index(emu, driver):
    when = datetime(2025, 3, 1, 12, 0, 0, tzinfo=timezone.utc)
    emu.inject_sms("+4911", "first", when)
    emu.inject_sms("+4922", "second", when.replace(second=1))
    items = await driver.inbox()
    assert [i.slot for i in items] == [0, 1]
    # Someone else deletes index 0 on the router and a new SMS takes the freed index.
    emu.delete_sms(0)
    assert emu.inject_sms("+4933", "newcomer", when.replace(second=2)) == 0
    await driver.delete_inbox(items)
    assert emu.deleted == [1]
    remaining = await driver.inbox()
    assert [(i.slot, i.text) for i in remaining] == [(0, "newcomer")]
    await driver.delete_inbox(remaining)
    assert emu.deleted == [1, 0] and await driver.inbox() == []
    await driver.delete_inbox([])  # nothing to do, no request


async def test_delete_does_nothing_when_the_inbox_cannot_be_reread(emu, driver):
    emu.inject_sms("+4911", "keep me")
    items = await driver.inbox()
    emu.faults.garbage = True
    emu.faults.endpoints = {"list"}
    await driver.delete_inbox(items)
    assert emu.deleted == [] and emu.inbox_entries() == {0: "keep me"}
    with pytest.raises(DeviceError):
        await driver.delete_inbox(
            [
                InboundSms(
                    channel="2",
                    sender="x",
                    text="y",
                    received_at=datetime.now(timezone.utc),
                    device_key="k",
                    raw="",
                    slot=1,
                )
            ]
        )


async def test_whole_run_over_get_never_logs_credentials(emu, caplog):
    """GET puts the credentials into every URL: nothing the driver returns or anything logs
    (httpx's request lines included) may show them. The autouse fixture checks the logs."""
    d = make_driver(emu, method="get")
    bad = make_driver(emu, method="get", password=WRONG_PASSWORD)
    try:
        emu.inject_sms("+4917", "hello")
        results = [
            await d.send("1", "+4917", "x"),
            await d.inbox(),
            await d.health(),
            await bad.send("1", "+4917", "x"),
            await bad.health(),
        ]
        await d.delete_inbox(results[1])
        emu.faults.garbage = True
        results.append(await d.send("1", "+4917", "x"))
        assert_no_secret(results)
    finally:
        await d.aclose()
        await bad.aclose()
    assert any("HTTP Request: GET" in r.getMessage() for r in caplog.records)


# ============================================================================================
# failure classification with httpx.MockTransport (no emulator needed)


def mock_driver(handler, **kwargs) -> RouterDriver:
    return RouterDriver(
        "mock",
        "http://router.invalid",
        USER,
        PASSWORD,
        timeout=1.0,
        transport=httpx.MockTransport(handler),
        **kwargs,
    )


@pytest.mark.parametrize(
    "exc, outcome",
    [
        (httpx.ConnectError("refused"), SendOutcome.ERROR),
        (httpx.ConnectTimeout("slow connect"), SendOutcome.ERROR),
        (httpx.ReadTimeout("slow read"), SendOutcome.AMBIGUOUS),
        (httpx.RemoteProtocolError("Server disconnected"), SendOutcome.AMBIGUOUS),
        (httpx.ReadError(f"boom password={PASSWORD}"), SendOutcome.AMBIGUOUS),
    ],
)
async def test_transport_failure_classification(exc, outcome):
    def handler(request):
        raise exc

    d = mock_driver(handler)
    try:
        result = await d.send("1", "+4917", "x")
        assert result.outcome is outcome
        assert_no_secret(result)
    finally:
        await d.aclose()


async def test_post_body_is_form_encoded_with_raw_percent_n():
    seen = []

    def handler(request):
        seen.append((request.method, str(request.url), request.headers["content-type"], request.content))
        return httpx.Response(200, text="OK\n")

    d = mock_driver(handler)
    try:
        await d.send("1", "+370 600", "a b\nc&d")
    finally:
        await d.aclose()
    method, url, ctype, body = seen[0]
    assert (method, url, ctype) == (
        "POST",
        "http://router.invalid/cgi-bin/sms_send",
        "application/x-www-form-urlencoded",
    )
    assert body.endswith(b"&number=%2B370%20600&text=a%20b%nc%26d")
    assert body.startswith(b"username=")


async def test_answer_echoing_credentials_is_redacted():
    def handler(request):
        return httpx.Response(200, text=f"Huh? {request.url} password {PASSWORD}")

    d = mock_driver(handler, method="get")
    try:
        result = await d.send("1", "+4917", "x")
        assert result.outcome is SendOutcome.AMBIGUOUS
        assert_no_secret(result)
        assert "***" in result.detail
    finally:
        await d.aclose()
