"""Webhooks end to end: receipts and inbound SMS reach an application's HTTP receiver that checks
the signature; a receiver that is down for a while gets them once it is back; a receiver refuses
what is not signed with its secret."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from bridge.frontends.http import signing
from e2e_support import (
    BridgeProcess,
    EmulatorProcess,
    client,
    free_port,
    goip_config,
    receipt_fields,
    receive_deliver_sm,
    wait_for,
    with_admin,
)

SECRET = "webhook-secret-0123456789"
KEY = "alice-api-key-0123456789"


class Receiver:
    """An application's webhook endpoint: checks the signature (401 if wrong), keeps the bodies."""

    def __init__(self, port: int, secret: str = SECRET) -> None:
        self.port = port
        self.secret = secret
        self.got: list[dict] = []
        self.refused: list[str] = []
        self.server: ThreadingHTTPServer | None = None

    def start(self) -> Receiver:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                why = signing.problem(outer.secret, headers, body, time.time())
                if why is not None:
                    outer.refused.append(why)
                    self.send_response(401)
                else:
                    outer.got.append({"path": self.path, **json.loads(body)})
                    self.send_response(204)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@pytest.fixture(scope="module")
def emulator():
    e = EmulatorProcess(lines=2, send_duration=0.05)
    yield e
    e.stop()


def start_bridge(tmp_path, emulator, port: int, deliver_via: str = "webhook") -> BridgeProcess:
    esmes = f"""
      - system_id: alice
        password: secret1
        api_key: {KEY}
        allowed_ips: [127.0.0.1]
        mo_long: payload
        receipt_url: http://127.0.0.1:{port}/receipts
        inbound_url: http://127.0.0.1:{port}/inbound
        webhook_secret: {SECRET}
        deliver_via: {deliver_via}
    """
    inbox = "    inbox_poll_interval: 0.2\n    channels:\n      \"2\": {number: \"+4915550002\"}"
    cfg = goip_config(emulator.url, lines=2, esmes=esmes, device=inbox,
                      extra="inbound:\n  default_esme: alice\n  delete_after_commit: true\n")
    return BridgeProcess(tmp_path, with_admin(cfg)).start()


def send(bridge: BridgeProcess, to: str, text: str) -> str:
    r = httpx.post(bridge.admin_url + "/api/v1/messages", auth=("alice", KEY), timeout=30,
                   json={"to": to, "text": text, "receipt": True})
    assert r.status_code == 201, r.text
    return r.json()["messages"][0]["id"]


def test_receipts_and_inbound_sms_reach_the_receiver_signed(tmp_path, emulator):
    receiver = Receiver(free_port()).start()
    bridge = start_bridge(tmp_path, emulator, receiver.port)
    try:
        mid = send(bridge, "+4917022220001", "with a receipt")
        (receipt,) = wait_for(lambda: [g for g in receiver.got if g.get("message_id") == mid], timeout=20)
        assert receipt["path"] == "/receipts" and receipt["type"] == "receipt"
        assert receipt["state"] == "delivered" and receipt["stat"] == "DELIVRD" and receipt["to"] == "+4917022220001"
        emulator.inject(2, "+4915199990000", "Antwort per Webhook ✓")
        (mo,) = wait_for(lambda: [g for g in receiver.got if g["type"] == "inbound"], timeout=20)
        assert mo["path"] == "/inbound" and mo["from"] == "+4915199990000"
        assert mo["text"] == "Antwort per Webhook ✓" and mo["esme"] == "alice"
        assert not receiver.refused
        metrics = httpx.get(bridge.admin_url + "/metrics").text
        assert 'smpp_bridge_webhook_deliveries_total{esme="alice",kind="receipt",outcome="delivered"} 1.0' in metrics
        status = httpx.get(bridge.admin_url + "/api/status").json()["webhooks"]["alice"]
        assert status["receipt"]["waiting"] == 0 and status["last_failure"] is None
    finally:
        bridge.stop()
        receiver.stop()
    assert SECRET not in bridge.log_text()


