"""The fault model all five HTTP emulators share (bridge/emulators/faults.py, docs/emulators.md):
the same switch does the same thing on every device, and the same hooks control it.

Sans-IO: requests go straight into ``emulator.handle`` and the reply objects are inspected; the
wire side (HttpServer) has its own tests."""

from __future__ import annotations

import base64
import json
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import attrs
import pytest

from bridge.devices.brevis.emulator import BrevisEmulator
from bridge.emulators.faults import RAW_GARBAGE, HttpDeviceEmulator, HttpFaults
from bridge.devices.goip_http.emulator import GoipEmulator
from bridge.emulators.http import HANG, RawReply, Request, Response
from bridge.devices.router.emulator import RouterEmulator
from bridge.devices.smsgate.emulator import SmsGateEmulator
from bridge.devices.smsgateway24.emulator import SmsGateway24Emulator


def make_request(
    method: str,
    target: str,
    *,
    form: dict[str, str] | None = None,
    body: Any = None,
    auth: tuple[str, str] | None = None,
) -> Request:
    path, _, qs = target.partition("?")
    headers: dict[str, str] = {}
    raw = b""
    if form is not None:
        raw = urlencode(form).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
    if body is not None:
        raw = json.dumps(body).encode()
        headers["content-type"] = "application/json"
    if auth is not None:
        headers["authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    return Request(method, target, path, dict(parse_qsl(qs)), headers, raw)


@attrs.define
class Device:
    """How to make one emulator send an SMS, and how to ask it something harmless."""

    make: Callable[[], HttpDeviceEmulator]
    send_endpoint: str
    send: Callable[[HttpDeviceEmulator], Awaitable[Request]]
    other_endpoint: str | None = None
    other: Callable[[HttpDeviceEmulator], Awaitable[Request]] | None = None


async def _goip_send(emu: Any) -> Request:
    return make_request("GET", "/default/en_US/send.html?u=admin&p=admin&l=1&n=4917012345&m=hi")


async def _goip_other(emu: Any) -> Request:
    return make_request("GET", "/default/en_US/send_status.xml?u=admin&p=admin")


async def _router_send(emu: Any) -> Request:
    creds = {"username": "user1", "password": "user_pass"}
    return make_request("POST", "/cgi-bin/sms_send", form={**creds, "number": "+4917012345", "text": "hi"})


async def _router_other(emu: Any) -> Request:
    return make_request("GET", "/cgi-bin/sms_total?username=user1&password=user_pass")


async def _brevis_send(emu: Any) -> Request:
    form = {"username": "apiuser", "password": "secret", "to": "+4917012345", "text": "hi"}
    return make_request("POST", "/api.php", form=form)


async def _sg24_token(emu: Any) -> str:
    if not hasattr(emu, "test_token"):
        reply = await emu.handle(
            make_request("POST", "/getdata/gettoken", form={"email": "user@example.com", "pass": "secret"})
        )
        emu.test_token = json.loads(reply.body)["token"]
    return emu.test_token


async def _sg24_send(emu: Any) -> Request:
    token = await _sg24_token(emu)
    form = {"token": token, "sendto": "+4917012345", "body": "hi", "device_id": "260", "sim": "0"}
    return make_request("POST", "/getdata/addsms", form=form)


async def _sg24_other(emu: Any) -> Request:
    token = await _sg24_token(emu)
    return make_request("POST", "/getdata/getdevicestatus", form={"token": token, "device_id": "260"})


async def _smsgate_send(emu: Any) -> Request:
    body = {"textMessage": {"text": "hi"}, "phoneNumbers": ["+4917012345678"]}
    return make_request("POST", "/message", body=body, auth=("sms", "password"))


async def _smsgate_other(emu: Any) -> Request:
    return make_request("GET", "/health", auth=("sms", "password"))


DEVICES = {
    "goip": Device(lambda: GoipEmulator(lines=2, send_duration=0.01, seed=1), "send", _goip_send, "status", _goip_other),
    "router": Device(RouterEmulator, "send", _router_send, "total", _router_other),
    "brevis": Device(BrevisEmulator, "send", _brevis_send),
    "smsgateway24": Device(lambda: SmsGateway24Emulator(seed=1), "addsms", _sg24_send, "getdevicestatus", _sg24_other),
    "smsgate": Device(lambda: SmsGateEmulator(seed=1), "message", _smsgate_send, "health", _smsgate_other),
}


@pytest.fixture(params=sorted(DEVICES))
async def device(request: pytest.FixtureRequest) -> tuple[Device, HttpDeviceEmulator]:
    spec = DEVICES[request.param]
    emu = spec.make()
    await spec.send(emu)  # builds the request only; SmsGateway24 gets its token here, fault-free
    return spec, emu


async def control(emu: HttpDeviceEmulator, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    reply = await emu.handle(make_request(method, path, body=body))
    assert isinstance(reply, Response)
    return reply.status, json.loads(reply.body)


async def test_every_emulator_speaks_the_shared_vocabulary(device):
    spec, emu = device
    shared = {f.name: f.default for f in attrs.fields(HttpFaults)}
    own = {f.name: f.default for f in attrs.fields(type(emu.faults))}
    assert {name: own.get(name) for name in shared} == shared
    assert spec.send_endpoint in type(emu.faults).ENDPOINTS


async def test_http_error_answers_without_doing_anything(device):
    spec, emu = device
    other = await spec.other(emu) if spec.other else None
    emu.faults.http_error = 503
    emu.faults.endpoints = [spec.send_endpoint]
    reply = await emu.handle(await spec.send(emu))
    assert isinstance(reply, Response) and reply.status == 503
    assert emu.sent == []
    if other is not None:  # other endpoints still answer
        assert (await emu.handle(other)).status == 200
    emu.faults.http_error = 0
    assert (await emu.handle(await spec.send(emu))).status in (200, 202)
    assert len(emu.sent) == 1


async def test_raw_garbage_is_not_http_and_does_nothing(device):
    spec, emu = device
    emu.faults.raw_garbage = True
    emu.faults.delay = 2.5
    reply = await emu.handle(await spec.send(emu))
    assert reply == RawReply(RAW_GARBAGE, delay=2.5)
    assert emu.sent == []


async def test_hang_loses_the_request_or_only_the_answer(device):
    spec, emu = device
    emu.faults.hang = True
    emu.faults.hang_after_processing = False
    assert await emu.handle(await spec.send(emu)) is HANG
    assert emu.sent == []  # never answered, never sent
    emu.faults.hang_after_processing = True
    assert await emu.handle(await spec.send(emu)) is HANG
    assert len(emu.sent) == 1  # sent; only the answer is lost


async def test_garbage_after_the_work_delay_and_wire_shape(device):
    spec, emu = device
    emu.faults.garbage = True
    emu.faults.delay = 1.5
    emu.faults.keep_alive = False
    emu.faults.drip = 3
    reply = await emu.handle(await spec.send(emu))
    assert isinstance(reply, Response) and 200 <= reply.status < 300
    assert reply.body == type(emu).GARBAGE
    assert len(emu.sent) == 1
    assert (reply.delay, reply.drip, reply.http_version, reply.close_delimited) == (1.5, 3, "1.0", True)


async def test_endpoints_limit_the_switches(device):
    spec, emu = device
    if spec.other is None:
        pytest.skip("one endpoint only")
    emu.faults.endpoints = [spec.other_endpoint]
    emu.faults.hang = True
    emu.faults.hang_after_processing = False
    assert await emu.handle(await spec.other(emu)) is HANG
    reply = await emu.handle(await spec.send(emu))
    assert isinstance(reply, Response) and reply.status in (200, 202)


async def test_control_hooks_are_the_same_everywhere(device):
    spec, emu = device
    status, state = await control(
        emu, "POST", "/emulator/faults", {"http_error": 500, "endpoints": [spec.send_endpoint], "delay": 0.5}
    )
    assert status == 200 and state["faults"]["http_error"] == 500
    assert {"sent", "connections_opened", "requests", "faults"} <= state.keys()
    status, faults = await control(emu, "GET", "/emulator/faults")
    assert status == 200
    assert (faults["http_error"], faults["endpoints"], faults["delay"]) == (500, [spec.send_endpoint], 0.5)
    assert emu.faults.endpoints == frozenset({spec.send_endpoint})

    for bad, says in [
        ({"pages": ["send"]}, "endpoints"),
        ({"methods": ["send"]}, "endpoints"),
        ({"http500": True}, "http_error"),
        ({"endpoints": ["no-such-page"]}, "known"),
        ({"http_error": 200}, "400-599"),
        ({"no_such_fault": 1}, "fault fields"),
        (["not", "an", "object"], "JSON object"),
    ]:
        status, answer = await control(emu, "POST", "/emulator/faults", bad)
        assert status == 400 and says in answer["error"], (bad, answer)
    assert emu.faults.http_error == 500  # a refused change changed nothing

    status, sent = await control(emu, "GET", "/emulator/sent")
    assert (status, sent) == (200, [])
    status, _ = await control(emu, "GET", "/emulator/nope")
    assert status == 404


def test_old_names_are_refused_at_construction_with_the_new_one():
    with pytest.raises(TypeError, match="endpoints"):
        GoipEmulator(pages=["send"])
    with pytest.raises(TypeError, match="http_error"):
        SmsGateEmulator(http500=True)


async def test_fail_next_takes_a_list_or_an_object():
    router = RouterEmulator()
    status, _ = await control(router, "POST", "/emulator/faults", {"fail_next": [1, "WRONG_NUMBER"]})
    assert status == 200
    status, _ = await control(router, "POST", "/emulator/faults", {"fail_next": {"count": 1, "answer": "TIMEOUT"}})
    assert status == 200
    assert router.state_json()["fail_next"] == ["WRONG_NUMBER", "TIMEOUT"]
    status, answer = await control(router, "POST", "/emulator/faults", {"fail_next": [1, "MAYBE"]})
    assert status == 400 and "MAYBE" in answer["error"]

    phone = SmsGateEmulator()
    status, _ = await control(phone, "POST", "/emulator/faults", {"fail_next": [1, "RESULT_ERROR_RADIO_OFF", 2]})
    assert status == 200
    status, _ = await control(phone, "POST", "/emulator/faults", {"fail_next": {"count": 1, "reason": "X"}})
    assert status == 200
    assert [(p.reason, p.part) for p in phone._fail_next] == [("RESULT_ERROR_RADIO_OFF", 2), ("X", None)]


async def test_inject_on_a_device_without_inbox_is_404():
    status, answer = await control(BrevisEmulator(), "POST", "/emulator/inject", {"sender": "+49", "text": "hi"})
    assert status == 404 and answer["ok"] is False
