"""Prometheus metric definitions. One ``Metrics`` per running bridge, on its own registry, so
tests can run several bridges in one process.

Conventions: units in names, ``_total`` for counters, label sets bounded by configuration
(ESME system_ids, device and channel names, command names, status names), never by message
content or peer addresses.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .smpp.constants import CommandId, Status

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def command_name(command_id: int) -> str:
    try:
        return CommandId(command_id).name.lower()
    except ValueError:
        return "unknown"


def status_name(status: int) -> str:
    try:
        return "ESME_" + Status(status).name
    except ValueError:
        return "other"


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        # -- SMPP front end
        self.connections = Gauge(
            "smpp_bridge_smpp_connections", "Open SMPP TCP connections", ["listener"], registry=r
        )
        self.connections_refused = Counter(
            "smpp_bridge_smpp_connections_refused_total",
            "SMPP connections closed at once (too many connections)",
            ["listener"],
            registry=r,
        )
        self.binds = Gauge(
            "smpp_bridge_esme_binds", "Bound SMPP sessions", ["esme", "bind_type"], registry=r
        )
        self.bind_failures = Counter(
            "smpp_bridge_bind_failures_total",
            "Refused bind attempts by reason",
            ["reason"],
            registry=r,
        )
        self.pdus_in = Counter(
            "smpp_bridge_pdus_received_total",
            "PDUs received from ESMEs",
            ["esme", "command"],
            registry=r,
        )
        self.pdus_out = Counter(
            "smpp_bridge_pdus_sent_total",
            "PDUs sent to ESMEs, by command and command_status",
            ["esme", "command", "status"],
            registry=r,
        )
        self.throttled = Counter(
            "smpp_bridge_throttled_segments_total",
            "Segments refused with ESME_RTHROTTLED (ESME over its throughput)",
            ["esme"],
            registry=r,
        )
        self.queue_full = Counter(
            "smpp_bridge_queue_full_segments_total",
            "Segments refused with ESME_RMSGQFUL (queue depth limit reached)",
            ["esme"],
            registry=r,
        )
        self.accepted = Counter(
            "smpp_bridge_segments_accepted_total",
            "Segments stored and acknowledged with ESME_ROK",
            ["esme"],
            registry=r,
        )
        self.protocol_errors = Counter(
            "smpp_bridge_protocol_errors_total",
            "Malformed or out-of-state PDUs answered with an error",
            ["reason"],
            registry=r,
        )
        self.submit_latency = Histogram(
            "smpp_bridge_submit_latency_seconds",
            "From submit_sm read to submit_sm_resp queued (includes the durable commit)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        # -- store
        self.commit_latency = Histogram(
            "smpp_bridge_store_commit_latency_seconds",
            "Duration of one group commit",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.commit_batch = Histogram(
            "smpp_bridge_store_commit_batch_operations",
            "Operations per group commit",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
            registry=r,
        )
        self.store_errors = Counter(
            "smpp_bridge_store_errors_total", "Failed store commits", registry=r
        )

    def on_commit(self, operations: int, seconds: float) -> None:
        self.commit_latency.observe(seconds)
        self.commit_batch.observe(operations)

    def add_collector(self, collector: Collector) -> None:
        self.registry.register(collector)


class StoreCollector(Collector):
    """Gauges read from the store at scrape time (no bookkeeping on the hot path)."""

    def __init__(self, store) -> None:  # type: ignore[no-untyped-def]
        self.store = store

    def collect(self):  # type: ignore[no-untyped-def]
        g = GaugeMetricFamily(
            "smpp_bridge_store_active_messages",
            "Messages not in a final state, plus parts waiting for their siblings",
        )
        g.add_metric([], self.store.active_count)
        yield g
        size = GaugeMetricFamily("smpp_bridge_store_database_bytes", "SQLite files on disk")
        size.add_metric([], self.store.database_size())
        yield size
