"""HTTP helpers of the daemon's one port: plain responses, query strings, bearer tokens,
subprotocols and the peer's address.

Owns how a request's credential is found (:func:`request_token`: ``Authorization: Bearer``,
the ``streamguard.bearer.<base64url>`` subprotocol a browser can set, or ``?token=``) and how it
is compared (:func:`token_matches`, constant time). Everything that answers HTTP on the port
(the router's refusals, ``/healthz``, ``/metrics``, the dashboard, ``/api/*``, the feeds'
handshake checks) builds its response here.
"""

from __future__ import annotations

import base64
import hmac
import http
import json
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

#: A plain HTTP route: the request in, the complete response out (answered before any
#: WebSocket handshake).
HttpRoute = Callable[[Request], Response]

#: The WebSocket subprotocol a browser offers so it can carry a token without a URL or a
#: header it cannot set: ``new WebSocket(url, ["streamguard.v1", BEARER_PREFIX + b64url])``.
SUBPROTOCOL = "streamguard.v1"
BEARER_PREFIX = "streamguard.bearer."
#: Subprotocols the feeds' own clients offer (FreeSWITCH mod_audio_fork, jambonz); echoed back
#: because their clients (like browsers) drop a connection whose server ignores the offer.
KNOWN_SUBPROTOCOLS = (SUBPROTOCOL, "audio.drachtio.org", "audio.jambonz.org")


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


def peer_host(connection: ServerConnection) -> str:
    addr = connection.remote_address
    return str(addr[0]) if addr else "?"


def peer_address(connection: ServerConnection) -> str:
    addr = connection.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"
