"""The daemon's one HTTP/WebSocket port: routing and the checks every request passes.

websockets (17.x asyncio API) serves everything on one port. Plain HTTP requests
(``/healthz``, ``/metrics``, the dashboard, ``/api/*``, 401/403s, 404s, 429s, 503s) are
answered in ``process_request`` before any WebSocket handshake; WebSocket connections are
dispatched on their path by :class:`WebSocketRouter`. Who may use which path is
:mod:`streamguard.server.access`'s decision; ``/api/*`` routes are
:mod:`streamguard.server.api`'s table, whose requests may carry a JSON body
(:mod:`streamguard.server.handshake` reads it).

Daemon wiring::

    router = WebSocketRouter({cfg.alerts.path: alerts_handler(bus), "/twilio": twilio_handler})
    process_request = make_process_request(
        router,
        http_routes={"/healthz": healthz_route(get_health), "/metrics": metrics_route(metrics)},
        api=ApiTable([ApiRoute("GET", "/api/status", status)]),
        access=AccessPolicy.from_settings(cfg),
        max_connections=cfg.server.max_connections,
    )
    guard = HandshakeGuard(metrics)
    async with serve(router, host, port, process_request=process_request,
                     create_connection=guard, max_size=cfg.server.max_message_bytes):
        ...

Handlers receive the ``ServerConnection``; ``connection.request.path`` still carries the query
string (parse it with :func:`~streamguard.server.httputil.query_params`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import structlog
from websockets.datastructures import MultipleValuesError
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from streamguard.server.access import AccessPolicy, HostPolicy, origin_key
from streamguard.server.api import ApiTable
from streamguard.server.httputil import (
    HttpRoute,
    http_response,
    peer_address,
    peer_host,
    request_path,
)

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.server")

WsHandler = Callable[["ServerConnection"], Awaitable[None]]
ProcessRequest = Callable[
    ["ServerConnection", Request], "Awaitable[Response | None] | Response | None"
]


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
        host = peer_host(connection) if path in self.call_paths else None
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
    api: ApiTable | None = None,
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
    ``Host`` that is none of the daemon's (``hosts``,
    :class:`~streamguard.server.access.HostPolicy`; None = any): 421 -> a path under ``/api/``:
    the ``api`` table answers it (:meth:`~streamguard.server.api.ApiTable.dispatch`: its own
    404/405, the access rules below, the write rules, the JSON body) -> unknown path 404 -> a
    method other than GET/HEAD on an HTTP route, or other than GET on a WebSocket path: 405 with
    ``Allow`` -> access (``access``, or the shorthand ``token`` for ``protected_paths``: 401
    when no credential was presented, 403 when a wrong one was, the body saying no more; HTTP
    routes and WebSocket paths alike) -> HTTP routes (``/healthz``, the dashboard's static
    files: public; HEAD gets the headers only) -> a browser's WebSocket from an origin not
    allowed: 403 -> the path's own ``handshake_checks`` entry (a feed that authenticates its own
    way, e.g. AudioHook's API key and signature; it answers its refusal or ``None``) -> capacity
    503 (``max_connections``) -> per-client 429 (``max_calls_per_client`` open calls from one
    address, 0 = no limit) -> ``None`` (carry on with the WebSocket handshake). Every refusal
    but the 404 is logged once (one line, no traceback) and counted in
    ``streamguard_requests_refused_total{surface, reason}``.

    Origins: a browser sends ``Origin`` with every WebSocket handshake, and no same-origin
    policy stops a page from any site opening ``ws://127.0.0.1:8765/...``. So a WebSocket
    handshake with an ``Origin`` is accepted only from ``allowed_origins`` or, on
    ``same_origin_paths`` (``/alerts``: the daemon's own dashboard), from the origin the
    ``Host`` header names. Clients that send no ``Origin`` (``watch``, Twilio and the other
    platforms' servers, scripts) are unaffected.
    """
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
        known = path in routes or path in router.routes or (api is not None and api.owns(path))
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
            remote=peer_address(connection),
        )
        return http_response(status, text, **headers)

    def process_request(
        connection: ServerConnection, request: Request
    ) -> Awaitable[Response] | Response | None:
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

    def denied(connection: ServerConnection, path: str, request: Request) -> Response | None:
        refusal = access.check(path, request)
        if refusal is None:
            return None
        if refusal.status == 401:
            text = "unauthorized\n"
            return refuse(connection, path, 401, refusal.reason, text, WWW_Authenticate="Bearer")
        return refuse(connection, path, 403, refusal.reason, "forbidden\n")

    def origin_allowed(request: Request, *, same_origin_ok: bool) -> bool:
        origin = request.headers.get("Origin")
        return (
            origin is None
            or origin_key(origin) in origins
            or (same_origin_ok and is_same_origin(request))
        )

    def checked(
        connection: ServerConnection, request: Request, path: str
    ) -> Awaitable[Response] | Response | None:
        if hosts is not None and not hosts.allows(request.headers.get("Host")):
            return refuse(connection, path, 421, "host", "misdirected request: unknown Host\n")
        if api is not None and api.owns(path):
            return api.dispatch(
                connection,
                request,
                refuse=refuse,
                authorized=lambda r: denied(connection, path, r),
                origin_allowed=lambda r: origin_allowed(r, same_origin_ok=True),
                write_needs_loopback=access.is_open(path),
            )
        route = routes.get(path)
        if route is None and path not in router.routes:
            return http_response(404, f"unknown path {path[:100]}\n")
        allowed = READ_METHODS if route is not None else ("GET",)
        if request.method not in allowed:
            text = f"method {request.method[:16]} not allowed\n"
            return refuse(connection, path, 405, "method", text, Allow=", ".join(allowed))
        refusal = denied(connection, path, request)
        if refusal is not None:
            return refusal
        if route is not None:
            response = route(request)
            if request.method == "HEAD":  # the GET's status and headers, no body
                response = Response(
                    response.status_code, response.reason_phrase, response.headers, b""
                )
            return response
        if not origin_allowed(request, same_origin_ok=path in same_origin):
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
            and router.calls_from(peer_host(connection)) >= max_calls_per_client
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
