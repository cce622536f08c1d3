"""Calls: where a source's float samples become windows, and a window's score becomes an alert.

A protocol core (sources/) turns feed bytes into :mod:`streamguard.sources.base` events. One
:class:`CallSession` per call consumes them, synchronously:

    Audio/Gap  -> TrackPipeline (resample, ring, VAD, windower) -> windows -> ``submit``
    score back -> Smoother (EMA + hysteresis) -> ``score`` / ``alert`` events -> ``publish``
    TrackEnd   -> last windows;  CallEnd + every window answered -> ``call_ended``

The session never touches sockets, threads or clocks: ``submit(window, callback)`` is the
scoring engine's (the callback runs later with P(fake), or ``None`` for a dropped window) and
``publish`` is the alert bus's. That keeps the whole per-call logic testable without a network,
and lets the daemon, benchmarks and tests drive it the same way.

:class:`CallRegistry` owns the sessions of one daemon: the call limit, per-call log context,
SIGHUP reconfiguration and the shutdown drain.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from streamguard.alerts.events import CallSummary, combine_summaries
from streamguard.alerts.smoothing import Smoother, SmoothingSettings
from streamguard.audio.track import TrackPipeline, TrackSettings
from streamguard.audio.windows import Window
from streamguard.logs import redact
from streamguard.model.base import ModelInfo
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    Dtmf,
    Gap,
    Reject,
    SourceEvent,
    TrackEnd,
    TrackStart,
)

log = structlog.get_logger(__name__)

#: WebSocket close code 1013 "try again later": the daemon is full or draining.
CLOSE_TRY_AGAIN_LATER = 1013

Submit = Callable[[Window, Callable[[float | None], None]], None]
Publish = Callable[..., Any]


@dataclass
class CallPolicy:
    """Settings a session reads; swapped as a whole on SIGHUP (new tracks see the new one)."""

    track: TrackSettings = field(default_factory=TrackSettings)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    min_verdict_speech_seconds: float = 2.0
    max_call_seconds: float = 14_400.0


class _Track:
    """One track's state inside a session."""

    def __init__(self, name: str, sample_rate: int, policy: CallPolicy, info: ModelInfo):
        self.name = name
        self.pipeline = TrackPipeline(sample_rate, policy.track, window_seconds=info.window_seconds)
        self.smoother = Smoother(policy.smoothing, info.threshold)
        self.pending = 0  # windows submitted, score not back yet
        self.dropped = 0  # windows the engine dropped (lag/overflow)
        self.skipped_seen = 0  # windows_skipped already counted in the metrics
        self.ended = False

    def summary(self, info: ModelInfo, policy: CallPolicy) -> CallSummary:
        p = self.pipeline
        return self.smoother.summary(
            threshold=info.threshold,
            duration=p.duration_seconds,
            speech_seconds=p.speech_seconds,
            windows_skipped=p.windows_skipped,
            windows_dropped=self.dropped,
            min_speech_seconds=policy.min_verdict_speech_seconds,
        )


