"""Wiring of the AudioHook feed into the daemon's one WebSocket port.

Two pieces, both thin: the handshake check that ``process_request`` runs for the AudioHook path
(API key and signature, :class:`~streamguard.server.audiohook_auth.HandshakeVerifier`; a refusal
is an HTTP 400/401 before any WebSocket exists, logged and counted in
``streamguard_source_rejects_total{source="audiohook"}`` with ``reason`` ``auth``, ``signature``
or ``protocol``), and the connection handler: the shared
:func:`~streamguard.sources.edges.websocket.feed_handler` with an
:class:`~streamguard.sources.audiohook.AudioHookProtocol` per connection, made from the accepted
request's headers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from streamguard.server.audiohook_auth import Handshake, HandshakeVerifier
from streamguard.server.httputil import http_response, request_path
from streamguard.server.router import ProcessRequest, WsHandler
from streamguard.sources.audiohook import AudioHookProtocol
from streamguard.sources.edges.websocket import FeedLimits, feed_handler

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request, Response

    from streamguard.calls import CallRegistry
    from streamguard.config import AudioHookSourceSettings

log = structlog.get_logger(__name__)

SOURCE = "audiohook"


def count_reject(metrics: Any, kind: str) -> None:
    """One refused AudioHook handshake in ``streamguard_source_rejects_total``."""
    if metrics is not None:
        metrics.source_rejects_total.labels(source=SOURCE, reason=kind).inc()


def handshake_check(
    verifier: HandshakeVerifier, *, metrics: Any = None, clock: Callable[[], float] = time.time
) -> ProcessRequest:
    """The ``process_request`` step for the AudioHook path: None to accept, else the refusal."""

    def check(connection: ServerConnection, request: Request) -> Response | None:
        result = verifier.check(request.path, request.headers, clock())
        if isinstance(result, Handshake):
            return None
        count_reject(metrics, result.kind)
        addr = connection.remote_address
        log.warning(
            "audiohook_refused",
            status=result.status,
            kind=result.kind,
            reason=result.reason,
            path=request_path(request.path),
            remote=f"{addr[0]}:{addr[1]}" if addr else "?",
        )
        # The client learns only the status; the exact reason stays in our log.
        text = "bad request\n" if result.status == 400 else "unauthorized\n"
        return http_response(result.status, text)

    return check


def audiohook_route(
    settings: AudioHookSourceSettings,
    registry: CallRegistry,
    *,
    metrics: Any = None,
    limits: FeedLimits | None = None,
) -> tuple[WsHandler, ProcessRequest]:
    """The handler and the handshake check for ``settings.path`` (reads the credentials now,
    so a missing secret file stops the daemon at start-up with one line)."""
    api_key = settings.api_key_value()
    assert api_key is not None  # the config refuses enabled without a key
    verifier = HandshakeVerifier(
        api_key, settings.client_secret_bytes(), max_age_seconds=settings.max_signature_age_seconds
    )
    if not verifier.signs:
        log.warning("audiohook_unsigned", hint="set client_secret to verify request signatures")

    def core_for(request: Request) -> AudioHookProtocol:
        headers = request.headers
        return AudioHookProtocol(
            session_id=headers.get("Audiohook-Session-Id"),
            organization_id=headers.get("Audiohook-Organization-Id"),
            correlation_id=(headers.get("Audiohook-Correlation-Id") or "")[:64] or None,
            include_ani=settings.include_ani,
        )

    handler = feed_handler(SOURCE, core_for, registry, metrics=metrics, limits=limits)
    return handler, handshake_check(verifier, metrics=metrics)
