"""End to end, one device kind at a time: smpplib <-> the bridge process <-> the kind's emulator
process (``smpp-bridge emulate KIND``), all over real sockets.

For every kind: a submit goes out (the emulator records it), the receipt has the stat and TLVs the
kind's receipt policy promises (router/brevis: no handset reports, so receipts.no_report decides;
GoIP SMS-server mode and the phones: DELIVRD only on a real handset report), device failure codes
become UNDELIV with network_error_code, inbound SMS reach the ESME exactly once where the device
offers them, and the kind's faults do what they should.
"""

from __future__ import annotations

import time

import gsm0338  # noqa: F401  (the "gsm03.38" codec, to read data_coding 0 as an ESME would)
import httpx
import pytest

from e2e_support import (
    BridgeProcess,
    KindEmulator,
    admin,
    base_config,
    bind_trx,
    channel_states,
    free_port,
    free_udp_port,
    message_state,
    no_more_deliver_sm,
    receipt_fields,
    receive_deliver_sm,
    start_emulators,
    submit,
    wait_for,
    with_admin,
)

SCHEDULER = """
scheduler:
  retry_backoff: 0.2
  retry_backoff_max: 1
  busy_retry: 0.2
  logout_cooldown: 0.5
  quarantine_base: 0.5
  quarantine_max: 1
"""
INBOUND = """
inbound:
  default_esme: alice
  delete_after_commit: true
"""

# message_state TLV values (SMPP 3.4 §5.2.28)
DELIVERED, UNDELIVERABLE, ACCEPTED, EXPIRED = 2, 5, 6, 3
# network_error_code: type 8 (MC specific), then the device's code (2 octets)


def nec(code: int) -> bytes:
    return bytes([8]) + code.to_bytes(2, "big")


def site(devices: str, routes: str, *, extra: str = "", admin_port: int | None = None,
         token: str | None = None) -> str:
    cfg = base_config(extra="devices:\n" + devices + "routes:\n" + routes + SCHEDULER + INBOUND + extra)
    return with_admin(cfg, port=admin_port, token=token)


def receipt(c, mid: str, **expected):  # type: ignore[no-untyped-def]
    """The next deliver_sm must be the receipt of ``mid``; returns (fields, pdu)."""
    (dlr,) = receive_deliver_sm(c, 1)
    f = receipt_fields(dlr)
    assert f["id"] == mid, f
    assert dlr.receipted_message_id.decode() == mid
    for key, value in expected.items():
        assert f[key] == value, (key, f)
    return f, dlr


def mo_text(pdu) -> str:  # type: ignore[no-untyped-def]
    body = pdu.short_message or b""
    return body.decode("gsm03.38") if pdu.data_coding == 0 else body.decode("utf-16-be")


def inbound_rows(bridge: BridgeProcess) -> int:
    with bridge.db() as db:
        return db.execute("SELECT COUNT(*) FROM inbound").fetchone()[0]


def mo_outbox_rows(bridge: BridgeProcess) -> int:
    with bridge.db() as db:
        return db.execute("SELECT COUNT(*) FROM outbox WHERE kind='mo'").fetchone()[0]


# ---------------------------------------------------------------------------------------------
# LTE router (SMS via URL)


