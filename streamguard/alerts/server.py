"""The daemon's one HTTP/WebSocket port: routing, auth, ``/healthz``, ``/metrics``, ``/alerts``.

websockets (17.x asyncio API) serves everything on one port. Plain HTTP GETs (``/healthz``,
``/metrics``, 401s, 404s, 503s) are answered in ``process_request`` before any WebSocket
handshake; WebSocket connections are dispatched on their path by :class:`WebSocketRouter`.

Daemon wiring::

    from websockets.asyncio.server import serve

    router = WebSocketRouter({
        cfg.alerts.path: alerts_handler(bus, max_queue=cfg.alerts.subscriber_queue),
        cfg.sources.twilio.path: twilio_handler,      # async def h(connection) -> None
        cfg.sources.ingest.path: ingest_handler,
    })
    process_request = make_process_request(
        router,
        http_routes={"/healthz": healthz_route(get_health), "/metrics": metrics_route(metrics)},
        token=cfg.auth.token_value(),
        protected_paths=cfg.protected_paths(),
        max_connections=cfg.server.max_connections,
    )
    async with serve(router, cfg.server.host, cfg.server.port,
                     process_request=process_request, max_size=cfg.server.max_message_bytes):
        ...

Handlers receive the ``ServerConnection``; ``connection.request.path`` still carries the query
string (parse it with :func:`query_params`).
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import http
import json
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import structlog
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from streamguard.alerts.bus import AlertBus, SubscriptionFilter, parse_types

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.server")

WsHandler = Callable[["ServerConnection"], Awaitable[None]]
HttpRoute = Callable[[Request], Response]
ProcessRequest = Callable[["ServerConnection", Request], Response | None]

ALERTS_QUERY_KEYS = frozenset({"call_id", "types", "since", "tail", "token"})

#: The WebSocket subprotocol a browser offers so it can carry a token without a URL or a
#: header it cannot set: ``new WebSocket(url, ["streamguard.v1", BEARER_PREFIX + b64url])``.
SUBPROTOCOL = "streamguard.v1"
BEARER_PREFIX = "streamguard.bearer."
#: Subprotocols the feeds' own clients offer (FreeSWITCH mod_audio_fork, jambonz); echoed back
#: because their clients (like browsers) drop a connection whose server ignores the offer.
KNOWN_SUBPROTOCOLS = (SUBPROTOCOL, "audio.drachtio.org", "audio.jambonz.org")


# ---------------------------------------------------------------- HTTP helpers


def http_response(
    status: int, body: bytes | str, content_type: str = "text/plain; charset=utf-8", **headers: str
) -> Response:
    """A complete plain-HTTP response for ``process_request`` to return."""
    data = body.encode() if isinstance(body, str) else body
    h = Headers()
    h["Content-Type"] = content_type
    h["Content-Length"] = str(len(data))
    h["Cache-Control"] = "no-store"
    h["Connection"] = "close"
    for name, value in headers.items():
        h[name.replace("_", "-")] = value
    return Response(status, http.HTTPStatus(status).phrase, h, data)


def json_response(status: int, payload: Mapping[str, Any]) -> Response:
    return http_response(status, json.dumps(payload) + "\n", "application/json")


def query_params(path: str) -> dict[str, str]:
    """Query string of a request path as ``{name: last value}``."""
    return {k: v[-1] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}


def request_path(path: str) -> str:
    """The path without its query string."""
    return urlsplit(path).path


@dataclass(frozen=True)
class Health:
    """What ``/healthz`` reports. HTTP 200 only when ``status == "ready"``, else 503.

    503 while starting or draining lets a load balancer or orchestrator stop routing new feeds
    to this node without a separate readiness endpoint.
    """

    status: Literal["starting", "ready", "draining"]
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


def healthz_route(health: Callable[[], Health]) -> HttpRoute:
    """``GET /healthz``: the callable's :class:`Health` as JSON."""

    def route(request: Request) -> Response:
        h = health()
        return json_response(200 if h.status == "ready" else 503, h.to_dict())

    return route


def metrics_route(metrics: Metrics) -> HttpRoute:
    """``GET /metrics``: Prometheus text from the daemon's own registry."""
    from streamguard.metrics import CONTENT_TYPE

    def route(request: Request) -> Response:
        return http_response(200, metrics.render(), CONTENT_TYPE)

    return route


# ---------------------------------------------------------------- auth


def request_token(request: Request) -> str | None:
    """The bearer token of a request, from (first found) ``Authorization: Bearer T``, the
    subprotocol ``streamguard.bearer.<base64url(T)>`` (browsers: the only header a page can set
    on a WebSocket, and it never lands in a URL or an access log), or ``?token=T``."""
    auth = request.headers.get("Authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    for offered in _offered_subprotocols(request):
        if offered.startswith(BEARER_PREFIX):
            encoded = offered[len(BEARER_PREFIX) :]
            try:
                token = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
            except (ValueError, UnicodeDecodeError):
                return None
            return token or None
    return query_params(request.path).get("token") or None


def _offered_subprotocols(request: Request) -> list[str]:
    return [
        item.strip()
        for header in request.headers.get_all("Sec-WebSocket-Protocol")
        for item in header.split(",")
        if item.strip()
    ]


def select_subprotocol(connection: ServerConnection, offered: Sequence[str]) -> str | None:
    """Echo the first subprotocol we know among those offered; never the bearer entry.

    Offering none, or only unknown ones, is fine (the connection goes on without one), so
    clients that do not care are never refused here.
    """
    for name in offered:
        if name in KNOWN_SUBPROTOCOLS:
            return name
    return None


def token_matches(expected: str, given: str | None) -> bool:
    """Constant-time comparison (hmac.compare_digest) so timing reveals nothing."""
    if given is None:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())


