"""The send API when the store cannot commit: 503 with Retry-After, nothing claimed stored, and
the queue-depth hold released (in process: the real routes and acceptance step, a store that
fails)."""

from __future__ import annotations

import httpx

from bridge.acceptance import Acceptance
from bridge.config import default_demo_config
from bridge.frontends.http.api import ApiParts, SendApi
from bridge.frontends.http.asgi import build_app
from bridge.metrics import Metrics
from bridge.store import StoreError


class FailingStore:
    active_count = 0

    async def api_answer(self, esme, key):
        return None

    async def accept_api(self, *args):
        raise StoreError("disk I/O error")


async def test_a_failed_commit_answers_503_and_releases_the_queue(tmp_path):
    config = default_demo_config(tmp_path)
    held: list[int] = []
    metrics = Metrics()
    api = SendApi(ApiParts(config=lambda: config, acceptance=Acceptance(config), store=FailingStore(),
                           hold=held.append, queued=lambda: sum(held), metrics=metrics))
    transport = httpx.ASGITransport(app=build_app(api.routes), client=("127.0.0.1", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        r = await http.post("/api/v1/messages", auth=("demo", "demo"), json={"to": "+15550001", "text": "x"},
                            headers={"Idempotency-Key": "k1"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "nothing was stored" in r.json()["error"] and "same Idempotency-Key" in r.json()["hint"]
    assert held == [1, -1]  # counted in the queue depth while the commit ran, released after
    assert metrics.registry.get_sample_value("smpp_bridge_store_errors_total") == 1
