"""The send API (POST/GET/DELETE /api/v1/messages) with httpx against a running bridge, a GoIP
emulator behind it, and smpplib for the SMPP view of the same messages."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
import smpplib.consts

from e2e_support import (
    BridgeProcess,
    EmulatorProcess,
    client,
    goip_config,
    read_until,
    wait_for,
    with_admin,
)

KEY = "alice-api-key-0123456789"
ESMES = f"""
  - system_id: alice
    password: secret1
    api_key: {KEY}
    allowed_ips: [127.0.0.1]
  - system_id: bob
    password: secret2
    allowed_ips: [127.0.0.1]
  - system_id: slow
    password: secret3
    throughput: 1
    allowed_ips: [127.0.0.1]
  - system_id: faraway
    password: secret4
    allowed_ips: [10.9.9.9]
"""


@pytest.fixture(scope="module")
def emulator():
    e = EmulatorProcess(lines=2, send_duration=0.05)
    yield e
    e.stop()


def start(workdir, emulator, extra: str = "") -> BridgeProcess:
    return BridgeProcess(workdir, with_admin(goip_config(emulator.url, lines=2, esmes=ESMES, extra=extra))).start()


@pytest.fixture(scope="module")
def bridge(tmp_path_factory, emulator):
    b = start(tmp_path_factory.mktemp("api"), emulator)
    yield b
    b.stop()
    assert KEY not in b.log_text() and "secret1" not in b.log_text()


def api(bridge: BridgeProcess, method: str, path: str = "/api/v1/messages", *, auth=("alice", KEY), **kw):
    return httpx.request(method, bridge.admin_url + path, auth=auth, timeout=30, **kw)


def state_of(bridge: BridgeProcess, mid: str, auth=("alice", KEY)) -> str:
    return api(bridge, "GET", f"/api/v1/messages/{mid}", auth=auth).json()["state"]


def test_send_json_and_see_it_delivered_over_http_and_smpp(bridge, emulator):
    r = api(bridge, "POST", json={"to": "+4917011110001", "text": "Hallo from HTTP", "receipt": True,
                                  "reference": "order-1"})
    assert r.status_code == 201, r.text
    body = r.json()
    (msg,) = body["messages"]
    assert msg["to"] == "+4917011110001" and msg["parts"] == 1 and body["reference"] == "order-1"
    mid = msg["id"]
    wait_for(lambda: state_of(bridge, mid) == "delivered", timeout=20)
    got = api(bridge, "GET", f"/api/v1/messages/{mid}").json()
    assert got["id"] == mid and got["text"] == "Hallo from HTTP" and got["esme"] == "alice"
    assert got["parts"] and got["parts"][0]["state"] and got["events"][0]["state"] == "accepted"
    assert any(s["destination"] == "+4917011110001" and s["text"] == "Hallo from HTTP" for s in emulator.sent())
    # The same message through SMPP query_sm: one account model for both front ends.
    c = client(bridge.port)
    c.bind_transceiver(system_id="alice", password="secret1")
    try:
        c.send_pdu(smpplib.smpp.make_pdu("query_sm", client=c, message_id=mid, source_addr=""))
        resp = read_until(c, "query_sm_resp")  # the receipt's deliver_sm may come first
        assert resp.command == "query_sm_resp" and resp.status == 0
        assert resp.message_state == smpplib.consts.SMPP_MESSAGE_STATE_DELIVERED
    finally:
        c.unbind()
        c.disconnect()


def test_send_form_encoded_to_several_numbers_with_the_password(bridge):
    r = api(bridge, "POST", auth=("alice", "secret1"),
            data={"to": ["+4917011110002", "+4917011110003"], "text": "Grüße ☃ " * 20})
    assert r.status_code == 201, r.text
    msgs = r.json()["messages"]
    assert [m["to"] for m in msgs] == ["+4917011110002", "+4917011110003"]
    # UCS-2 (the snowman is not GSM-7): 180 characters need three parts of 67.
    assert all(m["parts"] == 3 for m in msgs)
    for m in msgs:
        rec = api(bridge, "GET", f"/api/v1/messages/{m['id']}").json()
        assert rec["data_coding"] == 8 and rec["text"] == "Grüße ☃ " * 20


def test_flash_schedule_validity_and_priority_reach_the_message(bridge):
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    r = api(bridge, "POST", json={"to": "+4917011110004", "text": "flash", "flash": True, "priority": 2,
                                  "schedule_at": later, "validity": 600})
    assert r.status_code == 201, r.text
    rec = api(bridge, "GET", f"/api/v1/messages/{r.json()['messages'][0]['id']}").json()
    assert rec["data_coding"] == 0x10 and rec["priority"] == 2 and rec["state"] == "scheduled"
    assert rec["schedule_at"].startswith(later[:16])


@pytest.mark.parametrize("payload, field", [
    ({"text": "x"}, "to"),
    ({"to": "call me", "text": "x"}, "to"),
    ({"to": ["+4917011110005", "nope"], "text": "x"}, "to[1]"),
    ({"to": "+4917011110005"}, "text"),
    ({"to": "+4917011110005", "text": "x", "priority": 7}, "priority"),
    ({"to": "+4917011110005", "text": "x", "schedule_at": "tomorrow"}, "schedule_at"),
    ({"to": "+4917011110005", "text": "x", "schedule_at": "2030-01-01T10:00:00"}, "schedule_at"),

])
def test_a_bad_field_is_named(bridge, payload, field):
    r = api(bridge, "POST", json=payload)
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and r.json()["error"].startswith(field)


def test_an_unknown_field_is_named(bridge):
    r = api(bridge, "POST", json={"to": "+4917011110005", "text": "x", "colour": "red"})
    assert r.status_code == 400 and r.json()["field"] == "colour" and "the fields are" in r.json()["hint"]


def test_who_may_call(bridge):
    body = {"to": "+4917011110006", "text": "x"}
    assert api(bridge, "POST", json=body, auth=None).status_code == 401
    assert api(bridge, "POST", json=body, auth=("alice", KEY + "x")).status_code == 401
    assert api(bridge, "POST", json=body, auth=("nobody", KEY)).status_code == 401
    # bob has no api_key: his password works, alice's key does not open bob.
    assert api(bridge, "POST", json=body, auth=("bob", KEY)).status_code == 401
    r = api(bridge, "POST", json=body, auth=("bob", "secret2"))
    assert r.status_code == 201
    bob_id = r.json()["messages"][0]["id"]
    # faraway's allowed_ips do not include 127.0.0.1: refused before its password is looked at.
    r = api(bridge, "POST", json=body, auth=("faraway", "secret4"))
    assert r.status_code == 403 and "allowed_ips" in r.json()["hint"]
    # A message belongs to its ESME: alice cannot see or cancel bob's.
    assert api(bridge, "GET", f"/api/v1/messages/{bob_id}").status_code == 404
    assert api(bridge, "DELETE", f"/api/v1/messages/{bob_id}").status_code == 404
    assert api(bridge, "GET", f"/api/v1/messages/{bob_id}", auth=("bob", "secret2")).status_code == 200


def test_throttling_answers_429_with_retry_after(bridge):
    body = {"to": "+4917011110007", "text": "x"}
    first = api(bridge, "POST", json=body, auth=("slow", "secret3"))
    assert first.status_code == 201
    second = api(bridge, "POST", json=body, auth=("slow", "secret3"))
    assert second.status_code == 429, second.text
    assert 1 <= int(second.headers["retry-after"]) <= 2


def test_an_opted_out_number_is_never_sent(bridge, emulator):
    """The default (inbound.optout.mt_action: receipt), as for submit_sm: accepted, then ended
    without sending."""
    number = "+4917011110008"
    assert httpx.post(bridge.admin_url + "/api/optouts", json={"number": number}).status_code == 201
    r = api(bridge, "POST", json={"to": number, "text": "x"})
    assert r.status_code == 201
    mid = r.json()["messages"][0]["id"]
    wait_for(lambda: state_of(bridge, mid) not in ("accepted", "queued", "submitting"))
    assert state_of(bridge, mid) != "delivered"
    assert not [s for s in emulator.sent() if s["destination"] == number]


def test_an_opted_out_number_is_refused_with_reject_submit(tmp_path, emulator):
    bridge = start(tmp_path, emulator, extra="inbound:\n  optout:\n    mt_action: reject_submit\n")
    try:
        number = "+4917011110018"
        assert httpx.post(bridge.admin_url + "/api/optouts", json={"number": number}).status_code == 201
        r = api(bridge, "POST", json={"to": number, "text": "x"})
        assert r.status_code == 422 and r.json()["field"] == "to" and "opted out" in r.json()["error"]
    finally:
        bridge.stop()


def test_a_full_queue_answers_503_with_retry_after(tmp_path, emulator):
    bridge = start(tmp_path, emulator, extra="limits:\n  queue_depth: 1\n")
    try:
        later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
        body = {"to": "+4917011110019", "text": "waits", "schedule_at": later}
        assert api(bridge, "POST", json=body).status_code == 201
        r = api(bridge, "POST", json=body)
        assert r.status_code == 503 and "queue_depth" in r.json()["error"] and int(r.headers["retry-after"]) > 0
        metrics = httpx.get(bridge.admin_url + "/metrics").text
        assert 'smpp_bridge_queue_full_segments_total{esme="alice"} 1.0' in metrics
    finally:
        bridge.stop()


def test_cancel_while_waiting(bridge):
    later = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 3600))
    mid = api(bridge, "POST", json={"to": "+4917011110009", "text": "later", "schedule_at": later}).json()["messages"][0]["id"]
    r = api(bridge, "DELETE", f"/api/v1/messages/{mid}")
    assert r.status_code == 200 and r.json()["state"] == "deleted"
    assert state_of(bridge, mid) == "deleted"
    again = api(bridge, "DELETE", f"/api/v1/messages/{mid}")
    assert again.status_code == 409 and again.json()["state"] == "deleted"


def test_a_retried_post_with_the_same_key_sends_once(bridge, emulator):
    body = {"to": "+4917011110010", "text": "only once"}
    headers = {"Idempotency-Key": "retry-test-1"}
    first = api(bridge, "POST", json=body, headers=headers)
    second = api(bridge, "POST", json=body, headers=headers)
    assert first.status_code == second.status_code == 201
    assert second.json() == first.json() and second.headers["idempotent-replayed"] == "true"
    # The key as a form field works the same way.
    third = api(bridge, "POST", data={**body, "idempotency_key": "retry-test-1"})
    assert third.json() == first.json()
    mid = first.json()["messages"][0]["id"]
    wait_for(lambda: state_of(bridge, mid) == "delivered", timeout=20)
    assert [s for s in emulator.sent() if s["destination"] == "+4917011110010"] and \
        len([s for s in emulator.sent() if s["destination"] == "+4917011110010"]) == 1
    # The same key for another message is a client bug, not a retry.
    other = api(bridge, "POST", json={**body, "text": "something else"}, headers=headers)
    assert other.status_code == 422 and other.json()["field"] == "idempotency_key"


def test_the_first_answer_survives_a_kill_between_commit_and_answer(tmp_path, emulator):
    bridge = start(tmp_path, emulator)
    try:
        body = b'{"to": "+4917011110011", "text": "exactly one"}'
        import base64

        auth = base64.b64encode(f"alice:{KEY}".encode()).decode()
        s = socket.create_connection(("127.0.0.1", bridge.admin_port))
        s.sendall(b"POST /api/v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Authorization: Basic " + auth.encode() + b"\r\nIdempotency-Key: crash-1\r\n"
                  b"Content-Length: %d\r\n\r\n" % len(body) + body)
        # Committed (the key is in the database), answer not read: the client never got it.
        wait_for(lambda: bridge.db().execute("SELECT count(*) FROM api_requests").fetchone()[0] == 1)
        bridge.kill()
        s.close()
        bridge.start()
        r = api(bridge, "POST", content=body, headers={"Idempotency-Key": "crash-1", "Content-Type": "application/json"})
        assert r.status_code == 201 and r.headers["idempotent-replayed"] == "true"
        rows = bridge.db().execute("SELECT count(*) FROM messages WHERE destination_addr='+4917011110011'").fetchone()
        assert rows[0] == 1
        assert state_of(bridge, r.json()["messages"][0]["id"]) in ("queued", "submitting", "sent", "delivered")
    finally:
        bridge.stop()
