"""The live dashboard at ``/``: a static page shipped in the package, and the JSON it reads.

Owns the page's routes: its files (``streamguard/dashboard/static/``, package data) and
``GET /api/status`` (an entry of the ``/api`` table, :mod:`streamguard.server.api`) and the
document it answers (:func:`status_document`).

The page (``static/``: HTML, one ES module per concern, CSS; no build step, nothing fetched
from elsewhere) holds no data, so it is served without a token like ``/healthz``. Everything it
shows comes from authenticated endpoints of the same daemon:

- ``/alerts`` (WebSocket): the event stream. The page opens it with the subprotocols
  ``streamguard.v1`` and ``streamguard.bearer.<base64url(token)>``, so the token never lands in
  a URL or an access log; ``?tail=N`` after a (re)load, ``?since=SEQ`` after a reconnect.
- :data:`STATUS_PATH` (HTTP GET, ``Authorization: Bearer``): the model, its thresholds, the
  smoothing rule and the daemon's health, polled every few seconds. It is also how the page
  learns that a token is needed: a browser cannot see the HTTP 401 that refuses a WebSocket.
- the operator routes (:mod:`streamguard.server.operator_api`): ``POST /api/labels`` from the
  label buttons of an ended call, and the evidence list, its WAV clips (fetched with the header
  and played from a ``blob:`` URL) and ``DELETE``.

Static files are looked up in a table built once from the package (request paths never touch
the file system, so there is nothing to traverse) and answered with their content type, an
``ETag`` (``304`` on ``If-None-Match``), ``Cache-Control: no-cache`` (always revalidated, so an
upgrade is picked up at once) and a strict Content-Security-Policy.
"""

from __future__ import annotations

import hashlib
import http
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from streamguard.server.api import ApiRequest, ApiRoute
from streamguard.server.httputil import HttpRoute, json_response

if TYPE_CHECKING:
    from streamguard.config import Settings
    from streamguard.model.base import ModelInfo

#: The JSON endpoint the page reads besides ``/alerts`` (protected like ``/alerts``, as every
#: ``/api`` route is).
STATUS_PATH = "/api/status"
#: Where the page's assets live; ``/`` itself serves ``index.html``.
ASSET_PREFIX = "/dashboard/"

#: Everything the page may load, and where from: itself only. ``connect-src 'self'`` covers
#: the same-origin ``ws://``/``wss://`` of ``/alerts`` (CSP level 3). ``media-src blob:``: the
#: evidence audio, fetched with the token in a header and played from a ``blob:`` URL the page
#: made itself (an ``<audio src>`` cannot send a header). No inline script or style.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "media-src blob:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_static() -> dict[str, StaticFile]:
    """Request path -> file, for every file shipped in ``streamguard/dashboard/static``.

    ``index.html`` is served at ``/``; every other file at ``/dashboard/<name>``. A file type
    not in :data:`CONTENT_TYPES` is a packaging mistake and raises here, at start-up.
    """
    table: dict[str, StaticFile] = {}
    root = resources.files("streamguard").joinpath("dashboard", "static")
    for item in sorted(root.iterdir(), key=lambda t: t.name):
        if not item.is_file() or item.name.startswith("."):
            continue
        suffix = "." + item.name.rsplit(".", 1)[-1] if "." in item.name else ""
        if suffix not in CONTENT_TYPES:
            raise RuntimeError(f"dashboard file {item.name!r}: no content type for {suffix!r}")
        body = item.read_bytes()
        static = StaticFile(
            body=body,
            content_type=CONTENT_TYPES[suffix],
            etag='"' + hashlib.sha256(body).hexdigest()[:20] + '"',
        )
        table["/" if item.name == "index.html" else ASSET_PREFIX + item.name] = static
    if "/" not in table:
        raise RuntimeError("dashboard: static/index.html is missing from the package")
    return table


def static_route(static: StaticFile) -> HttpRoute:
    """``GET`` one static file, with revalidation (``ETag`` / ``304``) and security headers."""

    def route(request: Request) -> Response:
        if_none_match = request.headers.get("If-None-Match", "")
        fresh = static.etag in (tag.strip() for tag in if_none_match.split(","))
        status = 304 if fresh else 200
        body = b"" if fresh else static.body
        headers = Headers()
        headers["Content-Type"] = static.content_type
        headers["Content-Length"] = str(len(body))
        headers["ETag"] = static.etag
        headers["Cache-Control"] = "no-cache"
        headers["Connection"] = "close"
        for name, value in SECURITY_HEADERS.items():
            headers[name] = value
        return Response(status, http.HTTPStatus(status).phrase, headers, body)

    return route


def status_route(status: Callable[[], Mapping[str, Any]]) -> ApiRoute:
    """``GET /api/status``: what the page shows beside the events (model, thresholds, health)."""

    def handler(request: ApiRequest) -> Response:
        return json_response(200, status())

    return ApiRoute("GET", STATUS_PATH, handler)


def status_document(
    settings: Settings, info: ModelInfo | None, *, last_seq: int, health: dict[str, Any]
) -> dict[str, Any]:
    """What ``GET /api/status`` answers. Built on every request, so thresholds changed by
    SIGHUP show at once. ``last_seq`` lets a page that reconnects tell a restarted daemon
    (seqs began again) from a network blip."""
    from streamguard import __version__
    from streamguard.alerts.events import format_ts

    s = settings
    on, off = s.smoothing.thresholds(info.threshold) if info else (None, None)
    model = None
    if info is not None:
        model = {
            "name": info.name,
            "architecture": info.architecture,
            "threshold": info.threshold,
            "window_seconds": info.window_seconds,
            "sample_rate": info.sample_rate,
        }
    return {
        "version": __version__,
        "time": format_ts(time.time()),  # the daemon's clock: uptime -> when it started
        "model": model,
        "smoothing": {
            "mode": s.smoothing.mode,
            "on_threshold": on,
            "off_threshold": off,
            "raise_after": s.smoothing.raise_after,
            "clear_after": s.smoothing.clear_after,
        },
        "hop_seconds": s.track.hop_seconds,
        "min_verdict_speech_seconds": s.verdict.min_speech_seconds,
        "alerts_path": s.alerts.path,
        "history": s.alerts.history,
        "last_seq": last_seq,
        "health": health,
    }


def dashboard_url(host: str, port: int) -> str:
    """Where a browser on this machine finds the dashboard (a wildcard bind means loopback)."""
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def dashboard_routes() -> dict[str, HttpRoute]:
    """The dashboard's static routes: ``/`` and ``/dashboard/*`` (its data is
    :func:`status_route`, an ``/api`` table entry)."""
    return {path: static_route(static) for path, static in load_static().items()}
