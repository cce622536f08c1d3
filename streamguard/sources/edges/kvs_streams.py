"""The daemon's Kinesis Video Streams source: one :class:`KvsReader` task per stream being read.

Owns which Amazon Connect streams the daemon reads and their lifecycle. ``POST
/api/kvs/streams`` (the Connect Lambda's request, parsed by :func:`parse_stream_request`)
becomes :meth:`KvsStreams.start`: a reader task whose source events go through a
:class:`~streamguard.calls.CallFeed` like every other feed's. It is the ``[sources.kvs]``
entry of the source table (a :class:`~streamguard.sources.table.Listener`): at a drain
:meth:`KvsStreams.stop` takes no new streams and ends every call it reads (``shutdown``, as the
drain ends the others), and :meth:`KvsStreams.closed` waits for (or cancels) the readers.

Refusals are :class:`StreamRefused` with the HTTP status the ``/api`` handler answers:
409 (that stream, or that call id, is being read already), 429 (``max_streams`` readers),
503 (draining). A stream that fails later (KVS refuses it, unreadable Matroska, unknown
tracks) ends its call with reason ``error`` and one log line that says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import structlog

from streamguard.calls import CallFeed

if TYPE_CHECKING:
    from streamguard.calls import CallRegistry
    from streamguard.config import KvsSourceSettings
    from streamguard.sources.edges.kvs_reader import KvsReader

__all__ = [
    "KvsStreamRequest",
    "KvsStreams",
    "StreamRefused",
    "kvs_routes",
    "parse_stream_request",
]

log = structlog.get_logger("streamguard.kvs")

#: ``arn:PARTITION:kinesisvideo:REGION:ACCOUNT:stream/NAME/CREATION_MS`` (the KVS API's pattern).
STREAM_ARN: Final = re.compile(
    r"arn:[a-z\d-]+:kinesisvideo:[a-z0-9-]+:[0-9]+:[a-z]+/[a-zA-Z0-9_.-]+/[0-9]+"
)
_MAX_ID: Final = 256
_KEYS: Final = frozenset(
    {"stream_arn", "call_id", "contact_id", "start_fragment", "start_timestamp"}
)
#: How long :meth:`KvsStreams.stop` waits for readers to see their stop before cancelling them.
STOP_WAIT_SECONDS: Final = 3.0


class StreamRefused(Exception):
    """A stream the daemon will not read now: ``status`` is the HTTP answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class KvsStreamRequest:
    """What ``POST /api/kvs/streams`` asks for (docs/sources.md, "Amazon Connect")."""

    stream_arn: str
    call_id: str
    contact_id: str | None
    start_fragment: str | None = None
    start_timestamp: float | None = None


