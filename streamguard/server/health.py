"""``/healthz`` and ``/metrics``: what a probe and a scraper read from the daemon's port
(:class:`Health`, the engine's part of it, and the two routes)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from websockets.http11 import Request, Response

from streamguard.server.httputil import HttpRoute, http_response, json_response

if TYPE_CHECKING:
    from streamguard.metrics import Metrics


@dataclass(frozen=True)
class Health:
    """What ``/healthz`` reports. HTTP 200 when ``status`` is ``ready`` or ``degraded`` (scoring
    goes on; the event backend is unreachable and events are spooled), else 503.

    503 while starting or draining lets a load balancer or orchestrator stop routing new feeds
    to this node without a separate readiness endpoint.
    """

    status: Literal["starting", "ready", "degraded", "draining"]
    model: str
    uptime_seconds: float
    open_calls: int = 0
    engine_queue_depth: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        extra = d.pop("extra")
        d["uptime_seconds"] = round(self.uptime_seconds, 3)
        return {**d, **extra}


def healthz_route(
    health: Callable[[], Health], *, details: Callable[[Request], bool] | None = None
) -> HttpRoute:
    """``GET /healthz``: the callable's :class:`Health` as JSON.

    ``details(request)`` False (auth on, no alerts token presented) -> only ``{"status": ...}``:
    a probe needs no secret, and an anonymous caller learns nothing about the calls.
    """

    def route(request: Request) -> Response:
        h = health()
        # degraded (the event backend is unreachable, events spooled): still takes calls.
        code = 200 if h.status in ("ready", "degraded") else 503
        body = h.to_dict() if details is None or details(request) else {"status": h.status}
        return json_response(code, body)

    return route


def metrics_route(metrics: Metrics) -> HttpRoute:
    """``GET /metrics``: Prometheus text from the daemon's own registry."""
    from streamguard.metrics import CONTENT_TYPE

    def route(request: Request) -> Response:
        return http_response(200, metrics.render(), CONTENT_TYPE)

    return route


def engine_details(engine: Any, device: str | None, backend: str | None) -> dict[str, Any]:
    """The scoring engine's part of ``/healthz`` (for a request with the alerts token)."""
    stats = engine.stats
    return {
        "engine_heartbeat_age_seconds": round(engine.heartbeat_age(), 3),
        "windows_scored": stats.scored,
        "windows_dropped": stats.dropped_lag + stats.dropped_overflow,
        "windows_failed": stats.failed,
        "realtime_factor": round(stats.realtime_factor, 4),
        "engine_utilization": round(stats.utilization, 3),
        "device": device,
        "backend": backend,
    }
