"""The asyncio edge of the RTP source: UDP sockets (RTP, and RTCP on port + 1), the
:class:`RtpDemux` core, a poll timer.

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

from streamguard.calls import CallFeed, CallRegistry
from streamguard.sources.admission import Admission, RtpAdmission, rtp_ssrc
from streamguard.sources.base import CallStart
from streamguard.sources.rtp import CallEvent, RtpDemux

log = structlog.get_logger(__name__)

POLL_SECONDS = 0.05


class RtpEndpoint(asyncio.DatagramProtocol):
    """Receives RTP on one port and feeds the demux; owns nothing but the socket."""

    def __init__(
        self,
        demux: RtpDemux,
        registry: CallRegistry,
        *,
        metrics=None,
        admission: RtpAdmission | None = None,
    ) -> None:
        self.demux = demux
        self.admission = admission
        self.registry = registry
        self.metrics = metrics
        self.feeds: dict[str, CallFeed] = {}  # one per live RTP call
        self.refused: set[str] = set()
        self.transport: asyncio.DatagramTransport | None = None
        self.rtcp: RtcpEndpoint | None = None
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
        now = self._loop.time()
        if self.admission is not None:
            verdict = self.admission.admit(addr, rtp_ssrc(data), now)
            if verdict.reason is not None:
                self._refused(addr, data, verdict)
                return
        self._route(self.demux.push(data, addr, now))

    def _refused(self, addr, data: bytes, verdict: Admission) -> None:
        """Count a datagram the admission rules dropped; log a sender's first one per reason."""
        if self.metrics is not None:
            self.metrics.rtp_packets_refused_total.labels(reason=verdict.reason).inc()
        if verdict.report:
            ssrc = rtp_ssrc(data)
            log.warning(
                "rtp_refused",
                reason=verdict.reason,
                sender=f"{addr[0]}:{addr[1]}",
                ssrc=None if ssrc is None else f"{ssrc:08x}",
            )

    def error_received(self, exc: Exception) -> None:
        log.warning("rtp_socket_error", error=str(exc))

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self._route(self.demux.poll(self._loop.time()))
            self._export_stats()

    def _route(self, events: list[CallEvent]) -> None:
        """Each call's events through its own :class:`CallFeed` (opening, refusals and the call
        length limit are the feed's; a refused or ended stream's later events are ignored)."""
        for call_id, event in events:
            if isinstance(event, CallStart):
                feed = CallFeed("rtp", self.registry, tag_logs=False)
                refusal = feed.route([event])
                if refusal is not None:
                    self.refused.add(call_id)
                    log.warning("rtp_call_refused", call_id=call_id, reason=refusal.reason)
                elif feed.session is not None:
                    self.feeds[call_id] = feed
                continue
            feed = self.feeds.get(call_id)
            if feed is None:
                continue
            feed.route([event])
            if feed.over:
                self.feeds.pop(call_id, None)

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
        if self.rtcp is not None:
            self.rtcp.close()
        self._route(self.demux.close())
        if self.transport is not None:
            self.transport.close()

    async def stop(self) -> None:
        """The source table's stop step: :meth:`close` (before the registry's drain)."""
        self.close()

    async def closed(self) -> None:
        """The source table's last step, after the drain."""
        await self.wait_closed()

    @property
    def rtcp_port(self) -> int | None:
        return None if self.rtcp is None else self.rtcp.port

    async def wait_closed(self) -> None:
        if self._poller is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller


class RtcpEndpoint(asyncio.DatagramProtocol):
    """Receives RTCP for the RTP endpoint's demux (a BYE ends its SSRC's call at once)."""

    def __init__(self, rtp: RtpEndpoint) -> None:
        self.rtp = rtp
        self.transport: asyncio.DatagramTransport | None = None

    @property
    def port(self) -> int:
        assert self.transport is not None
        return self.transport.get_extra_info("sockname")[1]

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:  # type: ignore[override]
        rtp = self.rtp
        # A BYE ends a call: only senders the RTP allow-list admits may send one.
        if rtp.admission is not None and not rtp.admission.allowed(str(addr[0])):
            if rtp.metrics is not None:
                rtp.metrics.rtp_packets_refused_total.labels(reason="not_allowed").inc()
            return
        rtp._route(rtp.demux.push_rtcp(data, addr, rtp._loop.time()))

    def error_received(self, exc: Exception) -> None:
        log.warning("rtcp_socket_error", error=str(exc))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def start_rtp(settings, registry: CallRegistry, *, metrics=None) -> RtpEndpoint:
    """Bind the RTP port from ``[sources.rtp]`` (and its RTCP port) and start receiving."""
    pt_map = {int(pt): (t.encoding, t.rate) for pt, t in settings.payload_types.items()}
    demux = RtpDemux(pt_map, settings.idle_timeout_seconds, jitter_packets=settings.jitter_packets)
    loop = asyncio.get_running_loop()
    admission = RtpAdmission(
        settings.allow,
        max_packets_per_second=settings.max_packets_per_second,
        max_ssrcs_per_sender=settings.max_ssrcs_per_sender,
        ssrc_idle_seconds=settings.idle_timeout_seconds,
    )
    _, endpoint = await loop.create_datagram_endpoint(
        lambda: RtpEndpoint(demux, registry, metrics=metrics, admission=admission),
        local_addr=(settings.host, settings.port),
    )
    if settings.rtcp:
        # RFC 3550: RTCP on the RTP port + 1; a free port when the RTP port itself was.
        port = settings.rtcp_port
        if port is None:
            port = endpoint.port + 1 if settings.port else 0
        try:
            _, endpoint.rtcp = await loop.create_datagram_endpoint(
                lambda: RtcpEndpoint(endpoint), local_addr=(settings.host, port)
            )
        except OSError as exc:
            endpoint.close()
            raise OSError(exc.errno, f"RTCP port {port}: {exc.strerror or exc}") from None
    log.info(
        "rtp_listening",
        host=settings.host,
        port=endpoint.port,
        rtcp_port=endpoint.rtcp_port,
        allow=settings.allow,
    )
    return endpoint
