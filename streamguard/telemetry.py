"""Traces: OpenTelemetry spans for calls, scored windows and deliveries, or nothing at all.

The only module that knows OpenTelemetry. Everything else holds a :class:`Tracer` and calls a
handful of methods on it at a few points (``calls.py``, ``webhooks/delivery.py``,
``alerts/redis_backend.py``). Off (the default: ``[telemetry] otlp_endpoint`` unset) it is
:data:`NOOP`, whose methods do nothing and hand back shared objects: the SDK is never imported
and a window costs the registry one boolean test and the engine one ``isinstance``
(benchmarks/README.md, "Traces").

On, every span carries ``streamguard.call_id`` so one call's spans are found by its id:

- ``call``: from ``call_started`` to ``call_ended``, a root span (sampled by
  ``[telemetry] sample_ratio``); attributes call id, source, tracks, verdict, end reason.
- ``score``: one per window handed to the engine, a child of its call's span, from submit to
  the outcome reaching the call; attributes track, window start/end, queue wait, batch size,
  inference seconds (the engine's :class:`~streamguard.scoring.outcome.BatchTiming`), model,
  P(fake) or why there is none.
- ``webhook``: one per delivery attempt, a child of the call's span while this daemon knows
  it (live, or among the last :data:`RECENT_CALLS` ended), else a root span; endpoint, seq,
  event type, attempt, HTTP status, outcome.
- ``redis``: one per append of a batch of events to the Redis Stream; it holds events of
  several calls, so it is a root span with a link to each call's span it knows, and the
  call ids as an attribute.

Spans go to the OTLP/HTTP exporter (``opentelemetry-exporter-otlp-proto-http``, the ``otel``
extra) through a batch processor: export runs on the SDK's own thread, never on the event loop.
Each daemon has its own tracer provider (never the process-global one), like its own metrics.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from streamguard.errors import StreamguardError
from streamguard.scoring.outcome import BatchTiming, ScoreOutcome, TimedCallback, Unscored

if TYPE_CHECKING:
    from streamguard.alerts.events import CallEnded, EventBase
    from streamguard.audio.windows import Window
    from streamguard.config import TelemetrySettings

#: Ended calls whose span context is kept, so late webhook deliveries still join their trace.
RECENT_CALLS = 1024
#: Longest the drain waits for the last spans to be exported.
FLUSH_SECONDS = 2.0
#: Path the OTLP/HTTP trace exporter posts to when ``otlp_endpoint`` names only a host.
TRACES_PATH = "/v1/traces"


class _NoopSpan:
    """What the no-op tracer hands out: takes attributes, keeps nothing."""

    __slots__ = ()

    def set(self, **attributes: Any) -> None:
        pass


_NOOP_SPAN = _NoopSpan()
_NOOP_CONTEXT = contextlib.nullcontext(_NOOP_SPAN)  # reusable: enter/exit keep no state


class Tracer:
    """Tracing off: every method is free and hands back shared objects.

    The interface the daemon's components use; :class:`OtelTracer` is the one that records.
    """

    enabled = False

    def start_call(self, call_id: str, source: str) -> Any:
        """A call opened: returns its handle for :meth:`end_call` and :meth:`score`."""
        return None

    def end_call(self, handle: Any, ended: CallEnded | None, tracks: Sequence[str]) -> None:
        """The call's ``call_ended`` (None: it never properly opened) ends its span."""

    def score(
        self, handle: Any, track: str, window: Window, deliver: Callable[[ScoreOutcome], None]
    ) -> Callable[[ScoreOutcome], None]:
        """The callback to submit with a window: ``deliver`` itself, or one that records it."""
        return deliver

    def webhook_attempt(
        self, event: EventBase, endpoint: str, attempt: int
    ) -> contextlib.AbstractContextManager[Any]:
        """Around one POST of ``event``; the span's ``set(status=..., outcome=...)``."""
        return _NOOP_CONTEXT

    def redis_append(self, events: Sequence[EventBase]) -> contextlib.AbstractContextManager[Any]:
        """Around one append of ``events`` to the Redis Stream."""
        return _NOOP_CONTEXT

    def shutdown(self) -> None:
        """Export what is buffered and stop (the daemon's drain)."""


#: Tracing off: what every component holds unless the daemon passes a recording tracer.
NOOP = Tracer()


