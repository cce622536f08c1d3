"""Prometheus metrics for one daemon, served at ``/metrics``.

Each :class:`Metrics` owns its own ``CollectorRegistry`` instead of the process-global default:
two daemons (or two tests) in one process never share or double-register counters, and nothing
leaks between them. Components receive the ``Metrics`` object and touch its attributes directly
(``metrics.windows_scored.inc()``); the names below are the documented contract (README,
"Metrics").
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

NAMESPACE = "streamguard"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """All of a daemon's metrics, registered on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r, ns = self.registry, NAMESPACE

        # calls
        self.calls_active = Gauge("calls_active", "Calls open now", namespace=ns, registry=r)
        self.calls_total = Counter(
            "calls_total", "Calls accepted", ["source"], namespace=ns, registry=r
        )
        self.source_rejects_total = Counter(
            "source_rejects_total",
            "Feeds refused or closed by the daemon, by source and reason "
            "(protocol, capacity, draining, auth...)",
            ["source", "reason"],
            namespace=ns,
            registry=r,
        )
        # windows
        self.windows_scored_total = Counter(
            "windows_scored_total", "Windows scored by the model", namespace=ns, registry=r
        )
        self.windows_skipped_total = Counter(
            "windows_skipped_total",
            "Windows skipped for too little speech",
            namespace=ns,
            registry=r,
        )
        self.windows_thinned_total = Counter(
            "windows_thinned_total",
            "Windows not scored because their track was confidently real ([track] "
            "adaptive_stride > 1)",
            namespace=ns,
            registry=r,
        )
        self.windows_dropped_total = Counter(
            "windows_dropped_total",
            "Windows dropped unscored (reason: lag = too old when reached, queue = engine full, "
            "overwritten = the track's ring no longer held its audio)",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        self.windows_failed_total = Counter(
            "windows_failed_total",
            "Windows the model failed on, even retried alone (reason: error, nonfinite, "
            "out_of_range)",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        # engine
        self.engine_queue_depth = Gauge(
            "engine_queue_depth", "Windows waiting for inference", namespace=ns, registry=r
        )
        self.engine_batch_size = Histogram(
            "engine_batch_size",
            "Windows per inference batch",
            namespace=ns,
            registry=r,
            buckets=_BATCH_BUCKETS,
        )
        self.engine_inference_seconds = Histogram(
            "engine_inference_seconds",
            "Wall time of one inference batch",
            namespace=ns,
            registry=r,
            buckets=_SECONDS_BUCKETS,
        )
        self.engine_lag_seconds = Histogram(
            "engine_lag_seconds",
            "Time from a window becoming ready to its score being published",
            namespace=ns,
            registry=r,
            buckets=_SECONDS_BUCKETS,
        )
        self.realtime_factor = Gauge(
            "realtime_factor",
            "Inference seconds per second of track audio scored (all tracks together); a cost "
            "per call-second, not a saturation signal: see engine_utilization",
            namespace=ns,
            registry=r,
        )
        self.engine_utilization = Gauge(
            "engine_utilization",
            "Share of wall time the inference worker was busy over the last few seconds; "
            "near 1 = saturated (lag and drops follow)",
            namespace=ns,
            registry=r,
        )
        # events
        self.events_published_total = Counter(
            "events_published_total", "Events published", ["type"], namespace=ns, registry=r
        )
        self.subscriber_drops_total = Counter(
            "subscriber_drops_total",
            "Events dropped for slow /alerts subscribers",
            namespace=ns,
            registry=r,
        )
        self.subscribers = Gauge(
            "subscribers", "Connected /alerts subscribers", namespace=ns, registry=r
        )
        self.subscriber_disconnects_total = Counter(
            "subscriber_disconnects_total",
            "/alerts subscribers disconnected by the daemon (reason: slow = kept losing events "
            "without reading)",
            ["reason"],
            namespace=ns,
            registry=r,
        )
        # event log (durability, fleet, webhooks)
        self.events_committed_total = Counter(
            "events_committed_total",
            "Events committed to the event log (sqlite) or appended to the stream (redis)",
            namespace=ns,
            registry=r,
        )
        self.events_commit_seconds = Histogram(
            "events_commit_seconds",
            "Time from publish to the event being committed and delivered to subscribers",
            namespace=ns,
            registry=r,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
        )
        self.events_commit_batch = Histogram(
            "events_commit_batch",
            "Events per group commit",
            namespace=ns,
            registry=r,
            buckets=(1, 2, 4, 8, 16, 64, 256, 1024),
        )
        self.events_last_seq = Gauge(
            "events_last_seq", "Highest seq delivered by this node", namespace=ns, registry=r
        )
        self.events_log_errors_total = Counter(
            "events_log_errors_total",
            "Failed commits to the event log (retried) or appends to Redis (spooled)",
            namespace=ns,
            registry=r,
        )
        self.events_rejected_total = Counter(
            "events_rejected_total",
            "Events the log could not hold (they cannot be serialised): set aside in its "
            "rejected_events table, the others go on",
            ["type"],
            namespace=ns,
            registry=r,
        )
        self.events_retention_deleted_total = Counter(
            "events_retention_deleted_total",
            "Events deleted from the log by retention (retain_hours, max_mb)",
            namespace=ns,
            registry=r,
        )
        self.events_backend_up = Gauge(
            "events_backend_up",
            "1 when the event backend takes events (redis reachable), 0 when degraded",
            namespace=ns,
            registry=r,
        )
        self.events_spooled = Gauge(
            "events_spooled",
            "Events spooled on local disk, waiting for Redis",
            namespace=ns,
            registry=r,
        )
        self.events_spool_lost_total = Counter(
            "events_spool_lost_total",
            "Events lost because the spool was full while Redis was unreachable",
            ["type"],
            namespace=ns,
            registry=r,
        )
        self.events_recovered_calls_total = Counter(
            "events_recovered_calls_total",
            "Calls found open after a crash and ended with reason crash",
            namespace=ns,
            registry=r,
        )
        self.webhook_deliveries_total = Counter(
            "webhook_deliveries_total",
            "Webhook POST attempts by endpoint and outcome (ok, retry, dead)",
            ["endpoint", "outcome"],
            namespace=ns,
            registry=r,
        )
        self.webhook_dead_letters_total = Counter(
            "webhook_dead_letters_total",
            "Events given up for an endpoint after its last attempt",
            ["endpoint"],
            namespace=ns,
            registry=r,
        )
        self.webhook_lag_events = Gauge(
            "webhook_lag_events",
            "Events logged but not yet delivered to an endpoint (its cursor behind the log)",
            ["endpoint"],
            namespace=ns,
            registry=r,
        )
        # sources
        self.rtp_packets_lost_total = Counter(
            "rtp_packets_lost_total", "RTP packets never received", namespace=ns, registry=r
        )
        self.rtp_packets_duplicate_total = Counter(
            "rtp_packets_duplicate_total", "RTP packets received twice", namespace=ns, registry=r
        )
        self.rtp_packets_late_total = Counter(
            "rtp_packets_late_total",
            "RTP packets arriving after their slot was played out",
            namespace=ns,
            registry=r,
        )
        self.mic_overflows_total = Counter(
            "mic_overflows_total", "Microphone input overflows", namespace=ns, registry=r
        )
        # the edge: refusals and limits (docs/operations.md, "Limits and close codes")
        self.requests_refused_total = Counter(
            "requests_refused_total",
            "HTTP requests and WebSocket handshakes refused before any call existed, by surface "
            "(ingest, twilio, alerts, metrics) and reason (auth, signature, capacity, per_client)",
            ["surface", "reason"],
            namespace=ns,
            registry=r,
        )
        self.handshake_timeouts_total = Counter(
            "handshake_timeouts_total",
            "Connections closed because their opening handshake (TLS + HTTP upgrade) did not "
            "finish within [limits] handshake_timeout_seconds",
            namespace=ns,
            registry=r,
        )
        self.feed_throttled_seconds_total = Counter(
            "feed_throttled_seconds_total",
            "Seconds feed connections were held back for sending more than "
            "[limits] max_messages_per_second",
            ["source"],
            namespace=ns,
            registry=r,
        )
        self.rtp_packets_refused_total = Counter(
            "rtp_packets_refused_total",
            "RTP datagrams dropped before parsing, by reason (not_allowed: sender outside "
            "[sources.rtp] allow; rate: sender over max_packets_per_second; ssrcs: a new SSRC "
            "beyond max_ssrcs_per_sender)",
            ["reason"],
            namespace=ns,
            registry=r,
        )

    def render(self) -> bytes:
        """Prometheus text exposition of this daemon's registry."""
        return generate_latest(self.registry)
