"""THE source table: every feed the daemon can take, built from the config in one place.

Owns which sources exist and how each one is started. A source is one :class:`SourceSpec`
entry: its ``[sources.<name>]`` table, and either a WebSocket ``route`` on the daemon's port
(``/twilio``, ``/ingest``, ``/audiohook``: the router serves it) or a ``listen`` factory for a
socket or device of its own (RTP, AudioSocket, the microphone: a :class:`Listener`). The daemon
only walks the table: routes go to the router, listeners are started after the port and, at a
drain, stopped before the registry ends the calls (:meth:`Listener.stop`) and closed after it
(:meth:`Listener.closed`).

Adding a source (KVS, ACS...) is: a core in ``streamguard/sources/`` (bytes/messages in, source
events out, refusals as kinds), an edge in ``streamguard/sources/edges/`` if no existing one
carries it (a WebSocket core needs none: :func:`~streamguard.sources.edges.websocket.feed_handler`
takes any core), its settings in ``config.py`` (``[sources.<name>]`` with ``enabled``), and one
entry in :data:`SOURCES`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from streamguard.errors import bind_error
from streamguard.sources.edges.websocket import FeedLimits, WsHandler, feed_handler
from streamguard.sources.native import IngestProtocol
from streamguard.sources.twilio import MediaStreamProtocol

if TYPE_CHECKING:
    from websockets.http11 import Request

    from streamguard.calls import CallRegistry
    from streamguard.config import Settings
    from streamguard.server.router import ProcessRequest

__all__ = [
    "SOURCES",
    "Listener",
    "SourceContext",
    "SourceSpec",
    "WebSocketRoute",
    "enabled_sources",
    "start_listeners",
    "websocket_routes",
]

log = structlog.get_logger("streamguard.sources")


@dataclass(frozen=True)
class SourceContext:
    """What every edge is built with: the daemon's call registry, metrics and feed limits
    (``[limits]``), and the test hook for the sound device."""

    registry: CallRegistry
    metrics: Any = None
    limits: FeedLimits = field(default_factory=FeedLimits)
    mic_stream_factory: Any = None
    #: What the ingest surface's feeds must present (``[auth] ingest_token``, else ``token``);
    #: None: open. Paths the access policy does not guard (ACS) check it themselves.
    ingest_token: str | None = None


@dataclass(frozen=True)
class WebSocketRoute:
    """A source served on a path of the daemon's port; ``check`` is its own handshake check
    (``process_request`` runs it after the port's own checks), if it authenticates its own way."""

    path: str
    handler: WsHandler
    check: ProcessRequest | None = None


class Listener(Protocol):
    """A source with a socket or device of its own."""

    async def stop(self) -> None:
        """Take no new calls; end those only this source can end (before the drain)."""

    async def closed(self) -> None:
        """After the drain: drop what is left, and wait until everything is closed."""


RouteFactory = Callable[[Any, SourceContext], WebSocketRoute]
ListenFactory = Callable[[Any, SourceContext], Awaitable[Listener]]


@dataclass(frozen=True)
class SourceSpec:
    """One source: ``name`` is its ``[sources.<name>]`` table; exactly one of ``route`` (a
    WebSocket path) and ``listen`` (its own socket or device, ``transport`` naming it in a
    bind error, e.g. ``RTP (UDP)``)."""

    name: str
    route: RouteFactory | None = None
    listen: ListenFactory | None = None
    transport: str | None = None

    def __post_init__(self) -> None:
        if (self.route is None) == (self.listen is None):
            raise ValueError(f"source {self.name}: give exactly one of route and listen")

    def settings(self, settings: Settings) -> Any:
        return getattr(settings.sources, self.name)

    def enabled(self, settings: Settings) -> bool:
        return bool(self.settings(settings).enabled)


def _websocket_feed(source: str, make_core: Callable[[], Any]) -> RouteFactory:
    """A route whose path is ``[sources.<name>] path``, served by the one WebSocket feed edge
    with a fresh ``make_core()`` per connection (the cores whose handshake needs nothing)."""

    def route(section: Any, ctx: SourceContext) -> WebSocketRoute:
        handler = feed_handler(
            source,
            lambda _request: make_core(),
            ctx.registry,
            metrics=ctx.metrics,
            limits=ctx.limits,
        )
        return WebSocketRoute(section.path, handler)

    return route


_twilio = _websocket_feed("twilio", MediaStreamProtocol)
_ingest = _websocket_feed("native", IngestProtocol)


def _audiohook(section: Any, ctx: SourceContext) -> WebSocketRoute:
    from streamguard.server.feed_checks import audiohook_check
    from streamguard.sources.edges.audiohook_ws import audiohook_handler

    check = audiohook_check(section, metrics=ctx.metrics)  # the credentials, read now
    handler = audiohook_handler(section, ctx.registry, metrics=ctx.metrics, limits=ctx.limits)
    return WebSocketRoute(section.path, handler, check)


def _acs(section: Any, ctx: SourceContext) -> WebSocketRoute:
    from streamguard.sources.acs import AcsMediaCore

    def core(request: Request) -> AcsMediaCore:
        headers = request.headers
        metadata = {
            key: value
            for key, value in (
                ("callConnectionId", headers.get(CONNECTION_ID_HEADER)),
                ("correlationId", headers.get(CORRELATION_ID_HEADER)),
            )
            if value and len(value) <= 256 and value.isprintable()
        }
        return AcsMediaCore(
            call_id=metadata.get("callConnectionId"),
            metadata=metadata,
            raw_id_tracks=section.raw_id_tracks,
            max_tracks=section.max_participants,
        )

    handler = feed_handler("acs", core, ctx.registry, metrics=ctx.metrics, limits=ctx.limits)
    return WebSocketRoute(section.path, handler, ingest_token_check(ctx, "acs"))


#: What ACS's handshake carries (as seen in public sample code, not in Microsoft's reference).
CONNECTION_ID_HEADER = "x-ms-call-connection-id"
CORRELATION_ID_HEADER = "x-ms-call-correlation-id"


def ingest_token_check(ctx: SourceContext, source: str) -> ProcessRequest | None:
    """The handshake check of a feed on the ingest surface that the access policy does not
    guard: the ingest token (bearer header, subprotocol or ``?token=``, compared in constant
    time); 401 without one, 403 with a wrong one, counted as the feed's reject ``auth``."""
    token = ctx.ingest_token
    if token is None:
        return None
    from streamguard.server.httputil import http_response, request_token, token_matches

    def check(connection: Any, request: Request) -> Any:
        given = request_token(request)
        if token_matches(token, given):
            return None
        if ctx.metrics is not None:
            ctx.metrics.source_rejects_total.labels(source=source, reason="auth").inc()
        status = 401 if given is None else 403
        log.warning("feed_refused_at_handshake", source=source, status=status, reason="auth")
        return http_response(status, "unauthorized\n" if status == 401 else "forbidden\n")

    return check


async def _kvs(section: Any, ctx: SourceContext) -> Listener:
    from streamguard.sources.edges.kvs_streams import KvsStreams

    return KvsStreams(section, ctx.registry, metrics=ctx.metrics)


async def _rtp(section: Any, ctx: SourceContext) -> Listener:
    from streamguard.sources.edges.udp import start_rtp

    return await start_rtp(section, ctx.registry, metrics=ctx.metrics)


async def _audiosocket(section: Any, ctx: SourceContext) -> Listener:
    from streamguard.sources.edges.tcp import start_audiosocket

    return await start_audiosocket(section, ctx.registry, metrics=ctx.metrics)


async def _mic(section: Any, ctx: SourceContext) -> Listener:
    from streamguard.calls import CallFeed
    from streamguard.sources.edges.mic import Microphone, MicSource

    microphone = Microphone(
        device=section.device,
        sample_rate=section.sample_rate,
        channels=section.channels,
        block_seconds=section.block_ms / 1000,
        stream_factory=ctx.mic_stream_factory,
    )
    source = MicSource(microphone, CallFeed("mic", ctx.registry), metrics=ctx.metrics)
    source.start()
    return source


#: Every source, in start order (WebSocket paths first: they share the port, which opens before
#: the listeners). Add a source here.
SOURCES: tuple[SourceSpec, ...] = (
    SourceSpec("twilio", route=_twilio),
    SourceSpec("ingest", route=_ingest),
    SourceSpec("audiohook", route=_audiohook),
    SourceSpec("acs", route=_acs),
    SourceSpec("rtp", listen=_rtp, transport="RTP (UDP)"),
    SourceSpec("audiosocket", listen=_audiosocket, transport="AudioSocket (TCP)"),
    SourceSpec("mic", listen=_mic),
    SourceSpec("kvs", listen=_kvs),
)


def enabled_sources(settings: Settings) -> list[SourceSpec]:
    """The table's entries the config enables, in table order."""
    return [spec for spec in SOURCES if spec.enabled(settings)]


def websocket_routes(
    specs: list[SourceSpec], settings: Settings, ctx: SourceContext
) -> tuple[dict[str, WsHandler], dict[str, ProcessRequest]]:
    """The table's sources served on a path of the port: handlers and handshake checks, by
    path (for the front door's router)."""
    routes: dict[str, WsHandler] = {}
    checks: dict[str, ProcessRequest] = {}
    for spec in specs:
        if spec.route is not None:
            route = spec.route(spec.settings(settings), ctx)
            routes[route.path] = route.handler
            if route.check is not None:
                checks[route.path] = route.check
    return routes, checks


async def start_listeners(
    specs: list[SourceSpec], settings: Settings, ctx: SourceContext
) -> dict[str, Listener]:
    """Start the table's sources that have a socket or device of their own, by name. A socket
    that cannot bind is the CLI's one line."""
    listeners: dict[str, Listener] = {}
    for spec in specs:
        if spec.listen is None:
            continue
        section = spec.settings(settings)
        try:
            listeners[spec.name] = await spec.listen(section, ctx)
        except OSError as exc:
            if spec.transport is None:
                raise
            raise bind_error(spec.transport, section.host, section.port, exc) from None
    return listeners
