"""``/api/*``: the daemon's JSON endpoints, as one route table.

Owns how an ``/api`` request reaches its handler and what every handler can rely on. A route
is one :class:`ApiRoute` entry: a method, a path pattern (``{name}`` segments are path
parameters), and a handler ``(ApiRequest) -> Response`` (plain or ``async``)::

    ApiTable([
        ApiRoute("GET", "/api/status", status),
        ApiRoute("POST", "/api/labels", add_label),                     # JSON body
        ApiRoute("DELETE", "/api/calls/{call_id}/evidence", forget),   # path parameter
    ])

The table, not the handler, applies the guard (the router calls :meth:`ApiTable.dispatch`
after its ``Host`` check):

1. no pattern matches: 404; a pattern matches but not the method: 405 with ``Allow``;
2. the alerts surface's credential (``[auth] alerts_token``, else ``token``; 401/403), as for
   ``/alerts`` and ``/metrics``;
3. a route that changes something (any method but GET/HEAD): refused (403) from a peer beyond
   loopback while the alerts surface has no token (open writes to the network are never
   served), and refused (403) with an ``Origin`` that is neither the daemon's own page nor an
   ``allowed_origins`` entry (a page elsewhere cannot post to a daemon on 127.0.0.1);
4. a body must be JSON (``Content-Type: application/json``, else 415), at most the route's
   ``max_body`` bytes (413), read in full before the handler runs
   (:meth:`streamguard.server.handshake.BodyReadingConnection.read_body`).

A handler raises :class:`ApiError` for a refusal it decides (``{"error": "..."}`` with its
status); anything else it raises is logged once and answered 500.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import structlog
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streamguard.server.access import is_loopback
from streamguard.server.handshake import MAX_BODY_BYTES, BodyTooLarge
from streamguard.server.httputil import json_response, peer_host, query_params, request_path

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

log = structlog.get_logger("streamguard.server")

#: Every path under this prefix is the table's (a path that matches no route is its 404).
API_PREFIX = "/api/"
#: Methods that only read: every other method is a write (step 3 of the guard).
READ_METHODS = frozenset({"GET", "HEAD"})

ApiHandler = Callable[["ApiRequest"], "Response | Awaitable[Response]"]


class ApiError(Exception):
    """A refusal a handler decides: answered ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class ApiRequest:
    """What a handler gets: the request, its path parameters and its (already read) body."""

    method: str
    path: str  # without the query string
    params: Mapping[str, str]  # path parameters, by their {name} in the pattern
    query: Mapping[str, str]
    headers: Headers
    body: bytes = b""
    remote: str = "?"

    def json(self) -> Any:
        """The body as JSON (an empty body is ``None``); a malformed one is :class:`ApiError`
        400."""
        if not self.body:
            return None
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"body is not JSON: {str(exc)[:80]}") from None


_PARAM = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


@dataclass(frozen=True)
class ApiRoute:
    """One entry of the table: ``method`` on ``pattern`` is answered by ``handler``."""

    method: str
    pattern: str
    handler: ApiHandler
    max_body: int = MAX_BODY_BYTES
    _regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.pattern.startswith(API_PREFIX):
            raise ValueError(f"an /api route must start with {API_PREFIX!r}: {self.pattern!r}")
        parts = _PARAM.split(self.pattern)  # literal, name, literal, name, ...
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"(?P<{part}>[^/]+)" for i, part in enumerate(parts)
        )
        object.__setattr__(self, "method", self.method.upper())
        object.__setattr__(self, "_regex", re.compile(regex + r"\Z"))

    def match(self, path: str) -> dict[str, str] | None:
        """The path parameters, percent-decoded (a call id such as ``abc@host`` or one with a
        space travels encoded; an encoded ``/`` stays inside its one segment)."""
        found = self._regex.match(path)
        if found is None:
            return None
        return {name: unquote(value) for name, value in found.groupdict().items()}

    @property
    def writes(self) -> bool:
        return self.method not in READ_METHODS


class ApiTable:
    """The ``/api/*`` routes of one daemon, and the guard in front of them (see the module)."""

    def __init__(self, routes: Iterable[ApiRoute] = ()) -> None:
        self.routes = list(routes)
        seen = set()
        for route in self.routes:
            if (route.method, route.pattern) in seen:
                raise ValueError(f"two /api routes for {route.method} {route.pattern}")
            seen.add((route.method, route.pattern))

    @staticmethod
    def owns(path: str) -> bool:
        return path.startswith(API_PREFIX)

    def resolve(self, method: str, path: str) -> tuple[ApiRoute | None, dict[str, str], list[str]]:
        """``(route, path parameters, methods allowed on path)``; no route: ``None``."""
        allowed: list[str] = []
        for route in self.routes:
            params = route.match(path)
            if params is None:
                continue
            allowed.append(route.method)
            if route.method == method or (method == "HEAD" and route.method == "GET"):
                return route, params, allowed
        return None, {}, allowed

    async def dispatch(
        self,
        connection: ServerConnection,
        request: Request,
        *,
        refuse: Callable[..., Response],
        authorized: Callable[[Request], Response | None],
        origin_allowed: Callable[[Request], bool],
        write_needs_loopback: bool,
    ) -> Response:
        """Answer one ``/api`` request (the router supplies its refusal, credential and origin
        rules, so ``/api`` refuses, logs and counts like every other path)."""
        path = request_path(request.path)
        route, params, allowed = self.resolve(request.method, path)
        if route is None:
            if not allowed:
                return json_response(404, {"error": f"unknown path {path[:100]}"})
            allow = ", ".join(sorted({*allowed, *(["HEAD"] if "GET" in allowed else [])}))
            text = f"method {request.method[:16]} not allowed\n"
            return refuse(connection, path, 405, "method", text, Allow=allow)
        refusal = authorized(request)
        if refusal is not None:
            return refusal
        remote = peer_host(connection)
        if route.writes:
            if write_needs_loopback and not is_loopback(remote):
                text = "forbidden: set [auth] alerts_token to change the daemon from afar\n"
                return refuse(connection, path, 403, "loopback", text)
            if not origin_allowed(request):
                return refuse(connection, path, 403, "origin", "cross-origin request refused\n")
        try:
            body = await _body(connection, request, route)
            api_request = ApiRequest(
                method=request.method,
                path=path,
                params=params,
                query=query_params(request.path),
                headers=request.headers,
                body=body,
                remote=remote,
            )
            response = route.handler(api_request)
            if inspect.isawaitable(response):
                response = await response
        except ApiError as exc:
            return json_response(exc.status, {"error": exc.message})
        except ConnectionError:
            return json_response(400, {"error": "request body incomplete"})
        except Exception as exc:  # a handler's bug: one line, no frame locals, a 500
            log.error("api_handler_failed", path=path[:100], error=type(exc).__name__)
            return json_response(500, {"error": "internal error"})
        if request.method == "HEAD":
            return Response(response.status_code, response.reason_phrase, response.headers, b"")
        return response


async def _body(connection: ServerConnection, request: Request, route: ApiRoute) -> bytes:
    read_body = getattr(connection, "read_body", None)
    if read_body is None:  # a plain ServerConnection: websockets refused any body already
        return b""
    try:
        body = await read_body(route.max_body)
    except BodyTooLarge:
        raise ApiError(413, f"body over {route.max_body} bytes") from None
    if body:
        content_type = request.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            raise ApiError(415, "the body must be application/json")
    return body
