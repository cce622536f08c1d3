"""The asyncio edge of the AudioSocket source: a TCP server, one call per connection.

Bytes read from a connection go to its :class:`~streamguard.sources.audiosocket.AudioSocketProtocol`
and the core's events to a :class:`~streamguard.calls.CallFeed` (the same route every edge uses).
A Reject, a full daemon or the call length limit closes that connection only; whatever happens,
the call ends exactly once. Nothing is ever written back: an AudioSocket hangup message would
hang up the caller's channel in Asterisk, and a monitor must never do that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import Sequence

import structlog

from streamguard.calls import CallFeed, CallRegistry
from streamguard.sources.audiosocket import AudioSocketProtocol

log = structlog.get_logger(__name__)

READ_BYTES = 65536


class AudioSocketServer:
    """Accepts AudioSocket connections from Asterisk and runs each as one call."""

    def __init__(self, registry: CallRegistry, *, metrics=None, allow: Sequence[str] = ()) -> None:
        self.registry = registry
        self.metrics = metrics
        self.allow = [ipaddress.ip_network(a, strict=False) for a in allow]
        self.server: asyncio.Server | None = None
        self._connections: set[asyncio.StreamWriter] = set()

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def start(self, host: str, port: int) -> None:
        self.server = await asyncio.start_server(self._serve, host, port)
        log.info("audiosocket_listening", host=host, port=self.port)

    def allowed(self, host: str) -> bool:
        """Whether a peer may connect (``allow`` empty: anyone, which the config only permits
        on a loopback listener)."""
        if not self.allow:
            return True
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.allow)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        remote = f"{peer[0]}:{peer[1]}" if peer else None
        if peer is None or not self.allowed(str(peer[0])):
            log.warning("audiosocket_refused", remote=remote, reason="peer not in allow")
            self.registry.count_reject("audiosocket", "auth")
            writer.close()
            return
        core = AudioSocketProtocol(remote=remote)
        feed = CallFeed("audiosocket", self.registry)
        self._connections.add(writer)
        try:
            while data := await reader.read(READ_BYTES):
                refusal = feed.route(core.receive_data(data))
                if refusal is not None or core.finished:
                    if refusal is not None:  # TCP has no close code: the connection just ends
                        log.info("audiosocket_closed", remote=remote, reason=refusal.reason)
                    break
        except (ConnectionError, OSError):
            pass
        finally:
            feed.route(core.close())
            feed.end("closed")
            self._connections.discard(writer)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()

    def close(self) -> None:
        """Stop listening; open connections go on until Asterisk hangs up or the daemon drains."""
        if self.server is not None:
            self.server.close()

    def close_connections(self) -> None:
        """Drop every connection (after a drain their calls have already ended)."""
        for writer in list(self._connections):
            writer.close()

    async def wait_closed(self) -> None:
        if self.server is not None:
            await self.server.wait_closed()

    async def stop(self) -> None:
        """The source table's stop step: stop listening (calls go on until the drain)."""
        self.close()

    async def closed(self) -> None:
        """The source table's last step, after the drain: drop what is left and wait."""
        self.close_connections()
        await self.wait_closed()


async def start_audiosocket(settings, registry: CallRegistry, *, metrics=None) -> AudioSocketServer:
    """Listen on ``[sources.audiosocket]`` host:port."""
    server = AudioSocketServer(registry, metrics=metrics, allow=settings.allow)
    await server.start(settings.host, settings.port)
    return server
