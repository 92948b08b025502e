"""brevis.one gateway driver: answer classification on the manual's literal answers, then the
driver over real sockets (plain HTTP and HTTPS) against the brevis emulator."""

from __future__ import annotations

import logging
import socket
import ssl
import time

import httpx
import pytest
import trustme

from bridge.devices.base import DeliveryState, DeviceError, Driver, SendOutcome
from bridge.devices.brevis.driver import BrevisDriver, encode_hex, needs_hex, parse_send_answer
from bridge.devices.brevis.emulator import BrevisEmulator

USER = "apiuser-7"
PASSWORD = "Brev1s&secret%"
WRONG_PASSWORD = "NotThe-Brevis-pw"
SECRETS = [USER, PASSWORD, WRONG_PASSWORD, "Brev1s%26secret%25", "Brev1s%26secret"]


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
    emulator = BrevisEmulator(USER, PASSWORD)
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


def make_driver(emulator: BrevisEmulator, scheme: str = "http", **kwargs) -> BrevisDriver:
    kwargs.setdefault("timeout", 2.0)
    password = kwargs.pop("password", PASSWORD)
    return BrevisDriver(
        "brevis-test", f"{scheme}://127.0.0.1:{emulator.test_port}", USER, password, **kwargs
    )


@pytest.fixture
async def driver(emu):
    d = make_driver(emu)
    yield d
    await d.aclose()


# ============================================================================================
# pure functions


def test_hex_is_of_utf8_bytes_like_the_manual_example():
    assert encode_hex("Hallo dies ist eine Test SMS") == (
        "48616c6c6f2064696573206973742065696e65205465737420534d53"
    )
    assert encode_hex("Жы 😀") == "d096d18b20f09f9880"
    assert not needs_hex("Plain ASCII: 100% & +49 [ok] ~")
    for text in ("Привет", "Grüße", "emoji 😀", "two\nlines", "tab\there"):
        assert needs_hex(text), text


@pytest.mark.parametrize(
    "status, body, outcome",
    [
        (200, "OK", SendOutcome.ACCEPTED),
        (200, "", SendOutcome.ACCEPTED),
        (200, "Message has been sent.", SendOutcome.ACCEPTED),
        (400, "Error. See Gateway logs for more information.", SendOutcome.ERROR),
        (400, "Error: Parameter miss.", SendOutcome.REJECTED),
        (401, "401 Unauthorized - Username or Password wrong.", SendOutcome.AUTH_FAILED),
        (403, "403 Forbidden - Your User has no right to send SMS over API.", SendOutcome.AUTH_FAILED),
        (408, "FAILED - Timeout or see Gateway logs for more information.", SendOutcome.ERROR),
        # Firmware that puts the error only in the text (HTTP 200):
        (200, "Error. See Gateway logs for more information.", SendOutcome.ERROR),
        (200, "Error: Parameter miss.", SendOutcome.REJECTED),
        (200, "401 Unauthorized - Username or Password wrong.", SendOutcome.AUTH_FAILED),
        (200, "403 Forbidden - Your User has no right to send SMS over API.", SendOutcome.AUTH_FAILED),
        (200, "FAILED - Timeout or see Gateway logs for more information.", SendOutcome.ERROR),
        (400, "something else", SendOutcome.ERROR),
        (404, "<html>Not Found</html>", SendOutcome.ERROR),
        (500, "PHP Fatal error", SendOutcome.ERROR),
        (504, "Gateway Timeout", SendOutcome.AMBIGUOUS),
        (200, "\x00\xff\x1b[31m garbage", SendOutcome.AMBIGUOUS),
        (200, b"\xff\xfe\x00bin", SendOutcome.AMBIGUOUS),
    ],
)
def test_parse_send_answer_literals(status, body, outcome):
    result = parse_send_answer(status, body)
    assert result.outcome is outcome
    assert result.ref is None and result.http_status == status
    assert "\x00" not in result.detail and "\n" not in result.detail


