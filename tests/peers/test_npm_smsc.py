"""The connector against a third-party SMSC: the SMSC (server) side of npm ``smpp``
(tests/peers/node/smsc.js). smpplib (the ESME) <-> the bridge process <-> its connector <->
node: bind, a short and a long submit, their receipts back to the ESME, and an MO back.

Needs Node.js and ``npm ci --prefix tests/peers/node`` (``.ci/run`` does both); skipped with a
reason otherwise.
"""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
from pathlib import Path

import gsm0338  # noqa: F401  (the "gsm03.38" codec)
import pytest

from e2e_support import BridgeProcess, base_config, bind_trx, receipt_fields, receive_deliver_sm, submit

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules" / "smpp").is_dir(),
    reason="needs Node.js and the npm smpp package: npm ci --prefix tests/peers/node (CI does this)",
)


class NodeSmsc:
    def __init__(self) -> None:
        assert NODE is not None
        self.proc = subprocess.Popen(
            [NODE, str(NODE_DIR / "smsc.js"), "bridge", "secret"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        self.events: queue.Queue[dict] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self.next("ready")["ready"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.events.put(json.loads(line))
            except ValueError:
                self.events.put({"log": line})

    def next(self, key: str, timeout: float = 15) -> dict:
        while True:
            ev = self.events.get(timeout=timeout)
            if key in ev:
                return ev

    def mo(self, source: str, destination: str, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"MO {source} {destination} {text}\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)


def test_bridge_connector_against_npm_smpp_smsc(tmp_path):
    smsc = NodeSmsc()
    bridge = BridgeProcess(tmp_path, base_config(extra=f"""
connectors:
  - name: npm
    host: 127.0.0.1
    port: {smsc.port}
    system_id: bridge
    password: secret
    tls: false
routes:
  - name: upstream
    channels: [npm]
inbound:
  default_esme: alice
""")).start()
    try:
        assert smsc.next("bound")["bound"] == "bind_transceiver"
        c = bind_trx(bridge)
        # Short: one submit_sm, its receipt comes back as ours.
        mid = submit(c, b"hello npm", dest="+15550001", registered_delivery=1).message_id.decode()
        got = smsc.next("submit")["submit"]
        assert (got["destination"], got["message"], got["udh"]) == ("15550001", "hello npm", [])
        (dlr,) = receive_deliver_sm(c, 1)
        assert receipt_fields(dlr)["id"] == mid and receipt_fields(dlr)["stat"] == "DELIVRD"
        # Long: UDH parts that npm smpp reads as one concatenated message.
        text = "0123456789" * 20
        mid = submit(c, text.encode(), dest="+15550002", registered_delivery=1).message_id.decode()
        parts = [smsc.next("submit")["submit"], smsc.next("submit")["submit"]]
        assert "".join(p["message"] for p in parts) == text
        assert [p["udh"][0][-4:] for p in parts] == ["0201", "0202"]  # total 2, seq 1 and 2
        (dlr,) = receive_deliver_sm(c, 1)
        assert receipt_fields(dlr)["id"] == mid and receipt_fields(dlr)["stat"] == "DELIVRD"
        # MO from the SMSC reaches the ESME.
        smsc.mo("+15559999", "12345", "hello from npm")
        assert smsc.next("mo")["mo"] == "sent"
        (mo,) = receive_deliver_sm(c, 1)
        assert (mo.source_addr.decode(), mo.short_message.decode("gsm03.38")) == ("+15559999", "hello from npm")
    finally:
        bridge.stop()
        assert smsc.next("unbound", timeout=5)["unbound"]  # a graceful unbind on shutdown
        smsc.stop()
