"""Two identical SMS from one sender on one GoIP line within one second are two SMS (issue 12).

Before, the GoIP inbox key had one-second resolution and no position, so the second of each
pair was taken for the first seen again and never delivered (3 of 5 pairs lost one)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from e2e_support import BridgeProcess, EmulatorProcess, client, goip_config, no_more_deliver_sm, receive_deliver_sm

INBOUND = """
inbound:
  default_esme: alice
  delete_after_commit: {delete}
"""


@pytest.mark.parametrize("delete", ["true", "false"])
def test_same_second_duplicates_are_each_delivered_once(tmp_path, delete):
    emulator = EmulatorProcess(lines=2)
    bridge = BridgeProcess(tmp_path, goip_config(emulator.url, lines=2, device="    inbox_poll_interval: 0.2",
                                                 extra=INBOUND.format(delete=delete)))
    try:
        bridge.start()
        c = client(bridge.port, timeout=15)
        c.bind_transceiver(system_id="alice", password="secret1")
        sent = []
        for k in range(5):
            when = datetime(2026, 7, 12, 10, 11, 10 + k, 250_000, tzinfo=timezone.utc).isoformat()
            for _ in range(2):
                emulator.inject(1 + k % 2, f"+49151000000{k}", f"ja {k}", when=when)
                sent.append((f"+49151000000{k}", f"ja {k}"))
        got = receive_deliver_sm(c, len(sent), timeout=20)
        texts = sorted((p.source_addr.decode(), p.short_message.decode()) for p in got)
        assert texts == sorted(sent)
        # Seen on every later poll (delete_after_commit false) or deleted: nothing comes again.
        assert no_more_deliver_sm(c, 1.5) == []
        with bridge.db() as db:
            assert db.execute("SELECT count(*) FROM inbound").fetchone()[0] == len(sent)
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
        emulator.stop()
