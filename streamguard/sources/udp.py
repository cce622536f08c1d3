"""The asyncio edge of the RTP source: one UDP socket, the :class:`RtpDemux` core, a poll timer.

Each datagram goes to ``demux.push(data, addr, now)``; a timer calls ``demux.poll(now)`` so a
hole in the jitter buffer is given up after ``max_delay`` and an idle sender's call ends. Events
come back tagged with their call id and are routed to that call's session (a new call opens a
session in the shared :class:`~streamguard.calls.CallRegistry`; beyond the call limit the
stream's events are ignored and counted).
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from streamguard.calls import CallLimitReached, CallRegistry, CallSession
from streamguard.sources.base import CallStart
from streamguard.sources.rtp import CallEvent, RtpDemux

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.05


class RtpEndpoint(asyncio.DatagramProtocol):
    """Receives RTP on one port and feeds the demux; owns nothing but the socket."""

    def __init__(self, demux: RtpDemux, registry: CallRegistry, *, metrics=None) -> None:
        self.demux = demux
        self.registry = registry
        self.metrics = metrics
        self.sessions: dict[str, CallSession] = {}
        self.refused: set[str] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self._poller: asyncio.Task | None = None
        self._counted: dict[str, tuple[int, int, int]] = {}  # per call: lost, dup, late

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        self._poller = asyncio.create_task(self._poll(), name="rtp-poll")

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        self._route(self.demux.push(data, addr, self._loop.time()))

    def error_received(self, exc: Exception) -> None:
        log.warning("rtp_socket_error", error=str(exc))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self._route(self.demux.poll(self._loop.time()))
            self._export_stats()

    def _route(self, events: list[CallEvent]) -> None:
        for call_id, event in events:
            if isinstance(event, CallStart):
                try:
                    self.sessions[call_id] = self.registry.open(event)
                except CallLimitReached as exc:
                    self.refused.add(call_id)
                    log.warning("rtp_call_refused", call_id=call_id, reason=str(exc))
                    self.registry.count_reject("rtp", exc.reason)
                continue
            session = self.sessions.get(call_id)
            if session is None:
                continue
            self.registry.handle(session, event)
            if session.over_limit and not session.finished:
                self.registry.end(session, "limit")
            if session.finished or session.end_reason is not None:
                self.sessions.pop(call_id, None)

    def _export_stats(self) -> None:
        """Add each live stream's new losses/duplicates/late packets to the counters."""
        if self.metrics is None:
            return
        counted: dict[str, tuple[int, int, int]] = {}
        for call_id, stream in self.demux.streams.items():
            now = (stream.stats.lost, stream.stats.duplicates, stream.stats.late)
            before = self._counted.get(call_id, (0, 0, 0))
            lost, dup, late = (max(0, a - b) for a, b in zip(now, before, strict=True))
            self.metrics.rtp_packets_lost_total.inc(lost)
            self.metrics.rtp_packets_duplicate_total.inc(dup)
            self.metrics.rtp_packets_late_total.inc(late)
            counted[call_id] = now
        self._counted = counted

    def close(self) -> None:
        """Stop receiving and end every RTP call (their buffered audio is still scored)."""
        if self._poller is not None:
            self._poller.cancel()
        self._route(self.demux.close())
        if self.transport is not None:
            self.transport.close()

    async def wait_closed(self) -> None:
        if self._poller is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


async def start_rtp(settings, registry: CallRegistry, *, metrics=None) -> RtpEndpoint:
    """Bind the RTP port from ``[sources.rtp]`` and start receiving."""
    pt_map = {int(pt): (t.encoding, t.rate) for pt, t in settings.payload_types.items()}
    demux = RtpDemux(pt_map, settings.idle_timeout_seconds, jitter_packets=settings.jitter_packets)
    loop = asyncio.get_running_loop()
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: RtpEndpoint(demux, registry, metrics=metrics),
        local_addr=(settings.host, settings.port),
    )
    log.info("rtp_listening", host=settings.host, port=endpoint.port)
    return endpoint