def test_details_tell_ops_what_to_do():
    forbidden = parse_send_answer(403, "403 Forbidden - Your User has no right to send SMS over API.")
    assert '"Access to the HTTP API"' in forbidden.detail
    assert "gateway logs" in parse_send_answer(408, "FAILED - Timeout").detail


# ============================================================================================
# driver protocol surface


async def test_driver_protocol_and_config_errors(driver):
    assert isinstance(driver, Driver)
    assert driver.kind == "brevis" and driver.channels == ("1",)
    assert driver.capabilities == frozenset()
    assert await driver.inbox() == []
    assert await driver.last_ref("1") is None
    with pytest.raises(DeviceError):
        await driver.delete_inbox([])
    with pytest.raises(DeviceError):
        await driver.send("2", "+1", "x")
    for bad in ({"method": "put"}, {"hexmode": "sometimes"}, {"verify_tls": 3}, {"timeout": 0}):
        with pytest.raises(DeviceError):
            BrevisDriver("bad", "https://10.0.0.1", USER, PASSWORD, **bad)
    closed = BrevisDriver("closed", "http://127.0.0.1:9", USER, PASSWORD)
    await closed.aclose()
    with pytest.raises(DeviceError):
        await closed.send("1", "+1", "x")


# ============================================================================================
# driver against the emulator


async def test_send_ascii_by_post_keeps_credentials_out_of_the_url(emu, driver):
    result = await driver.send("1", "00491701234567", "Test 100% & more")
    assert result.outcome is SendOutcome.ACCEPTED and result.ref is None
    assert_no_secret(result)
    (sent,) = emu.sent
    assert (sent.to, sent.text, sent.hexmode, sent.flash, sent.mode, sent.method) == (
        "00491701234567",
        "Test 100% & more",
        False,
        False,
        "number",
        "POST",
    )
    assert emu.requests[-1].target == "/api.php"
    status = await driver.status("1", None)
    assert status.state is DeliveryState.SENT and not status.poll_failed
    assert (await driver.status_many({"1": None}))["1"].state is DeliveryState.SENT


@pytest.mark.parametrize("method", ["post", "get"])
@pytest.mark.parametrize(
    "text", ["Привет, мир", "Emoji 😀👍🏽", "Grüße\nzweite Zeile", "混合 text ✓"]
)
async def test_non_gsm_text_goes_in_hexmode_and_round_trips(emu, method, text):
    d = make_driver(emu, method=method)
    try:
        result = await d.send("1", "+4917012345", text)
        assert result.outcome is SendOutcome.ACCEPTED
    finally:
        await d.aclose()
    (sent,) = emu.sent
    assert sent.text == text and sent.hexmode and sent.method == method.upper()


async def test_hexmode_always_and_never(emu):
    always = make_driver(emu, hexmode="always")
    never = make_driver(emu, hexmode="never")
    try:
        assert (await always.send("1", "+4917", "plain")).accepted
        assert (await never.send("1", "+4917", "Привет 😀")).accepted
    finally:
        await always.aclose()
        await never.aclose()
    assert [(s.text, s.hexmode) for s in emu.sent] == [("plain", True), ("Привет 😀", False)]


@pytest.mark.parametrize("method", ["post", "get"])
async def test_flash_is_recorded(emu, method):
    d = make_driver(emu, method=method)
    try:
        assert (await d.send("1", "+4917", "class 0", flash=True)).accepted
        assert (await d.send("1", "+4917", "normal")).accepted
    finally:
        await d.aclose()
    assert [(s.text, s.flash) for s in emu.sent] == [("class 0", True), ("normal", False)]
    if method == "post":
        # brevis.one documents flash as a query parameter: it rides in the URL (no secret there).
        assert emu.requests[0].target == "/api.php?flash=true"
        assert emu.requests[1].target == "/api.php"
    else:
        assert "flash=true" in emu.requests[0].target and "password=" in emu.requests[0].target


async def test_mode_and_telauto_options(emu):
    d = make_driver(emu, mode="telnumber", telauto=False)
    try:
        assert (await d.send("1", "+4917", "via Telegram or not at all")).accepted
    finally:
        await d.aclose()
    assert (emu.sent[0].mode, emu.sent[0].telauto) == ("telnumber", "false")


