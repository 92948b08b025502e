"""End to end, an upstream SMSC: smpplib (the ESME) <-> the bridge process <-> its connector <->
the SMSC emulator process (``smpp-bridge emulate smsc``), and a GoIP emulator for the SIM side.

Receipts come home with our id, MO from upstream reaches the ESME, routes fail over from SIM
channels to the connector and back, and kill -9 with submits in flight neither loses nor
doubles a message.
"""

from __future__ import annotations

import re

import gsm0338  # noqa: F401  (the "gsm03.38" codec)
import pytest

from e2e_support import (
    BridgeProcess,
    KindEmulator,
    base_config,
    bind_trx,
    channel_states,
    receipt_fields,
    receive_deliver_sm,
    start_emulators,
    submit,
    wait_for,
    with_admin,
    admin,
    connector_yaml,
    smsc_emulator,
)

def site_config(smsc_port: int, goip_url: str | None = None, *, ambiguous: str = "unknown", response_timeout: float = 2) -> str:
    devices = ""
    local = ""
    if goip_url:
        devices = f"""
devices:
  - name: goip1
    kind: goip_http
    url: {goip_url}
    password: admin
    lines: 1
    timeout: 2
    status_poll_interval: 0.1
    health_interval: 0.3
    caps: {{per_minute: 0}}
"""
        local = """
  - name: local
    prefixes: ["+49"]
    channels: [goip1]
    failover: upstream
"""
    connector = connector_yaml(smsc_port, extra=(
        f"    window: 4\n    response_timeout: {response_timeout}\n    rebind_min: 0.2\n"
        "    rebind_max: 1\n    health_interval: 0.3\n"
    ))
    return with_admin(base_config(extra=f"""
{devices}
{connector}
routes:
{local}
  - name: upstream
    channels: [smsc1]
    {"failover: local" if goip_url else ""}
scheduler:
  retry_backoff: 0.2
  retry_backoff_max: 1
  busy_retry: 0.2
  logout_cooldown: 0.5
  quarantine_base: 0.5
  quarantine_max: 1
  ambiguous: {ambiguous}
inbound:
  default_esme: alice
"""))


def send_and_receipt(c, dest: str, text: str) -> dict:  # type: ignore[no-untyped-def]
    mid = submit(c, text.encode(), dest=dest, registered_delivery=1).message_id.decode()
    (dlr,) = receive_deliver_sm(c, 1)
    f = receipt_fields(dlr)
    assert f["id"] == mid
    return f


def sent_texts(emu: KindEmulator) -> list[str]:
    out = []
    for s in emu.sent():
        body = bytes.fromhex(s["body_hex"])
        if s["esm_class"] & 0x40:
            body = body[body[0] + 1:]
        out.append(body.decode("gsm03.38"))
    return out


@pytest.mark.slow
def test_submit_receipt_long_and_mo_through_the_connector(tmp_path):
    smsc, port = smsc_emulator("--ids", "hex")
    bridge = BridgeProcess(tmp_path, site_config(port)).start()
    try:
        wait_for(lambda: smsc.state()["bound"] == 1)
        c = bind_trx(bridge)
        # Short, receipt in decimal for a hexadecimal resp id, with the provider's error.
        smsc.faults(receipt_id="decimal", receipt_stat="UNDELIV", receipt_err=34)
        f = send_and_receipt(c, "+15550001", "short one")
        assert f["stat"] == "UNDELIV"
        assert sent_texts(smsc) == ["short one"]
        # Long: UDH parts at the SMSC, one DELIVRD receipt at the ESME (TLV-only receipts).
        smsc.faults(receipt_id="lower", receipt_stat="DELIVRD", receipt_err=0, receipt_format="tlv")
        text = "long " * 50
        assert send_and_receipt(c, "+15550002", text)["stat"] == "DELIVRD"
        assert "".join(sent_texts(smsc)[1:]) == text
        # MO from upstream reaches the ESME.
        smsc.inject(sender="+15559999", recipient="12345", text="hello from upstream")
        (mo,) = receive_deliver_sm(c, 1)
        assert (mo.source_addr.decode(), mo.short_message.decode("gsm03.38")) == ("+15559999", "hello from upstream")
        status = admin(bridge, "GET", "/api/status")
        conn = status["connectors"]["smsc1"]
        assert conn["binds_up"] == 1 and conn["receipts"]["matched"] == 3
        # ... and in `smpp-bridge status`.
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-m", "bridge.cli", "status", "--admin", bridge.admin_url],
                             capture_output=True, text=True, timeout=30).stdout
        assert re.search(r"^smsc1\s+1/1\s+3/0\s+3/0\s+0\s+1$", out, re.M), out
    finally:
        bridge.stop()
        smsc.stop()
    assert smsc_unbound_or_gone(bridge)


def smsc_unbound_or_gone(bridge: BridgeProcess) -> bool:
    return "connector smsc1/trx1: unbound" in bridge.log_text()


