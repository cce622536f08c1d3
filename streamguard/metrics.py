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
        self.windows_dropped_total = Counter(
            "windows_dropped_total",
            "Windows dropped unscored (reason: lag = too old when reached, queue = engine full)",
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

    def render(self) -> bytes:
        """Prometheus text exposition of this daemon's registry."""
        return generate_latest(self.registry)
