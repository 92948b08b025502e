"""The SmsGateway24 emulator spoken to with plain httpx: the documented wire format, the simulated
phone's timeline, token expiry, the offline phone, faults and the /emulator hooks."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timezone

import httpx
import pytest
import trio

from bridge.devices.smsgateway24.emulator import (
    Sg24Faults,
    SmsGateway24Emulator,
    run_smsgateway24_emulator,
)

LOGIN = {"email": "user@example.com", "pass": "secret"}


@pytest.fixture
async def emu(nursery):
    emulator = SmsGateway24Emulator(device_id=260, timeline=(0.05, 0.05, 0.05, 0.05), seed=1)
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


@pytest.fixture
async def client(emu):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{emu.test_port}", trust_env=False
    ) as c:
        yield c


async def call(client, method, **fields):
    r = await client.post(f"/getdata/{method}", data=fields)
    assert r.status_code == 200
    return r.json()


async def token(client):
    answer = await call(client, "gettoken", **LOGIN)
    assert answer["error"] == 0 and answer["message"] == "OK" and len(answer["token"]) == 32
    return answer["token"]


async def test_gettoken_and_bad_login(client):
    await token(client)
    assert await call(client, "gettoken", email="user@example.com", **{"pass": "no"}) == {
        "error": 1,
        "message": "Login or password incorrect",
    }


async def test_addsms_status_timeline_and_get_method(emu, client):
    tok = await token(client)
    answer = await call(
        client,
        "addsms",
        token=tok,
        sendto="+4915752982212",
        body="Hi",
        device_id="260",
        sim="1",
        urgent="1",
        customerid="77",
    )
    assert answer["error"] == 0 and answer["message"] == "Sms has been saved successfully"
    sms_id = answer["sms_id"]
    assert isinstance(sms_id, int)
    seen = []
    with trio.fail_after(2):
        while True:
            r = await client.get("/getdata/getsmsstatus", params={"token": tok, "sms_id": sms_id})
            status = r.json()
            assert status["sms_id"] == sms_id and status["error"] == 0
            if not seen or seen[-1] != status["status"]:
                seen.append(status["status"])
            if status["status"] == 7:
                break
            await trio.sleep(0.005)
    assert seen[0] == 1 and seen[-1] == 7
    assert seen == sorted(seen) and set(seen) <= {1, 2, 3, 6, 7}
    assert status["status_description"] == "delivered"
    sent = emu.sent[0]
    assert (sent.sendto, sent.sim, sent.urgent, sent.customerid) == (
        "+4915752982212",
        1,
        True,
        "77",
    )


async def test_addsms_validation(client):
    tok = await token(client)
    base = {"token": tok, "sendto": "+1", "body": "x", "device_id": "260"}
    assert (await call(client, "addsms", **{**base, "device_id": "999"}))[
        "message"
    ] == "Device not found"
    assert (await call(client, "addsms", **{**base, "sim": "2"}))["message"] == "Wrong sim"
    assert (await call(client, "addsms", **{**base, "body": ""}))["message"] == "body is required"
    assert (await call(client, "getsmsstatus", token=tok, sms_id="1"))["message"] == "Sms not found"
    r = await client.post("/getdata/nosuchmethod", data={})
    assert r.status_code == 404


async def test_smstosend_with_login(emu, client):
    answer = await call(client, "smstosend", sendto="+1", body="x", device_id="260", **LOGIN)
    assert answer["error"] == 0 and emu.sent[0].sms_id == answer["sms_id"]


@pytest.mark.parametrize("code, path", [(8, [6, 8]), (9, [9]), (12, [12]), (101, [101])])
async def test_failure_paths(emu, client, code, path):
    emu.fail_next(1, code)
    tok = await token(client)
    sms_id = (await call(client, "addsms", token=tok, sendto="+1", body="x", device_id="260"))[
        "sms_id"
    ]
    await trio.sleep(0.35)
    assert emu.status_of(sms_id) == path[-1]
    assert emu.sent[0].final_status == code


async def test_token_expiry_by_calls_and_seconds(emu, client):
    emu.token_ttl_calls = 1
    tok = await token(client)
    assert (await call(client, "getallsms", token=tok))["error"] == 0
    assert await call(client, "getallsms", token=tok) == {
        "error": 1,
        "message": "Token is wrong or expired",
    }
    emu.token_ttl_calls = None
    emu.token_ttl_seconds = 0.05
    tok = await token(client)
    await trio.sleep(0.1)
    assert (await call(client, "getallsms", token=tok))["error"] == 1
    tok = await token(client)
    emu.expire_tokens()
    assert (await call(client, "getdevicestatus", token=tok, device_id="260"))["error"] == 1


async def test_getallsms_php_empty_list_filters_and_inbox(emu, client):
    tok = await token(client)
    assert (await call(client, "getallsms", token=tok))["smss"] == []
    when = datetime(2024, 7, 1, 10, 0, tzinfo=timezone.utc)
    incoming = emu.inject_sms("+4917000000", "Hallo", sim=1, when=when)
    await call(client, "addsms", token=tok, sendto="+1", body="out", device_id="260")
    everything = await call(client, "getallsms", token=tok, device_id="260")
    assert everything["count"] == 2 and isinstance(everything["smss"], dict)
    only_in = await call(client, "getallsms", token=tok, status="5")
    row = only_in["smss"][str(incoming)]
    assert (row["sendto"], row["body"], row["status"], row["sim"]) == ("+4917000000", "Hallo", 5, 1)
    assert row["created"] == {
        "date": "2024-07-01 12:00:00.000000",  # Europe/Paris, summer time
        "timezone_type": 3,
        "timezone": "Europe/Paris",
    }
    newer = await call(
        client, "getallsms", token=tok, status="5", begindate="2024-07-01 10:00:01", timezone="UTC"
    )
    assert newer["smss"] == []
    same = await call(
        client, "getallsms", token=tok, status="5", begindate="2024-07-01 10:00:00", timezone="UTC"
    )
    assert list(same["smss"]) == [str(incoming)]
    assert await call(client, "getallsms", token=tok, onlycount="1") == {
        "error": 0,
        "message": "OK",
        "count": 2,
    }


async def test_device_status_online_offline(emu, client):
    tok = await token(client)
    online = await call(client, "getdevicestatus", token=tok, device_id="260")
    assert online["online"] is True and online["diffseconds"] == 0 and online["device_id"] == 260
    assert online["lastseen"]["timezone_type"] == 3
    emu.set_online(False, seen_ago=3600)
    offline = await call(client, "getdevicestatus", token=tok, device_id="260")
    assert offline["online"] is False and 3599 <= offline["diffseconds"] <= 3601
    # Nothing moves while the phone is offline.
    sms_id = (await call(client, "addsms", token=tok, sendto="+1", body="x", device_id="260"))[
        "sms_id"
    ]
    await trio.sleep(0.15)
    assert emu.status_of(sms_id) == 1
    emu.set_online(True)
    await trio.sleep(0.3)
    assert emu.status_of(sms_id) == 7


async def test_faults(emu, client):
    tok = await token(client)
    emu.faults.string_numbers = True
    answer = await call(client, "addsms", token=tok, sendto="+1", body="x", device_id="260")
    assert answer["error"] == "0" and isinstance(answer["sms_id"], str)
    emu.faults.string_numbers = False
    emu.faults.http_error = 500
    assert (await client.post("/getdata/gettoken", data=LOGIN)).status_code == 500
    emu.faults.http_error = 0
    emu.faults.garbage = True
    r = await client.post(
        "/getdata/addsms", data={"token": tok, "sendto": "+1", "body": "y", "device_id": "260"}
    )
    assert r.status_code == 200 and r.content.startswith(b"<html>")
    assert len(emu.sent) == 2  # garbage answers come after the work
    emu.faults.garbage = False
    emu.faults.error_message = "Subscription expired"
    emu.faults.endpoints = {"addsms"}
    assert await call(client, "addsms", token=tok, sendto="+1", body="z", device_id="260") == {
        "error": 1,
        "message": "Subscription expired",
    }
    assert (await call(client, "getallsms", token=tok))["error"] == 0  # other methods unaffected
    with pytest.raises(ValueError):
        Sg24Faults(endpoints={"nope"})


async def test_hang(emu):
    emu.faults.hang = True
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{emu.test_port}", trust_env=False, timeout=0.2
    ) as c:
        with pytest.raises(httpx.ReadTimeout):
            await c.post("/getdata/gettoken", data=LOGIN)


async def test_hooks_over_http(emu, client):
    r = await client.post("/emulator/inject", json={"sender": "+4917", "text": "hi", "sim": 1})
    assert r.json()["ok"] is True
    state = (
        await client.post(
            "/emulator/faults",
            json={"offline_for": 900, "fail_next": [1, 10], "string_numbers": True},
        )
    ).json()
    assert state["phone_online"] is False and state["fail_next"] == [10]
    assert state["faults"]["string_numbers"] is True
    assert (await client.post("/emulator/faults", json={"bogus": 1})).status_code == 400
    assert (await client.post("/emulator/faults", json={"fail_code": 55})).status_code == 400
    state = (
        await client.post(
            "/emulator/faults",
            json={"online": True, "expire_tokens": True, "string_numbers": False},
        )
    ).json()
    assert state["phone_online"] is True and state["tokens"] == 0
    tok = await token(client)
    await call(client, "addsms", token=tok, sendto="+1", body="x", device_id="260")
    sent = (await client.get("/emulator/sent")).json()
    assert sent[0]["final_status"] == 10 and sent[0]["body"] == "x"
    assert (await client.get("/emulator/nothing")).status_code == 404


async def test_run_smsgateway24_emulator():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_smsgateway24_emulator(port, email="a@b.c", password="pw"))
        async with httpx.AsyncClient(trust_env=False) as c:
            with trio.fail_after(3):
                while True:
                    try:
                        r = await c.post(
                            f"http://127.0.0.1:{port}/getdata/gettoken",
                            data={"email": "a@b.c", "pass": "pw"},
                        )
                        break
                    except httpx.ConnectError:
                        await trio.sleep(0.02)
        assert json.loads(r.text)["error"] == 0
        nursery.cancel_scope.cancel()
