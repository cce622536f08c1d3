"""The feeds' own handshake checks, as ``process_request`` steps of the daemon's port.

Owns the front door's part of a feed that authenticates its own way: Genesys AudioHook's API
key and HTTP message signature (:class:`~streamguard.server.audiohook_auth.HandshakeVerifier`).
A refusal is an HTTP 400/401 before any WebSocket exists, logged and counted in
``streamguard_source_rejects_total{source="audiohook"}`` with ``reason`` ``auth``,
``signature`` or ``protocol``. (Twilio's signature is an access guard instead:
:mod:`streamguard.server.access`.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from streamguard.server.audiohook_auth import Handshake, HandshakeVerifier
from streamguard.server.httputil import http_response, peer_address, request_path

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request, Response

    from streamguard.config import AudioHookSourceSettings
    from streamguard.server.router import ProcessRequest

log = structlog.get_logger(__name__)

AUDIOHOOK = "audiohook"


def count_reject(metrics: Any, kind: str) -> None:
    """One refused AudioHook handshake in ``streamguard_source_rejects_total``."""
    if metrics is not None:
        metrics.source_rejects_total.labels(source=AUDIOHOOK, reason=kind).inc()


def handshake_check(
    verifier: HandshakeVerifier, *, metrics: Any = None, clock: Callable[[], float] = time.time
) -> ProcessRequest:
    """The ``process_request`` step for the AudioHook path: None to accept, else the refusal."""

    def check(connection: ServerConnection, request: Request) -> Response | None:
        result = verifier.check(request.path, request.headers, clock())
        if isinstance(result, Handshake):
            return None
        count_reject(metrics, result.kind)
        log.warning(
            "audiohook_refused",
            status=result.status,
            kind=result.kind,
            reason=result.reason,
            path=request_path(request.path),
            remote=peer_address(connection),
        )
        # The client learns only the status; the exact reason stays in our log.
        text = "bad request\n" if result.status == 400 else "unauthorized\n"
        return http_response(result.status, text)

    return check


def audiohook_check(settings: AudioHookSourceSettings, *, metrics: Any = None) -> ProcessRequest:
    """The handshake check for ``[sources.audiohook]`` (reads the credentials now, so a missing
    secret file stops the daemon at start-up with one line)."""
    api_key = settings.api_key_value()
    assert api_key is not None  # the config refuses enabled without a key
    verifier = HandshakeVerifier(
        api_key, settings.client_secret_bytes(), max_age_seconds=settings.max_signature_age_seconds
    )
    if not verifier.signs:
        log.warning("audiohook_unsigned", hint="set client_secret to verify request signatures")
    return handshake_check(verifier, metrics=metrics)
