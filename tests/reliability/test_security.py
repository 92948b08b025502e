"""Group 6, security.

Covered where the feature lives, not repeated here:

* TLS listener with a real client (smpplib over ssl, the chain verified against a test CA):
  tests/e2e/test_smpp_sessions.py::test_tls_listener_with_smpplib, and plain SMPP on the TLS port
  gets no SMPP answer: ::test_plain_smpp_on_the_tls_port_does_not_bind.
* A disallowed IP cannot bind with the right password: tests/e2e/test_smpp_frontend.py::
  test_disallowed_ip_cannot_bind_even_with_the_right_password (an allow-list that excludes
  loopback); extended below with 127.0.0.2 as the disallowed source.
* The admin API refuses a missing or wrong token, in constant time: tests/ops/test_admin_auth.py
  (and tests/ops/test_admin_api.py); the whole run below also checks it over HTTP.
* Config files holding secrets are refused when group/world-readable, with the chmod hint:
  tests/test_config.py::test_inline_secret_refused_in_group_or_world_readable_file; below, the
  same through `smpp-bridge run` (exit status and message).

Short form only: scenarios.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import smpplib.consts as sc
import smpplib.exceptions

from bridge.smpp.constants import CommandId, Status
from e2e_support import BridgeProcess, base_config, client, free_port, receive_deliver_sm, recv_pdu, submit
from reliability_support import Goip, bind_pdu, connect_from

C = CommandId


def test_disallowed_source_address_cannot_bind_even_with_the_right_password(tmp_path):
    esmes = """
- system_id: local
  password: localpw1
  allowed_ips: [127.0.0.1]
- system_id: other
  password: otherpw1
  allowed_ips: [127.0.0.2]
"""
    bridge = BridgeProcess(tmp_path, base_config(esmes=esmes)).start()
    try:
        def status(source: str, system_id: str, password: str) -> int:
            s = connect_from(source, bridge.port)
            s.sendall(bind_pdu(system_id, password))
            got = recv_pdu(s)
            s.close()
            assert got is not None
            return got[1]

        assert status("127.0.0.2", "local", "localpw1") == Status.RBINDFAIL
        assert status("127.0.0.2", "local", "wrong") == Status.RBINDFAIL  # same answer: no password oracle
        assert status("127.0.0.1", "local", "localpw1") == Status.ROK
        assert status("127.0.0.1", "other", "otherpw1") == Status.RBINDFAIL
        assert status("127.0.0.2", "other", "otherpw1") == Status.ROK
        log = bridge.log_text()
        assert "bind refused: system_id='local' from 127.0.0.2: source IP not in the ESME's allowed_ips" in log
    finally:
        bridge.stop()


SECRETS = {
    "alice": "Al1cePw9",  # inline
    "bob": "B0bPw77x",  # from the environment
    "carol": "C4rolPw3",  # from a file
    "goip": "G0ipPw55",  # the GoIP's web password
    "goip_wrong": "Wr0ngPw1",  # a second device configured with a wrong one
    "token": "adm1n-t0ken-5ecret-0123456789",
    "guess": "guess123",  # what an attacker (or a typo) sends
    "wrong_token": "n0t-the-t0ken-9876543210",
}


def test_no_credential_in_any_log_line_of_a_whole_run(tmp_path):
    """A bridge with a GoIP (and one with wrong credentials), at debug level with the PDU log
    on: binds with wrong and right passwords, submits with receipts, an inbound SMS, admin API
    calls with no, a wrong and the right token, a config reload. Then every line it wrote, and
    every PDU log file, is searched for every secret."""
    goip = Goip(lines=2, password=SECRETS["goip"])
    (tmp_path / "carol.pw").write_text(SECRETS["carol"] + "\n")
    os.chmod(tmp_path / "carol.pw", 0o600)
    admin_port = free_port()
    config = base_config(
        esmes=f"""
        - system_id: alice
          password: {SECRETS["alice"]}
          allowed_ips: [127.0.0.1]
          max_binds: 4
        - system_id: bob
          password_env: BOB_PW
          allowed_ips: [127.0.0.1]
        - system_id: carol
          password_file: {tmp_path / "carol.pw"}
          allowed_ips: [127.0.0.1]
        """,
        extra=f"""
devices:
  - name: goip1
    kind: goip_http
    url: {goip.url}
    username: admin
    password: {SECRETS["goip"]}
    lines: 2
    timeout: 2
    status_poll_interval: 0.1
    status_timeout: 10
    inbox_poll_interval: 0.5
    caps: {{per_minute: 0}}
  - name: goip2
    kind: goip_http
    url: {goip.url}
    username: admin
    password: {SECRETS["goip_wrong"]}
    lines: 1
    timeout: 2
    status_poll_interval: 0.1
    status_timeout: 10
    inbox_poll_interval: 0.5
    caps: {{per_minute: 0}}
routes:
  - name: wrongcreds
    prefixes: ["+48"]
    channels: [goip2]
  - name: all
    channels: [goip1]
scheduler:
  retry_backoff: 0.2
  retry_backoff_max: 1
  max_attempts: 2
  quarantine_base: 0.5
  quarantine_max: 1
inbound:
  default_esme: alice
