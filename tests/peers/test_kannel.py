"""End to end with Kannel 1.4.5 (Debian) as the router in front of the bridge.

An application sends through Kannel's ``sendsms``; Kannel's bearerbox submits to the bridge over
SMPP (one transceiver bind, as an ESME), the bridge sends through an emulated GoIP, and the
receipt travels back to Kannel, which calls the application's ``dlr-url``. An SMS arriving on a
GoIP line goes the other way: the bridge delivers it to Kannel as MO, Kannel calls the
application's ``get-url``. This is how a site is put behind an existing router.

Needs Debian's ``kannel`` package (``.ci/run`` installs it); skipped with a reason otherwise.
"""

from __future__ import annotations

import pytest

from e2e_support import BridgeProcess, EmulatorProcess, goip_config, wait_for
from kannel_support import KannelRouter, kannel_installed

pytestmark = pytest.mark.skipif(
    not kannel_installed(), reason="needs Kannel: apt-get install kannel (CI installs it)"
)

ESMES = """
  - system_id: kannel
    password: kpass123
    allowed_ips: [127.0.0.1]
"""
# Line 2 has its SIM number configured, line 1 does not (as in the demo).
INBOX = '    inbox_poll_interval: 0.2\n    channels:\n      "2": {number: "+4915550002"}'


@pytest.fixture
def site(tmp_path):
    emulator = EmulatorProcess(lines=2, send_duration=0.05)
    bridge = BridgeProcess(tmp_path, goip_config(emulator.url, lines=2, esmes=ESMES, device=INBOX)).start()
    kannel = None
    try:
        kannel = KannelRouter(tmp_path, bridge.port, "kannel", "kpass123").start()
        yield emulator, bridge, kannel
    finally:
        if kannel is not None:
            kannel.stop()
        bridge.stop()
        emulator.stop()


def test_kannel_sends_through_the_bridge_and_gets_each_delivery_report(site):
    emulator, bridge, kannel = site
    texts = {f"d{i}": f"Kannel to the bridge, message {i} [ok]" for i in range(3)}
    for i, (dlr_id, text) in enumerate(texts.items()):
        r = kannel.sendsms(f"+4917000001{i}", text, dlr_id=dlr_id)
        assert r.status_code == 202, r.text  # "0: Accepted for delivery"
    sent = wait_for(lambda: len(emulator.sent()) >= 3 and emulator.sent(), timeout=20)
    assert sorted(s["text"] for s in sent) == sorted(texts.values())
    # Kannel matched each receipt to its submit_sm_resp id and called the dlr-url: status 1 is
    # "delivered to the phone".
    reports = wait_for(lambda: len([q for q in kannel.calls("/dlr") if q["status"] == "1"]) >= 3
                       and kannel.calls("/dlr"), timeout=20)  # fmt: skip
    delivered = {q["id"] for q in reports if q["status"] == "1"}
    assert delivered == set(texts)
    assert all("stat:DELIVRD" in q["answer"] for q in reports if q["status"] == "1")
    with bridge.db() as db:
        assert db.execute("SELECT count(*) FROM outbox WHERE kind='receipt' AND delivered_at IS NULL").fetchone() == (0,)


def test_inbound_sms_reaches_the_application_through_kannel_with_a_routable_destination(site):
    emulator, bridge, kannel = site
    emulator.inject(2, "+4917099887766", "Reply to line two")
    emulator.inject(1, "+4917011122233", "Reply to line one, no number configured")
    mo = wait_for(lambda: len(kannel.calls("/mo")) >= 2 and kannel.calls("/mo"), timeout=20)
    by_text = {q["text"]: q for q in mo}
    assert by_text["Reply to line two"]["from"] == "+4917099887766"
    assert by_text["Reply to line two"]["to"] == "+4915550002"
    # Without a SIM number the MO still carries a destination Kannel accepts and can route on.
    line1 = by_text["Reply to line one, no number configured"]
    assert line1["from"] == "+4917011122233" and line1["to"]
    # Kannel answered every deliver_sm OK: nothing waits in the bridge's outbox.
    with bridge.db() as db:
        wait_for(lambda: db.execute("SELECT count(*) FROM outbox WHERE kind='mo' AND delivered_at IS NULL").fetchone() == (0,))
