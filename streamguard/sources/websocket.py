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

from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from streamguard.calls import CallFeed, CallRegistry
from streamguard.sources.base import SourceEvent

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection


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
        feed = CallFeed(kind, registry, metrics=metrics)
        try:
            async for message in connection:
                if isinstance(message, str):
                    events = core.receive_text(message)
                else:
                    events = core.receive_bytes(message)
                close = feed.route(events)
                if close is None and feed.session is not None and feed.session.over_limit:
                    close = (CloseCode.POLICY_VIOLATION, "call length limit reached")
                    feed.end("limit")
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
            feed.end("closed")

    return handler