def test_router_send_receipts_inbox_and_faults(tmp_path):
    (router,) = start_emulators(("router", "--send-duration", "0.05"))
    devices = f"""\
  - name: router1
    kind: router
    url: {router.url}
    username: user1
    password: user_pass
    timeout: 3
    inbox_poll_interval: 0.2
    health_interval: 0.5
    caps: {{per_minute: 0}}
"""
    routes = "  - name: all\n    channels: [router1]\n"
    bridge = BridgeProcess(tmp_path, site(devices, routes)).start()
    try:
        c = bind_trx(bridge)
        # 1. Sent (a line break goes as %n and arrives as one); no handset report from a router:
        # receipts.no_report (default accepted) -> ACCEPTD.
        mid = submit(c, b"Hallo\nRouter", dest="+4917011", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="ACCEPTD", err="000")
        assert dlr.message_state == ACCEPTED
        assert [(s["number"], s["text"], s["method"]) for s in router.sent()] == [("+4917011", "Hallo\nRouter", "POST")]

        # 2. Inbound: the router's inbox -> one MO; the entry is deleted on the router once stored.
        router.inject(sender="+4915112345", text="Antwort vom Handy")
        (mo,) = receive_deliver_sm(c, 1)
        assert mo.esm_class == 0 and mo.source_addr.decode() == "+4915112345"
        assert mo_text(mo) == "Antwort vom Handy"
        wait_for(lambda: router.state()["inbox"] == {})
        assert no_more_deliver_sm(c, 1.0) == [] and inbound_rows(bridge) == 1

        # 3. WRONG_NUMBER: refused for good -> UNDELIV, never retried.
        router.faults(wrong_number=r"^\+99")
        mid = submit(c, b"to nowhere", dest="+99123456", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="UNDELIV")
        assert dlr.message_state == UNDELIVERABLE
        assert len(router.sent()) == 1

        # 4. receipts.no_report: delivered (a config reload) -> DELIVRD for the router's OK.
        bridge.config_path.write_text(bridge.config_path.read_text() + "receipts:\n  no_report: delivered\n")
        assert admin(bridge, "POST", "/api/reload")["ok"]
        mid = submit(c, b"now DELIVRD", dest="+4917022", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="DELIVRD")
        assert dlr.message_state == DELIVERED

        # 5. "Disabled" (SMS gateway API switched off): the device is quarantined, its messages
        # wait (one with a short validity expires meanwhile), and go out once it is enabled.
        router.faults(enabled=False)
        wait_for(lambda: channel_states(bridge)["router1:1"] == "quarantine")
        t0 = time.monotonic()
        short = submit(c, b"short-lived", dest="+4917033", registered_delivery=1,
                       validity_period="000000000001000R").message_id.decode()
        waits = submit(c, b"waits", dest="+4917044", registered_delivery=1).message_id.decode()
        assert message_state(bridge, waits) == "queued"
        status = admin(bridge, "GET", "/api/status")
        (dev,) = status["devices"]
        assert not dev["health"]["up"] and "SMS Gateway" in dev["health"]["detail"]
        wait_for(lambda: time.monotonic() - t0 > 1.5)  # the short-lived one's validity is over
        router.faults(enabled=True)
        got = {receipt_fields(d)["id"]: receipt_fields(d)["stat"] for d in receive_deliver_sm(c, 2)}
        assert got == {short: "EXPIRED", waits: "DELIVRD"}
        texts = [s["text"] for s in router.sent()]
        assert "short-lived" not in texts and texts.count("waits") == 1
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        print(bridge.log_text())  # shown when the test fails
        router.stop()


# ---------------------------------------------------------------------------------------------
# brevis.one gateway


def test_brevis_send_flash_hex_and_auth_faults(tmp_path):
    (brevis,) = start_emulators(("brevis", "--send-duration", "0.05"))
    devices = f"""\
  - name: brevis1
    kind: brevis
    url: {brevis.url}
    username: apiuser
    password: secret
    timeout: 3
    health_interval: 0.5
    caps: {{per_minute: 0}}
"""
    routes = "  - name: all\n    channels: [brevis1]\n"
    extra = "receipts:\n  no_report: delivered\n"
    bridge = BridgeProcess(tmp_path, site(devices, routes, extra=extra)
                           .replace("scheduler:\n", "scheduler:\n  max_attempts: 2\n")).start()
    try:
        c = bind_trx(bridge)
        # 1. Plain text, DELIVRD as configured (receipts.no_report: delivered).
        mid = submit(c, b"brevis plain", dest="+4917011", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="DELIVRD")
        assert dlr.message_state == DELIVERED
        # 2. A class-0 message (data_coding 0x10) goes as a flash SMS; text beyond ASCII in hex mode.
        mid = submit(c, b"flash!", dest="+4917022", registered_delivery=1, data_coding=0x10).message_id.decode()
        receipt(c, mid, stat="DELIVRD")
        mid = submit(c, "Grüße".encode("utf-16-be"), dest="+4917033", registered_delivery=1,
                     data_coding=8).message_id.decode()
        receipt(c, mid, stat="DELIVRD")
        sent = brevis.sent()
        assert [(s["to"], s["text"], s["flash"], s["hexmode"]) for s in sent] == [
            ("+4917011", "brevis plain", False, False),
            ("+4917022", "flash!", True, False),
            ("+4917033", "Grüße", False, True),
        ]

        # 3. 401 once: the device is quarantined, the message waits and then goes out once.
        brevis.faults(fail_next=[1, "unauthorized"])
        mid = submit(c, b"after a 401", dest="+4917044", registered_delivery=1).message_id.decode()
        receipt(c, mid, stat="DELIVRD")
        assert [s["text"] for s in brevis.sent()].count("after a 401") == 1

        # 4. 403 (the user lost "Access to the HTTP API"): quarantined until it is granted again.
        brevis.faults(api_access=False)
        mid = submit(c, b"after a 403", dest="+4917055", registered_delivery=1).message_id.decode()
        wait_for(lambda: channel_states(bridge)["brevis1:1"] == "quarantine")
        wait_for(lambda: "HTTP API" in admin(bridge, "GET", "/api/status")["devices"][0]["health"]["detail"])
        assert message_state(bridge, mid) in ("queued", "retry_wait")
        brevis.faults(api_access=True)
        receipt(c, mid, stat="DELIVRD")

        # 5. 400 "See Gateway logs" (a number it refuses): retried, then UNDELIV.
        brevis.faults(wrong_number=r"^\+99")
        mid = submit(c, b"never", dest="+99123456", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="UNDELIV")
        assert dlr.message_state == UNDELIVERABLE
        assert "never" not in [s["text"] for s in brevis.sent()]
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        print(bridge.log_text())  # shown when the test fails
        brevis.stop()


