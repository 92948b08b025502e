"""The admin HTTP API against a real bridge process, GoIP emulator and smpplib clients."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import httpx
import pytest

from e2e_support import (
    BridgeProcess,
    EmulatorProcess,
    client,
    goip_config,
    receipt_fields,
    receive_deliver_sm,
    submit,
    wait_for,
    with_admin,
)

TOKEN = "t0ken-for-the-admin-api-tests"
WRONG = "t0ken-for-the-admin-api-testz"


def api(bridge: BridgeProcess, method: str, path: str, *, token: str | None = TOKEN, **kw) -> httpx.Response:
    headers = kw.pop("headers", {})
    if token is not None:
        headers.setdefault("Authorization", f"Bearer {token}")
    return httpx.request(method, bridge.admin_url + path, headers=headers, timeout=30, **kw)


@pytest.fixture(scope="module")
def emulator():
    e = EmulatorProcess(lines=2, send_duration=0.1)
    yield e
    e.stop()


@pytest.fixture(scope="module")
def bridge(tmp_path_factory, emulator):
    workdir = tmp_path_factory.mktemp("admin")
    config = with_admin(
        goip_config(emulator.url, lines=2, extra="logging:\n  pdu_log:\n    enabled: true\n"), token=TOKEN
    )
    b = BridgeProcess(workdir, config).start()
    yield b
    b.stop()
    assert "secret1" not in b.log_text() and TOKEN not in b.log_text()


@pytest.fixture
def alice(bridge):
    c = client(bridge.port)
    c.bind_transceiver(system_id="alice", password="secret1")
    yield c
    try:
        c.unbind()
    finally:
        c.disconnect()


# -- authentication --------------------------------------------------------------------------


def test_metrics_and_health_are_open_everything_else_needs_the_token(bridge):
    assert api(bridge, "GET", "/metrics", token=None).status_code == 200
    assert api(bridge, "GET", "/healthz", token=None).json()["status"] == "ok"
    ready = api(bridge, "GET", "/readyz", token=None)
    assert ready.status_code == 200 and ready.json() == {
        "ready": True, "checks": {"started": "ok", "smpp": "ok", "store": "ok"}
    }  # fmt: skip
    for path in ("/api/status", "/api/messages/0000000001", "/api/optouts", "/api/pdu-logs", "/api/openapi.json"):
        missing = api(bridge, "GET", path, token=None)
        assert missing.status_code == 401, path
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert missing.json()["error"] == "missing admin token"
        assert "Authorization: Bearer TOKEN" in missing.json()["hint"]
        wrong = api(bridge, "GET", path, token=WRONG)
        assert wrong.status_code == 401 and wrong.json()["error"] == "wrong admin token"
    for method, path in (("POST", "/api/reload"), ("POST", "/api/channels/goip1:1/pause"),
                         ("DELETE", "/api/optouts/%2B4917000000"), ("POST", "/api/optouts")):
        assert api(bridge, method, path, token=None).status_code == 401, path
        assert api(bridge, method, path, token="x" * 40).status_code == 401, path
    # Both header forms work.
    assert api(bridge, "GET", "/api/status").status_code == 200
    assert api(bridge, "GET", "/api/status", token=None, headers={"X-Admin-Token": TOKEN}).status_code == 200
    assert api(bridge, "GET", "/api/status", token=None, headers={"X-Admin-Token": WRONG}).status_code == 401
    # The refusals are counted, the token is never logged.
    metrics = api(bridge, "GET", "/metrics", token=None).text
    assert 'smpp_bridge_admin_requests_total{code="401",endpoint="/api/status"}' in metrics
    assert TOKEN not in bridge.log_text() and WRONG not in bridge.log_text()


def test_a_web_page_of_another_origin_is_refused_even_with_the_token(bridge):
    r = api(bridge, "POST", "/api/channels/goip1:1/pause", headers={"Origin": "http://evil.example"})
    assert r.status_code == 403 and "origin" in r.json()["error"]
    status = api(bridge, "GET", "/api/status").json()
    assert all(not c["paused"] for d in status["devices"] for c in d["channels"])


def test_unknown_endpoint_and_wrong_method_say_what_exists(bridge):
    r = api(bridge, "GET", "/api/nope")
    assert r.status_code == 404 and "openapi" in r.json()["hint"]
    r = api(bridge, "GET", "/api/reload")
    assert r.status_code == 405 and r.headers["allow"] == "POST"


# -- status ----------------------------------------------------------------------------------


def test_status_shows_binds_channels_routes_and_store(bridge, alice):
    bob = client(bridge.port)
    bob.bind_transmitter(system_id="bob", password="secret2")
    try:
        st = api(bridge, "GET", "/api/status").json()
    finally:
        bob.unbind()
        bob.disconnect()
    esmes = {e["system_id"]: e for e in st["esmes"]}
    assert [b["bind_type"] for b in esmes["alice"]["binds"]] == ["transceiver"]
    assert [b["bind_type"] for b in esmes["bob"]["binds"]] == ["transmitter"]
    assert esmes["alice"]["outbox"]["receipt"] == {"waiting": 0, "oldest_seconds": 0.0}
    (goip,) = st["devices"]
    assert goip["name"] == "goip1" and goip["kind"] == "goip_http"
    assert goip["health"]["up"] is True
    assert "admin" not in goip["url"]  # no credentials in the API
    chans = {c["key"]: c for c in goip["channels"]}
    assert set(chans) == {"goip1:1", "goip1:2"}
    for c in chans.values():
        assert c["state"] in ("ready", "sending") and c["registered"] is True and c["signal"] == 25
        assert c["routes"] == ["all"] and c["caps_remaining"] == {"minute": None, "hour": None, "day": None}
    assert st["routes"] == [{"name": "all", "queued": 0, "oldest_queued_seconds": 0.0,
                             "channels": ["goip1:1", "goip1:2"], "channels_available": 2}]
    assert st["store"]["path"].endswith("bridge.sqlite3") and st["store"]["disk_free_bytes"] > 0
    assert st["ready"] is True and st["smpp"]["ports"] == bridge.ports


def test_status_command_prints_the_same_status_as_tables(bridge, alice, tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    out = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "status", "--admin", bridge.admin_url, "--token-file", str(token_file)],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert any(line.split()[:3] == ["alice", "1", "transceiver"] for line in lines)
    assert any(line.split()[:5] == ["goip1:1", "up", "ready", "yes", "25"] for line in lines)
    assert any(line.split()[:4] == ["all", "0", "-", "2/2"] for line in lines)
    # The same through --config (URL and token from bridge.yaml), and --json.
    js = subprocess.run(
        [sys.executable, "-m", "bridge.cli", "status", "--config", str(bridge.config_path), "--json"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert js.returncode == 0, js.stderr
    assert {e["system_id"] for e in json.loads(js.stdout)["esmes"]} == {"alice", "bob"}


def test_status_command_explains_a_refused_token_and_an_unreachable_bridge(bridge, tmp_path):
    env = {**os.environ, "SMPP_BRIDGE_ADMIN_TOKEN": WRONG}
    out = subprocess.run([sys.executable, "-m", "bridge.cli", "status", "--admin", bridge.admin_url],
                         capture_output=True, text=True, env=env, timeout=30)
    assert out.returncode == 2 and "refused the token" in out.stderr and "SMPP_BRIDGE_ADMIN_TOKEN" in out.stderr
    out = subprocess.run([sys.executable, "-m", "bridge.cli", "status", "--admin", "http://127.0.0.1:9"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "cannot reach the admin API" in out.stderr and "Is the bridge running" in out.stderr


# -- messages --------------------------------------------------------------------------------


def test_message_lookup_by_id_and_by_number_with_the_whole_history(bridge, alice):
    mid = submit(alice, b"look me up", dest="+491705550001", registered_delivery=1).message_id.decode()
    (dlr,) = receive_deliver_sm(alice, 1)
    assert receipt_fields(dlr)["stat"] == "DELIVRD"
    r = api(bridge, "GET", f"/api/messages/{mid}")
    assert r.status_code == 200
    body = r.json()
    msg = body["message"]
    assert (msg["id"], msg["esme"], msg["destination_addr"], msg["text"]) == (mid, "alice", "+491705550001", "look me up")
    assert msg["state"] == "delivered" and msg["final_at"]
    states = [e["state"] for e in body["events"]]
    assert states[0] == "accepted" and states[-1] == "delivered" and "submitting" in states and "sent" in states
    assert body["events"][0]["at"] == msg["created_at"]
    (part,) = body["parts"]
    assert part["channel"].startswith("goip1:") and part["state"] == "network" and part["device_ref"]
    # By number: '+' written raw (a space in a query string) or as %2B, or without it.
    for query in ("?number=%2B491705550001", "?number=+491705550001", "?number=491705550001"):
        found = api(bridge, "GET", "/api/messages" + query).json()
        assert [m["id"] for m in found["messages"]] == [mid], query
        assert found["messages"][0]["events"][-1]["state"] == "delivered"
    assert api(bridge, "GET", "/api/messages?number=%2B4900").json()["messages"] == []
    bad = api(bridge, "GET", "/api/messages?number=hello")
    assert bad.status_code == 400 and "international format" in bad.json()["hint"]
    missing = api(bridge, "GET", "/api/messages/9999999999")
    assert missing.status_code == 404 and "submit_sm_resp" in missing.json()["hint"]


# -- channels --------------------------------------------------------------------------------


def test_paused_channels_take_nothing_until_resumed(bridge, emulator, alice):
    sent_before = len(emulator.sent())
    for ch in ("goip1:1", "goip1:2"):
        r = api(bridge, "POST", f"/api/channels/{ch}/drain")
        assert r.status_code == 200 and r.json()["drained"] is True and r.json()["state"] == "paused"
    mid = submit(alice, b"wait for resume", dest="+491705550002", registered_delivery=1).message_id.decode()
    st = api(bridge, "GET", "/api/status").json()
    assert st["routes"][0]["queued"] == 1 and st["routes"][0]["channels_available"] == 0
    assert {c["state"] for c in st["devices"][0]["channels"]} == {"paused"}
    assert api(bridge, "GET", f"/api/messages/{mid}").json()["message"]["state"] == "queued"
    assert len(emulator.sent()) == sent_before
    metrics = api(bridge, "GET", "/metrics", token=None).text
    assert 'smpp_bridge_route_channels_available{route="all"} 0.0' in metrics
    r = api(bridge, "POST", "/api/channels/goip1:2/resume")
    assert r.status_code == 200 and r.json()["paused"] is False
    (dlr,) = receive_deliver_sm(alice, 1)
    assert receipt_fields(dlr)["id"] == mid and receipt_fields(dlr)["stat"] == "DELIVRD"
    assert [s["line"] for s in emulator.sent()[sent_before:]] == [2]
    assert api(bridge, "POST", "/api/channels/goip1:1/pause").json()["paused"] is True
    assert api(bridge, "POST", "/api/channels/goip1:1/resume").json()["paused"] is False
    nope = api(bridge, "POST", "/api/channels/goip1:9/pause")
    assert nope.status_code == 404 and "GET /api/status" in nope.json()["hint"]


# -- opt-outs --------------------------------------------------------------------------------


def test_optout_list_add_and_remove(bridge):
    listed = api(bridge, "GET", "/api/optouts")
    assert listed.status_code == 200, listed.text  # a 501 here is a missing feature: a failure
    r = api(bridge, "POST", "/api/optouts", json={"number": "+491705550099"})
    assert r.status_code == 201 and r.json() == {"number": "+491705550099", "opted_out": True, "already_listed": False}
    again = api(bridge, "POST", "/api/optouts", json={"number": "+491705550099"})
    assert again.status_code == 200 and again.json()["already_listed"] is True
    (entry,) = [o for o in api(bridge, "GET", "/api/optouts").json()["optouts"] if "491705550099" in o["number"]]
    assert entry["source"] == "admin" and entry["at"].endswith("+00:00")
    metrics = api(bridge, "GET", "/metrics", token=None).text
    assert "smpp_bridge_optouts 1.0" in metrics
    assert api(bridge, "POST", "/api/optouts", json={"number": "not a number"}).status_code == 400
    assert api(bridge, "DELETE", "/api/optouts/%2B491705550099").status_code == 200
    assert "491705550099" not in json.dumps(api(bridge, "GET", "/api/optouts").json())
    gone = api(bridge, "DELETE", "/api/optouts/%2B491705550099")
    assert gone.status_code == 404 and "not on the opt-out list" in gone.json()["error"]


# -- PDU logs --------------------------------------------------------------------------------


def test_pdu_logs_are_listed_and_downloadable_with_passwords_masked(bridge, alice):
    mid = submit(alice, b"pdu log body", dest="+491705550003", registered_delivery=1).message_id.decode()
    receive_deliver_sm(alice, 1)
    listing = api(bridge, "GET", "/api/pdu-logs").json()
    assert listing["enabled"] is True and listing["retention_days"] == 14
    (entry,) = [f for f in listing["files"] if f["esme"] == "alice"]
    r = api(bridge, "GET", entry["url"])
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/x-ndjson")
    assert "secret1" not in r.text and "pdu log body" not in r.text and "70647520" not in r.text
    records = [json.loads(line) for line in r.text.splitlines()]
    binds = [x for x in records if x["command"] == "bind_transceiver"]
    assert binds and all(x["params"]["password"] == "***" and x["dir"] == "in" for x in binds)
    assert any(x["command"] == "bind_transceiver_resp" and x["status"] == "ESME_ROK" for x in records)
    (sub,) = [x for x in records if x["command"] == "submit_sm" and x["params"]["destination_addr"] == "+491705550003"]
    assert sub["params"]["short_message"] == {"octets": 12, "masked": True}
    assert any(x["command"] == "submit_sm_resp" and x["params"]["message_id"] == mid for x in records)
    assert any(x["command"] == "deliver_sm" and x["dir"] == "out" for x in records)
    # Nothing outside the log directory can be named.
    for path in ("/api/pdu-logs/..%2F..%2Fbridge.yaml/2024-01-01", "/api/pdu-logs/alice/..%2F..%2Fbridge",
                 "/api/pdu-logs/nobody/2024-01-01"):
        assert api(bridge, "GET", path).status_code == 404, path


def test_openapi_describes_every_endpoint_the_server_has(bridge, tmp_path):
    from bridge.app import App
    from bridge.config import default_demo_config

    spec = api(bridge, "GET", "/api/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    described = {(m.upper(), p) for p, ops in spec["paths"].items() for m in ops}
    # What the assembled Starlette app serves (admin, webhooks, send API), route by route.
    app = App(default_demo_config(tmp_path))
    # The web console (a mounted sub-app of HTML pages) is not part of the JSON API.
    served = {(m, r.path) for r in app.http_app.routes if hasattr(r, "methods") for m in r.methods if m != "HEAD"}
    assert described == served
    try:
        from openapi_spec_validator import validate
    except ImportError:
        return
    validate(spec)


# -- reload ----------------------------------------------------------------------------------


def start_plain(tmp_path, emulator, **kw) -> BridgeProcess:
    return BridgeProcess(tmp_path, with_admin(goip_config(emulator.url, lines=2, **kw))).start()


def test_reload_applies_esme_changes_and_keeps_unchanged_binds(tmp_path, emulator):
    bridge = start_plain(tmp_path, emulator)
    try:
        alice = client(bridge.port)
        alice.bind_transceiver(system_id="alice", password="secret1")
        bob = client(bridge.port)
        bob.bind_transmitter(system_id="bob", password="secret2")
        text = bridge.config_path.read_text()
        # bob's password changes, carol is new, alice stays as she is.
        text = text.replace("password: secret2", "password: secret2b").replace(
            "esmes:\n", "esmes:\n  - system_id: carol\n    password: secret3\n    allowed_ips: [127.0.0.1]\n"
        )
        bridge.config_path.write_text(text)
        # No token configured (loopback only): a request for another host name is refused, so a
        # web page cannot reach the API through DNS rebinding.
        rebind = api(bridge, "POST", "/api/reload", token=None, headers={"Host": "rebind.example:8025"})
        assert rebind.status_code == 403 and "not a loopback name" in rebind.json()["error"]
        r = api(bridge, "POST", "/api/reload", token=None)
        assert r.status_code == 200, r.text
        result = r.json()
        assert result["ok"] is True and result["applied"] == ["esmes"] and result["binds_closed"] == 1
        assert result["restart_required"] == []
        # alice's bind is untouched and still works; bob must bind again with the new password.
        assert submit(alice, b"after reload", dest="+491705550010").status == 0
        st = api(bridge, "GET", "/api/status", token=None).json()
        binds = {e["system_id"]: len(e["binds"]) for e in st["esmes"]}
        assert binds == {"carol": 0, "alice": 1, "bob": 0}
        carol = client(bridge.port)
        carol.bind_transmitter(system_id="carol", password="secret3")
        carol.unbind()
        carol.disconnect()
        alice.unbind()
        alice.disconnect()
        bob.disconnect()
    finally:
        bridge.stop()


def test_a_broken_config_changes_nothing_and_lists_every_error(tmp_path, emulator):
    bridge = start_plain(tmp_path, emulator)
    try:
        alice = client(bridge.port)
        alice.bind_transceiver(system_id="alice", password="secret1")
        good = bridge.config_path.read_text()
        bridge.config_path.write_text(good.replace("max_binds: 3", "max_binds: lots").replace("lines: 2", "linez: 2"))
        r = api(bridge, "POST", "/api/reload", token=None)
        assert r.status_code == 422
        body = r.json()
        assert body["ok"] is False
        assert any("esmes[0].max_binds" in e and "lots" in e for e in body["errors"])
        assert any("devices[0].linez" in e and "unknown key" in e for e in body["errors"])
        assert "keeps running on its previous config" in body["hint"]
        assert submit(alice, b"still here", dest="+491705550011").status == 0
        metrics = api(bridge, "GET", "/metrics", token=None).text
        assert 'smpp_bridge_config_reloads_total{result="invalid"} 1.0' in metrics
        alice.unbind()
        alice.disconnect()
    finally:
        bridge.stop()


def test_sighup_reloads_routes_and_queued_messages_follow(tmp_path, emulator):
    bridge = start_plain(tmp_path, emulator)
    try:
        alice = client(bridge.port)
        alice.bind_transceiver(system_id="alice", password="secret1")
        for ch in ("goip1:1", "goip1:2"):
            api(bridge, "POST", f"/api/channels/{ch}/drain", token=None)
        to_de = submit(alice, b"rerouted", dest="+491705550020", registered_delivery=1).message_id.decode()
        to_uk = submit(alice, b"no route any more", dest="+447700900000", registered_delivery=1).message_id.decode()
        # Route "all" becomes "germany", which takes +49 only.
        text = bridge.config_path.read_text().replace(
            "  - name: all\n    channels: [goip1]", "  - name: germany\n    prefixes: [\"+49\"]\n    channels: [goip1]"
        )
        assert "germany" in text
        bridge.config_path.write_text(text)
        bridge.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "config reloaded" in bridge.log_text())
        # The message no route takes is rejected with a receipt; the other waits on its new route.
        (dlr,) = receive_deliver_sm(alice, 1)
        assert (receipt_fields(dlr)["id"], receipt_fields(dlr)["stat"]) == (to_uk, "REJECTD")
        st = api(bridge, "GET", "/api/status", token=None).json()
        assert [(r["name"], r["queued"]) for r in st["routes"]] == [("germany", 1)]
        events = api(bridge, "GET", f"/api/messages/{to_de}", token=None).json()["events"]
        assert "removed by a config reload; now route 'germany'" in events[-1]["detail"]
        api(bridge, "POST", "/api/channels/goip1:1/resume", token=None)
        (dlr,) = receive_deliver_sm(alice, 1)
        assert (receipt_fields(dlr)["id"], receipt_fields(dlr)["stat"]) == (to_de, "DELIVRD")
        # A device change needs a restart: the answer says so.
        bridge.config_path.write_text(text.replace("lines: 2", "lines: 3"))
        r = api(bridge, "POST", "/api/reload", token=None).json()
        assert r["ok"] is True
        restart = {x["section"]: x["why"] for x in r["restart_required"]}
        assert set(restart) == {"devices", "routes"} and restart["routes"].endswith("not running: goip1:3")
        alice.unbind()
        alice.disconnect()
    finally:
        bridge.stop()