def test_a_receiver_down_for_a_while_gets_the_receipt_when_back(tmp_path, emulator):
    port = free_port()
    bridge = start_bridge(tmp_path, emulator, port)
    receiver = Receiver(port)
    try:
        mid = send(bridge, "+4917022220002", "while the receiver is down")

        def failed_once():
            st = httpx.get(bridge.admin_url + "/api/status").json()["webhooks"]["alice"]
            return st["last_failure"] if st["receipt"]["waiting"] >= 1 and st["last_failure"] else None

        failure = wait_for(failed_once, timeout=20)
        assert "Connect" in failure["reason"]
        metrics = httpx.get(bridge.admin_url + "/metrics").text
        assert 'smpp_bridge_webhook_deliveries_total{esme="alice",kind="receipt",outcome="failed"}' in metrics
        receiver.start()
        (receipt,) = wait_for(lambda: [g for g in receiver.got if g.get("message_id") == mid], timeout=30)
        assert receipt["state"] == "delivered"
    finally:
        bridge.stop()
        receiver.stop()


def test_a_receiver_with_another_secret_refuses_while_smpp_gets_its_copy(tmp_path, emulator):
    receiver = Receiver(free_port(), secret="not-the-bridges-secret-000").start()
    bridge = start_bridge(tmp_path, emulator, receiver.port, deliver_via="both")
    try:
        mid = send(bridge, "+4917022220003", "signed with the wrong secret")
        # deliver_via: both: the receipt also goes by SMPP, on its own.
        c = client(bridge.port)
        c.bind_receiver(system_id="alice", password="secret1")
        (dlr,) = receive_deliver_sm(c, 1, timeout=20)
        assert receipt_fields(dlr)["id"] == mid and receipt_fields(dlr)["stat"] == "DELIVRD"
        c.unbind()
        c.disconnect()
        assert wait_for(lambda: receiver.refused, timeout=20)[0] == "wrong signature"
        assert not receiver.got
        st = wait_for(lambda: httpx.get(bridge.admin_url + "/api/status").json()["webhooks"]["alice"]["last_failure"])
        assert st["reason"] == "HTTP 401"
    finally:
        bridge.stop()
        receiver.stop()


def test_a_tampered_or_replayed_webhook_is_refused():
    body = b'{"id":1,"type":"receipt"}'
    now = 1_800_000_000
    h = {k.lower(): v for k, v in signing.headers(SECRET, now, body).items()}
    assert signing.problem(SECRET, h, body, now) is None
    assert signing.problem(SECRET, h, body.replace(b"1", b"2"), now) == "wrong signature"
    assert signing.problem("other-secret-0123456789", h, body, now) == "wrong signature"
    assert "replay" in signing.problem(SECRET, h, body, now + signing.TOLERANCE + 1)
    # The timestamp is signed too: moving it forward to look fresh breaks the signature.
    assert signing.problem(SECRET, {**h, "x-bridge-timestamp": str(now + 600)}, body, now + 600) == "wrong signature"
    assert signing.problem(SECRET, {}, body, now) == "missing timestamp or signature"


def test_the_readme_receiver_gets_a_receipt(tmp_path, emulator):
    """The ten-line receiver of the README's "HTTP API and webhooks", run as printed there."""
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"A receiver in ten lines.*?```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) == 10
    port = free_port()
    code = code.replace('b"the esme\'s webhook_secret"', repr(SECRET.encode())).replace("8080", str(port))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    bridge = start_bridge(tmp_path, emulator, port)
    try:
        mid = send(bridge, "+4917022220004", "to the README receiver")
        delivered = 'smpp_bridge_webhook_deliveries_total{esme="alice",kind="receipt",outcome="delivered"} 1.0'
        wait_for(lambda: delivered in httpx.get(bridge.admin_url + "/metrics").text, timeout=30)
        line = proc.stdout.readline()  # printed by then: no wait on a receiver that got nothing
        assert f"'message_id': '{mid}'" in line and "'state': 'delivered'" in line, line
    finally:
        bridge.stop()
        proc.kill()
        proc.wait(5)
