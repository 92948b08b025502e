"""Idempotency as a model test: any sequence of POSTs, some retried with the same key (same or
other body), some without a key, against the real routes, acceptance step and store. The store
then holds one message per distinct key plus one per keyless POST, and every retry got exactly
the first answer (or 422 for another body)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import httpx
import trio
from hypothesis import given, settings, strategies as st

from bridge.acceptance import Acceptance
from bridge.config import default_demo_config
from bridge.frontends.http.api import ApiParts, SendApi
from bridge.frontends.http.asgi import build_app
from bridge.metrics import Metrics
from bridge.store import Store, run_inline

posts = st.lists(
    st.tuples(st.one_of(st.none(), st.sampled_from(["k1", "k2", "k3"])), st.sampled_from(["a", "b"])),
    min_size=1, max_size=12,
)  # fmt: skip


@settings(max_examples=25, deadline=None)
@given(posts)
def test_one_message_per_key_and_the_first_answer_for_every_retry(sequence):
    async def run() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            config = default_demo_config(Path(tmp))
            store = Store(Path(tmp) / "b.sqlite3", run_sync=run_inline)
            store.open()
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(store.run)
                    api = SendApi(ApiParts(config=lambda: config, acceptance=Acceptance(config), store=store,
                                           metrics=Metrics()))
                    transport = httpx.ASGITransport(app=build_app(api.routes), client=("127.0.0.1", 5555))
                    first: dict[str, tuple[str, dict]] = {}
                    keyless = 0
                    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
                        for key, text in sequence:
                            headers = {"Idempotency-Key": key} if key else {}
                            r = await http.post("/api/v1/messages", auth=("demo", "demo"), headers=headers,
                                                json={"to": "+15550001", "text": text})
                            if key is None:
                                keyless += 1
                                assert r.status_code == 201
                            elif key not in first:
                                assert r.status_code == 201 and "idempotent-replayed" not in r.headers
                                first[key] = (text, r.json())
                            elif first[key][0] == text:
                                assert r.status_code == 201 and r.json() == first[key][1]
                                assert r.headers["idempotent-replayed"] == "true"
                            else:
                                assert r.status_code == 422 and r.json()["field"] == "idempotency_key"
                    counts = await store.count_by_state()
                    assert sum(counts.values()) == len(first) + keyless
                    nursery.cancel_scope.cancel()
            finally:
                store.close()

    trio.run(run)