class _Span:
    """A recording span's ``set``: attributes under ``streamguard.``."""

    __slots__ = ("span",)

    def __init__(self, span: Any) -> None:
        self.span = span

    def set(self, **attributes: Any) -> None:
        for key, value in attributes.items():
            if value is not None:
                self.span.set_attribute(f"streamguard.{key}", value)


class _Call:
    """A call's span and its id (the handle :meth:`OtelTracer.start_call` returns)."""

    __slots__ = ("call_id", "span")

    def __init__(self, call_id: str, span: Any) -> None:
        self.call_id = call_id
        self.span = span


class _ScoreSpan(TimedCallback):
    """A window's callback that records its ``score`` span when the outcome arrives."""

    __slots__ = ("call", "deliver", "end", "start", "started", "tracer", "track")

    def __init__(self, tracer: OtelTracer, call: Any, track: str, window: Window, deliver):
        super().__init__()
        self.tracer = tracer
        self.call = call
        self.track = track
        self.start, self.end = window.start, window.end  # not the window: its audio can go
        self.deliver = deliver
        self.started = time.time_ns()

    def __call__(self, outcome: ScoreOutcome) -> None:
        try:
            self.tracer._record_score(self, outcome)
        finally:
            self.deliver(outcome)


class OtelTracer(Tracer):
    """Tracing on: spans through the OpenTelemetry SDK to ``exporter``.

    ``batch`` (the daemon's choice for OTLP) exports from the SDK's thread in batches; tests
    pass ``batch=False`` with the SDK's in-memory exporter to see each span as it ends.
    """

    enabled = True

    def __init__(
        self,
        exporter: Any,
        *,
        service_name: str = "streamguard",
        sample_ratio: float = 1.0,
        model: str = "",
        batch: bool = True,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        from streamguard import __version__

        resource = Resource.create({"service.name": service_name, "service.version": __version__})
        self.provider = TracerProvider(
            resource=resource, sampler=ParentBased(TraceIdRatioBased(sample_ratio))
        )
        self._exporter = exporter
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        self.provider.add_span_processor(processor)
        self.tracer = self.provider.get_tracer("streamguard", __version__)
        self.model = model
        self._live: dict[str, Any] = {}  # call id -> span context of its newest live call
        self._recent: OrderedDict[str, Any] = OrderedDict()  # ended: call id -> context

    # -- calls --------------------------------------------------------------------------------
    def start_call(self, call_id: str, source: str) -> Any:
        span = self.tracer.start_span(
            "call",
            attributes={"streamguard.call_id": call_id, "streamguard.source": source},
        )
        self._live[call_id] = span.get_span_context()
        return _Call(call_id, span)

    def end_call(self, handle: Any, ended: CallEnded | None, tracks: Sequence[str]) -> None:
        from opentelemetry.trace import Status, StatusCode

        if handle is None:
            return
        span, call_id = handle.span, handle.call_id
        span.set_attribute("streamguard.tracks", list(tracks))
        if ended is None:
            span.set_status(Status(StatusCode.ERROR, "the call never properly opened"))
        else:
            summary = ended.summary
            span.set_attribute("streamguard.verdict", summary.verdict)
            span.set_attribute("streamguard.reason", ended.reason)
            span.set_attribute("streamguard.windows_scored", summary.windows_scored)
            if summary.max_smoothed is not None:
                span.set_attribute("streamguard.max_smoothed", summary.max_smoothed)
        span.end()
        context = span.get_span_context()
        if self._live.get(call_id) == context:
            del self._live[call_id]
        self._recent[call_id] = context
        self._recent.move_to_end(call_id)
        while len(self._recent) > RECENT_CALLS:
            self._recent.popitem(last=False)

    def _context_of(self, call_id: str | None) -> Any:
        if call_id is None:
            return None
        return self._live.get(call_id) or self._recent.get(call_id)

    # -- windows ------------------------------------------------------------------------------
    def score(self, handle: Any, track: str, window: Window, deliver):
        return _ScoreSpan(self, handle, track, window, deliver)

    def _record_score(self, pending: _ScoreSpan, outcome: ScoreOutcome) -> None:
        from opentelemetry.trace import set_span_in_context

        call: _Call = pending.call
        attributes: dict[str, Any] = {
            "streamguard.call_id": call.call_id,
            "streamguard.track": pending.track,
            "streamguard.start": pending.start,
            "streamguard.end": pending.end,
            "streamguard.model": self.model,
        }
        if isinstance(outcome, Unscored):
            attributes["streamguard.unscored"] = outcome.reason
        else:
            attributes["streamguard.p_fake"] = float(outcome)
        timing: BatchTiming | None = pending.timing
        if timing is not None:
            attributes["streamguard.queue_wait_seconds"] = timing.queue_wait
            attributes["streamguard.batch_size"] = timing.batch_size
            attributes["streamguard.inference_seconds"] = timing.inference_seconds
        span = self.tracer.start_span(
            "score",
            context=set_span_in_context(call.span),
            attributes=attributes,
            start_time=pending.started,
        )
        span.end()

    # -- deliveries ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def webhook_attempt(self, event: EventBase, endpoint: str, attempt: int) -> Iterator[_Span]:
        from opentelemetry.trace import NonRecordingSpan, set_span_in_context

        parent = self._context_of(event.call_id)
        context = None if parent is None else set_span_in_context(NonRecordingSpan(parent))
        attributes = {
            "streamguard.call_id": event.call_id or "",
            "streamguard.endpoint": endpoint,
            "streamguard.seq": event.seq,
            "streamguard.type": event.type,
            "streamguard.attempt": attempt,
        }
        with self._around("webhook", context=context, attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def redis_append(self, events: Sequence[EventBase]) -> Iterator[_Span]:
        from opentelemetry.context import Context
        from opentelemetry.trace import Link

        call_ids = sorted({e.call_id for e in events if e.call_id})
        links = [Link(c) for c in map(self._context_of, call_ids) if c is not None]
        attributes = {"streamguard.call_ids": call_ids, "streamguard.events": len(events)}
        with self._around("redis", context=Context(), links=links, attributes=attributes) as span:
            yield span

    @contextlib.contextmanager
    def _around(self, name: str, **options: Any) -> Iterator[_Span]:
        """A span around a block; an exception marks it failed by its type only (a message
        may carry a URL with credentials)."""
        from opentelemetry.trace import Status, StatusCode

        span = self.tracer.start_span(name, **options)
        try:
            yield _Span(span)
        except BaseException as exc:
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            span.end()

    def shutdown(self) -> None:
        """Export what is buffered, waiting at most :data:`FLUSH_SECONDS`: a collector that is
        down must not hold the drain (the exporter would retry for its own timeout)."""
        # The processor exports the rest on this thread, retrying for the exporter's timeout;
        # shutting the exporter down from a timer ends those retries.
        timer = threading.Timer(FLUSH_SECONDS, self._exporter.shutdown)
        timer.daemon = True
        timer.start()
        try:
            self.provider.shutdown()
        finally:
            timer.cancel()


def otlp_url(endpoint: str) -> str:
    """The traces URL for ``endpoint``: as given, or with ``/v1/traces`` when it has no path."""
    from urllib.parse import urlsplit

    parts = urlsplit(endpoint)  # scheme and host checked by TelemetrySettings
    if parts.path in ("", "/"):
        return endpoint.rstrip("/") + TRACES_PATH
    return endpoint


def from_settings(settings: TelemetrySettings, *, model: str = "", exporter: Any = None) -> Tracer:
    """The daemon's tracer: :data:`NOOP` unless ``otlp_endpoint`` is set (or a test passes
    its own ``exporter``, e.g. the SDK's ``InMemorySpanExporter``, exported span by span)."""
    if exporter is None and settings.otlp_endpoint is None:
        return NOOP
    try:
        import opentelemetry.sdk.trace  # noqa: F401  (the SDK itself: said before any exporter)

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter(endpoint=otlp_url(settings.otlp_endpoint or ""))
            batch = True
        else:
            batch = False
    except ImportError as exc:
        raise StreamguardError(
            f"[telemetry] otlp_endpoint is set but OpenTelemetry is not installed ({exc.name}): "
            "pip install 'streamguard[otel]'"
        ) from None
    return OtelTracer(
        exporter,
        service_name=settings.service_name,
        sample_ratio=settings.sample_ratio,
        model=model,
        batch=batch,
    )
