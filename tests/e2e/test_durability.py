"""Durable before acknowledged: what got ESME_ROK survives kill -9."""

from __future__ import annotations

import smpplib.consts as sc

from e2e_support import BridgeProcess, base_config, client, read_until


def test_kill_9_right_after_the_last_resp_loses_nothing(tmp_path):
    bridge = BridgeProcess(tmp_path, base_config()).start()
    n = 300
    c = client(bridge.port)
    c.bind_transmitter(system_id="alice", password="secret1")
    # Pipeline the submits (window = everything), then collect every resp.
    sent = {}
    for i in range(n):
        pdu = c.send_message(
            source_addr="app",
            dest_addr_ton=sc.SMPP_TON_INTL,
            destination_addr=f"+49170{i:07d}",
            short_message=f"durable {i}".encode(),
        )
        sent[pdu.sequence] = i
    acked = {}
    for _ in range(n):
        resp = read_until(c, "submit_sm_resp")
        assert resp.status == 0
        acked[sent[resp.sequence]] = resp.message_id.decode()
    bridge.kill()  # no unbind, no shutdown, no chance to flush anything

    assert len(acked) == n and len(set(acked.values())) == n
    bridge.start()
    try:
        with bridge.db() as db:
            rows = db.execute("SELECT id, destination_addr, text FROM messages").fetchall()
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        by_id = {f"{r[0]:010d}": (r[1], r[2]) for r in rows}
        assert len(rows) == n  # exactly once: nothing lost, nothing doubled
        for i, mid in acked.items():
            assert by_id[mid] == (f"+49170{i:07d}", f"durable {i}")
        # The restarted bridge answers query_sm for the ids it gave out before the crash.
        c = client(bridge.port)
        c.bind_transceiver(system_id="alice", password="secret1")
        c.query_message(message_id=acked[n - 1], source_addr="app")
        assert read_until(c, "query_sm_resp").status == 0
        # New ids never reuse old ones.
        c.send_message(source_addr="app", destination_addr="+4917099", short_message=b"after")
        new_id = read_until(c, "submit_sm_resp").message_id.decode()
        assert new_id not in by_id and int(new_id) > max(int(m) for m in acked.values())
        c.unbind()
    finally:
        bridge.stop()
