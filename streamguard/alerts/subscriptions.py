"""The ``/alerts`` subscription handler: replay from the event log, then live events.

Owns what a subscriber of the daemon's event stream gets: the query (``call_id``, ``types``,
``since``, ``tail``), the replay-then-live seam (:mod:`streamguard.alerts.follow`), the eviction
of a subscriber that stopped reading, and closing subscribers at shutdown. Routing, tokens and
the handshake checks in front of it are the front door's (:mod:`streamguard.server`).
"""

from __future__ import annotations

import asyncio
import fcntl
import sys
import termios
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import structlog
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode

from streamguard.alerts.bus import AlertBus, SubscriptionFilter, parse_types
from streamguard.alerts.events import EventBase

if TYPE_CHECKING:
    from websockets.asyncio.server import ServerConnection

    from streamguard.alerts.backends import EventBackend

log = structlog.get_logger("streamguard.server")

WsHandler = Callable[["ServerConnection"], Awaitable[None]]

ALERTS_QUERY_KEYS = frozenset({"call_id", "types", "since", "tail", "token"})
#: The most events ``/alerts?tail=N`` replays; a larger N is clamped to it (documented, so a
#: dashboard asking for "everything recent" still gets a bounded answer).
MAX_TAIL = 1000


#: Close code for a subscriber disconnected because it kept losing events without reading
#: (4000-4999: private use). The reason says how far behind it was and how to resume.
CLOSE_SUBSCRIBER_TOO_SLOW = 4001