class CallSession:
    """One call's tracks, from source events to published events (a pure, synchronous core)."""

    def __init__(
        self,
        start: CallStart,
        *,
        info: ModelInfo,
        policy: CallPolicy,
        submit: Submit,
        publish: Publish,
        on_finished: Callable[[CallSession], None] | None = None,
        metrics: Any = None,
    ) -> None:
        self.call_id = start.call_id
        self.source = start.source
        self.metadata = start.metadata
        self.info = info
        self.policy = policy
        self._submit = submit
        self._publish = publish
        self._on_finished = on_finished
        self._metrics = metrics
        self.tracks: dict[str, _Track] = {}
        self.end_reason: str | None = None  # set by CallEnd (or end())
        self.finished = False
        self.over_limit = False  # the edge should hang up: max_call_seconds reached
        # Feed metadata is caller-controlled (e.g. Twilio customParameters): subscribers must
        # never receive a token someone passed through it.
        self._emit("call_started", None, metadata=redact(start.metadata))

    # -- input -----------------------------------------------------------------------------
    def handle(self, event: SourceEvent) -> None:
        """Consume one source event (CallStart is the constructor's; Reject is the edge's).

        Once the call is ending (a CallEnd, a drain, the length limit) input is ignored: a
        late track or late audio must not keep ``call_ended`` waiting.
        """
        if self.end_reason is not None:
            return
        match event:
            case Audio(track=name, samples=samples):
                track = self.tracks.get(name)
                if track is not None and not track.ended and not self.over_limit:
                    self._windows(track, track.pipeline.push(samples))
                    self._check_limit(track)
            case Gap(track=name, n_samples=n):
                track = self.tracks.get(name)
                if track is not None and not track.ended and not self.over_limit:
                    self._windows(track, track.pipeline.push_silence(n))
                    self._check_limit(track)
            case TrackStart(track=name, sample_rate=rate):
                if name not in self.tracks:
                    self.tracks[name] = _Track(name, rate, self.policy, self.info)
            case TrackEnd(track=name):
                self._end_track(name)
            case CallEnd(reason=reason):
                self.end(reason)
            case Dtmf() | Reject() | CallStart():
                pass

    def handle_all(self, events: list[SourceEvent]) -> None:
        for event in events:
            self.handle(event)

    def end(self, reason: str) -> None:
        """End the call: finish every track; ``call_ended`` follows once all scores are back."""
        if self.end_reason is None:
            self.end_reason = reason
        for name in list(self.tracks):
            self._end_track(name)
        self._maybe_finish()

    # -- internals -----------------------------------------------------------------------------
    def _check_limit(self, track: _Track) -> None:
        if track.pipeline.duration_seconds >= self.policy.max_call_seconds:
            self.over_limit = True

    def _end_track(self, name: str) -> None:
        track = self.tracks.get(name)
        if track is None or track.ended:
            return
        track.ended = True
        self._windows(track, track.pipeline.finish())
        self._maybe_finish()

    def _windows(self, track: _Track, windows: list[Window]) -> None:
        skipped = track.pipeline.windows_skipped
        if skipped != track.skipped_seen:
            if self._metrics is not None:
                self._metrics.windows_skipped_total.inc(skipped - track.skipped_seen)
            track.skipped_seen = skipped
        for window in windows:
            track.pending += 1
            self._submit(window, self._score_callback(track, window))

    def _score_callback(self, track: _Track, window: Window) -> Callable[[float | None], None]:
        def on_score(p_fake: float | None) -> None:
            track.pending -= 1
            if p_fake is None:
                track.dropped += 1
            else:
                self._on_score(track, window, p_fake)
            self._maybe_finish()

        return on_score

    def _on_score(self, track: _Track, window: Window, p_fake: float) -> None:
        smoothed, transition = track.smoother.push(p_fake, window.start, window.end)
        self._emit(
            "score",
            track.name,
            start=window.start,
            end=window.end,
            p_fake=p_fake,
            smoothed=smoothed,
        )
        if transition is not None:
            self._emit(
                "alert",
                track.name,
                state=transition.state,
                smoothed=transition.smoothed,
                threshold=transition.threshold,
                start=transition.start,
                end=transition.end,
            )

    def _maybe_finish(self) -> None:
        if self.finished or self.end_reason is None:
            return
        if any(not t.ended or t.pending for t in self.tracks.values()):
            return
        self.finished = True
        per_track = {name: t.summary(self.info, self.policy) for name, t in self.tracks.items()}
        self._emit(
            "call_ended",
            None,
            summary=combine_summaries(per_track),
            reason=self.end_reason,
            tracks=per_track,
        )
        if self._on_finished is not None:
            self._on_finished(self)

    def _emit(self, type: str, track: str | None, **fields: Any) -> None:
        self._publish(type, self.call_id, track, self.source, **fields)

    def reconfigure(self, policy: CallPolicy) -> None:
        """SIGHUP: live smoothers take the new settings (keeping their state); new tracks get
        the whole new policy (track settings included)."""
        self.policy = policy
        for track in self.tracks.values():
            track.smoother.reconfigure(policy.smoothing, self.info.threshold)