# ---------------------------------------------------------------- routing


class WebSocketRouter:
    """The ``serve()`` handler: dispatches WebSocket connections on the request path.

    Also counts open connections (``active``), which ``make_process_request`` uses to refuse
    new ones with 503 beyond ``max_connections``.
    """

    def __init__(self, routes: Mapping[str, WsHandler]):
        for path in routes:
            if not path.startswith("/"):
                raise ValueError(f"route paths must start with '/', got {path!r}")
        self.routes = dict(routes)
        self.active = 0

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self.routes)

    async def __call__(self, connection: ServerConnection) -> None:
        path = request_path(connection.request.path) if connection.request else ""
        handler = self.routes.get(path)
        if handler is None:  # normally refused with 404 in process_request already
            await connection.close(CloseCode.POLICY_VIOLATION, f"unknown path {path[:100]}")
            return
        self.active += 1
        try:
            await handler(connection)
        finally:
            self.active -= 1


def make_process_request(
    router: WebSocketRouter,
    *,
    http_routes: Mapping[str, HttpRoute] | None = None,
    token: str | None = None,
    protected_paths: Collection[str] = (),
    max_connections: int | None = None,
) -> ProcessRequest:
    """Build ``process_request``: plain HTTP routes, 401 on protected paths, 404 elsewhere.

    Order: HTTP routes (``/healthz``, ``/metrics``: never authenticated, so probes and scrapers
    need no secret) -> unknown path 404 -> auth 401 (``WWW-Authenticate: Bearer``) -> capacity
    503 -> ``None`` (carry on with the WebSocket handshake).
    """
    routes = dict(http_routes or {})
    protected = frozenset(protected_paths)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request_path(request.path)
        route = routes.get(path)
        if route is not None:
            return route(request)
        if path not in router.routes:
            return http_response(404, f"unknown path {path[:100]}\n")
        if token and path in protected and not token_matches(token, request_token(request)):
            log.warning("unauthorized", path=path, remote=_remote(connection))
            return http_response(401, "missing or wrong token\n", WWW_Authenticate="Bearer")
        if max_connections is not None and router.active >= max_connections:
            return http_response(503, "too many connections\n", Retry_After="5")
        return None

    return process_request


def _remote(connection: ServerConnection) -> str:
    addr = connection.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"


# ---------------------------------------------------------------- /alerts


def alerts_handler(bus: AlertBus, *, max_queue: int = 256) -> WsHandler:
    """The ``/alerts`` handler: ``?call_id=ID&types=alert,call_ended&since=SEQ``.

    Each subscriber gets a bounded queue on the bus and one sender loop here. A bad query
    (unknown parameter or type, non-integer since) closes with 1008 and the reason. Incoming
    messages are read and ignored so pings and the close handshake keep flowing.
    """

    async def handler(connection: ServerConnection) -> None:
        try:
            filt, since, tail = _parse_alerts_query(connection.request.path)
        except ValueError as exc:
            await connection.close(CloseCode.POLICY_VIOLATION, str(exc)[:120])
            return
        wake = asyncio.Event()
        sub = bus.subscribe(filt, max_queue=max_queue, since=since, tail=tail, on_ready=wake.set)
        if len(sub):
            wake.set()
        reader = asyncio.create_task(_discard_incoming(connection))
        log.info(
            "subscriber connected",
            remote=_remote(connection),
            call_id=filt.call_id,
            types=sorted(filt.types) if filt.types else None,
            since=since,
            tail=tail,
        )
        try:
            while not reader.done():
                waiter = asyncio.create_task(wake.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    waiter.cancel()
                    break
                wake.clear()
                for event in sub.drain():
                    await connection.send(event.to_json())
        except ConnectionClosed:
            pass
        finally:
            sub.close()
            reader.cancel()
            log.info(
                "subscriber disconnected", remote=_remote(connection), dropped=sub.dropped_total
            )

    return handler


def _parse_alerts_query(path: str) -> tuple[SubscriptionFilter, int | None, int | None]:
    params = query_params(path)
    unknown = sorted(set(params) - ALERTS_QUERY_KEYS)
    if unknown:
        raise ValueError(f"unknown query parameter(s): {', '.join(unknown)}")
    since = _non_negative_int(params, "since", "since must be an integer seq")
    tail = _non_negative_int(params, "tail", "tail must be an integer count of events")
    if since is not None and tail is not None:
        raise ValueError("since and tail are mutually exclusive")
    return (
        SubscriptionFilter(
            call_id=params.get("call_id") or None, types=parse_types(params.get("types"))
        ),
        since,
        tail,
    )


def _non_negative_int(params: dict[str, str], key: str, message: str) -> int | None:
    if not params.get(key):
        return None
    try:
        value = int(params[key])
    except ValueError:
        raise ValueError(message) from None
    if value < 0:
        raise ValueError(f"{key} must be >= 0")
    return value


async def _discard_incoming(connection: ServerConnection) -> None:
    """Read (and ignore) what a subscriber sends, so pings and the close handshake flow.

    Audio sent here is a feed pointed at the wrong path: say so instead of swallowing it.
    """
    try:
        async for message in connection:
            if isinstance(message, bytes) or '"media"' in message or '"start"' in message:
                await connection.close(
                    CloseCode.POLICY_VIOLATION,
                    "this is the alerts (subscriber) endpoint; feeds go to /twilio or /ingest",
                )
                return
    except ConnectionClosed:
        pass