# ---------------------------------------------------------------------------------------------
# Android phone through SmsGateway24 (cloud API)


@pytest.mark.slow
def test_smsgateway24_reports_inbound_token_renewal_and_offline_failover(tmp_path):
    phone, brevis = start_emulators(("smsgateway24", "--step", "0.05", "--sims", "2"),
                                    ("brevis", "--send-duration", "0.05"))
    devices = f"""\
  - name: phone24
    kind: smsgateway24
    url: {phone.url}
    email: user@example.com
    password: secret
    device_id: 260
    sims: 2
    offline_after: 5
    timeout: 3
    status_poll_interval: 0.2
    status_timeout: 3
    inbox_poll_interval: 0.3
    health_interval: 0.5
    caps: {{per_minute: 0}}
  - name: brevis1
    kind: brevis
    url: {brevis.url}
    username: apiuser
    password: secret
    timeout: 3
    caps: {{per_minute: 0}}
"""
    routes = """\
  - name: phone
    prefixes: ["+33"]
    channels: ["phone24:1"]
    failover: backup
  - name: backup
    channels: [brevis1]
"""
    bridge = BridgeProcess(tmp_path, site(devices, routes)).start()
    try:
        c = bind_trx(bridge)
        # 1. Status 7 (a real handset report) -> DELIVRD; priority_flag 2 -> SmsGateway24's urgent.
        mid = submit(c, b"via the cloud", dest="+33611", registered_delivery=1, priority_flag=2).message_id.decode()
        f, dlr = receipt(c, mid, stat="DELIVRD", err="000")
        assert dlr.message_state == DELIVERED
        (sent,) = phone.sent()
        assert (sent["sendto"], sent["body"], sent["sim"], sent["urgent"]) == ("+33611", "via the cloud", 0, True)

        # 2. Status 10 (not sent: no service) -> UNDELIV, err 010, network_error_code 10.
        phone.faults(fail_next=[1, 10])
        mid = submit(c, b"no service", dest="+33622", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="UNDELIV", err="010")
        assert dlr.message_state == UNDELIVERABLE and bytes(dlr.network_error_code) == nec(10)

        # 3. Status 6 and never 7 (no handset report): not DELIVRD - ACCEPTD after status_timeout.
        phone.faults(final_status=6)
        mid = submit(c, b"no report", dest="+33633", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="ACCEPTD")
        assert dlr.message_state == ACCEPTED
        phone.faults(final_status=7)

        # 4. Incoming SMS (getallsms status 5, read again on every poll) -> one MO.
        phone.inject(sender="+33699", text="bonjour", sim=1)
        (mo,) = receive_deliver_sm(c, 1)
        assert mo_text(mo) == "bonjour" and mo.source_addr.decode() == "+33699"
        assert no_more_deliver_sm(c, 1.0) == [] and inbound_rows(bridge) == 1

        # 5. The token expires mid-run: renewed, and the message still goes out (once).
        logins = phone.state()["calls"]["gettoken"]
        phone.faults(expire_tokens=True)
        mid = submit(c, b"after renewal", dest="+33644", registered_delivery=1).message_id.decode()
        receipt(c, mid, stat="DELIVRD")
        assert phone.state()["calls"]["gettoken"] == logins + 1
        assert [s["body"] for s in phone.sent()].count("after renewal") == 1

        # 6. The phone goes offline (not seen for longer than offline_after): its channel is out
        # of service and its route fails over to the brevis gateway; back online, back in use.
        phone.faults(offline_for=100)
        wait_for(lambda: channel_states(bridge)["phone24:1"] == "quarantine")
        mid = submit(c, b"while the phone is off", dest="+33655", registered_delivery=1).message_id.decode()
        receipt(c, mid, stat="ACCEPTD")  # the brevis gateway: no handset reports
        assert [s["to"] for s in brevis.sent()] == ["+33655"]
        phone.faults(online=True)
        wait_for(lambda: channel_states(bridge)["phone24:1"] == "ready")
        mid = submit(c, b"phone is back", dest="+33666", registered_delivery=1).message_id.decode()
        receipt(c, mid, stat="DELIVRD")
        assert phone.sent()[-1]["body"] == "phone is back"
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        print(bridge.log_text())  # shown when the test fails
        phone.stop()
        brevis.stop()