logging:
  level: debug
  pdu_log:
    enabled: true
""",
    ).replace("admin:\n  port: 0\n", f"admin:\n  host: 127.0.0.1\n  port: {admin_port}\n  token: {SECRETS['token']}\n")
    bridge = BridgeProcess(tmp_path, config)
    os.environ["BOB_PW"] = SECRETS["bob"]
    try:
        bridge.start()
        # Wrong passwords, then the right ones.
        for system_id in ("alice", "bob", "carol"):
            c = client(bridge.port)
            with pytest.raises(smpplib.exceptions.PDUError) as err:
                c.bind_transceiver(system_id=system_id, password=SECRETS["guess"])
            assert err.value.args[1] == sc.SMPP_ESME_RINVPASWD
            c.disconnect()
        for system_id in ("bob", "carol"):
            c = client(bridge.port)
            c.bind_transmitter(system_id=system_id, password=SECRETS[system_id])
            assert submit(c, b"hello from " + system_id.encode()).status == 0
            c.unbind()
            c.disconnect()
        alice = client(bridge.port)
        alice.bind_transceiver(system_id="alice", password=SECRETS["alice"])
        assert submit(alice, b"to a phone", registered_delivery=1).status == 0
        assert submit(alice, b"to a device with the wrong password", dest="+48601234567", registered_delivery=1).status == 0
        goip.inject(1, "+4915550001", "an inbound SMS")
        # The receipt of the first and the MO; the second waits while goip2 refuses our login.
        got = receive_deliver_sm(alice, 2, timeout=30)
        assert any(p.short_message == b"an inbound SMS" for p in got)
        # The admin API: no token, a wrong one, the right one.
        api = f"http://127.0.0.1:{admin_port}/api"
        assert httpx.get(f"{api}/status", timeout=10).status_code == 401
        assert httpx.get(f"{api}/status", headers={"Authorization": f"Bearer {SECRETS['wrong_token']}"}, timeout=10).status_code == 401
        assert httpx.get(f"{api}/status", headers={"X-Admin-Token": SECRETS["wrong_token"]}, timeout=10).status_code == 401
        auth = {"Authorization": f"Bearer {SECRETS['token']}"}
        assert httpx.get(f"{api}/status", headers=auth, timeout=10).status_code == 200
        assert httpx.post(f"{api}/reload", headers=auth, timeout=10).status_code == 200
        assert httpx.get(f"{api}/pdu-logs", headers=auth, timeout=10).status_code == 200
        alice.unbind()
        alice.disconnect()
        time.sleep(0.5)
    finally:
        os.environ.pop("BOB_PW", None)
        bridge.stop()
        goip.stop()

    log = bridge.log_text()
    pdu_logs = {p: p.read_text(errors="replace") for p in (tmp_path / "data").rglob("*") if p.is_file() and "pdu" in str(p)}
    assert len(log.splitlines()) > 20 and pdu_logs, "expected a verbose run and PDU log files"
    assert "bind refused" in log and "credentials" in log  # the wrong guesses and goip2 were logged
    for name, secret in SECRETS.items():
        assert secret not in log, f"the {name} secret is in the bridge's log"
        for path, text in pdu_logs.items():
            assert secret not in text, f"the {name} secret is in the PDU log {path}"
    # The GoIP credentials travel in query strings: not even the URL parameter may show.
    assert f"p={SECRETS['goip']}" not in log and "p=G0ip" not in log
    print(f"credentials: {len(SECRETS)} secrets, none in {len(log.splitlines())} log lines "
          f"or {len(pdu_logs)} PDU log files")


def test_run_refuses_a_world_readable_config_with_a_secret(tmp_path):
    """tests/test_config.py checks the loader; this checks what an operator sees from
    `smpp-bridge run`: a non-zero exit, the file, and the chmod that fixes it."""
    path = tmp_path / "bridge.yaml"
    path.write_text(textwrap.dedent(base_config()))
    os.chmod(path, 0o644)
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(path)],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode != 0
    assert f"chmod 600 {path}" in r.stderr, r.stderr
    assert "secret1" not in r.stderr + r.stdout  # the message names the key, not the secret
    assert "smpp-bridge ready" not in r.stdout
    os.chmod(path, 0o600)  # and with the hint applied, it starts
    proc = subprocess.Popen([sys.executable, "-m", "bridge.cli", "run", "--config", str(path)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 20
        for line in proc.stdout:
            if "smpp-bridge ready" in line or time.monotonic() > deadline:
                break
        assert "smpp-bridge ready" in line
    finally:
        proc.terminate()
        proc.wait(15)


def test_world_readable_password_file_is_refused_too(tmp_path):
    secret = tmp_path / "alice.pw"
    secret.write_text("secret1\n")
    os.chmod(secret, 0o644)
    config = base_config(esmes=f"""
- system_id: alice
  password_file: {secret}
  allowed_ips: [127.0.0.1]
""")
    path = tmp_path / "bridge.yaml"
    path.write_text(config)
    os.chmod(path, 0o600)
    r = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(path)],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert r.returncode != 0 and f"chmod 600 {secret}" in r.stderr, r.stderr
    assert "secret1" not in r.stderr
