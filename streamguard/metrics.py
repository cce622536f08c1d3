"""Prometheus metrics for one daemon, served at ``/metrics``.

Each :class:`Metrics` owns its own ``CollectorRegistry`` instead of the process-global default:
two daemons (or two tests) in one process never share or double-register counters, and nothing
leaks between them. Components receive the ``Metrics`` object and touch its attributes directly
(``metrics.windows_scored_total.inc()``). :data:`METRICS` is the table they are declared from,
grouped by the layer that updates them; its names are the documented contract (README,
"Metrics").
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

NAMESPACE = "streamguard"
CONTENT_TYPE = CONTENT_TYPE_LATEST

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
_SECONDS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class MetricSpec:
    """One metric of the table: its kind, name (without the namespace), help and labels."""

    kind: type[Counter] | type[Gauge] | type[Histogram]
    name: str
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    def build(self, registry: CollectorRegistry) -> Counter | Gauge | Histogram:
        extra = {"buckets": self.buckets} if self.buckets is not None else {}
        return self.kind(
            self.name, self.help, self.labels, namespace=NAMESPACE, registry=registry, **extra
        )


def _counter(name: str, help: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(Counter, name, help, labels)


def _gauge(name: str, help: str, labels: tuple[str, ...] = ()) -> MetricSpec:
    return MetricSpec(Gauge, name, help, labels)


def _histogram(name: str, help: str, *, buckets: tuple[float, ...]) -> MetricSpec:
    return MetricSpec(Histogram, name, help, buckets=buckets)


#: Every metric a daemon exports, in the order /metrics lists them.
METRICS: tuple[MetricSpec, ...] = (
    # calls
    _gauge("calls_active", "Calls open now"),
    _counter("calls_total", "Calls accepted", ("source",)),
    _counter(
        "source_rejects_total",
        "Feeds refused or closed by the daemon, by source and reason (protocol, capacity, "
        "draining, auth...)",
        ("source", "reason"),
    ),
    # windows
    _counter("windows_scored_total", "Windows scored by the model"),
    _counter("windows_skipped_total", "Windows skipped for too little speech"),
    _counter(
        "windows_thinned_total",
        "Windows not scored because their track was confidently real ([track] adaptive_stride > 1)",
    ),
    _counter(
        "windows_dropped_total",
        "Windows dropped unscored (reason: lag = too old when reached, queue = engine full, "
        "overwritten = the track's ring no longer held its audio)",
        ("reason",),
    ),
    _counter(
        "windows_failed_total",
        "Windows the model failed on, even retried alone (reason: error, nonfinite, out_of_range)",
        ("reason",),
    ),
    # engine
    _gauge("engine_queue_depth", "Windows waiting for inference"),
    _histogram("engine_batch_size", "Windows per inference batch", buckets=_BATCH_BUCKETS),
    _histogram(
        "engine_inference_seconds",
        "Wall time of one inference batch",
        buckets=_SECONDS_BUCKETS,
    ),
    _histogram(
        "engine_lag_seconds",
        "Time from a window becoming ready to its score being published",
        buckets=_SECONDS_BUCKETS,
    ),
    _gauge(
        "realtime_factor",
        "Inference seconds per second of track audio scored (all tracks together); a cost per "
        "call-second, not a saturation signal: see engine_utilization",
    ),
    _gauge(
        "engine_utilization",
        "Share of wall time the inference workers were busy (together) over the last few seconds; "
        "near 1 = saturated (lag and drops follow)",
    ),
    # events
    _counter("events_published_total", "Events published", ("type",)),
    _counter("subscriber_drops_total", "Events dropped for slow /alerts subscribers"),
    _gauge("subscribers", "Connected /alerts subscribers"),
    _counter(
        "subscriber_disconnects_total",
        "/alerts subscribers disconnected by the daemon (reason: slow = kept losing events without"
        " reading)",
        ("reason",),
    ),
    # event log (durability, fleet, webhooks)
    _counter(
        "events_committed_total",
        "Events committed to the event log (sqlite) or appended to the stream (redis)",
    ),
    _histogram(
        "events_commit_seconds",
        "Time from publish to the event being committed and delivered to subscribers",
        buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
    ),
    _histogram(
        "events_commit_batch",
        "Events per group commit",
        buckets=(1, 2, 4, 8, 16, 64, 256, 1024),
    ),
    _gauge("events_last_seq", "Highest seq delivered by this node"),
    _counter(
        "events_log_errors_total",
        "Failed commits to the event log (retried) or appends to Redis (spooled)",
    ),
    _counter(
        "events_rejected_total",
        "Events the log could not hold (they cannot be serialised): set aside in its "
        "rejected_events table, the others go on",
        ("type",),
    ),
    _counter(
        "events_retention_deleted_total",
        "Events deleted from the log by retention (retain_hours, max_mb)",
    ),
    _gauge(
        "events_backend_up",
        "1 when the event backend takes events (redis reachable), 0 when degraded",
    ),
    _gauge("events_spooled", "Events spooled on local disk, waiting for Redis"),
    _counter(
        "events_spool_lost_total",
        "Events lost because the spool was full while Redis was unreachable",
        ("type",),
    ),
    _counter(
        "events_recovered_calls_total",
        "Calls found open after a crash and ended with reason crash",
    ),
    _counter(
        "webhook_deliveries_total",
        "Webhook POST attempts by endpoint and outcome (ok, retry, dead)",
        ("endpoint", "outcome"),
    ),
    _counter(
        "webhook_dead_letters_total",
        "Events given up for an endpoint after its last attempt",
        ("endpoint",),
    ),
    _gauge(
        "webhook_lag_events",
        "Events logged but not yet delivered to an endpoint (its cursor behind the log)",
        ("endpoint",),
    ),
    # sources
    _counter("rtp_packets_lost_total", "RTP packets never received"),
    _counter("rtp_packets_duplicate_total", "RTP packets received twice"),
    _counter("rtp_packets_late_total", "RTP packets arriving after their slot was played out"),
    _counter("mic_overflows_total", "Microphone input overflows"),
    # the edge: refusals and limits (docs/operations.md, "Limits and close codes")
    _counter(
        "requests_refused_total",
        "HTTP requests and WebSocket handshakes refused before any call existed, by surface "
        "(ingest, twilio, alerts, metrics) and reason (auth, signature, capacity, per_client)",
        ("surface", "reason"),
    ),
    _counter(
        "handshake_timeouts_total",
        "Connections closed because their opening handshake (TLS + HTTP upgrade) did not finish "
        "within [limits] handshake_timeout_seconds",
    ),
    _counter(
        "feed_throttled_seconds_total",
        "Seconds feed connections were held back for sending more than [limits] "
        "max_messages_per_second",
        ("source",),
    ),
    _counter(
        "rtp_packets_refused_total",
        "RTP datagrams dropped before parsing, by reason (not_allowed: sender outside "
        "[sources.rtp] allow; rate: sender over max_packets_per_second; ssrcs: a new SSRC beyond "
        "max_ssrcs_per_sender)",
        ("reason",),
    ),
)


class Metrics:
    """All of a daemon's metrics (:data:`METRICS`), registered on a private registry, each an
    attribute of its name."""

    calls_active: Gauge
    calls_total: Counter
    source_rejects_total: Counter
    windows_scored_total: Counter
    windows_skipped_total: Counter
    windows_thinned_total: Counter
    windows_dropped_total: Counter
    windows_failed_total: Counter
    engine_queue_depth: Gauge
    engine_batch_size: Histogram
    engine_inference_seconds: Histogram
    engine_lag_seconds: Histogram
    realtime_factor: Gauge
    engine_utilization: Gauge
    events_published_total: Counter
    subscriber_drops_total: Counter
    subscribers: Gauge
    subscriber_disconnects_total: Counter
    events_committed_total: Counter
    events_commit_seconds: Histogram
    events_commit_batch: Histogram
    events_last_seq: Gauge
    events_log_errors_total: Counter
    events_rejected_total: Counter
    events_retention_deleted_total: Counter
    events_backend_up: Gauge
    events_spooled: Gauge
    events_spool_lost_total: Counter
    events_recovered_calls_total: Counter
    webhook_deliveries_total: Counter
    webhook_dead_letters_total: Counter
    webhook_lag_events: Gauge
    rtp_packets_lost_total: Counter
    rtp_packets_duplicate_total: Counter
    rtp_packets_late_total: Counter
    mic_overflows_total: Counter
    requests_refused_total: Counter
    handshake_timeouts_total: Counter
    feed_throttled_seconds_total: Counter
    rtp_packets_refused_total: Counter

    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        for spec in METRICS:
            setattr(self, spec.name, spec.build(self.registry))

    def render(self) -> bytes:
        """Prometheus text exposition of this daemon's registry."""
        return generate_latest(self.registry)