def _text(body: dict[str, Any], key: str, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= _MAX_ID or not value.isprintable():
        raise ValueError(f"{key} must be a non-empty string of at most {_MAX_ID} characters")
    return value


def parse_stream_request(body: Any) -> KvsStreamRequest:
    """The request's JSON object -> :class:`KvsStreamRequest`; ValueError saying what is wrong.

    ``contact_id`` defaults to ``call_id`` (the Lambda sends Connect's ContactId as the call
    id): fragments of another contact on a reused stream then end the call instead of being
    read into it. ``"contact_id": ""`` turns that check off.
    """
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    unknown = sorted(set(body) - _KEYS)
    if unknown:
        raise ValueError(f"unknown key {unknown[0][:40]!r} (accepted: {', '.join(sorted(_KEYS))})")
    arn = body.get("stream_arn")
    if not isinstance(arn, str) or len(arn) > 1024 or not STREAM_ARN.fullmatch(arn):
        raise ValueError("stream_arn must be a Kinesis Video stream ARN")
    call_id = _text(body, "call_id", required=True)
    assert call_id is not None
    contact = body.get("contact_id", call_id)
    contact_id = None
    if contact != "":
        contact_id = _text({"contact_id": contact}, "contact_id", required=True)
    fragment = body.get("start_fragment")
    if fragment is not None and not (
        isinstance(fragment, str) and fragment.isascii() and fragment.isdigit()
        and len(fragment) <= 128
    ):  # fmt: skip
        raise ValueError("start_fragment must be a fragment number (a string of digits)")
    stamp = body.get("start_timestamp")
    if stamp is not None and (
        isinstance(stamp, bool) or not isinstance(stamp, int | float)
        or not math.isfinite(stamp) or not 0 < stamp < 1e11
    ):  # fmt: skip
        raise ValueError("start_timestamp must be unix seconds (a number)")
    return KvsStreamRequest(
        stream_arn=arn,
        call_id=call_id,
        contact_id=contact_id,
        start_fragment=fragment,
        start_timestamp=None if stamp is None else float(stamp),
    )


@dataclass
class _Stream:
    request: KvsStreamRequest
    reader: KvsReader
    feed: CallFeed
    task: asyncio.Task | None = None


class KvsStreams:
    """The readers of one daemon (``[sources.kvs]``); see the module docstring.

    ``reader_factory(**kwargs)`` makes a :class:`KvsReader` (the real one by default)."""

    def __init__(
        self,
        settings: KvsSourceSettings,
        registry: CallRegistry,
        *,
        metrics: Any = None,
        reader_factory: Any = None,
    ) -> None:
        self.settings = settings
        self.registry = registry
        self.metrics = metrics
        self._reader_factory = reader_factory
        self.streams: dict[str, _Stream] = {}  # by stream ARN
        self.accepting = True

    def active(self) -> list[dict[str, str]]:
        """The streams being read now (stream ARN, call id)."""
        return [
            {"stream_arn": arn, "call_id": stream.request.call_id}
            for arn, stream in self.streams.items()
        ]

    def start(self, request: KvsStreamRequest) -> None:
        """Start reading ``request``'s stream, or raise :class:`StreamRefused`."""
        if not self.accepting:
            raise StreamRefused(503, "draining: not reading new streams")
        if request.stream_arn in self.streams:
            raise StreamRefused(409, "that stream is being read already")
        if any(s.request.call_id == request.call_id for s in self.streams.values()):
            raise StreamRefused(409, "a stream of that call_id is being read already")
        if len(self.streams) >= self.settings.max_streams:
            raise StreamRefused(
                429, f"max_streams ({self.settings.max_streams}) streams are being read"
            )
        factory = self._reader_factory
        if factory is None:
            from streamguard.sources.edges.kvs_reader import KvsReader as factory
        reader = factory(
            stream_arn=request.stream_arn,
            call_id=request.call_id,
            contact_id=request.contact_id,
            start_fragment=request.start_fragment,
            start_timestamp=request.start_timestamp,
            region=self.settings.region,
            endpoint_url=self.settings.endpoint_url,
            idle_timeout_seconds=self.settings.idle_timeout_seconds,
        )
        stream = _Stream(request, reader, CallFeed("kvs", self.registry))
        self.streams[request.stream_arn] = stream
        stream.task = asyncio.create_task(self._run(stream), name=f"kvs {request.call_id}")
        log.info("kvs_stream_started", stream_arn=request.stream_arn, call_id=request.call_id)

    async def _run(self, stream: _Stream) -> None:
        reader, feed = stream.reader, stream.feed
        structlog.contextvars.bind_contextvars(call_id=stream.request.call_id, source="kvs")
        reason: str | None = None
        try:
            async with contextlib.aclosing(reader.events()) as events:
                async for event in events:
                    refusal = feed.route([event])
                    if refusal is not None:  # the core's Reject (after its CallEnd), a limit
                        reason = refusal.reason
                        break
        except Exception as exc:  # a bug in the reader: this call ends, the daemon goes on
            reason = f"reader failed: {type(exc).__name__}"
            log.error("kvs_reader_failed", stream_arn=stream.request.stream_arn, error=reason)
        finally:
            reader.stop()
            feed.end("error" if reason or reader.error else "closed")
            self.streams.pop(stream.request.stream_arn, None)
        reason = reader.error or reason
        if reason:
            log.warning("kvs_stream_failed", stream_arn=stream.request.stream_arn, reason=reason)
        if self.metrics is not None and feed.session is None and reason:
            self.metrics.source_rejects_total.labels(source="kvs", reason="error").inc()
        log.info("kvs_stream_ended", stream_arn=stream.request.stream_arn)

    async def stop(self) -> None:
        """Take no new streams; end every call read here (``shutdown``) and stop its reader."""
        self.accepting = False
        tasks = []
        for stream in list(self.streams.values()):
            stream.feed.end("shutdown")
            stream.reader.stop()
            if stream.task is not None:
                tasks.append(stream.task)
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)

    async def closed(self) -> None:
        """After the drain: cancel readers still blocked in a read, and wait for them."""
        tasks = [s.task for s in self.streams.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def kvs_routes(listener: Callable[[], KvsStreams | None]) -> list[Any]:
    """``POST /api/kvs/streams`` (the Connect Lambda: read this stream) and ``GET`` (what is
    being read), for the daemon's ``/api`` table; ``listener`` returns the ``[sources.kvs]``
    listener (None before the listeners start: 503). See docs/sources.md."""
    from streamguard.server.access import KVS_STREAMS_PATH
    from streamguard.server.api import ApiError, ApiRequest, ApiRoute
    from streamguard.server.httputil import json_response

    def streams() -> KvsStreams:
        found = listener()
        if found is None:  # the port opens before the listeners
            raise ApiError(503, "starting: not reading streams yet")
        return found

    def start(request: ApiRequest) -> Any:
        try:
            wanted = parse_stream_request(request.json())
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        try:
            streams().start(wanted)
        except StreamRefused as exc:
            raise ApiError(exc.status, exc.message) from None
        payload = {"status": "reading", "call_id": wanted.call_id}
        return json_response(202, {**payload, "stream_arn": wanted.stream_arn})

    def listing(_request: ApiRequest) -> Any:
        return json_response(200, {"streams": streams().active()})

    return [
        ApiRoute("POST", KVS_STREAMS_PATH, start),
        ApiRoute("GET", KVS_STREAMS_PATH, listing),
    ]
