"""Per-connector metrics, read from the drivers when Prometheus scrapes (a collector), and the
same figures for ``/api/status`` and ``smpp-bridge status``.

* ``smpp_bridge_connector_binds_up{connector}`` - bound sessions now (alert: 0 while enabled)
* ``smpp_bridge_connector_binds_configured{connector}``
* ``smpp_bridge_connector_submits_total{connector,status}`` - submit_sm answers by status
  (ESME_ROK, ESME_RTHROTTLED ..., "ambiguous"); rate() of ESME_ROK is the throughput
* ``smpp_bridge_connector_receipts_total{connector,result}`` - matched, unmatched, duplicate
* ``smpp_bridge_connector_intermediate_receipts_total{connector,stat}`` - ENROUTE, ACCEPTD ...
* ``smpp_bridge_connector_receipt_commit_failures_total{connector}`` - receipts answered
  ESME_RX_T_APPN because the store could not take them (the SMSC sends them again)
* ``smpp_bridge_connector_bind_refusals_total{connector,reason}`` - auth, other
* ``smpp_bridge_connector_throttled_total{connector}`` - ESME_RTHROTTLED / ESME_RMSGQFUL answers
* ``smpp_bridge_connector_dead_peers_total{connector}`` - enquire_link went unanswered
* ``smpp_bridge_connector_mo_total{connector}``, ``smpp_bridge_connector_mo_waiting{connector}``
* ``smpp_bridge_connector_submit_latency_seconds_sum/_count{connector}`` - submit_sm -> resp
* ``smpp_bridge_connector_congestion{connector}`` - the SMSC's last congestion_state (SMPP 5.0;
  -1: none reported); from 80 the connector slows down
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

from . import KIND


def connectors(drivers: Mapping[str, Any]) -> dict[str, Any]:
    return {name: d for name, d in drivers.items() if getattr(d, "kind", None) == KIND}


def status(drivers: Mapping[str, Any]) -> dict[str, Any]:
    """The ``connectors`` part of /api/status."""
    return {name: d.status_summary() for name, d in connectors(drivers).items()}


class ConnectorCollector:
    def __init__(self, drivers: Mapping[str, Any]) -> None:
        self.drivers = drivers

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        p = "smpp_bridge_connector_"
        up = GaugeMetricFamily(p + "binds_up", "Bound sessions to the upstream SMSC", labels=["connector"])
        conf = GaugeMetricFamily(p + "binds_configured", "Sessions configured", labels=["connector"])
        submits = CounterMetricFamily(p + "submits", "submit_sm answers by status", labels=["connector", "status"])
        receipts = CounterMetricFamily(p + "receipts", "Receipts from the SMSC by match result", labels=["connector", "result"])
        inter = CounterMetricFamily(p + "intermediate_receipts", "Intermediate receipts from the SMSC by stat", labels=["connector", "stat"])
        commit_failed = CounterMetricFamily(
            p + "receipt_commit_failures", "Receipts refused (ESME_RX_T_APPN) because the store could not take them", labels=["connector"]
        )
        refusals = CounterMetricFamily(p + "bind_refusals", "Binds the SMSC refused", labels=["connector", "reason"])
        throttled = CounterMetricFamily(p + "throttled", "ESME_RTHROTTLED / ESME_RMSGQFUL answers", labels=["connector"])
        dead = CounterMetricFamily(p + "dead_peers", "Connections closed for an unanswered enquire_link", labels=["connector"])
        mo = CounterMetricFamily(p + "mo", "MO received from the SMSC", labels=["connector"])
        waiting = GaugeMetricFamily(p + "mo_waiting", "MO not yet stored (their deliver_sm unanswered)", labels=["connector"])
        congestion = GaugeMetricFamily(p + "congestion", "The SMSC's congestion_state (-1: none)", labels=["connector"])
        latency = SummaryMetricFamily(p + "submit_latency_seconds", "Seconds from submit_sm to its resp", labels=["connector"])
        for name, d in connectors(self.drivers).items():
            st = d.stats
            up.add_metric([name], d.binds_up)
            conf.add_metric([name], len(d.binds))
            for status_name, n in sorted({"ESME_ROK": 0, "ambiguous": 0, **st.submits}.items()):
                submits.add_metric([name, status_name], n)
            for result in ("matched", "unmatched", "duplicate"):
                receipts.add_metric([name, result], st.receipts[result])
            for stat, n in sorted({"ENROUTE": 0, "ACCEPTD": 0, **st.intermediate}.items()):
                inter.add_metric([name, stat], n)
            commit_failed.add_metric([name], st.receipt_commit_failures)
            for reason, n in st.bind_refusals.items():
                refusals.add_metric([name, reason], n)
            throttled.add_metric([name], st.throttled)
            dead.add_metric([name], st.dead_peers)
            mo.add_metric([name], st.mo)
            waiting.add_metric([name], d.mo_waiting)
            latency.add_metric([name], count_value=st.latency_count, sum_value=st.latency_sum)
            congestion.add_metric([name], -1 if d.congestion is None else d.congestion)
        yield from (up, conf, submits, receipts, inter, commit_failed, refusals, throttled, dead, mo, waiting, latency, congestion)
