"""The AudioHook feed's connection handler on the daemon's port.

The shared :func:`~streamguard.sources.edges.websocket.feed_handler` with an
:class:`~streamguard.sources.audiohook.AudioHookProtocol` per connection, made from the
accepted request's headers. The handshake in front of it (API key and signature) is the front
door's: :func:`streamguard.server.feed_checks.audiohook_check`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from streamguard.sources.audiohook import AudioHookProtocol
from streamguard.sources.edges.websocket import FeedLimits, WsHandler, feed_handler

if TYPE_CHECKING:
    from websockets.http11 import Request

    from streamguard.calls import CallRegistry
    from streamguard.config import AudioHookSourceSettings

SOURCE = "audiohook"


def audiohook_handler(
    settings: AudioHookSourceSettings,
    registry: CallRegistry,
    *,
    metrics: Any = None,
    limits: FeedLimits | None = None,
) -> WsHandler:
    """The connection handler for ``settings.path``."""

    def core_for(request: Request) -> AudioHookProtocol:
        headers = request.headers
        return AudioHookProtocol(
            session_id=headers.get("Audiohook-Session-Id"),
            organization_id=headers.get("Audiohook-Organization-Id"),
            correlation_id=(headers.get("Audiohook-Correlation-Id") or "")[:64] or None,
            include_ani=settings.include_ani,
        )

    return feed_handler(SOURCE, core_for, registry, metrics=metrics, limits=limits)
