"""The asyncio edge of the WebSocket feeds (``/twilio``, ``/ingest``, ``/audiohook``).

The protocol cores (:mod:`~streamguard.sources.twilio`, :mod:`~streamguard.sources.native`,
:mod:`~streamguard.sources.audiohook`) do all the parsing; this module only moves frames from the
socket into a core, the core's events into a :class:`~streamguard.calls.CallSession` and the
core's replies (``data_to_send``, AudioHook only) back to the socket, and closes the socket when
the core rejects the feed, the call hits its length limit, or the daemon is full. One connection
is one call; a failure here never touches another connection.

Owns the mapping of a refusal to a WebSocket close code (:data:`CLOSE_CODES`): the cores and
:class:`~streamguard.calls.CallFeed` say what kind of refusal it is, only this edge speaks in
close codes.

It also enforces the per-connection limits (:class:`FeedLimits`, ``[limits]``; the close codes
are tabled in docs/operations.md): a feed sending more than ``max_messages_per_second`` is read
no faster than that (TCP backpressure slows the sender; nothing is closed), and a feed that
sends no audio for ``idle_timeout_seconds`` is closed with 1008 and its call ends ``idle``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import structlog
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from streamguard.calls import CallFeed, CallRegistry, FeedEndKind, Refusal
from streamguard.ratelimit import TokenBucket
from streamguard.sources.base import Audio, Gap, SourceEvent

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection
    from websockets.http11 import Request

log = structlog.get_logger(__name__)

#: A handler of the port's router: one WebSocket connection in, served until it ends.
WsHandler = Callable[["ServerConnection"], Awaitable[None]]

#: The close code for each kind of refusal (docs/operations.md, "Limits and close codes").
CLOSE_CODES: dict[FeedEndKind, int] = {
    "protocol": CloseCode.POLICY_VIOLATION,  # 1008: bad JSON, missing fields, out of order
    "unsupported": CloseCode.UNSUPPORTED_DATA,  # 1003: an encoding, a rate... not supported
    "metadata": CloseCode.POLICY_VIOLATION,  # 1008: call metadata over the bounds
    "busy": CloseCode.TRY_AGAIN_LATER,  # 1013: max_calls open, or draining
    "in_use": CloseCode.POLICY_VIOLATION,  # 1008: the call id is live on another connection
    "limit": CloseCode.POLICY_VIOLATION,  # 1008: max_call_seconds reached
    "error": CloseCode.INTERNAL_ERROR,  # 1011: the call could not be opened (a bug)
}


def close_args(refusal: Refusal) -> tuple[int, str]:
    """``connection.close`` arguments for a refusal."""
    return CLOSE_CODES[refusal.kind], refusal.reason


class FeedCore(Protocol):
    """What a WebSocket protocol core offers (every core implements it)."""

    @property
    def call_id(self) -> str | None: ...

    @property
    def finished(self) -> bool: ...

    def data_to_send(self) -> list[str | bytes]: ...

    def receive_text(self, text: str) -> list[SourceEvent]: ...

    def receive_bytes(self, data: bytes) -> list[SourceEvent]: ...

    def close(self) -> list[SourceEvent]: ...


@dataclass(frozen=True)
class FeedLimits:
    """Per-connection limits of a feed (``[limits]``); 0 turns one off."""

    max_messages_per_second: float = 0.0
    idle_timeout_seconds: float = 0.0


def feed_handler(
    kind: str,
    core_factory: Callable[[Request], FeedCore],
    registry: CallRegistry,
    *,
    metrics=None,
    limits: FeedLimits | None = None,
) -> WsHandler:
    """A ``WebSocketRouter`` handler that runs one call per connection through a core made by
    ``core_factory(request)`` (the upgrade request: AudioHook takes its session from it)."""
    limits = limits or FeedLimits()

    async def handler(connection: ServerConnection) -> None:
        core = core_factory(connection.request)
        feed = CallFeed(kind, registry)
        loop = asyncio.get_running_loop()
        rate = limits.max_messages_per_second
        bucket = TokenBucket(rate, max(1.0, rate), loop.time()) if rate else None
        throttled = 0.0
        last_media = [loop.time()]
        watcher = None
        if limits.idle_timeout_seconds:
            watcher = asyncio.create_task(
                _close_when_idle(connection, core, feed, last_media, limits.idle_timeout_seconds)
            )
        try:
            async for message in connection:
                if bucket is not None and (wait := bucket.delay(loop.time())) > 0:
                    if not throttled:
                        log.warning("feed_throttled", call_id=core.call_id, rate=rate)
                    throttled += wait
                    if metrics is not None:  # counted as it happens, so /metrics shows it live
                        metrics.feed_throttled_seconds_total.labels(source=_source(feed, kind)).inc(
                            wait
                        )
                    await asyncio.sleep(wait)
                if isinstance(message, str):
                    events = core.receive_text(message)
                else:
                    events = core.receive_bytes(message)
                if any(type(e) is Audio or type(e) is Gap for e in events):
                    last_media[0] = loop.time()
                refusal = feed.route(events)
                # The core's replies go out before the socket closes (an AudioHook 'closed' or
                # 'disconnect'), unless the daemon itself refused the call.
                replies = core.data_to_send()
                if refusal is None or core.finished:
                    for reply in replies:
                        await connection.send(reply)
                if refusal is not None:
                    await connection.close(*close_args(refusal))
                    break
                if core.finished:
                    await connection.close(CloseCode.NORMAL_CLOSURE, "call ended")
                    break
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == CloseCode.MESSAGE_TOO_BIG:
                # websockets refused a frame over [server] max_message_bytes: our close, count it
                log.warning("feed_message_too_big", call_id=core.call_id)
                registry.count_reject(_source(feed, kind), "too_big")
                feed.end("error")
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            # Whatever happened to the socket, the call ends here, exactly once.
            feed.route(core.close())
            feed.end("closed")

    return handler


def _source(feed: CallFeed, kind: str) -> str:
    return feed.session.source if feed.session is not None else kind


async def _close_when_idle(
    connection: ServerConnection,
    core: FeedCore,
    feed: CallFeed,
    last_media: list[float],
    idle_seconds: float,
) -> None:
    """End the call (reason ``idle``) and close 1008 once no audio came for ``idle_seconds``."""
    loop = asyncio.get_running_loop()
    while (remaining := last_media[0] + idle_seconds - loop.time()) > 0:
        await asyncio.sleep(remaining)
    log.warning("feed_idle", call_id=core.call_id, idle_seconds=idle_seconds)
    feed.registry.count_reject(_source(feed, feed.kind), "idle")
    feed.end("idle")
    await connection.close(CloseCode.POLICY_VIOLATION, f"idle: no audio for {idle_seconds:g} s")
