"""End to end with the npm ``smpp`` client (Node.js) against the real bridge and an emulated GoIP.

npm smpp picks data_coding by itself: text that fits the GSM alphabet goes out as GSM 03.38
bytes labelled data_coding 1 (which SMPP calls IA5/ASCII), Latin-1 text as 3, anything else as
UCS-2 (8). An ESME using it sets ``esmes[].data_coding_1: gsm`` so that the bridge reads what
the library really sends; these tests submit through the real library and compare what the
emulated GoIP sent with what the application wanted to send.

Needs Node.js and ``npm ci --prefix tests/peers/node`` (``.ci/run`` does both); skipped with a
reason otherwise.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from e2e_support import BridgeProcess, EmulatorProcess, goip_config, wait_for

NODE_DIR = Path(__file__).parent / "node"
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(
    NODE is None or not (NODE_DIR / "node_modules" / "smpp").is_dir(),
    reason="needs Node.js and the npm smpp package: npm ci --prefix tests/peers/node (CI does this)",
)

ESMES = """
  - system_id: nodeapp
    password: secret1
    allowed_ips: [127.0.0.1]
    data_coding_1: gsm
"""


def run_esme(tmp_path: Path, port: int, jobs: list[dict], wait_receipts_s: float = 20) -> dict:
    jobs_file = tmp_path / "jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    proc = subprocess.run(
        [NODE, str(NODE_DIR / "esme.js"), str(port), "nodeapp", "secret1", str(jobs_file),
         str(int(wait_receipts_s * 1000))],
        capture_output=True, text=True, timeout=wait_receipts_s + 20,
    )  # fmt: skip
    assert proc.stdout, f"node ESME printed nothing: {proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture
def emulator():
    e = EmulatorProcess(lines=2, send_duration=0.05)
    yield e
    e.stop()


def test_npm_smpp_texts_reach_the_handset_as_written_with_receipts(tmp_path, emulator):
    texts = [
        "Plain GSM text from node",
        "GSM extension chars: [x] {y} ~ ^ | \\ and 5€",  # GSM escapes, sent as data_coding 1
        "Latin-1 only: ¿Qué tal? ç",  # still GSM: npm smpp sends it as data_coding 1
        # Only characters where GSM and ASCII disagree at the same octet, no control octet: the
        # bridge's "auto" reading of data_coding 1 takes this for ASCII ("Sch|n"); the ESME's
        # data_coding_1: gsm reads it right.
        "Schön, mañana? Für Jürgen",
        "Unicode: Привет, 你好",  # UCS-2 (8)
    ]
    bridge = BridgeProcess(tmp_path, goip_config(emulator.url, lines=2, esmes=ESMES)).start()
    try:
        out = run_esme(
            tmp_path, bridge.port,
            [{"destination_addr": f"+49170000000{i}", "short_message": t, "registered_delivery": 1}
             for i, t in enumerate(texts)],
        )  # fmt: skip
        assert out["bind"] == 0
        assert [s["status"] for s in out["submits"]] == [0] * len(texts)
        ids = [s["message_id"] for s in out["submits"]]
        sent = wait_for(lambda: len(emulator.sent()) >= len(texts) and emulator.sent())
        by_dest = {s["destination"]: s["text"] for s in sent}
        assert [by_dest[f"+49170000000{i}"] for i in range(len(texts))] == texts
        receipts = [d for d in out["deliver"] if d["esm_class"] & 0x04]
        assert sorted(r["receipted_message_id"] for r in receipts) == sorted(ids)
        assert all(r["message_state"] == 2 for r in receipts)  # DELIVERED
        assert all("stat:DELIVRD" in r["text"] for r in receipts)
    finally:
        bridge.stop()
