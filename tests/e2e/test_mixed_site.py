"""End to end, a mixed site: one config with a GoIP (HTTP), a GoIP (SMS-server mode, UDP), an LTE
router and an Android phone (SMSGate), routes by destination prefix, and failover from one device
kind to another when a route has no healthy channel. smpplib <-> the bridge process <-> one
emulator process per device, all over real sockets; and `smpp-bridge demo --site mixed`, driven
the way its banner says.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading

import gsm0338  # noqa: F401  (the "gsm03.38" codec, to read data_coding 0 as an ESME would)
import httpx
import pytest

from e2e_support import (
    BridgeProcess,
    KindEmulator,
    base_config,
    bind_trx,
    channel_states,
    client,
    free_port,
    free_udp_port,
    receipt_fields,
    receive_deliver_sm,
    start_emulators,
    submit,
    wait_for,
    with_admin,
)

SIGNING_KEY = "mixed-site-signing-key"
UDP_PASSWORD = "udp-pass"


def mixed_config(goip: KindEmulator, router: KindEmulator, phone: KindEmulator, udp_port: int,
                 admin_port: int) -> str:
    fast = "    caps: {per_minute: 0}\n    health_interval: 0.3\n"
    return with_admin(base_config(extra=f"""
devices:
  - name: goiph
    kind: goip_http
    url: {goip.url}
    username: admin
    password: admin
    lines: 2
    timeout: 2
    status_poll_interval: 0.1
    inbox_poll_interval: 0.2
{fast}
  - name: goipu
    kind: goip_udp
    listen_host: 127.0.0.1
    listen_port: {udp_port}
    line_ids: {{1: gw1}}
    password: {UDP_PASSWORD}
    keepalive_timeout: 1.5
    status_poll_interval: 0.1
    status_timeout: 5
{fast}
  - name: router1
    kind: router
    url: {router.url}
    username: user1
    password: user_pass
    timeout: 2
    inbox_poll_interval: 0.2
{fast}
  - name: phone1
    kind: smsgate
    url: {phone.url}
    username: sms
    password: password
    sims: 1
    webhook_secret: {SIGNING_KEY}
    register_webhooks: true
    webhook_url: http://127.0.0.1:{admin_port}/webhooks/smsgate/phone1
    timeout: 1
    status_poll_interval: 0.3
    status_timeout: 5
    inbox_poll_interval: 0.1
{fast}
routes:
  - name: germany
    prefixes: ["+49"]
    channels: [goiph]
    failover: switzerland
  - name: austria
    prefixes: ["+43"]
    channels: [goipu]
    failover: germany
  - name: switzerland
    prefixes: ["+41"]
    channels: [router1]
    failover: germany
  - name: france
    prefixes: ["+33"]
    channels: [phone1]
    failover: germany
  - name: everything
    channels: [goiph]
    failover: switzerland
scheduler:
  retry_backoff: 0.2
  retry_backoff_max: 1
  busy_retry: 0.2
  logout_cooldown: 0.5
  quarantine_base: 0.5
  quarantine_max: 1
inbound:
  default_esme: alice
  delete_after_commit: true
