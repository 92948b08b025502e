"""Per-connector metrics as Prometheus reads them (bridge/connectors/metrics.py)."""

from __future__ import annotations

from typing import Any

import trio
from prometheus_client import CollectorRegistry, generate_latest

from bridge.connectors.metrics import ConnectorCollector
from test_driver import final_status, start


async def test_series_after_a_submit_and_its_receipt() -> None:
    async with trio.open_nursery() as n:
        emu, drv = await start(n)
        res = await drv.send("1", "+15551234", "hi")
        await final_status(drv, res.ref)
        registry = CollectorRegistry()
        registry.register(ConnectorCollector({"up1": drv, "goip1": _NotAConnector()}))
        text = generate_latest(registry).decode()
        for line in (
            'smpp_bridge_connector_binds_up{connector="up1"} 1.0',
            'smpp_bridge_connector_submits_total{connector="up1",status="ESME_ROK"} 1.0',
            'smpp_bridge_connector_receipts_total{connector="up1",result="matched"} 1.0',
            'smpp_bridge_connector_receipts_total{connector="up1",result="unmatched"} 0.0',
            'smpp_bridge_connector_intermediate_receipts_total{connector="up1",stat="ACCEPTD"} 0.0',
            'smpp_bridge_connector_receipt_commit_failures_total{connector="up1"} 0.0',
            'smpp_bridge_connector_bind_refusals_total{connector="up1",reason="auth"} 0.0',
            'smpp_bridge_connector_throttled_total{connector="up1"} 0.0',
            'smpp_bridge_connector_submit_latency_seconds_count{connector="up1"} 1.0',
        ):
            assert line in text, text
        assert "goip1" not in text
        n.cancel_scope.cancel()


class _NotAConnector:
    kind = "goip_http"

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"a device is not asked for {name}")
