"""The SMSGate emulator spoken to with plain httpx, and its webhook calls caught by a small
receiver that checks every signature independently."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time

import httpx
import pytest
import trio

from bridge.emulators.http import HttpServer, Request, text_response
from bridge.devices.smsgate.emulator import SmsGateEmulator, SmsGateFaults, run_smsgate_emulator

AUTH = ("sms", "password")
KEY = "signing-key-123"


@pytest.fixture
async def emu(nursery):
    emulator = SmsGateEmulator(
        *AUTH,
        signing_key=KEY,
        process_delay=0.01,
        send_delay=0.01,
        deliver_delay=0.02,
        webhook_retry_delays=(0.05, 0.05),
        seed=2,
    )
    emulator.test_port = await nursery.start(emulator.serve)
    return emulator


@pytest.fixture
async def client(emu):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{emu.test_port}", auth=AUTH, trust_env=False
    ) as c:
        yield c


class Receiver:
    def __init__(self):
        self.calls: list[dict] = []
        self.answer = 200

    async def handle(self, request: Request):
        ts = request.headers.get("x-timestamp", "")
        expected = hmac.new(KEY.encode(), request.body + ts.encode(), hashlib.sha256).hexdigest()
        self.calls.append(
            {
                "body": json.loads(request.body),
                "signature_ok": hmac.compare_digest(
                    expected, request.headers.get("x-signature", "")
                ),
                "age": time.time() - int(ts),
            }
        )
        return text_response("ok", status=self.answer)

    def events(self, name=None):
        return [c["body"] for c in self.calls if name is None or c["body"]["event"] == name]


@pytest.fixture
async def receiver(nursery, client):
    rx = Receiver()
    port = await nursery.start(HttpServer(rx.handle, name="rx").serve)
    rx.url = f"http://127.0.0.1:{port}/hook"
    for event in ("sms:received", "sms:sent", "sms:delivered", "sms:failed"):
        r = await client.post("/webhooks", json={"url": rx.url, "event": event})
        assert r.status_code == 201 and r.json()["event"] == event
    return rx


async def send(client, text="hi", **extra):
    body = {"textMessage": {"text": text}, "phoneNumbers": ["+4915752982212"], **extra}
    return await client.post("/message", json=body)


async def test_auth_required(emu):
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{emu.test_port}", trust_env=False
    ) as c:
        r = await c.post("/message", json={})
        assert r.status_code == 401 and "Basic" in r.headers["www-authenticate"]
        assert (await c.get("/health", auth=("sms", "nope"))).status_code == 401


async def test_post_and_get_message_shape(emu, client):
    r = await send(client, "Hello", simNumber=2, id="my-id-1", priority=100)
    assert r.status_code == 202
    body = r.json()
    assert body["id"] == "my-id-1" and body["state"] == "Pending"
    assert body["recipients"] == [
        {"phoneNumber": "+4915752982212", "state": "Pending", "error": None}
    ]
    assert body["isHashed"] is False and "Pending" in body["states"]
    assert emu.sent[0].sim == 2 and emu.sent[0].priority == 100 and emu.sent[0].parts == 1
    with trio.fail_after(2):
        while (await client.get("/message/my-id-1")).json()["state"] != "Delivered":
            await trio.sleep(0.01)
    states = (await client.get("/message/my-id-1")).json()["states"]
    assert list(states) == ["Pending", "Processed", "Sent", "Delivered"]
    assert (await client.get("/message/nope")).status_code == 404
    assert (await send(client, id="my-id-1")).status_code == 409
    generated = (await send(client)).json()["id"]
    assert len(generated) == 21


async def test_message_validation(client):
    assert (
        await client.post("/message", content=b"{", headers={"content-type": "application/json"})
    ).status_code == 400
    assert (
        await client.post("/message", json={"phoneNumbers": ["+4915752982212"]})
    ).status_code == 400
    assert (await client.post("/message", json={"textMessage": {"text": "x"}})).status_code == 400
    r = await client.post(
        "/message", json={"textMessage": {"text": "x"}, "phoneNumbers": ["0157 123"]}
    )
    assert r.status_code == 400 and "Invalid phone number" in r.json()["message"]
    r = await client.post(
        "/message?skipPhoneValidation=true",
        json={"textMessage": {"text": "x"}, "phoneNumbers": ["0157 123"]},
    )
    assert r.status_code == 202
    assert (await send(client, simNumber=3)).status_code == 400
    assert (
        await client.post(
            "/message", json={"message": "legacy", "phoneNumbers": ["+4915752982212"]}
        )
    ).status_code == 202


async def test_webhooks_crud(emu, client):
    assert (await client.get("/webhooks")).json() == []
    r = await client.post("/webhooks", json={"id": "w1", "url": "https://a/x", "event": "sms:sent"})
    assert r.status_code == 201
    await client.post("/webhooks", json={"id": "w1", "url": "https://b/x", "event": "sms:sent"})
    assert (await client.get("/webhooks")).json() == [
        {"id": "w1", "url": "https://b/x", "event": "sms:sent"}
    ]
    assert (
        await client.post("/webhooks", json={"url": "https://a", "event": "sms:bogus"})
    ).status_code == 400
    assert (await client.post("/webhooks", json={"event": "sms:sent"})).status_code == 400
    assert (await client.delete("/webhooks/w1")).status_code == 204
    assert (await client.get("/webhooks")).json() == []
    emu.require_https_webhooks = True
    assert (
        await client.post("/webhooks", json={"url": "http://10.0.0.5/x", "event": "sms:sent"})
    ).status_code == 400


async def test_signed_events_one_delivered_per_part(emu, client, receiver):
    text = "x" * 400  # 3 parts
    r = await send(client, text, simNumber=1)
    msg_id = r.json()["id"]
    assert emu.sent[0].parts == 3
    with trio.fail_after(2):
        while len(receiver.events("sms:delivered")) < 3:
            await trio.sleep(0.01)
    await emu.wait_webhooks_idle()
    assert all(c["signature_ok"] for c in receiver.calls)
    assert all(abs(c["age"]) < 5 for c in receiver.calls)
    names = [e["event"] for e in receiver.events()]
    assert names == ["sms:sent", "sms:delivered", "sms:delivered", "sms:delivered"]
    delivered = receiver.events("sms:delivered")
    assert len({e["id"] for e in delivered}) == 3
    assert all(e["payload"]["messageId"] == msg_id for e in delivered)
    assert {"messageId", "phoneNumber", "simNumber", "deliveredAt"} <= set(delivered[0]["payload"])
    assert "partsCount" not in receiver.events("sms:sent")[0]["payload"]
    # UCS2: 70 units in one part, 71 in two.
    await send(client, "Ж" * 70)
    await send(client, "Ж" * 71)
    assert [m.parts for m in emu.sent[1:]] == [1, 2]


async def test_failures_and_parts_count(emu, client, receiver):
    emu.parts_count_in_payload = True
    emu.fail_next(1, "RESULT_ERROR_NO_SERVICE")
    emu.fail_next(1, "RESULT_ERROR_GENERIC_FAILURE", part=2)
    first = (await send(client)).json()["id"]
    second = (await send(client, "y" * 200)).json()["id"]
    with trio.fail_after(2):
        while len(receiver.events("sms:failed")) < 2:
            await trio.sleep(0.01)
    failed = {
        e["payload"]["messageId"]: e["payload"]["reason"] for e in receiver.events("sms:failed")
    }
    assert failed == {first: "RESULT_ERROR_NO_SERVICE", second: "RESULT_ERROR_GENERIC_FAILURE"}
    answer = (await client.get(f"/message/{second}")).json()
    assert (
        answer["state"] == "Failed"
        and answer["recipients"][0]["error"] == "RESULT_ERROR_GENERIC_FAILURE"
    )
    sent_payloads = [e["payload"] for e in receiver.events("sms:sent")]
    assert [p["partsCount"] for p in sent_payloads] == [2]  # the first never got sent
    assert len(receiver.events("sms:delivered")) == 1


async def test_delivered_state_after_first_part(emu, client, receiver):
    emu.deliver_delay = 0.2
    msg_id = (await send(client, "z" * 320)).json()["id"]
    with trio.fail_after(2):
        while len(receiver.events("sms:delivered")) < 1:
            await trio.sleep(0.01)
    assert (await client.get(f"/message/{msg_id}")).json()[
        "state"
    ] == "Delivered"  # the app's quirk
    assert len(receiver.events("sms:delivered")) == 1


async def test_injected_sms_and_retries(emu, client, receiver):
    receiver.answer = 500
    event_id = emu.inject_sms("+4917000000", "Hallo", sim=2)
    await emu.wait_webhooks_idle()
    assert [c["body"]["id"] for c in receiver.calls] == [event_id] * 3  # 1 + 2 retries
    assert [a.attempt for a in emu.webhook_log] == [1, 2, 3]
    payload = receiver.calls[0]["body"]["payload"]
    assert (payload["message"], payload["phoneNumber"], payload["simNumber"]) == (
        "Hallo",
        "+4917000000",
        2,
    )
    assert payload["receivedAt"].endswith("+07:00")
    assert receiver.calls[0]["body"]["deviceId"] == emu.device_id


async def test_webhook_faults(emu, client, receiver):
    emu.faults.wrong_signature = True
    emu.faults.duplicate_webhooks = True
    emu.inject_sms("+4917000000", "x")
    await emu.wait_webhooks_idle()
    assert len(receiver.calls) == 2 and not any(c["signature_ok"] for c in receiver.calls)
    assert receiver.calls[0]["body"] == receiver.calls[1]["body"]
    emu.faults = SmsGateFaults(stale_timestamp=True)
    emu.inject_sms("+4917000000", "y")
    await emu.wait_webhooks_idle()
    assert receiver.calls[-1]["signature_ok"] and receiver.calls[-1]["age"] >= 599
    emu.faults = SmsGateFaults(out_of_order_parts=True)
    receiver.calls.clear()
    await send(client, "q" * 320)
    with trio.fail_after(2):
        while len(receiver.events("sms:delivered")) < 3:
            await trio.sleep(0.01)
    assert receiver.events()[0]["event"] == "sms:delivered"


async def test_http_faults(emu, client):
    emu.faults.http_error = 500
    assert (await send(client)).status_code == 500
    assert emu.sent == []
    emu.faults.http_error = 0
    emu.faults.garbage = True
    emu.faults.endpoints = {"message"}
    r = await send(client)
    assert r.status_code == 202 and r.content.startswith(b"\x00")
    assert len(emu.sent) == 1
    assert (await client.get("/health")).json()["status"] == "pass"
    emu.faults.garbage = False
    emu.faults.hang = True
    with pytest.raises(httpx.ReadTimeout):
        await client.post(
            "/message",
            json={"textMessage": {"text": "x"}, "phoneNumbers": ["+4915752982212"]},
            timeout=0.2,
        )
    assert len(emu.sent) == 2  # hang_after_processing: taken, answer lost
    with pytest.raises(ValueError):
        SmsGateFaults(endpoints={"nope"})


async def test_hooks_over_http(emu, client, receiver):
    r = await client.post("/emulator/inject", json={"sender": "+4917", "text": "hi", "sim": 1})
    assert r.json()["ok"] is True
    await emu.wait_webhooks_idle()
    log = (await client.get("/emulator/webhook_log")).json()
    assert log[0]["event"] == "sms:received" and log[0]["status"] == 200
    state = (
        await client.post(
            "/emulator/faults",
            json={"duplicate_webhooks": True, "fail_next": {"count": 1, "part": 1}},
        )
    ).json()
    assert state["faults"]["duplicate_webhooks"] is True
    assert (await client.post("/emulator/faults", json={"nope": 1})).status_code == 400
    await send(client)
    sent = (await client.get("/emulator/sent")).json()
    assert sent[0]["phoneNumbers"] == ["+4915752982212"]
    with trio.fail_after(2):
        while (await client.get(f"/message/{sent[0]['id']}")).json()["state"] != "Failed":
            await trio.sleep(0.01)
    assert (await client.get("/emulator/state")).json()["sent"] == 1


async def test_run_smsgate_emulator():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: run_smsgate_emulator(port, username="u", password="p"))
        async with httpx.AsyncClient(trust_env=False, auth=("u", "p")) as c:
            with trio.fail_after(3):
                while True:
                    try:
                        r = await c.get(f"http://127.0.0.1:{port}/health")
                        break
                    except httpx.ConnectError:
                        await trio.sleep(0.02)
        assert r.json()["status"] == "pass"
        nursery.cancel_scope.cancel()
