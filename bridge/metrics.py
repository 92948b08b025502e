"""Prometheus metric definitions. One ``Metrics`` per running bridge, on its own registry, so
tests can run several bridges in one process.

Conventions: units in names, ``_total`` for counters, label sets bounded by configuration
(ESME system_ids, device and channel names, command names, status names), never by message
content or peer addresses.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .smpp.constants import CommandId, Status

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
DEVICE_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30)


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
        self.resubmits_recognised = Counter(
            "smpp_bridge_resubmits_recognised_total",
            "submit_sm sent again after our answer to it was never written (connection lost): "
            "answered with the first message's id, not stored or sent twice",
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

        # -- channels and devices
        self.channel_state = Gauge(
            "smpp_bridge_channel_state",
            "1 for the state a channel is in (ready, sending, cooldown, quarantine, paused)",
            ["device", "channel", "state"],
            registry=r,
        )
        self.channel_inflight = Gauge(
            "smpp_bridge_channel_inflight",
            "Device calls in flight on a channel (never more than 1)",
            ["device", "channel"],
            registry=r,
        )
        self.sends = Counter(
            "smpp_bridge_channel_sends_total",
            "Device send calls by outcome (accepted, busy, channel_down, error, ambiguous...)",
            ["device", "channel", "outcome"],
            registry=r,
        )
        self.channel_failures = Counter(
            "smpp_bridge_channel_failures_total",
            "Failed sends on a channel by reason",
            ["device", "channel", "reason"],
            registry=r,
        )
        self.channel_quarantines = Counter(
            "smpp_bridge_channel_quarantines_total",
            "Times a channel was quarantined after repeated errors",
            ["device", "channel"],
            registry=r,
        )
        self.send_latency = Histogram(
            "smpp_bridge_device_send_latency_seconds",
            "Duration of one device send call, per channel",
            ["device", "channel"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30),
            registry=r,
        )
        self.status_poll_failures = Counter(
            "smpp_bridge_device_status_poll_failures_total",
            "Status polls that could not read the device",
            ["device"],
            registry=r,
        )
        self.ambiguous = Counter(
            "smpp_bridge_ambiguous_sends_total",
            "Sends that may or may not have gone out, by how they were resolved "
            "(reconciled_sent, reconciled_not_sent, policy_unknown, policy_resend)",
            ["device", "resolution"],
            registry=r,
        )
        self.retries = Counter(
            "smpp_bridge_message_retries_total", "Messages put back for a later attempt", registry=r
        )
        self.messages_final = Counter(
            "smpp_bridge_messages_final_total",
            "Messages that reached a final state",
            ["state"],
            registry=r,
        )
        self.failovers = Counter(
            "smpp_bridge_route_failovers_total",
            "Messages handed to a failover route's channel because their route had no healthy channel",
            ["route", "failover"],
            registry=r,
        )
        self.messages_poisoned = Counter(
            "smpp_bridge_messages_given_up_total",
            "Messages finished UNKNOWN because handling them failed repeatedly (a bug: see the log)",
            ["device", "channel"],
            registry=r,
        )
        self.scheduler_errors = Counter(
            "smpp_bridge_scheduler_internal_errors_total",
            "Internal errors while handling a message (the message was requeued)",
            registry=r,
        )
        # -- outbox (receipts and MO waiting for ESMEs)
        self.outbox_delivered = Counter(
            "smpp_bridge_outbox_delivered_total",
            "deliver_sm (receipts, MO) acknowledged by an ESME",
            ["esme", "kind"],
            registry=r,
        )
        self.outbox_retries = Counter(
            "smpp_bridge_outbox_retries_total",
            "deliver_sm not acknowledged (timeout or error status), to be retried",
            ["esme", "kind"],
            registry=r,
        )
        self.outbox_expired = Counter(
            "smpp_bridge_outbox_expired_total",
            "deliver_sm dropped after waiting longer than receipts.retention",
            registry=r,
        )
        self.outbox_refused = Counter(
            "smpp_bridge_outbox_refused_total",
            "deliver_sm (receipt or MO) an ESME refused for good with a permanent error status; "
            "not sent again",
            ["esme", "kind", "status"],
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "smpp_bridge_webhook_deliveries_total",
            "Webhook POSTs (receipts, inbound SMS) by outcome: delivered (2xx) or failed (retried "
            "with back-off until receipts.retention)",
            ["esme", "kind", "outcome"],
            registry=r,
        )
        # -- inbound SMS and opt-out (bridge/inbound.py); smpp_bridge_optouts reads the store
        self.inbound_received = Counter(
            "smpp_bridge_inbound_received_total", "Inbound SMS (parts) stored", ["device"], registry=r
        )
        self.inbound_duplicates = Counter(
            "smpp_bridge_inbound_duplicates_total",
            "Inbox entries not delivered again: already stored (e.g. after a restart), or a part "
            "number the device handed over twice",
            ["device"],
            registry=r,
        )
        self.inbound_incomplete = Counter(
            "smpp_bridge_inbound_incomplete_total",
            "Long inbound SMS delivered with parts missing (inbound.reassembly_timeout)",
            ["device"],
            registry=r,
        )
        self.inbound_unrouted = Counter(
            "smpp_bridge_inbound_unrouted_total",
            "Inbound SMS stored with no ESME to deliver to (set inbound.default_esme or a route)",
            ["device"],
            registry=r,
        )
        self.inbound_poll_errors = Counter(
            "smpp_bridge_inbound_poll_errors_total",
            "Inbox polls that failed inside the bridge (see the log)",
            ["device"],
            registry=r,
        )
        self.optouts = Gauge("smpp_bridge_optouts", "Numbers on the opt-out list", registry=r)
        self.optout_events = Counter(
            "smpp_bridge_optout_events_total",
            "Changes of the opt-out list: optout (keyword or admin API) and optin",
            ["action"],
            registry=r,
        )
        self.sender_not_honoured = Counter(
            "smpp_bridge_sender_not_honoured_total",
            "Messages accepted with an alphanumeric source_addr routed to a device kind that "
            "sends with its SIM's own number instead",
            ["esme"],
            registry=r,
        )
        self.optout_blocked = Counter(
            "smpp_bridge_optout_blocked_total",
            "Messages to opted-out numbers not sent, by inbound.optout.mt_action "
            "(reject_submit: refused; receipt: finished REJECTED)",
            ["esme", "action"],
            registry=r,
        )
        # -- devices: health checks and every driver call (bridge/monitor.py)
        self.device_up = Gauge(
            "smpp_bridge_device_up",
            "1 when the device answered its last health check and accepted our credentials",
            ["device"],
            registry=r,
        )
        self.device_request_latency = Histogram(
            "smpp_bridge_device_request_latency_seconds",
            "Duration of one driver call to a device (send, status, inbox, last_ref, health)",
            ["device", "operation"],
            buckets=DEVICE_BUCKETS,
            registry=r,
        )
        self.device_request_errors = Counter(
            "smpp_bridge_device_request_errors_total",
            "Driver calls that failed: unreachable, timeout, garbage, refused credentials",
            ["device", "operation"],
            registry=r,
        )
        self.channel_signal = Gauge(
            "smpp_bridge_channel_signal",
            "GSM signal quality the device reports for a channel (GoIP: CSQ 0-31); "
            "absent when the device does not say",
            ["device", "channel"],
            registry=r,
        )
        self.channel_registered = Gauge(
            "smpp_bridge_channel_registered",
            "1 when the channel's SIM is registered on the GSM network, 0 when it is not",
            ["device", "channel"],
            registry=r,
        )
        # -- store, counted periodically (a full count is too dear for every scrape)
        self.messages_by_state = Gauge(
            "smpp_bridge_store_messages",
            "Messages in the store by lifecycle state (recounted every 30 s)",
            ["state"],
            registry=r,
        )
        # -- admin API and config reloads
        self.admin_requests = Counter(
            "smpp_bridge_admin_requests_total",
            "Admin HTTP requests by endpoint and HTTP status code",
            ["endpoint", "code"],
            registry=r,
        )
        # -- the HTTP send API
        self.api_messages = Counter(
            "smpp_bridge_api_messages_total",
            "Messages accepted through POST /api/v1/messages (stored before the 201)",
            ["esme"],
            registry=r,
        )
        self.api_replays = Counter(
            "smpp_bridge_api_idempotent_replays_total",
            "POSTs answered from an earlier one with the same Idempotency-Key (no new SMS)",
            registry=r,
        )
        self.api_auth_failures = Counter(
            "smpp_bridge_api_auth_failures_total",
            "Send API requests refused for wrong or missing credentials or a disallowed address",
            registry=r,
        )
        self.console_logins = Counter(
            "smpp_bridge_console_logins_total",
            "Web console logins by result: ok, wrong (token or password), throttled (429, not checked)",
            ["result"],
            registry=r,
        )
        self.config_reloads = Counter(
            "smpp_bridge_config_reloads_total",
            "Config reloads (SIGHUP or POST /api/reload) by result (applied, invalid)",
            ["result"],
            registry=r,
        )
        # -- the process
        from . import __version__

        Info("smpp_bridge_build", "Version of the running bridge", registry=r).info(
            {"version": __version__}
        )
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        self._states: dict[tuple[str, str], str] = {}

    CHANNEL_STATES = ("ready", "sending", "cooldown", "quarantine", "paused")

    def set_channel_state(self, device: str, channel: str, state: str) -> None:
        for s in self.CHANNEL_STATES:
            self.channel_state.labels(device, channel, s).set(1 if s == state else 0)
        self._states[(device, channel)] = state

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
        ack = GaugeMetricFamily(
            "smpp_bridge_store_acknowledging",
            "1 while the store can acknowledge submits; 0 when its file was deleted, replaced or "
            "turned read-only under the running bridge (the log says which)",
        )
        ack.add_metric([], 0 if getattr(self.store, "fault", None) else 1)
        yield ack
        size = GaugeMetricFamily("smpp_bridge_store_database_bytes", "SQLite files on disk")
        size.add_metric([], self.store.database_size())
        yield size
        resent = CounterMetricFamily(
            "smpp_bridge_resent_parts",
            "Parts of long messages a client submitted again (answered with their first id)",
        )
        resent.add_metric([], getattr(self.store, "resent_parts", 0))
        yield resent
        superseded = CounterMetricFamily(
            "smpp_bridge_superseded_partial_groups",
            "Incomplete long messages ended early because a new message reused their reference",
        )
        superseded.add_metric([], getattr(self.store, "superseded_groups", 0))
        yield superseded


class SchedulerCollector(Collector):
    """Queue depth per route, oldest queued age, caps remaining, outbox backlog."""

    def __init__(self, scheduler, delivery) -> None:  # type: ignore[no-untyped-def]
        self.scheduler = scheduler
        self.delivery = delivery

    def collect(self):  # type: ignore[no-untyped-def]
        import math
        import time

        depth = GaugeMetricFamily(
            "smpp_bridge_route_queue_depth", "Messages waiting for a channel", labels=["route"]
        )
        oldest = GaugeMetricFamily(
            "smpp_bridge_route_oldest_queued_seconds",
            "Age of the oldest message waiting for a channel",
            labels=["route"],
        )
        if self.scheduler is not None:
            for name, (n, age) in self.scheduler.queue_stats().items():
                depth.add_metric([name], n)
                oldest.add_metric([name], age)
        yield depth
        yield oldest
        caps = GaugeMetricFamily(
            "smpp_bridge_channel_caps_remaining",
            "Sends a channel may still make in the current window (+Inf: no cap)",
            labels=["device", "channel", "window"],
        )
        if self.scheduler is not None:
            now = time.time()
            for ch in self.scheduler.channels.values():
                for window, left in ch.caps.remaining(now).items():
                    caps.add_metric([ch.device_name, ch.id, window], left if left != math.inf else math.inf)
        yield caps
        waiting = GaugeMetricFamily(
            "smpp_bridge_outbox_waiting",
            "deliver_sm (receipts, MO) waiting to be acknowledged by their ESME",
            labels=["esme", "kind"],
        )
        age = GaugeMetricFamily(
            "smpp_bridge_outbox_oldest_seconds",
            "Age of the oldest deliver_sm waiting for its ESME",
            labels=["esme", "kind"],
        )
        if self.delivery is not None:
            now = time.time()
            stats = dict(self.delivery.stats)
            # Every configured ESME has both series, 0 when nothing waits: a series that comes
            # and goes breaks rate() and makes "no data" look like "no backlog".
            for esme in getattr(self.delivery.config, "esmes", ()):
                for kind in ("receipt", "mo"):
                    stats.setdefault((esme.system_id, kind), (0, None))
            for (esme, kind), (n, created) in stats.items():
                waiting.add_metric([esme, kind], n)
                age.add_metric([esme, kind], now - created if created else 0.0)
        yield waiting
        yield age


class OpsCollector(Collector):
    """What ops alert on that is read at scrape time: the disk under the store, and whether each
    route has a channel that can send now."""

    AVAILABLE = ("ready", "sending")

    def __init__(self, store, scheduler) -> None:  # type: ignore[no-untyped-def]
        self.store = store
        self.scheduler = scheduler

    def collect(self):  # type: ignore[no-untyped-def]
        import os

        free = GaugeMetricFamily(
            "smpp_bridge_store_disk_free_bytes",
            "Bytes free for the bridge on the filesystem that holds the store",
        )
        size = GaugeMetricFamily(
            "smpp_bridge_store_disk_size_bytes", "Size of the filesystem that holds the store"
        )
        try:
            st = os.statvfs(self.store.path.parent)
        except OSError:
            pass
        else:
            free.add_metric([], st.f_bavail * st.f_frsize)
            size.add_metric([], st.f_blocks * st.f_frsize)
        yield free
        yield size
        total = GaugeMetricFamily(
            "smpp_bridge_route_channels",
            "Channels of a route that this bridge runs",
            labels=["route"],
        )
        available = GaugeMetricFamily(
            "smpp_bridge_route_channels_available",
            "Channels of a route that can send now (ready or sending; not paused, cooling "
            "down or quarantined)",
            labels=["route"],
        )
        if self.scheduler is not None:
            for route, chans in self.scheduler.route_channels.items():
                total.add_metric([route], len(chans))
                available.add_metric(
                    [route], sum(1 for c in chans if c.state in self.AVAILABLE and not c.paused)
                )
        yield total
        yield available