async def test_gateway_errors(emu, driver):
    emu.faults.wrong_number = r"^\+99"
    wrong = await driver.send("1", "+99123456", "x")
    assert wrong.outcome is SendOutcome.ERROR and wrong.http_status == 400
    assert "Gateway logs" in wrong.detail
    empty = await driver.send("1", "+4917", "")
    assert empty.outcome is SendOutcome.REJECTED and empty.http_status == 400
    emu.fail_next(1, "timeout")
    timeout = await driver.send("1", "+4917", "t")
    assert timeout.outcome is SendOutcome.ERROR and timeout.http_status == 408
    assert emu.sent == []
    emu.faults.status_codes = False  # errors as text with HTTP 200
    assert (await driver.send("1", "+4917", "")).outcome is SendOutcome.REJECTED
    emu.fail_next(1, "error")
    assert (await driver.send("1", "+4917", "e")).outcome is SendOutcome.ERROR
    assert (await driver.send("1", "+4917", "fine")).outcome is SendOutcome.ACCEPTED
    assert [s.text for s in emu.sent] == ["fine"]
    assert_no_secret([wrong, empty, timeout])


async def test_timeout_that_still_sent_is_reported_as_error(emu, driver):
    # The pessimistic gateway: says FAILED - Timeout, but its modem sent the SMS. The driver
    # takes the gateway at its word (documented risk of a duplicate on retry).
    emu.faults.timeout_sends = True
    emu.fail_next(1, "timeout")
    result = await driver.send("1", "+4917", "maybe twice")
    assert result.outcome is SendOutcome.ERROR
    assert [(s.text, s.answer) for s in emu.sent] == [("maybe twice", "timeout")]


async def test_wrong_password_and_missing_api_right(emu):
    bad = make_driver(emu, password=WRONG_PASSWORD)
    try:
        result = await bad.send("1", "+4917", "x")
        assert result.outcome is SendOutcome.AUTH_FAILED and result.http_status == 401
        assert_no_secret(result)
        health = await bad.health()
        assert health.reachable and health.auth_failed and not health.ok
        assert_no_secret(health)
    finally:
        await bad.aclose()
    emu.api_access = False
    d = make_driver(emu)
    try:
        result = await d.send("1", "+4917", "x")
        assert result.outcome is SendOutcome.AUTH_FAILED and result.http_status == 403
        assert '"Access to the HTTP API"' in result.detail
        health = await d.health()
        assert health.auth_failed and '"Access to the HTTP API"' in health.detail
        emu.api_access = True
        health = await d.health()
        assert health.ok and health.consecutive_errors == 1 and "1 failed call(s)" in health.detail
        assert (await d.send("1", "+4917", "y")).accepted
        assert (await d.health()).consecutive_errors == 0
    finally:
        await d.aclose()
    assert [s.text for s in emu.sent] == ["y"]


async def test_hang_is_ambiguous_within_timeout(emu):
    d = make_driver(emu, timeout=0.3)
    try:
        emu.faults.hang = True
        started = time.monotonic()
        result = await d.send("1", "+4917", "lost answer")
        assert result.outcome is SendOutcome.AMBIGUOUS
        assert 0.25 < time.monotonic() - started < 1.5
        assert_no_secret(result)
        assert [s.text for s in emu.sent] == ["lost answer"]
        assert not (await d.health()).reachable
        emu.faults.hang = False
        assert (await d.send("1", "+4917", "back")).accepted
    finally:
        await d.aclose()


async def test_slow_gateway_within_timeout_is_fine(emu, driver):
    emu.send_duration = 0.1
    emu.faults.delay = 0.1
    assert (await driver.send("1", "+4917", "slow")).accepted


async def test_garbage_is_ambiguous_and_counted(emu, driver):
    emu.faults.garbage = True
    result = await driver.send("1", "+4917", "x")
    assert result.outcome is SendOutcome.AMBIGUOUS and "unrecognised" in result.detail
    emu.faults.garbage = False
    health = await driver.health()
    assert health.protocol_errors == 1 and health.consecutive_errors == 1 and health.ok
    emu.faults.raw_garbage = True
    assert (await driver.send("1", "+4917", "y")).outcome is SendOutcome.AMBIGUOUS


