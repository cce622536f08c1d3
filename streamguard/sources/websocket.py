"""The asyncio edge of the WebSocket feeds (``/twilio``, ``/ingest``).

The protocol cores (:mod:`~streamguard.sources.twilio`, :mod:`~streamguard.sources.native`) do
all the parsing; this module only moves frames from the socket into a core and the core's
events into a :class:`~streamguard.calls.CallSession`, and closes the socket when the core
rejects the feed, the call hits its length limit, or the daemon is full. One connection is one
call; a failure here never touches another connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import structlog
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from streamguard.calls import CallLimitReached, CallRegistry, CallSession
from streamguard.sources.base import CallStart, Reject, SourceEvent

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

log = structlog.get_logger(__name__)


class FeedCore(Protocol):
    """What a WebSocket protocol core offers (both cores implement it)."""

    @property
    def finished(self) -> bool: ...

    def receive_text(self, text: str) -> list[SourceEvent]: ...

    def receive_bytes(self, data: bytes) -> list[SourceEvent]: ...

    def close(self) -> list[SourceEvent]: ...


def feed_handler(
    kind: str,
    core_factory: Callable[[], FeedCore],
    registry: CallRegistry,
    *,
    metrics=None,
):
    """A ``WebSocketRouter`` handler that runs one call per connection through ``core``."""

    async def handler(connection: ServerConnection) -> None:
        core = core_factory()
        feed = _Feed(kind, registry, metrics)
        try:
            async for message in connection:
                if isinstance(message, str):
                    events = core.receive_text(message)
                else:
                    events = core.receive_bytes(message)
                close = feed.route(events)
                if close is None and feed.session is not None and feed.session.over_limit:
                    close = (CloseCode.POLICY_VIOLATION, "call length limit reached")
                    feed.session.end("limit")
                    feed.route(core.close())
                if close is not None:
                    await connection.close(*close)
                    break
                if core.finished:
                    await connection.close(CloseCode.NORMAL_CLOSURE, "call ended")
                    break
        except ConnectionClosed:
            pass
        finally:
            # Whatever happened to the socket, the call ends here, exactly once.
            feed.route(core.close())
            if feed.session is not None and not feed.session.finished:
                feed.session.end("closed")

    return handler


class _Feed:
    """Routes one connection's source events into its session."""

    def __init__(self, kind: str, registry: CallRegistry, metrics) -> None:
        self.kind = kind
        self.registry = registry
        self.metrics = metrics
        self.session: CallSession | None = None

    def route(self, events: list[SourceEvent]) -> tuple[int, str] | None:
        """Apply ``events``; returns ``(code, reason)`` when the connection must close."""
        for event in events:
            if isinstance(event, CallStart):
                try:
                    self.session = self.registry.open(event)
                except CallLimitReached as exc:
                    self._reject(event.source)
                    return (CloseCode.TRY_AGAIN_LATER, str(exc))
            elif isinstance(event, Reject):
                self._reject(self.session.source if self.session else self.kind)
                log.warning("feed_rejected", feed=self.kind, code=event.code, reason=event.reason)
                return (event.code, event.reason)
            elif self.session is not None:
                self.session.handle(event)
        return None

    def _reject(self, source: str) -> None:
        if self.metrics is not None:
            self.metrics.source_rejects_total.labels(source=source).inc()