# ---------------------------------------------------------------------------------------------
# Android phone through SMSGate (local server, webhooks to the admin port)

SIGNING_KEY = "e2e-webhook-signing-key"


@pytest.mark.slow
def test_smsgate_webhooks_reports_inbound_signature_and_offline_failover(tmp_path):
    from bridge.devices.smsgate.messages import sign_webhook

    phone, router = start_emulators(
        ("smsgate", "--sims", "1", "--signing-key", SIGNING_KEY, "--deliver-delay", "0.05"),
        ("router", "--send-duration", "0.05"),
    )
    admin_port = free_port()
    token = "e2e-admin-token-0123456789"
    webhook = f"http://127.0.0.1:{admin_port}/webhooks/smsgate/phone1"
    devices = f"""\
  - name: phone1
    kind: smsgate
    url: {phone.url}
    username: sms
    password: password
    sims: 1
    webhook_secret: {SIGNING_KEY}
    register_webhooks: true
    webhook_url: {webhook}
    timeout: 1
    status_poll_interval: 0.5
    status_timeout: 5
    inbox_poll_interval: 0.1
    health_interval: 0.5
    caps: {{per_minute: 0}}
  - name: router1
    kind: router
    url: {router.url}
    username: user1
    password: user_pass
    timeout: 3
    inbox_poll_interval: 60
    caps: {{per_minute: 0}}
"""
    routes = """\
  - name: phone
    prefixes: ["+33"]
    channels: [phone1]
    failover: backup
  - name: backup
    channels: [router1]
"""
    bridge = BridgeProcess(tmp_path, site(devices, routes, admin_port=admin_port, token=token)).start()
    auth = {"Authorization": f"Bearer {token}"}

    def status() -> dict:
        return httpx.get(bridge.admin_url + "/api/status", headers=auth, timeout=5).json()

    def states() -> dict:
        return {ch["key"]: ch["state"] for d in status()["devices"] for ch in d["channels"]}

    try:
        # The bridge registered its four webhooks on the phone at start.
        wait_for(lambda: len(phone.state()["webhooks"]) == 4)
        assert {w["url"] for w in phone.state()["webhooks"]} == {webhook}
        c = bind_trx(bridge)

        # 1. A long text goes to the phone whole; the handset reports each of its 2 parts; the
        # receipt says DELIVRD once both reports are in.
        long_text = "x" * 200
        mid = submit(c, b"", dest="+33611123456", registered_delivery=1,
                     message_payload=long_text.encode()).message_id.decode()
        f, dlr = receipt(c, mid, stat="DELIVRD", err="000")
        assert dlr.message_state == DELIVERED
        (sent,) = phone.sent()
        assert (sent["phoneNumbers"], sent["text"], sent["parts"], sent["simNumber"]) == (["+33611123456"], long_text, 2, 1)
        assert sent["withDeliveryReport"] is True
        delivered = [a for a in phone.call("GET", "/emulator/webhook_log") if a["event"] == "sms:delivered"]
        assert len(delivered) == 2 and all(a["status"] == 200 for a in delivered)

        # 2. sms:failed with an Android result code -> UNDELIV, err 002 (RADIO_OFF), TLV 2.
        phone.faults(fail_next={"count": 1, "reason": "RESULT_ERROR_RADIO_OFF"})
        mid = submit(c, b"radio off", dest="+33622123456", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="UNDELIV", err="002")
        assert dlr.message_state == UNDELIVERABLE and bytes(dlr.network_error_code) == nec(2)

        # 3. sms:received -> one MO, also when the phone sends the webhook twice.
        phone.faults(duplicate_webhooks=True)
        phone.inject(sender="+33699123456", text="salut")
        (mo,) = receive_deliver_sm(c, 1)
        assert mo_text(mo) == "salut" and mo.source_addr.decode() == "+33699123456"
        wait_for(lambda: phone.state()["webhooks_pending"] == 0)
        assert no_more_deliver_sm(c, 1.0) == [] and inbound_rows(bridge) == 1
        received = [a for a in phone.call("GET", "/emulator/webhook_log") if a["event"] == "sms:received"]
        assert [a["status"] for a in received] == [200, 200]
        phone.faults(duplicate_webhooks=False)

        # 4. A wrong signature is refused (401), the SMS is not taken; a right one needs neither
        # the admin token nor a loopback Host (the phone calls from the LAN).
        phone.faults(wrong_signature=True)
        phone.inject(sender="+33698123456", text="forged")
        wait_for(lambda: phone.state()["webhooks_pending"] == 0)
        forged = [a for a in phone.call("GET", "/emulator/webhook_log") if a["event"] == "sms:received"][2:]
        assert forged and {a["status"] for a in forged} == {401}
        assert no_more_deliver_sm(c, 0.5) == [] and inbound_rows(bridge) == 1
        phone.faults(wrong_signature=False)
        body = b'{"event":"sms:sent","id":"e2e-event-1","payload":{"messageId":"not-ours"}}'
        ts = str(int(time.time()))
        r = httpx.post(webhook, content=body, timeout=5, headers={
            "Host": "bridge.lan:8025", "X-Timestamp": ts, "X-Signature": sign_webhook(SIGNING_KEY, body, ts)})
        assert r.status_code == 200
        r = httpx.post(webhook, content=body, timeout=5, headers={"X-Timestamp": ts, "X-Signature": "0" * 64})
        assert r.status_code == 401
        assert httpx.get(bridge.admin_url + "/api/status", timeout=5).status_code == 401  # the API needs it

        # 5. The phone drops off the network (its API hangs): unhealthy, +33 fails over to the
        # router; back, and +33 goes through the phone again.
        phone.faults(hang=True)
        wait_for(lambda: states()["phone1:1"] == "quarantine")
        mid = submit(c, b"phone is away", dest="+33633123456", registered_delivery=1).message_id.decode()
        receipt(c, mid, stat="ACCEPTD")
        assert [(s["number"], s["text"]) for s in router.sent()] == [("+33633123456", "phone is away")]
        phone.faults(hang=False)
        wait_for(lambda: states()["phone1:1"] == "ready")
        mid = submit(c, b"phone is back", dest="+33644123456", registered_delivery=1).message_id.decode()
        receipt(c, mid, stat="DELIVRD")
        assert phone.sent()[-1]["text"] == "phone is back"
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        print(bridge.log_text())  # shown when the test fails
        phone.stop()
        router.stop()