def alerts_handler(
    bus: AlertBus,
    *,
    max_queue: int = 256,
    backend: EventBackend | None = None,
    disconnect_after_lost: int | None = None,
    close_timeout: float = 2.0,
) -> WsHandler:
    """The ``/alerts`` handler: ``?call_id=ID&types=alert,call_ended&since=SEQ`` (or ``tail=N``,
    at most :data:`MAX_TAIL`: a larger N is clamped).

    Replay comes from the backend's log, then live events from the bus, with no gap and no
    duplicate at the seam (alerts/follow.py). Each subscriber gets a bounded queue on the bus
    and one sender task here. A bad query (unknown parameter or type, non-integer since)
    closes with 1008 and the reason. A subscriber that loses ``disconnect_after_lost`` events
    in a row without reading is closed with :data:`CLOSE_SUBSCRIBER_TOO_SLOW` (cut off after
    ``close_timeout`` if it does not answer the close either). Incoming messages are read and
    ignored so pings and the close handshake keep flowing.
    """
    from streamguard.alerts.backends import MemoryBackend
    from streamguard.alerts.follow import follow

    if backend is None:
        memory = MemoryBackend()
        memory.bus = bus
        backend = memory

    async def handler(connection: ServerConnection) -> None:
        try:
            filt, since, tail = _parse_alerts_query(connection.request.path)
        except ValueError as exc:
            await connection.close(CloseCode.POLICY_VIOLATION, str(exc)[:120])
            return
        loop = asyncio.get_running_loop()
        evicting: list[asyncio.Task] = []

        def on_evicted() -> None:
            evicting.append(loop.create_task(_evict(connection, close_timeout)))

        events = follow(
            bus,
            backend,
            filt,
            since=since,
            tail=tail,
            max_queue=max_queue,
            evict_after=disconnect_after_lost,
            on_evicted=on_evicted,
        )
        sender = asyncio.create_task(_send_all(connection, events))
        reader = asyncio.create_task(_discard_incoming(connection))
        log.info(
            "subscriber connected",
            remote=_remote(connection),
            call_id=filt.call_id,
            types=sorted(filt.types) if filt.types else None,
            since=since,
            tail=tail,
        )
        try:
            await asyncio.wait({sender, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sender, reader):
                task.cancel()
            await asyncio.gather(sender, reader, *evicting, return_exceptions=True)
            log.info("subscriber disconnected", remote=_remote(connection))

    return handler


async def _send_all(connection: ServerConnection, events: AsyncIterator[EventBase]) -> None:
    try:
        async for event in events:
            await connection.send(event.to_json())
    except ConnectionClosed:
        pass
    except Exception as exc:  # the backend failed a replay read (Redis unreachable...)
        log.error("subscriber_replay_failed", remote=_remote(connection), error=str(exc)[:200])
        await connection.close(CloseCode.TRY_AGAIN_LATER, "event log unavailable; retry")
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _evict(connection: ServerConnection, close_timeout: float) -> None:
    """Close a subscriber that stopped reading. Its socket buffers are full, so a close frame
    may never leave: after ``close_timeout`` the TCP connection is simply cut."""
    reason = "subscriber too slow: kept losing events; reconnect with ?since=<last seq>"
    log.warning(
        "subscriber_too_slow",
        remote=_remote(connection),
        code=CLOSE_SUBSCRIBER_TOO_SLOW,
    )
    try:
        await asyncio.wait_for(connection.close(CLOSE_SUBSCRIBER_TOO_SLOW, reason), close_timeout)
    except (TimeoutError, ConnectionClosed):
        pass
    finally:
        if connection.transport is not None and not connection.transport.is_closing():
            connection.transport.abort()


async def close_subscribers(
    connections: Collection[ServerConnection], *, timeout: float, code: int = 1001
) -> None:
    """Close connections at shutdown, all at once, each within ``timeout``: a subscriber that
    stopped reading must never hold the daemon.

    A peer with bytes still queued towards it (our buffer or the kernel's send queue) after
    the drain's flush has stopped reading: a close frame would only wait behind them, so its
    connection is cut at once instead of waiting out ``timeout``. The events it missed are in
    the log (``?since=``)."""

    async def one(connection: ServerConnection) -> None:
        try:
            if _backed_up(connection):
                return
            await asyncio.wait_for(connection.close(code, "server shutting down"), timeout)
        except (TimeoutError, ConnectionClosed):
            pass
        finally:
            if connection.transport is not None and not connection.transport.is_closing():
                connection.transport.abort()

    await asyncio.gather(*(one(c) for c in connections), return_exceptions=True)


def _backed_up(connection: ServerConnection) -> bool:
    """Bytes written to the peer and not taken by it: in the transport's buffer, or (Linux)
    in the kernel's send queue, unsent or unacknowledged."""
    transport = connection.transport
    if transport is None or transport.is_closing():
        return False
    if transport.get_write_buffer_size() > 0:
        return True
    sock = transport.get_extra_info("socket")
    if sock is None or not hasattr(termios, "TIOCOUTQ"):
        return False
    try:
        queued = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return False
    return int.from_bytes(queued, sys.byteorder) > 0


def _parse_alerts_query(path: str) -> tuple[SubscriptionFilter, int | None, int | None]:
    params = _query(path)
    unknown = sorted(set(params) - ALERTS_QUERY_KEYS)
    if unknown:
        raise ValueError(f"unknown query parameter(s): {', '.join(unknown)}")
    since = _non_negative_int(params, "since", "since must be an integer seq")
    tail = _non_negative_int(params, "tail", "tail must be an integer count of events")
    if tail is not None:
        tail = min(tail, MAX_TAIL)
    if since is not None and tail is not None:
        raise ValueError("since and tail are mutually exclusive")
    return (
        SubscriptionFilter(
            call_id=params.get("call_id") or None, types=parse_types(params.get("types"))
        ),
        since,
        tail,
    )


def _non_negative_int(params: dict[str, str], key: str, message: str) -> int | None:
    if not params.get(key):
        return None
    try:
        value = int(params[key])
    except ValueError:
        raise ValueError(message) from None
    if value < 0:
        raise ValueError(f"{key} must be >= 0")
    return value


async def _discard_incoming(connection: ServerConnection) -> None:
    """Read (and ignore) what a subscriber sends, so pings and the close handshake flow.

    Audio sent here is a feed pointed at the wrong path: say so instead of swallowing it.
    """
    try:
        async for message in connection:
            if isinstance(message, bytes) or '"media"' in message or '"start"' in message:
                await connection.close(
                    CloseCode.POLICY_VIOLATION,
                    "this is the alerts (subscriber) endpoint; feeds go to /twilio or /ingest",
                )
                return
    except ConnectionClosed:
        pass


def _remote(connection: ServerConnection) -> str:
    addr = connection.remote_address
    return f"{addr[0]}:{addr[1]}" if addr else "?"


def _query(path: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(path).query, keep_blank_values=True).items()}