async def test_connection_refused_is_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    d = BrevisDriver("gone", f"http://127.0.0.1:{port}", USER, PASSWORD, timeout=1.0)
    try:
        result = await d.send("1", "+4917", "x")
        assert result.outcome is SendOutcome.ERROR and "not sent" in result.detail
        assert not (await d.health()).reachable
    finally:
        await d.aclose()


async def test_whole_run_over_get_never_logs_credentials(emu, caplog):
    d = make_driver(emu, method="get")
    bad = make_driver(emu, method="get", password=WRONG_PASSWORD)
    try:
        results = [
            await d.send("1", "+4917", "x", flash=True),
            await d.send("1", "+4917", "Привет"),
            await d.health(),
            await bad.send("1", "+4917", "x"),
            await bad.health(),
        ]
        emu.faults.garbage = True
        results.append(await d.send("1", "+4917", "x"))
        assert_no_secret(results)
    finally:
        await d.aclose()
        await bad.aclose()
    assert any("HTTP Request: GET" in r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------- HTTPS


@pytest.fixture(scope="module")
def tls_ca():
    return trustme.CA()


@pytest.fixture
async def tls_emu(nursery, tls_ca):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1").configure_cert(ctx)
    emulator = BrevisEmulator(USER, PASSWORD, ssl_context=ctx)
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


async def test_https_with_ca_path_no_verification_and_untrusted(tls_emu, tls_ca, tmp_path):
    ca_file = tmp_path / "gateway-ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    pinned = make_driver(tls_emu, "https", verify_tls=str(ca_file))
    unverified = make_driver(tls_emu, "https", verify_tls=False)
    strict = make_driver(tls_emu, "https")  # system CAs: the self-signed gateway fails
    try:
        assert (await pinned.send("1", "+4917", "over TLS 😀")).accepted
        assert (await unverified.send("1", "+4917", "no verify")).accepted
        refused = await strict.send("1", "+4917", "never")
        assert refused.outcome is SendOutcome.ERROR and "not sent" in refused.detail
        assert_no_secret(refused)
        assert (await pinned.health()).ok
    finally:
        for d in (pinned, unverified, strict):
            await d.aclose()
    assert [s.text for s in tls_emu.sent] == ["over TLS 😀", "no verify"]


# ============================================================================================
# failure classification with httpx.MockTransport


@pytest.mark.parametrize(
    "exc, outcome",
    [
        (httpx.ConnectError("refused"), SendOutcome.ERROR),
        (httpx.PoolTimeout("pool"), SendOutcome.ERROR),
        (httpx.ReadTimeout("slow read"), SendOutcome.AMBIGUOUS),
        (httpx.ReadError(f"boom password={PASSWORD}"), SendOutcome.AMBIGUOUS),
    ],
)
async def test_transport_failure_classification(exc, outcome):
    def handler(request):
        raise exc

    d = BrevisDriver(
        "mock", "https://brevis.invalid", USER, PASSWORD, transport=httpx.MockTransport(handler)
    )
    try:
        result = await d.send("1", "+4917", "x")
        assert result.outcome is outcome
        assert_no_secret(result)
    finally:
        await d.aclose()


async def test_request_shape():
    seen = []

    def handler(request):
        seen.append((request.method, str(request.url), request.content))
        return httpx.Response(200, text="OK")

    d = BrevisDriver(
        "mock", "https://brevis.invalid/", USER, PASSWORD, transport=httpx.MockTransport(handler)
    )
    try:
        await d.send("1", "+49 170", "a b+c", flash=True)
    finally:
        await d.aclose()
    method, url, body = seen[0]
    assert (method, url) == ("POST", "https://brevis.invalid/api.php?flash=true")
    assert body == (
        b"username=apiuser-7&password=Brev1s%26secret%25&to=%2B49%20170&text=a%20b%2Bc"
        b"&mode=number&flash=true"
    )
