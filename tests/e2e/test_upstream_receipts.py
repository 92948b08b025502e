"""Receipts from an upstream SMSC, end to end: smpplib (the ESME) <-> the bridge process <-> its
connector <-> the SMSC emulator process, the emulator sending each receipt when the test says.

* A receipt the SMSC got its deliver_sm_resp for is in the store: kill -9 right after, and the
  restarted bridge finishes the message DELIVERED with its receipt to the ESME.
* Intermediate receipts (ENROUTE, ACCEPTD) move the state: query_sm answers ACCEPTED (6), the
  admin API shows the network stat, a metric counts them, and an ESME that asked for
  intermediate notifications (registered_delivery 0x10) gets an ACCEPTD intermediate receipt.
"""

from __future__ import annotations

import contextlib
import re

import httpx
import pytest
import smpplib.consts as sc

from bridge.receipts.payload import decode_payload

from e2e_support import (
    BridgeProcess,
    admin,
    base_config,
    bind_trx,
    connector_yaml,
    read_until,
    receipt_fields,
    receive_deliver_sm,
    smsc_emulator,
    submit,
    wait_for,
    with_admin,
)


def config(smsc_port: int, *, poll: float) -> str:
    connector = connector_yaml(smsc_port, extra=(
        f"    window: 2\n    rebind_min: 0.2\n    rebind_max: 1\n    health_interval: 0.3\n"
        f"    status_poll_interval: {poll}\n"
    ))  # fmt: skip
    return with_admin(base_config(extra=f"""
{connector}
routes:
  - name: upstream
    channels: [smsc1]
"""))


def part_ref(bridge: BridgeProcess, mid: str) -> str | None:
    """The SMSC's id of the message, once the bridge stored it with the part (resp processed)."""
    parts = admin(bridge, "GET", f"/api/messages/{mid}").get("parts") or []
    return parts[0]["device_ref"] if parts and parts[0]["state"] == "sent" else None


def deliver_resps_ok(smsc) -> int:  # type: ignore[no-untyped-def]
    return smsc.state()["deliver_resps"].get("0", 0)


@contextlib.contextmanager
def one_message_at_the_smsc(tmp_path, *, poll: float, registered_delivery: int):  # type: ignore[no-untyped-def]
    """The bridge and the SMSC emulator (sending receipts only when told), one message submitted
    by an ESME and taken by the SMSC: yields (smsc, bridge, the ESME, our id, the SMSC's id)."""
    smsc, port = smsc_emulator()
    bridge = BridgeProcess(tmp_path, config(port, poll=poll)).start()
    try:
        wait_for(lambda: smsc.state()["bound"] == 1)
        smsc.faults(receipts=False)
        c = bind_trx(bridge)
        mid = submit(c, b"step by step", dest="+15550001", registered_delivery=registered_delivery).message_id.decode()
        ref = wait_for(lambda: part_ref(bridge, mid), timeout=15)
        yield smsc, bridge, c, mid, ref
    finally:
        bridge.stop()
        smsc.stop()


@pytest.mark.slow
def test_kill_9_right_after_the_smsc_got_its_deliver_sm_resp_loses_no_receipt(tmp_path):
    # The tracker reads receipts only every 300 s: the kill lands between the SMSC's answer and
    # the message's final state, the window that used to lose the receipt.
    with one_message_at_the_smsc(tmp_path, poll=300, registered_delivery=1) as (smsc, bridge, c, mid, ref):
        smsc.call("POST", "/emulator/receipt", {"message_id": ref, "stat": "DELIVRD"})
        wait_for(lambda: deliver_resps_ok(smsc) == 1, interval=0.005)
        bridge.kill()
        with bridge.db() as db:
            assert db.execute("SELECT state FROM messages").fetchall() == [("sent",)]
        bridge.start()
        c = bind_trx(bridge)
        (dlr,) = receive_deliver_sm(c, 1, timeout=20)
        f = receipt_fields(dlr)
        assert (f["id"], f["stat"]) == (mid, "DELIVRD")
        assert admin(bridge, "GET", f"/api/messages/{mid}")["message"]["state"] == "delivered"
        assert deliver_resps_ok(smsc) == 1  # the SMSC did not have to send it again


@pytest.mark.slow
def test_intermediate_receipts_show_in_query_sm_the_api_metrics_and_reach_the_esme(tmp_path):
    with one_message_at_the_smsc(tmp_path, poll=0.1, registered_delivery=0x11) as (smsc, bridge, c, mid, ref):
        # Bit 0x10: the ESME hears ENROUTE when the SMSC took the message.
        (enroute,) = receive_deliver_sm(c, 1)
        assert (enroute.esm_class, receipt_fields(enroute)["stat"]) == (0x20, "ENROUTE")

        def query_state() -> int:
            c.query_message(message_id=mid, source_addr_ton=sc.SMPP_TON_ALNUM, source_addr="app")
            return read_until(c, "query_sm_resp").message_state

        assert query_state() == 1  # ENROUTE
        smsc.call("POST", "/emulator/receipt", {"message_id": ref, "stat": "ENROUTE"})
        smsc.call("POST", "/emulator/receipt", {"message_id": ref, "stat": "ACCEPTD"})
        (accepted,) = receive_deliver_sm(c, 1)
        f = receipt_fields(accepted)
        assert (accepted.esm_class, f["id"], f["stat"]) == (0x20, mid, "ACCEPTD")
        assert accepted.message_state == 6
        assert query_state() == 6  # ACCEPTED, while not final
        doc = admin(bridge, "GET", f"/api/messages/{mid}")
        assert (doc["message"]["state"], doc["message"]["network_stat"]) == ("sent", "ACCEPTD")
        assert any(e["detail"] == "network: ACCEPTD" for e in doc["events"]), doc["events"]
        metrics = httpx.get(bridge.admin_url + "/metrics", timeout=5).text
        for stat in ("ENROUTE", "ACCEPTD"):
            assert re.search(
                rf'smpp_bridge_connector_intermediate_receipts_total\{{connector="smsc1",stat="{stat}"\}} 1\.0', metrics
            ), metrics
        # The final receipt: exactly one, DELIVRD; query_sm says DELIVERED.
        smsc.call("POST", "/emulator/receipt", {"message_id": ref, "stat": "DELIVRD"})
        (final,) = receive_deliver_sm(c, 1)
        assert (final.esm_class, receipt_fields(final)["stat"]) == (0x04, "DELIVRD")
        assert query_state() == 2
        smsc.call("POST", "/emulator/receipt", {"message_id": ref, "stat": "DELIVRD"})  # a repeat
        wait_for(lambda: deliver_resps_ok(smsc) == 4)
        with bridge.db() as db:
            rows = db.execute("SELECT payload FROM outbox WHERE message IS NOT NULL").fetchall()
        stats = [re.search(rb"stat:(\w+)", decode_payload(p).params["short_message"]).group(1).decode() for (p,) in rows]
        assert sorted(stats) == ["ACCEPTD", "DELIVRD", "ENROUTE"], stats