class CallLimitReached(Exception):
    """The daemon already has ``max_calls`` open calls."""


class CallRegistry:
    """The open calls of one daemon."""

    def __init__(
        self,
        *,
        info: ModelInfo,
        policy: CallPolicy,
        submit: Submit,
        publish: Publish,
        max_calls: int = 200,
        metrics: Any = None,
    ) -> None:
        self.info = info
        self.policy = policy
        self.max_calls = max_calls
        self._submit = submit
        self._publish = publish
        self._metrics = metrics
        self.sessions: dict[int, CallSession] = {}  # keyed per connection: a callSid may repeat
        self._ids = itertools.count(1)
        self._all_finished = asyncio.Event()
        self._all_finished.set()
        self.accepting = True

    def open(self, start: CallStart) -> CallSession:
        """Start a session; raises :class:`CallLimitReached` when full or shutting down."""
        if not self.accepting:
            raise CallLimitReached("the daemon is shutting down")
        if len(self.sessions) >= self.max_calls:
            raise CallLimitReached(f"call limit reached ({self.max_calls} open calls)")
        key = next(self._ids)
        session = CallSession(
            start,
            info=self.info,
            policy=self.policy,
            submit=self._submit,
            publish=self._publish,
            on_finished=lambda s: self._closed(key, s),
            metrics=self._metrics,
        )
        if not session.finished:
            self.sessions[key] = session
            self._all_finished.clear()
        if self._metrics is not None:
            self._metrics.calls_total.labels(source=start.source).inc()
            self._metrics.calls_active.set(len(self.sessions))
        log.info("call_opened", call_id=start.call_id, source=start.source)
        return session

    def _closed(self, key: int, session: CallSession) -> None:
        self.sessions.pop(key, None)
        if self._metrics is not None:
            self._metrics.calls_active.set(len(self.sessions))
        log.info("call_closed", call_id=session.call_id, reason=session.end_reason)
        if not self.sessions:
            self._all_finished.set()

    def reconfigure(self, policy: CallPolicy) -> None:
        self.policy = policy
        for session in self.sessions.values():
            session.reconfigure(policy)

    async def drain(self, reason: str = "shutdown") -> None:
        """Stop accepting, end every open call, and wait for their ``call_ended``."""
        self.accepting = False
        for session in list(self.sessions.values()):
            session.end(reason)
        await self._all_finished.wait()


class CallFeed:
    """Routes one connection's (or one microphone's) source events into its call session.

    ``CallStart`` opens the session in the registry; ``Reject`` and a full daemon turn into a
    ``(close code, reason)`` for the edge to act on; everything else goes to the session.
    """

    def __init__(self, kind: str, registry: CallRegistry, *, metrics: Any = None) -> None:
        self.kind = kind
        self.registry = registry
        self.metrics = metrics
        self.session: CallSession | None = None

    def route(self, events: list[SourceEvent]) -> tuple[int, str] | None:
        """Apply ``events``; returns ``(code, reason)`` when the feed must be closed."""
        for event in events:
            if isinstance(event, CallStart):
                # Each feed runs in its own task, so this tags every later log line of this
                # call (and only this call) with its id.
                structlog.contextvars.bind_contextvars(call_id=event.call_id, source=event.source)
                try:
                    self.session = self.registry.open(event)
                except CallLimitReached as exc:
                    self._count_reject(event.source)
                    return (CLOSE_TRY_AGAIN_LATER, str(exc))
            elif isinstance(event, Reject):
                self._count_reject(self.session.source if self.session else self.kind)
                log.warning("feed_rejected", feed=self.kind, code=event.code, reason=event.reason)
                return (event.code, event.reason)
            elif self.session is not None:
                self.session.handle(event)
        return None

    def _count_reject(self, source: str) -> None:
        if self.metrics is not None:
            self.metrics.source_rejects_total.labels(source=source).inc()
