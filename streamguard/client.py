"""Async clients of a running daemon: stream a call into it (``feed``, ``demo``, ``bench``).

The frames come from :mod:`streamguard.sources.senders` (pure); this module only puts them on a
WebSocket, paced in real time or as fast as the daemon reads them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from streamguard.errors import StreamguardError
from streamguard.sources.senders import Frame

#: Where a default daemon takes feeds and serves subscribers (``[sources.*] path``,
#: ``[alerts] path``); used to tell an operator who mixed them up, instead of hanging.
FEED_PATHS = ("/twilio", "/ingest")
ALERTS_PATH = "/alerts"


def split_ws_url(url: str) -> SplitResult:
    """Parse a daemon URL, or raise the one-line error the CLI prints (not a ValueError)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsing the port is what raises for ws://h:notaport
    except ValueError as exc:
        raise StreamguardError(f"not a valid URL: {url!r} ({exc})") from None
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise StreamguardError(f"URL must start with ws:// or wss:// and name a host, got {url!r}")
    return parts


#: Unpaced, the sender yields to the loop after this many frames, so that a close from the
#: daemon is read (and the next send fails) before the rest of the file is written into the
#: socket's buffers: ``frames`` then counts what went out before the close, not the whole file.
YIELD_EVERY_FRAMES = 16


@dataclass(frozen=True)
class FeedResult:
    frames: int  # frames written before the daemon closed (all of them when ``complete``)
    audio_seconds: float  # call time of the last frame written
    wall_seconds: float
    close_code: int | None
    close_reason: str
    complete: bool = True  # every frame was written before the daemon closed

    @property
    def ended_normally(self) -> bool:
        """Every frame went out and the daemon ended the call (1000), as a finished call does."""
        return self.complete and self.close_code in (1000, None)


async def send_frames(
    url: str,
    frames: Iterable[tuple[float, Frame]],
    *,
    realtime: bool = False,
    speed: float = 1.0,
    token: str | None = None,
    headers: dict[str, str] | None = None,
    ssl: Any = None,
    close_timeout: float = 30.0,
) -> FeedResult:
    """Send ``frames`` to ``url``; with ``realtime``, each at its call time (divided by speed).

    After the last frame, waits (up to ``close_timeout``) for the daemon to close the call so
    the caller knows every frame was consumed. ``headers`` go on the handshake (e.g. what a
    platform adds, like ``X-Twilio-Signature``); ``ssl`` is a client ``SSLContext`` for wss://
    (default: the system's trust store, or ``$SSL_CERT_FILE``).
    """
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    started = time.monotonic()
    sent = 0
    last_at = 0.0
    complete = False
    try:
        ssl_arg = {"ssl": ssl} if ssl is not None else {}
        async with connect(url, additional_headers=headers, max_size=None, **ssl_arg) as ws:
            try:
                for send_at, frame in frames:
                    if realtime:
                        delay = started + send_at / speed - time.monotonic()
                        if delay > 0:
                            await asyncio.sleep(delay)
                    elif sent % YIELD_EVERY_FRAMES == 0:
                        await asyncio.sleep(0)  # read a close the daemon may have sent
                    await ws.send(frame)
                    sent += 1
                    last_at = send_at
                complete = True
                # The daemon closes once the call has ended; drain anything it says until then.
                async with asyncio.timeout(close_timeout):
                    async for _ in ws:
                        pass
            except ConnectionClosed:
                pass
            except TimeoutError:
                await ws.close()
            code, reason = ws.close_code, ws.close_reason or ""
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = {
            401: ": no token sent (--token)",
            403: ": wrong token (check --token)",
            429: ": too many calls from this address",
            503: ": the daemon is full or not ready",
        }.get(status, "")
        raise StreamguardError(
            f"{url}: the daemon refused the feed (HTTP {status}){hint}"
        ) from None
    except InvalidURI as exc:
        raise StreamguardError(f"not a WebSocket URL: {exc.uri}") from None
    except InvalidHandshake as exc:  # something answered, but not a WebSocket server
        raise StreamguardError(f"cannot connect to {url}: {exc}") from None
    except OSError as exc:  # refused, unknown host, reset (e.g. wss:// to a plain ws:// port)
        reason = exc.strerror or str(exc) or type(exc).__name__
        if url.startswith("wss://") and isinstance(exc, ConnectionResetError):
            reason += " (does the server speak TLS? a plain daemon takes ws://)"
        raise StreamguardError(f"cannot connect to {url}: {reason}") from None
    return FeedResult(sent, last_at, time.monotonic() - started, code, reason, complete)
