"""The daemon's one HTTP/WebSocket port: routing, auth, ``/healthz``, ``/metrics``, ``/alerts``.

websockets (17.x asyncio API) serves everything on one port. Plain HTTP GETs (``/healthz``,
``/metrics``, 401/403s, 404s, 429s, 503s) are answered in ``process_request`` before any
WebSocket handshake; WebSocket connections are dispatched on their path by
:class:`WebSocketRouter`. Who may use which path is :mod:`streamguard.access`'s decision.

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
        access=AccessPolicy.from_settings(cfg),
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
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import structlog
from websockets.datastructures import Headers, MultipleValuesError
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from streamguard.alerts.bus import AlertBus, SubscriptionFilter, parse_types
from streamguard.alerts.events import EventBase

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from streamguard.access import AccessPolicy, HostPolicy
    from streamguard.alerts.backends import EventBackend
    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.server")

WsHandler = Callable[["ServerConnection"], Awaitable[None]]
HttpRoute = Callable[[Request], Response]
ProcessRequest = Callable[["ServerConnection", Request], Response | None]

ALERTS_QUERY_KEYS = frozenset({"call_id", "types", "since", "tail", "token"})
#: The most events ``/alerts?tail=N`` replays; a larger N is clamped to it (documented, so a
#: dashboard asking for "everything recent" still gets a bounded answer).
MAX_TAIL = 1000

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
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


# ---------------------------------------------------------------- routing


class WebSocketRouter:
    """The ``serve()`` handler: dispatches WebSocket connections on the request path.

    Also counts open connections (``active``), which ``make_process_request`` uses to refuse
    new ones with 503 beyond ``max_connections``, and open calls per client address on
    ``call_paths`` (the feeds), for ``max_calls_per_client``.
    """

    def __init__(self, routes: Mapping[str, WsHandler], *, call_paths: Collection[str] = ()):
        for path in routes:
            if not path.startswith("/"):
                raise ValueError(f"route paths must start with '/', got {path!r}")
        self.routes = dict(routes)
        self.call_paths = frozenset(call_paths)
        self.active = 0
        self._calls_by_host: dict[str, int] = {}

    def calls_from(self, host: str) -> int:
        """Open connections on the call (feed) paths from ``host``."""
        return self._calls_by_host.get(host, 0)

    @property
    def paths(self) -> frozenset[str]:
        return frozenset(self.routes)

    async def __call__(self, connection: ServerConnection) -> None:
        path = request_path(connection.request.path) if connection.request else ""
        handler = self.routes.get(path)
        if handler is None:  # normally refused with 404 in process_request already
            await connection.close(CloseCode.POLICY_VIOLATION, f"unknown path {path[:100]}")
            return
        host = _host(connection) if path in self.call_paths else None
        self.active += 1
        if host is not None:
            self._calls_by_host[host] = self._calls_by_host.get(host, 0) + 1
        try:
            await handler(connection)
        finally:
            self.active -= 1
            if host is not None:
                left = self._calls_by_host[host] - 1
                if left:
                    self._calls_by_host[host] = left
                else:
                    del self._calls_by_host[host]


#: Headers whose meaning is ambiguous when a request repeats them: such a request is refused
#: (400) before anything reads them (websockets' ``Headers.get`` raises on a repeated one).
SINGLE_VALUED_HEADERS = (
    "Host",
    "Authorization",
    "Origin",
    "X-Twilio-Signature",
    "X-API-KEY",
    "Signature",
    "Signature-Input",
    "Audiohook-Session-Id",
    "Audiohook-Organization-Id",
    "Audiohook-Correlation-Id",
    "Sec-WebSocket-Key",
    "Sec-WebSocket-Version",
)
#: Methods the read-only HTTP endpoints answer; WebSocket handshakes are GETs.
READ_METHODS = ("GET", "HEAD")


def make_process_request(
    router: WebSocketRouter,
    *,
    http_routes: Mapping[str, HttpRoute] | None = None,
    token: str | None = None,
    protected_paths: Collection[str] = (),
    same_origin_paths: Collection[str] = (),
    access: AccessPolicy | None = None,
    hosts: HostPolicy | None = None,
    allowed_origins: Collection[str] = (),
    max_connections: int | None = None,
    max_calls_per_client: int = 0,
    handshake_checks: Mapping[str, ProcessRequest] | None = None,
    metrics: Metrics | None = None,
) -> ProcessRequest:
    """Build ``process_request``: access rules, plain HTTP routes, 404, capacity limits.

    Order: a header that must not repeat, repeated: 400 (``SINGLE_VALUED_HEADERS``) -> a
    ``Host`` that is none of the daemon's (``hosts``, :class:`~streamguard.access.HostPolicy`;
    None = any): 421 -> unknown path 404 -> a method other than GET/HEAD on an HTTP route, or
    other than GET on a WebSocket path: 405 with ``Allow`` -> access (``access``, or the
    shorthand ``token`` for ``protected_paths``: 401 when no credential was presented, 403 when
    a wrong one was, the body saying no more; HTTP routes and WebSocket paths alike) -> HTTP
    routes (``/healthz``, the dashboard's static files: public; HEAD gets the headers only) ->
    a browser's WebSocket from an origin not allowed: 403 -> the path's own
    ``handshake_checks`` entry (a feed that authenticates its own way, e.g. AudioHook's API key
    and signature; it answers its refusal or ``None``) -> capacity 503 (``max_connections``) ->
    per-client 429 (``max_calls_per_client`` open calls from one address, 0 = no limit) ->
    ``None`` (carry on with the WebSocket handshake). Every refusal but the 404 is logged once
    (one line, no traceback) and counted in ``streamguard_requests_refused_total{surface,
    reason}``.

    Origins: a browser sends ``Origin`` with every WebSocket handshake, and no same-origin
    policy stops a page from any site opening ``ws://127.0.0.1:8765/...``. So a WebSocket
    handshake with an ``Origin`` is accepted only from ``allowed_origins`` or, on
    ``same_origin_paths`` (``/alerts``: the daemon's own dashboard), from the origin the
    ``Host`` header names. Clients that send no ``Origin`` (``watch``, Twilio and the other
    platforms' servers, scripts) are unaffected.
    """
    from streamguard.access import AccessPolicy, origin_key

    routes = dict(http_routes or {})
    same_origin = frozenset(same_origin_paths)
    origins = frozenset(k for k in (origin_key(o) for o in allowed_origins) if k)
    checks = dict(handshake_checks or {})
    if access is None:
        access = AccessPolicy.single_token(token, protected_paths)

    def refuse(
        connection: ServerConnection, path: str, status: int, reason: str, text: str, **headers
    ) -> Response:
        # A label per path the daemon serves; any other path (a client's choice) is "other",
        # so refusals cannot grow the metric's series without bound.
        known = path in routes or path in router.routes
        surface = access.surface(path) or (
            (path.strip("/").split("/")[0][:32] or "root") if known else "other"
        )
        if metrics is not None:
            metrics.requests_refused_total.labels(surface=surface, reason=reason).inc()
        log.warning(
            "request_refused",
            path=path[:100],
            status=status,
            reason=reason,
            remote=_remote(connection),
        )
        return http_response(status, text, **headers)

    def process_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request_path(request.path)
        repeated = next(
            (name for name in SINGLE_VALUED_HEADERS if len(request.headers.get_all(name)) > 1),
            None,
        )
        if repeated is not None:
            text = f"bad request: repeated {repeated} header\n"
            return refuse(connection, path, 400, "duplicate_header", text)
        try:
            return checked(connection, request, path)
        except MultipleValuesError as exc:  # a repeated header some check reads: still a 400
            text = f"bad request: repeated {str(exc)[:40]} header\n"
            return refuse(connection, path, 400, "duplicate_header", text)

    def checked(connection: ServerConnection, request: Request, path: str) -> Response | None:
        if hosts is not None and not hosts.allows(request.headers.get("Host")):
            return refuse(connection, path, 421, "host", "misdirected request: unknown Host\n")
        route = routes.get(path)
        if route is None and path not in router.routes:
            return http_response(404, f"unknown path {path[:100]}\n")
        allowed = READ_METHODS if route is not None else ("GET",)
        if request.method not in allowed:
            text = f"method {request.method[:16]} not allowed\n"
            return refuse(connection, path, 405, "method", text, Allow=", ".join(allowed))
        refusal = access.check(path, request)
        if refusal is not None:
            if refusal.status == 401:
                return refuse(
                    connection,
                    path,
                    401,
                    refusal.reason,
                    "unauthorized\n",
                    WWW_Authenticate="Bearer",
                )
            return refuse(connection, path, 403, refusal.reason, "forbidden\n")
        if route is not None:
            response = route(request)
            if request.method == "HEAD":  # the GET's status and headers, no body
                response = Response(
                    response.status_code, response.reason_phrase, response.headers, b""
                )
            return response
        origin = request.headers.get("Origin")
        if origin is not None and not (
            origin_key(origin) in origins or (path in same_origin and is_same_origin(request))
        ):
            return refuse(connection, path, 403, "origin", "cross-origin WebSocket refused\n")
        check = checks.get(path)
        if check is not None and (refusal := check(connection, request)) is not None:
            return refusal
        if max_connections is not None and router.active >= max_connections:
            return refuse(
                connection, path, 503, "capacity", "too many connections\n", Retry_After="5"
            )
        if (
            max_calls_per_client
            and path in router.call_paths
            and router.calls_from(_host(connection)) >= max_calls_per_client
        ):
            text = "too many calls from this address\n"
            return refuse(connection, path, 429, "per_client", text, Retry_After="5")
        return None

    return process_request


def is_same_origin(request: Request) -> bool:
    """True unless the request carries an ``Origin`` whose host[:port] differs from ``Host``.

    Behind a reverse proxy, pass the browser's ``Host`` through (nginx:
    ``proxy_set_header Host $host;``) or the dashboard's own page is refused too.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    host = (request.headers.get("Host") or "").strip().lower()
    try:
        parts = urlsplit(origin.strip())
        port = parts.port
    except ValueError:
        return False
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return False  # "null" (a sandboxed frame, a file:// page) or garbage
    default = 443 if parts.scheme == "https" else 80
    netloc = parts.hostname if port in (None, default) else f"{parts.hostname}:{port}"
    if ":" in parts.hostname:  # IPv6 literal: Host carries it in brackets
        netloc = f"[{parts.hostname}]" if port in (None, default) else f"[{parts.hostname}]:{port}"
    return host in (netloc, f"{netloc}:{default}")


class HandshakeGuard:
    """``serve(create_connection=guard)``: connections whose opening handshake is watched.

    websockets aborts a connection whose opening handshake outlives ``open_timeout`` without a
    word; this counts it (``streamguard_handshake_timeouts_total``) and logs one line with the
    peer, so a client that never finishes its handshake is visible. :meth:`abort_opening` drops
    the connections still in their handshake, so a shutdown never waits for them.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        from websockets.asyncio.server import ServerConnection

        guard = self
        self.metrics = metrics
        self.opening: set[ServerConnection] = set()

        class Connection(ServerConnection):
            async def handshake(self, *args: Any, **kwargs: Any) -> None:
                guard.opening.add(self)
                try:
                    await super().handshake(*args, **kwargs)
                except asyncio.CancelledError:
                    if self.request is None:  # cancelled by open_timeout mid-request
                        guard.timed_out(self)
                    raise
                finally:
                    guard.opening.discard(self)

        self.connection_class = Connection

    def timed_out(self, connection: ServerConnection) -> None:
        if self.metrics is not None:
            self.metrics.handshake_timeouts_total.inc()
        log.warning("handshake_timeout", remote=_remote(connection))

    def abort_opening(self) -> None:
        """Drop every connection still in its opening handshake (at shutdown)."""
        for connection in list(self.opening):
            if connection.request is None:
                connection.transport.abort()

    def __call__(self, *args: Any, **kwargs: Any) -> ServerConnection:
        return self.connection_class(*args, **kwargs)


def _host(connection: ServerConnection) -> str:
    addr = connection.remote_address
    return str(addr[0]) if addr else "?"


def _remote(connection: ServerConnection) -> str:
    addr = connection.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"


# ---------------------------------------------------------------- /alerts


#: Close code for a subscriber disconnected because it kept losing events without reading
#: (4000-4999: private use). The reason says how far behind it was and how to resume.
CLOSE_SUBSCRIBER_TOO_SLOW = 4001


def alerts_handler(
    bus: AlertBus,
    *,
    max_queue: int = 256,
    backend: EventBackend | None = None,
    disconnect_after_lost: int | None = None,
    close_timeout: float = 2.0,
) -> WsHandler:
    """The ``/alerts`` handler: ``?call_id=ID&types=alert,call_ended&since=SEQ`` (or ``tail=N``,
    at most :data:`MAX_TAIL`: a larger N is clamped).

    Replay comes from the backend's log, then live events from the bus, with no gap and no
    duplicate at the seam (alerts/follow.py). Each subscriber gets a bounded queue on the bus
    and one sender task here. A bad query (unknown parameter or type, non-integer since)
    closes with 1008 and the reason. A subscriber that loses ``disconnect_after_lost`` events
    in a row without reading is closed with :data:`CLOSE_SUBSCRIBER_TOO_SLOW` (cut off after
    ``close_timeout`` if it does not answer the close either). Incoming messages are read and
    ignored so pings and the close handshake keep flowing.
    """
    from streamguard.alerts.backends import MemoryBackend
    from streamguard.alerts.follow import follow

    if backend is None:
        memory = MemoryBackend()
        memory.bus = bus
        backend = memory

    async def handler(connection: ServerConnection) -> None:
        try:
            filt, since, tail = _parse_alerts_query(connection.request.path)
        except ValueError as exc:
            await connection.close(CloseCode.POLICY_VIOLATION, str(exc)[:120])
            return
        loop = asyncio.get_running_loop()
        evicting: list[asyncio.Task] = []

        def on_evicted() -> None:
            evicting.append(loop.create_task(_evict(connection, close_timeout)))

        events = follow(
            bus,
            backend,
            filt,
            since=since,
            tail=tail,
            max_queue=max_queue,
            evict_after=disconnect_after_lost,
            on_evicted=on_evicted,
        )
        sender = asyncio.create_task(_send_all(connection, events))
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
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, *evicting, return_exceptions=True)
            log.info("subscriber disconnected", remote=_remote(connection))

    return handler


async def _send_all(connection: ServerConnection, events: AsyncIterator[EventBase]) -> None:
    try:
        async for event in events:
            await connection.send(event.to_json())
    except ConnectionClosed:
        pass
    except Exception as exc:  # the backend failed a replay read (Redis unreachable...)
        log.error("subscriber_replay_failed", remote=_remote(connection), error=str(exc)[:200])
        await connection.close(CloseCode.TRY_AGAIN_LATER, "event log unavailable; retry")
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _evict(connection: ServerConnection, close_timeout: float) -> None:
    """Close a subscriber that stopped reading. Its socket buffers are full, so a close frame
    may never leave: after ``close_timeout`` the TCP connection is simply cut."""
    reason = "subscriber too slow: kept losing events; reconnect with ?since=<last seq>"
    log.warning(
        "subscriber_too_slow",
        remote=_remote(connection),
        code=CLOSE_SUBSCRIBER_TOO_SLOW,
    )
    try:
        await asyncio.wait_for(connection.close(CLOSE_SUBSCRIBER_TOO_SLOW, reason), close_timeout)
    except (TimeoutError, ConnectionClosed):
        pass
    finally:
        if connection.transport is not None and not connection.transport.is_closing():
            connection.transport.abort()


async def close_subscribers(
    connections: Collection[ServerConnection], *, timeout: float, code: int = 1001
) -> None:
    """Close connections at shutdown, cutting off those that do not answer within ``timeout``
    (a subscriber that stopped reading must never hold the daemon)."""

    async def one(connection: ServerConnection) -> None:
        try:
            await asyncio.wait_for(connection.close(code, "server shutting down"), timeout)
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            if connection.transport is not None and not connection.transport.is_closing():
                connection.transport.abort()

    await asyncio.gather(*(one(c) for c in connections), return_exceptions=True)


def _parse_alerts_query(path: str) -> tuple[SubscriptionFilter, int | None, int | None]:
    params = query_params(path)
    unknown = sorted(set(params) - ALERTS_QUERY_KEYS)
    if unknown:
        raise ValueError(f"unknown query parameter(s): {', '.join(unknown)}")
    since = _non_negative_int(params, "since", "since must be an integer seq")
    tail = _non_negative_int(params, "tail", "tail must be an integer count of events")
    if tail is not None:
        tail = min(tail, MAX_TAIL)
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