@pytest.mark.slow
def test_failover_sim_to_connector_and_back(tmp_path):
    (goip,) = start_emulators(("goip", "--lines", "1", "--send-duration", "0.05"))
    smsc, port = smsc_emulator()
    bridge = BridgeProcess(tmp_path, site_config(port, goip.url)).start()
    try:
        wait_for(lambda: set(channel_states(bridge).values()) == {"ready"} and smsc.state()["bound"] == 1)
        c = bind_trx(bridge)
        assert send_and_receipt(c, "+4917011", "via the sim")["stat"] == "DELIVRD"
        assert sent_texts(smsc) == []
        # The SIM logs out: +49 fails over to the SMSC, receipt and all.
        goip.call("POST", "/emulator/faults", {"logout": {"1": None}})
        wait_for(lambda: channel_states(bridge)["goip1:1"] != "ready")
        assert send_and_receipt(c, "+4917022", "via the smsc")["stat"] == "DELIVRD"
        assert sent_texts(smsc) == ["via the smsc"]
        # The SIM is back: +49 uses it again.
        goip.call("POST", "/emulator/faults", {"login": [1]})
        wait_for(lambda: channel_states(bridge)["goip1:1"] == "ready")
        assert send_and_receipt(c, "+4917033", "sim again")["stat"] == "DELIVRD"
        assert sent_texts(smsc) == ["via the smsc"]
        # And the other way: the SMSC goes away, upstream traffic goes to the SIM.
        smsc.stop()
        wait_for(lambda: all(s != "ready" for k, s in channel_states(bridge).items() if k.startswith("smsc1:")))
        assert send_and_receipt(c, "+15550003", "upstream via the sim")["stat"] == "DELIVRD"
        assert any(s["text"] == "upstream via the sim" for s in goip.sent())
    finally:
        bridge.stop()
        smsc.stop()
        goip.stop()


@pytest.mark.slow
def test_kill_9_with_submits_in_flight(tmp_path):
    smsc, port = smsc_emulator()
    bridge = BridgeProcess(tmp_path, site_config(port, response_timeout=60)).start()
    try:
        wait_for(lambda: smsc.state()["bound"] == 1)
        # The SMSC takes the messages but its answers never come: the submits are in flight.
        smsc.faults(hang=True, receipts=False)
        c = bind_trx(bridge)
        mids = [submit(c, f"in flight {i}".encode(), dest=f"+1555000{i}", registered_delivery=1).message_id.decode()
                for i in range(3)]
        wait_for(lambda: len(smsc.sent()) == 3, timeout=30)
        bridge.kill()
        smsc.faults(hang=False, receipts=True)
        bridge.start()
        c = bind_trx(bridge)
        dlrs = receive_deliver_sm(c, 3, timeout=60)
        got = {receipt_fields(d)["id"]: receipt_fields(d)["stat"] for d in dlrs}
        # Each acknowledged message ends, once, as the ambiguity policy says (never resent).
        assert got == {m: "UNKNOWN" for m in mids}
        assert len(smsc.sent()) == 3
        metrics = __import__("httpx").get(bridge.admin_url + "/metrics").text
        assert re.search(r'smpp_bridge_ambiguous_sends_total\{[^}]*device="smsc1"[^}]*\} 3\.0', metrics), metrics
    finally:
        bridge.stop()
        smsc.stop()


def test_demo_upstream_site_fails_over_to_the_smsc_as_its_banner_says(tmp_path):
    import signal
    import subprocess
    import sys
    import threading

    import httpx

    from e2e_support import client

    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.cli", "demo", "--site", "upstream", "--smpp-port", "0",
         "--admin-port", "0", "--data-dir", str(tmp_path / "demo"), "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if "Ctrl-C stops it" in line:
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(30), "".join(lines)
        banner = "".join(lines)
        port = int(re.search(r"SMPP on port\(s\) \[(\d+)\]", banner).group(1))
        goip = re.search(r"emulated GoIP: (http://\S+)/ ", banner).group(1)
        smsc = re.search(r"test hooks (http://\S+)/$", banner, re.M).group(1)
        assert re.search(r"anything else\s+local\s+-> sims .*failover: international", banner), banner
        c = client(port)
        c.bind_transceiver(system_id="demo", password="demo")
        submit(c, b"via the sims", dest="+4917011", registered_delivery=1)
        assert receipt_fields(receive_deliver_sm(c, 1, timeout=30)[0])["stat"] == "DELIVRD"
        # The banner's recipe: log out the SIMs; a local message then goes out via the SMSC.
        cmd = re.search(r"log out the SIMs:\s+curl .*? (http://\S+/emulator/faults) -d '(.*)'$", banner, re.M)
        httpx.post(cmd.group(1), content=cmd.group(2), headers={"Content-Type": "application/json"}, timeout=5)
        wait_for(lambda: all(s != "ready" for k, s in channel_states_at(banner).items() if k.startswith("sims:")),
                 timeout=20)
        submit(c, b"via the smsc", dest="+4917022", registered_delivery=1)
        assert receipt_fields(receive_deliver_sm(c, 1, timeout=30)[0])["stat"] == "DELIVRD"
        assert [s["destination"] for s in httpx.get(smsc + "/emulator/sent", timeout=5).json()] == ["4917022"]
        assert "via the smsc" not in [s.get("text") for s in httpx.get(goip + "/emulator/sent", timeout=5).json()]
        c.unbind()
        c.disconnect()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        print("".join(lines))
    assert proc.returncode == 0


def channel_states_at(banner: str) -> dict[str, str]:
    import httpx

    url = re.search(r"admin API and metrics: (http://127\.0\.0\.1:\d+)/metrics", banner).group(1)
    status = httpx.get(url + "/api/status", timeout=5).json()
    return {c["key"]: c["state"] for d in status["devices"] for c in d["channels"]}