"""), port=admin_port)


def where(emulators: dict[str, KindEmulator], text: str) -> list[str]:
    """Which emulated devices 'sent' ``text``."""
    out = []
    for name, emu in emulators.items():
        for s in emu.sent():
            if s.get("text", s.get("body")) == text and not s.get("error"):
                out.append(name)
    return out


def send_and_receipt(c, dest: str, text: str) -> str:  # type: ignore[no-untyped-def]
    mid = submit(c, text.encode(), dest=dest, registered_delivery=1).message_id.decode()
    (dlr,) = receive_deliver_sm(c, 1)
    f = receipt_fields(dlr)
    assert f["id"] == mid
    return f["stat"]


@pytest.mark.slow
def test_routes_by_prefix_inbound_from_every_kind_and_failover(tmp_path):
    udp_port = free_udp_port()
    admin_port = free_port()
    goip, router, phone = start_emulators(
        ("goip", "--lines", "2", "--send-duration", "0.05"),
        ("router", "--send-duration", "0.05"),
        ("smsgate", "--sims", "1", "--signing-key", SIGNING_KEY, "--deliver-delay", "0.05"),
    )
    bridge = BridgeProcess(tmp_path, mixed_config(goip, router, phone, udp_port, admin_port)).start()
    udp = KindEmulator("goip_udp", "--server-port", udp_port, "--line-ids", "gw1", "--password", UDP_PASSWORD,
                       "--keepalive-interval", "0.3", "--retransmit-interval", "0.3",
                       "--delivery-delay", "0.1", "--send-duration", "0.05")
    emulators = {"goiph": goip, "goipu": udp, "router1": router, "phone1": phone}
    try:
        wait_for(lambda: len(phone.state()["webhooks"]) == 4)
        wait_for(lambda: set(channel_states(bridge).values()) == {"ready"})
        c = bind_trx(bridge)

        # 1. Each prefix to its device kind, each receipt as that kind's policy says.
        cases = [
            ("+4917011", "to germany", "goiph", "DELIVRD"),  # GoIP HTTP DONE (receipts.goip_done)
            ("+4366411", "to austria", "goipu", "DELIVRD"),  # GoIP UDP: the handset's report
            ("+4179011", "to switzerland", "router1", "ACCEPTD"),  # router: no reports
            ("+33611123456", "to france", "phone1", "DELIVRD"),  # phone: the handset's report
            ("+15550001", "anywhere else", "goiph", "DELIVRD"),  # the catch-all
        ]
        for dest, text, device, stat in cases:
            assert send_and_receipt(c, dest, text) == stat, (dest, bridge.log_text())
            assert where(emulators, text) == [device]

        # 2. Inbound SMS from every kind reach the ESME, once each.
        goip.inject(line=1, sender="+4915100001", text="from the goip")
        udp.inject(line=1, sender="+4366400002", text="from the goip udp")
        router.inject(sender="+4179000003", text="from the router")
        phone.inject(sender="+33600000004", text="from the phone")
        mos = receive_deliver_sm(c, 4)
        got = sorted((m.source_addr.decode(), m.short_message.decode("gsm03.38")) for m in mos)
        assert got == sorted([
            ("+33600000004", "from the phone"),
            ("+4366400002", "from the goip udp"),
            ("+4179000003", "from the router"),
            ("+4915100001", "from the goip"),
        ])

        # 3. Every GoIP HTTP line logs out: +49 (and the catch-all) fail over to the router.
        goip.call("POST", "/emulator/faults", {"logout": {"1": None, "2": None}})
        wait_for(lambda: all(s != "ready" for k, s in channel_states(bridge).items() if k.startswith("goiph:")))
        assert send_and_receipt(c, "+4917022", "germany via the router") == "ACCEPTD"
        assert where(emulators, "germany via the router") == ["router1"]
        # ... and the phone goes away too: +33 -> germany (down) -> switzerland, along the chain.
        phone.faults(hang=True)
        wait_for(lambda: channel_states(bridge)["phone1:1"] == "quarantine")
        assert send_and_receipt(c, "+33622123456", "france via the router") == "ACCEPTD"
        assert where(emulators, "france via the router") == ["router1"]

        # 4. The lines log in again and the phone is back: each route uses its own device again.
        goip.call("POST", "/emulator/faults", {"login": [1, 2]})
        phone.faults(hang=False)
        wait_for(lambda: set(channel_states(bridge).values()) == {"ready"})
        assert send_and_receipt(c, "+4917033", "germany again") == "DELIVRD"
        assert where(emulators, "germany again") == ["goiph"]
        assert send_and_receipt(c, "+33633123456", "france again") == "DELIVRD"
        assert where(emulators, "france again") == ["phone1"]

        # 5. The GoIP in SMS-server mode stops calling in (keepalives stop): +43 fails over to
        # the GoIP HTTP; when it calls again, +43 goes through it again.
        udp.faults(silence={"1": True})
        wait_for(lambda: channel_states(bridge)["goipu:1"] != "ready")
        assert send_and_receipt(c, "+4366422", "austria via germany") == "DELIVRD"
        assert where(emulators, "austria via germany") == ["goiph"]
        udp.faults(silence={"1": False})
        wait_for(lambda: channel_states(bridge)["goipu:1"] == "ready")
        assert send_and_receipt(c, "+4366433", "austria again") == "DELIVRD"
        assert where(emulators, "austria again") == ["goipu"]
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        print(bridge.log_text())  # shown when the test fails
        for emu in emulators.values():
            emu.stop()


# ---------------------------------------------------------------------------------------------
# the demo


class DemoProcess:
    """``smpp-bridge demo --site mixed`` in a child process; the banner read into ``urls``."""

    def __init__(self, tmp_path) -> None:  # type: ignore[no-untyped-def]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bridge.cli", "demo", "--site", "mixed", "--smpp-port", "0",
             "--admin-port", "0", "--data-dir", str(tmp_path / "demo"), "--log-level", "warning"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        ready = threading.Event()

        def pump() -> None:
            assert self.proc.stdout is not None
            for line in self.proc.stdout:
                self.lines.append(line)
                if "Ctrl-C stops it" in line:
                    ready.set()
            ready.set()

        threading.Thread(target=pump, daemon=True).start()
        assert ready.wait(30), "".join(self.lines)
        self.banner = "".join(self.lines)
        self.port = int(re.search(r"SMPP on port\(s\) \[(\d+)\]", self.banner).group(1))
        self.urls = {
            name: re.search(rf"^\s+{name}\s.*?(http://127\.0\.0\.1:\d+)/$", self.banner, re.M).group(1)
            for name in ("goip-http", "goip-udp", "lte-router", "phone")
        }

    def sent(self, device: str) -> list[dict]:
        return httpx.get(self.urls[device] + "/emulator/sent", timeout=5).json()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.returncode


def test_demo_mixed_site_routes_and_fails_over_as_its_banner_says(tmp_path):
    demo = DemoProcess(tmp_path)
    try:
        banner = demo.banner
        for prefix, route, device in (("+49", "germany", "goip-http"), ("+43", "austria", "goip-udp"),
                                      ("+41", "switzerland", "lte-router"), ("+33", "france", "phone")):
            assert re.search(rf"\{prefix}\.\.\.\s+{route}\s+-> {device}\b", banner), banner
        c = client(demo.port)
        c.bind_transceiver(system_id="demo", password="demo")
        texts = {"+4917011": "goip-http", "+4366411": "goip-udp", "+4179011": "lte-router",
                 "+33611123456": "phone", "+15550001": "goip-http"}
        for dest, device in texts.items():
            submit(c, f"demo to {dest}".encode(), dest=dest, registered_delivery=1)
        receipts = receive_deliver_sm(c, len(texts), timeout=30)
        assert {receipt_fields(r)["stat"] for r in receipts} <= {"DELIVRD", "ACCEPTD"}
        for dest, device in texts.items():
            assert f"demo to {dest}" in [s.get("text") for s in demo.sent(device)], (dest, device)

        # The banner's failover recipe: log out every GoIP HTTP line, +49 goes out via the router.
        cmd = re.search(r"log out every GoIP HTTP line:\s+curl .*? (http://\S+/emulator/faults) -d '(.*)'$",
                        banner, re.M)
        httpx.post(cmd.group(1), content=cmd.group(2), headers={"Content-Type": "application/json"}, timeout=5)
        submit(c, b"demo failover", dest="+4917022", registered_delivery=1)
        (dlr,) = receive_deliver_sm(c, 1, timeout=30)
        assert receipt_fields(dlr)["stat"] == "ACCEPTD"  # the router: no handset reports
        assert "demo failover" in [s["text"] for s in demo.sent("lte-router")]
        assert "demo failover" not in [s["text"] for s in demo.sent("goip-http")]
        c.unbind()
        c.disconnect()
    finally:
        code = demo.stop()
        print("".join(demo.lines))  # shown when the test fails
        assert code == 0
    # The UDP GoIP calls us (its first keepalive can take a while): at start that is "waiting",
    # said as information (not shown at the demo's log level), never as a device down or a
    # quarantine.
    log = "".join(demo.lines)
    assert not re.search(r"WARNING .*goip-udp.*(is down|quarantined|out of service)", log)
