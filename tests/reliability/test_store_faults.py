"""A running bridge whose database file is deleted under it (issue 12), end to end.

Before: it kept acknowledging into the unlinked file, /readyz said 200, and after a restart every
one of those messages was gone and their ids were handed out again. Now: submits get
ESME_RSYSERR, /readyz is 503, the metric and the alert say so; a restart is refused with what to
run; `smpp-bridge store recover` makes a new store whose ids continue above every id handed out.
"""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import smpplib.consts as sc

from e2e_support import BridgeProcess, base_config, client, submit, wait_for, with_admin

OK, SYSERR = sc.SMPP_ESME_ROK, sc.SMPP_ESME_RSYSERR


def _metric(bridge: BridgeProcess, name: str) -> float:
    for line in httpx.get(bridge.admin_url + "/metrics", timeout=5).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def test_database_deleted_while_running(tmp_path):
    bridge = BridgeProcess(tmp_path, with_admin(base_config()))
    try:
        bridge.start()
        c = client(bridge.port)
        c.bind_transmitter(system_id="alice", password="secret1")
        before = [submit(c, f"before {i}".encode()) for i in range(5)]
        assert [r.status for r in before] == [OK] * 5
        acked = [r.message_id.decode() for r in before]
        assert httpx.get(bridge.admin_url + "/readyz", timeout=5).status_code == 200
        assert _metric(bridge, "smpp_bridge_store_acknowledging") == 1

        os.unlink(bridge.db_path)
        after = [submit(c, f"after {i}".encode()) for i in range(5)]
        assert [r.status for r in after] == [SYSERR] * 5, "acknowledged into a deleted file"
        ready = httpx.get(bridge.admin_url + "/readyz", timeout=5)
        assert ready.status_code == 503 and "was deleted" in ready.json()["checks"]["store"]
        assert _metric(bridge, "smpp_bridge_store_acknowledging") == 0
        c.unbind()
        c.disconnect()
        bridge.stop()
        log = bridge.log_text()
        assert log.count("store stops acknowledging") == 1, "one line for the fault, not one per submit"

        # The restart is refused and names the commands.
        run = subprocess.run([sys.executable, "-m", "bridge.cli", "run", "--config", str(bridge.config_path)],
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert run.returncode != 0
        assert "is missing" in run.stderr and "smpp-bridge store recover" in run.stderr, run.stderr
        assert "Traceback" not in run.stderr

        rec = subprocess.run([sys.executable, "-m", "bridge.cli", "store", "recover", "--config",
                              str(bridge.config_path)], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert rec.returncode == 0, rec.stdout + rec.stderr
        bridge.start()
        c = client(bridge.port)
        c.bind_transmitter(system_id="alice", password="secret1")
        again = submit(c, b"after recovery")
        assert again.status == OK
        assert int(again.message_id.decode()) > max(map(int, acked)), "an id was handed out twice"
        wait_for(lambda: httpx.get(bridge.admin_url + "/readyz", timeout=5).status_code == 200)
        c.unbind()
        c.disconnect()
    finally:
        bridge.stop()
