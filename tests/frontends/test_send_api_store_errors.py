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
    metrics = Metrics()
    acceptance = Acceptance(config)
    pending: list[int] = []

    class WatchingStore(FailingStore):
        async def accept_api(self, *args):
            pending.append(acceptance.pending)  # what counts in the queue depth during the commit
            return await super().accept_api(*args)

    api = SendApi(ApiParts(config=lambda: config, acceptance=acceptance, store=WatchingStore(), metrics=metrics))
    transport = httpx.ASGITransport(app=build_app(api.routes), client=("127.0.0.1", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        r = await http.post("/api/v1/messages", auth=("demo", "demo"), json={"to": "+15550001", "text": "x"},
                            headers={"Idempotency-Key": "k1"})
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert "nothing was stored" in r.json()["error"] and "same Idempotency-Key" in r.json()["hint"]
    assert pending == [1] and acceptance.pending == 0  # counted while the commit ran, released after
    assert metrics.registry.get_sample_value("smpp_bridge_store_errors_total") == 1


class EmptyStore(FailingStore):
    async def get(self, message_id, esme=None):
        return None


async def test_failed_logins_slow_an_address_down_like_failed_binds(tmp_path, autojump_clock):
    import trio

    config = default_demo_config(tmp_path)
    api = SendApi(ApiParts(config=lambda: config, acceptance=Acceptance(config), store=EmptyStore(),
                           metrics=Metrics()))
    transport = httpx.ASGITransport(app=build_app(api.routes), client=("127.0.0.1", 5555))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:

        async def lookup(password: str) -> tuple[int, float]:
            t0 = trio.current_time()
            r = await http.get("/api/v1/messages/0000000001", auth=("demo", password))
            return r.status_code, trio.current_time() - t0

        for _ in range(5):
            assert await lookup("guess") == (401, 0.0)
        # The right password now waits its turn (2 s), then passes (404: no such message).
        status, waited = await lookup("demo")
        assert status == 404 and waited >= 2.0
        # Guesses queued beyond the limit are refused at once.
        async with trio.open_nursery() as nursery:
            results: list[int] = []

            async def guess() -> None:
                results.append((await lookup("guess"))[0])

            for _ in range(10):
                nursery.start_soon(guess)
        assert 429 in results and set(results) <= {401, 429}
        # A minute later the address is trusted again.
        await trio.sleep(61)
        assert await lookup("demo") == (404, 0.0)
