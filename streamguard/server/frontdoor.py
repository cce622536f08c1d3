"""The daemon's one port, opened: router, ``process_request``, handshake guard, TLS, limits.

Owns putting the front door's parts together for ``[server]``/``[limits]``/``[alerts]``: the
WebSocket paths (the sources' and ``/alerts``, handed in), the plain HTTP routes (``/healthz``,
``/metrics``, the dashboard's files), the ``/api`` table, the access and host rules, and
websockets' ``serve`` with the connection class that guards handshakes and reads request bodies
(:mod:`streamguard.server.handshake`). The daemon hands in what it owns (handlers, health,
metrics); nothing here knows a feed or a call.
"""

from __future__ import annotations

import ssl as ssl_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from websockets.asyncio.server import Server, serve

from streamguard.errors import bind_error
from streamguard.server.access import AccessPolicy, HostPolicy, is_loopback
from streamguard.server.api import ApiRoute, ApiTable
from streamguard.server.dashboard import dashboard_routes
from streamguard.server.handshake import HandshakeGuard
from streamguard.server.health import Health, healthz_route, metrics_route
from streamguard.server.httputil import select_subprotocol
from streamguard.server.router import WebSocketRouter, make_process_request

if TYPE_CHECKING:
    from streamguard.config import Settings
    from streamguard.metrics import Metrics
    from streamguard.server.router import ProcessRequest

__all__ = ["FrontDoor", "open_front_door", "warn_exposure"]

log = structlog.get_logger("streamguard.daemon")


@dataclass
class FrontDoor:
    """The open port: websockets' server, the router (per-client call counts) and the
    handshake guard (aborted at a drain)."""

    server: Server
    router: WebSocketRouter
    handshakes: HandshakeGuard

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]


async def open_front_door(
    settings: Settings,
    *,
    routes: Mapping[str, Any],
    handshake_checks: Mapping[str, ProcessRequest],
    api_routes: list[ApiRoute],
    health: Callable[[], Health],
    access: AccessPolicy,
    metrics: Metrics,
    tls: ssl_module.SSLContext | None = None,
) -> FrontDoor:
    """Listen on ``[server] host:port``. ``routes`` are the WebSocket paths (``/alerts`` and
    the sources'); every path but ``[alerts] path`` counts as a call for
    ``max_calls_per_client``. A port that cannot bind is the CLI's one line."""
    s = settings
    router = WebSocketRouter(dict(routes), call_paths=set(routes) - {s.alerts.path})
    process_request = make_process_request(
        router,
        http_routes={
            "/healthz": healthz_route(health, details=access.may_see_details),
            "/metrics": metrics_route(metrics),
            **dashboard_routes(),
        },
        api=ApiTable(api_routes),
        access=access,
        hosts=HostPolicy.for_server(s.server.host, s.server.allowed_hosts),
        allowed_origins=s.server.allowed_origins,
        same_origin_paths={s.alerts.path},
        max_connections=s.server.max_connections,
        max_calls_per_client=s.limits.max_calls_per_client,
        handshake_checks=dict(handshake_checks),
        metrics=metrics,
    )
    handshakes = HandshakeGuard(metrics)
    try:
        server = await serve(
            router,
            s.server.host,
            s.server.port,
            process_request=process_request,
            max_size=s.server.max_message_bytes,
            # Audio barely compresses; permessage-deflate would only cost CPU per frame.
            compression=None,
            select_subprotocol=select_subprotocol,
            open_timeout=s.limits.handshake_timeout_seconds,
            create_connection=handshakes,  # type: ignore[arg-type]
            ssl=tls,
            # A peer that never answers the close handshake is cut off after this.
            close_timeout=s.alerts.close_timeout_seconds,
        )
    except OSError as exc:  # port taken, address not ours, host unknown: one clear line
        raise bind_error("HTTP/WebSocket", s.server.host, s.server.port, exc) from None
    warn_exposure(s)
    return FrontDoor(server, router, handshakes)


def warn_exposure(s: Settings) -> None:
    """Log what listening beyond loopback leaves to the operator (it starts anyway)."""
    if not is_loopback(s.server.host) and not s.server.allowed_hosts:
        log.warning(
            "allowed_hosts_unset",
            host=s.server.host,
            hint="requests are answered only when their Host header is the bind address, "
            "localhost, 127.0.0.1 or [::1] (else 421): list the names clients and probes "
            "use in [server] allowed_hosts",
        )
    if not s.server.tls and not is_loopback(s.server.host):
        log.warning(
            "plaintext_beyond_loopback",
            host=s.server.host,
            hint="tokens cross the network in clear: set [server] tls_cert/tls_key or "
            "put a TLS-terminating proxy in front",
        )