# ---------------------------------------------------------------------------------------------
# GoIP in SMS-server mode (UDP: the GoIP calls the bridge)

UDP_PASSWORD = "udp-pass"
KEEPALIVE_TIMEOUT = 2.0


@pytest.mark.slow
def test_goip_udp_handset_reports_receive_passwords_and_dead_line(tmp_path):
    udp_port = free_udp_port()
    devices = f"""\
  - name: gudp
    kind: goip_udp
    listen_host: 127.0.0.1
    listen_port: {udp_port}
    line_ids: {{1: gw1, 2: gw2}}
    password: {UDP_PASSWORD}
    keepalive_timeout: {KEEPALIVE_TIMEOUT}
    status_poll_interval: 0.2
    status_timeout: 3
    inbox_poll_interval: 5
    health_interval: 60
    caps: {{per_minute: 0}}
"""
    # +43 only through line 1, to watch what a dead line does; everything else on both lines.
    routes = """\
  - name: line1
    prefixes: ["+43"]
    channels: ["gudp:1"]
  - name: all
    channels: [gudp]
"""
    bridge = BridgeProcess(tmp_path, site(devices, routes)).start()
    # The GoIP starts the talk (it works behind NAT): it is started once the bridge listens.
    goip = KindEmulator(
        "goip_udp", "--server-port", udp_port, "--line-ids", "gw1,gw2", "--password", UDP_PASSWORD,
        "--keepalive-interval", "0.3", "--retransmit-interval", "0.3", "--delivery-delay", "0.1",
        "--send-duration", "0.05",
    )
    try:
        wait_for(lambda: all(s["registered"] for s in goip.state()["lines"].values()))
        wait_for(lambda: set(channel_states(bridge).values()) == {"ready"})
        c = bind_trx(bridge)

        # 1. MSG/PASSWORD/SEND/OK, then the handset's DELIVER state 0 -> DELIVRD.
        mid = submit(c, b"ueber UDP", dest="+4917011", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="DELIVRD", err="000")
        assert dlr.message_state == DELIVERED
        (sent,) = goip.sent()
        assert (sent["destination"], sent["text"], sent["error"]) == ("+4917011", "ueber UDP", "")

        # 2. A DELIVER with a failure state -> UNDELIV with that state as network_error_code.
        goip.faults(delivery={"+4917022": [2, None]})
        mid = submit(c, b"bounces", dest="+4917022", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="UNDELIV", err="002")
        assert bytes(dlr.network_error_code) == nec(2)

        # 3. No DELIVER at all (the handset is off): not DELIVRD - ACCEPTD after status_timeout.
        goip.faults(delivery={"+4917033": [None, None]})
        mid = submit(c, b"phone off", dest="+4917033", registered_delivery=1).message_id.decode()
        f, dlr = receipt(c, mid, stat="ACCEPTD")
        assert dlr.message_state == ACCEPTED

        # 4. RECEIVE -> one MO, and RECEIVE N OK only once it is stored (the GoIP stops repeating).
        seq = goip.inject(line=2, sender="+4915112345", text="Hallo; mit: Zeichen")["seq"]
        (mo,) = receive_deliver_sm(c, 1)
        assert mo_text(mo) == "Hallo; mit: Zeichen" and mo.source_addr.decode() == "+4915112345"
        wait_for(lambda: goip.state()["pushes"][str(seq)]["acked"])
        assert no_more_deliver_sm(c, 1.0) == [] and inbound_rows(bridge) == 1

        # 5. A wrong password is refused: keepalives get status 400, a RECEIVE an ERROR, and
        # nothing reaches the ESME. With the right one again, the line registers again.
        goip.faults(wrong_password=True)
        goip.call("POST", "/emulator/keepalive", {})
        wait_for(lambda: not any(s["registered"] for s in goip.state()["lines"].values()))
        bad = goip.inject(line=1, sender="+4915100000", text="forged")["seq"]
        wait_for(lambda: goip.state()["pushes"][str(bad)]["errors"])
        assert "password error" in goip.state()["pushes"][str(bad)]["errors"][0]
        assert no_more_deliver_sm(c, 0.5) == [] and inbound_rows(bridge) == 1
        goip.faults(wrong_password=False)
        goip.call("POST", "/emulator/keepalive", {})
        wait_for(lambda: all(s["registered"] for s in goip.state()["lines"].values()))

        # 6. A dead line (no keepalive for keepalive_timeout): CHANNEL_DOWN, nothing is sent on
        # it, the channel rests and the message waits; when the line is back, it goes out once.
        goip.faults(silence={"1": True})
        silenced = time.monotonic()
        wait_for(lambda: time.monotonic() - silenced > KEEPALIVE_TIMEOUT + 0.5)  # now overdue
        mid = submit(c, b"line 1 only", dest="+4366411", registered_delivery=1).message_id.decode()
        wait_for(lambda: channel_states(bridge)["gudp:1"] in ("cooldown", "quarantine"))
        events = admin(bridge, "GET", f"/api/messages/{mid}")["events"]
        assert any("channel down" in (e["detail"] or "") and "no keepalive" in e["detail"] for e in events), events
        assert "line 1 only" not in [s["text"] for s in goip.sent()]
        goip.faults(silence={"1": False})
        f, dlr = receipt(c, mid, stat="DELIVRD")
        assert [(s["line"], s["text"]) for s in goip.sent() if s["text"] == "line 1 only"] == [("1", "line 1 only")]
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        print(bridge.log_text())  # shown when the test fails
        goip.stop()
