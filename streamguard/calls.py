"""Calls: where a source's float samples become windows, and a window's score becomes an alert.

A protocol core (sources/) turns feed bytes into :mod:`streamguard.sources.base` events. One
:class:`CallSession` per call consumes them, synchronously, in the shape of a sans-I/O protocol
(``websockets.protocol.Protocol``: data in, outputs to collect):

    session.handle(event)                 Audio/Gap -> TrackPipeline (resample, ring, VAD, windows)
    session.windows_to_score()            -> the windows that became ready, to hand to the engine
    session.receive_score(pending, outcome)  P(fake) or Unscored -> Smoother (EMA + hysteresis)
    session.events_to_publish()           -> typed call_started / score / alert / call_ended

The session never touches sockets, threads, clocks or callbacks, so a test drives a whole call,
faults included, without a loop. :class:`CallRegistry` is the wiring: it owns the sessions of one
daemon, moves their windows to the scoring engine and their events to the alert bus, and holds
the call limit, SIGHUP reconfiguration and the shutdown drain. :class:`CallFeed` is what an edge
(a WebSocket connection, the microphone) uses to route its core's events into the registry.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog

from streamguard.alerts.events import (
    Alert,
    CallEnded,
    CallStarted,
    CallSummary,
    EventBase,
    Score,
    combine_summaries,
)
from streamguard.audio.track import TrackPipeline, TrackSettings
from streamguard.audio.windows import Window
from streamguard.evidence.recorder import ClipOp, TrackRecorder
from streamguard.logs import redact
from streamguard.model.base import ModelInfo
from streamguard.policy import AlertPolicy
from streamguard.policy.adaptive import ScoreThinner
from streamguard.policy.smoothing import SmoothingSettings
from streamguard.policy.verdict import DEFAULT_MIN_SPEECH_SECONDS
from streamguard.scoring.outcome import Allowlisted, ScoreOutcome, Unscored
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
from streamguard.telemetry import NOOP, Tracer

log = structlog.get_logger(__name__)

#: Why the daemon ends a feed: a core's :data:`~streamguard.sources.base.RefusalKind`
#: (``protocol``, ``unsupported``, ``metadata``), or its own: ``busy`` (``max_calls`` open, or
#: draining), ``in_use`` (the call id is live on another connection), ``limit``
#: (``max_call_seconds``), ``error`` (the call could not be opened: a bug). Each edge acts on it
#: its own way; the WebSocket edge maps it to a close code.
FeedEndKind = Literal["protocol", "unsupported", "metadata", "busy", "in_use", "limit", "error"]


@dataclass(frozen=True, slots=True)
class Refusal:
    """The daemon ends a feed: ``kind`` (:data:`FeedEndKind`) and one short ``reason``."""

    kind: FeedEndKind
    reason: str


#: ``submit(window, callback)``: the scoring engine's; the callback later gets the outcome.
Submit = Callable[[Window, Callable[[ScoreOutcome], None]], None]
#: ``publish(event)``: the alert bus's.
Publish = Callable[[EventBase], Any]


@dataclass
class CallPolicy:
    """Settings a session reads; swapped as a whole on SIGHUP (new tracks see the new one)."""

    track: TrackSettings = field(default_factory=TrackSettings)
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    min_verdict_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS
    max_call_seconds: float = 14_400.0
    # [evidence]: "none" keeps no audio; the look-back is evidence.lookback_seconds(...)
    evidence_keep: str = "none"
    evidence_lookback_seconds: float = 0.0
    evidence_rate: int | None = None
    # [tracks] score: the track names whose windows are scored (None: every track)
    score_tracks: frozenset[str] | None = None

    def alert_policy(self, threshold: float) -> AlertPolicy:
        """The alert policy of a track scored by a model with this ``threshold``: the same
        object :func:`streamguard.policy.replay` runs offline, so live and replayed agree."""
        return AlertPolicy(threshold, self.smoothing, self.min_verdict_speech_seconds)


@dataclass(frozen=True, eq=False, slots=True)
class ClipWork:
    """A track's evidence clip operations, for the evidence store (``[evidence]``)."""

    call_id: str
    track: str
    source: Any
    rate: int  # the rate the clip is written at
    ops: list[ClipOp]


@dataclass(frozen=True, eq=False, slots=True)
class PendingWindow:
    """A window of one track handed out for scoring; hand it back with its outcome."""

    track: str
    window: Window


class _Track:
    """One track's state inside a session."""

    def __init__(self, name: str, sample_rate: int, policy: CallPolicy, info: ModelInfo):
        self.name = name
        self.sample_rate = sample_rate
        self.pipeline = TrackPipeline(sample_rate, policy.track, window_seconds=info.window_seconds)
        self.smoother = policy.alert_policy(info.threshold).smoother()
        self.thinner = ScoreThinner(
            policy.track.adaptive_stride, policy.track.adaptive_below * info.threshold
        )
        self.recorder = (
            TrackRecorder(
                sample_rate,
                keep=policy.evidence_keep,  # type: ignore[arg-type]
                lookback_seconds=policy.evidence_lookback_seconds,
                rate=policy.evidence_rate,
            )
            if policy.evidence_keep in ("alerts", "all")
            else None
        )
        # [tracks] score: a leg left out is counted, never scored (its verdict: inconclusive)
        self.scored = policy.score_tracks is None or name in policy.score_tracks
        self.not_scored = 0  # windows of a left-out leg
        self.allowlisted = 0  # windows whose speaker is an enrolled voice
        self.last_smoothed = 0.0
        self.pending = 0  # windows handed out, outcome not back yet
        self.dropped = 0  # windows the engine dropped (lag/queue)
        self.failed = 0  # windows the model failed on
        self.ended = False

    def summary(self, policy: CallPolicy) -> CallSummary:
        p = self.pipeline
        stats = self.smoother.stats()
        summary = CallSummary(
            duration=p.duration_seconds,
            speech_seconds=p.speech_seconds,
            windows_scored=stats.windows,
            windows_skipped=p.windows_skipped,
            windows_dropped=self.dropped + p.windower.windows_lost,
            windows_failed=self.failed,
            max_smoothed=stats.max_smoothed,
            mean_smoothed=stats.mean_smoothed,
            verdict=self.smoother.verdict(p.speech_seconds, policy.min_verdict_speech_seconds),
        )
        if self.not_scored or self.allowlisted:
            summary = summary.model_copy(
                update={
                    "windows_not_scored": self.not_scored,
                    "windows_allowlisted": self.allowlisted,
                }
            )
        return summary


class CallSession:
    """One call's tracks, from source events to typed events (a pure, synchronous core)."""

    def __init__(self, start: CallStart, *, info: ModelInfo, policy: CallPolicy) -> None:
        self.call_id = start.call_id
        self.source = start.source
        self.metadata = start.metadata
        self.share = start.share
        self.info = info
        self.policy = policy
        self.tracks: dict[str, _Track] = {}
        self.end_reason: str | None = None  # set by CallEnd (or end())
        self.finished = False
        self.over_limit = False  # the edge should hang up: max_call_seconds reached
        self.call_ended: CallEnded | None = None  # once finished (for the call's trace span)
        self._windows_out: list[PendingWindow] = []
        self._events_out: list[EventBase] = []
        self._clips_out: list[ClipWork] = []
        self._skipped_reported = 0
        self._lost_reported = 0
        self._thinned_reported = 0
        # Feed metadata is caller-controlled (e.g. Twilio customParameters): subscribers must
        # never receive a token someone passed through it.
        self._events_out.append(
            CallStarted(
                call_id=self.call_id,
                track=None,
                source=self.source,
                metadata=redact(start.metadata),
                sample_rate=_declared_rate(start.metadata),
            )
        )

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
                    if track.recorder is not None:
                        self._clips(track, track.recorder.push(samples))
                    self._windows(track, track.pipeline.push(samples))
                    self._check_limit(track)
            case Gap(track=name, n_samples=n):
                track = self.tracks.get(name)
                if track is not None and not track.ended and not self.over_limit:
                    if track.recorder is not None:
                        self._clips(track, track.recorder.push_silence(n))
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

    def abort(self, reason: str = "error") -> None:
        """Finish at once, producing nothing more: the call never properly opened (its
        ``call_started`` could not be published), so there is no call to end."""
        if self.end_reason is None:
            self.end_reason = reason
        for track in self.tracks.values():
            track.ended = True
        self.finished = True
        self._windows_out.clear()
        self._events_out.clear()
        self._finish_recorders()  # close what was written; the clips stay (a failure is rare)

    def receive_score(self, pending: PendingWindow, outcome: ScoreOutcome) -> None:
        """The engine's outcome for a window this session handed out."""
        track = self.tracks[pending.track]
        track.pending -= 1
        if isinstance(outcome, Unscored):
            if outcome.failed:
                track.failed += 1
            else:
                track.dropped += 1
        elif isinstance(outcome, Allowlisted):
            self._on_allowlisted(track, pending.window, outcome)
        else:
            self._on_score(track, pending.window, outcome)
        self._maybe_finish()

    # -- output ----------------------------------------------------------------------------
    def windows_to_score(self) -> list[PendingWindow]:
        """Windows that became ready since the last call (each handed out exactly once)."""
        out, self._windows_out = self._windows_out, []
        return out

    def events_to_publish(self) -> list[EventBase]:
        """Events produced since the last call, in order (``seq``/``ts`` not yet stamped)."""
        out, self._events_out = self._events_out, []
        return out

    def clips_to_write(self) -> list[ClipWork]:
        """Evidence clip operations since the last call, in order (``[evidence] keep``)."""
        out, self._clips_out = self._clips_out, []
        return out

    def windows_skipped_since_last_call(self) -> int:
        """Windows skipped for too little speech since the last call (for a counter)."""
        total = sum(t.pipeline.windows_skipped for t in self.tracks.values())
        delta, self._skipped_reported = total - self._skipped_reported, total
        return delta

    def windows_thinned_since_last_call(self) -> int:
        """Windows adaptive scoring skipped (``[track] adaptive_stride``) since the last call."""
        total = sum(t.thinner.thinned for t in self.tracks.values())
        delta, self._thinned_reported = total - self._thinned_reported, total
        return delta

    def windows_lost_since_last_call(self) -> int:
        """Windows whose audio the ring had already overwritten, since the last call."""
        total = sum(t.pipeline.windower.windows_lost for t in self.tracks.values())
        delta, self._lost_reported = total - self._lost_reported, total
        return delta

    # -- internals -----------------------------------------------------------------------------
    def _check_limit(self, track: _Track) -> None:
        if track.pipeline.duration_seconds >= self.policy.max_call_seconds:
            self.over_limit = True

    def _end_track(self, name: str) -> None:
        track = self.tracks.get(name)
        if track is None or track.ended:
            return
        track.ended = True
        self._windows(track, track.pipeline.finish(), final=True)
        self._maybe_finish()

    def _windows(self, track: _Track, windows: list[Window], *, final: bool = False) -> None:
        if not track.scored:
            track.not_scored += len(windows)
            return
        for window in windows:
            if not final and not track.thinner.take():
                continue  # adaptive scoring: a calm real track skips this hop
            track.pending += 1
            self._windows_out.append(PendingWindow(track.name, window))

    def _on_score(self, track: _Track, window: Window, p_fake: float) -> None:
        track.thinner.observe(p_fake)
        smoothed, transition = track.smoother.push(p_fake, window.start, window.end)
        track.last_smoothed = smoothed
        self._events_out.append(self._score_event(track, window, p_fake, smoothed))
        common = {"call_id": self.call_id, "track": track.name, "source": self.source}
        if transition is not None:
            if track.recorder is not None:
                self._clips(
                    track,
                    track.recorder.raised(transition.start)
                    if transition.state == "raised"
                    else track.recorder.cleared(transition.end),
                )
            self._events_out.append(
                Alert(
                    **common,
                    state=transition.state,
                    smoothed=transition.smoothed,
                    threshold=transition.threshold,
                    start=transition.start,
                    end=transition.end,
                )
            )

    def _on_allowlisted(self, track: _Track, window: Window, outcome: Allowlisted) -> None:
        """An enrolled voice: reported with its score, kept out of the alert policy."""
        track.allowlisted += 1
        self._events_out.append(
            self._score_event(
                track, window, outcome.p_fake, track.last_smoothed, allowlisted=outcome.voice
            )
        )

    def _score_event(
        self,
        track: _Track,
        window: Window,
        p_fake: float,
        smoothed: float,
        allowlisted: str | None = None,
    ) -> Score:
        """The ``score`` event of one window (an allow-listed one names the voice)."""
        return Score(
            call_id=self.call_id,
            track=track.name,
            source=self.source,
            start=window.start,
            end=window.end,
            p_fake=p_fake,
            smoothed=smoothed,
            allowlisted=allowlisted,
        )

    def _maybe_finish(self) -> None:
        if self.finished or self.end_reason is None:
            return
        if any(not t.ended or t.pending for t in self.tracks.values()):
            return
        self.finished = True
        self._finish_recorders()  # every score is back: no alert can reach a clip any more
        per_track = {name: t.summary(self.policy) for name, t in self.tracks.items()}
        self.call_ended = CallEnded(
            call_id=self.call_id,
            track=None,
            source=self.source,
            summary=combine_summaries(per_track),
            reason=self.end_reason,
            tracks=per_track,
        )
        self._events_out.append(self.call_ended)

    def _clips(self, track: _Track, ops: list[ClipOp]) -> None:
        if ops:
            assert track.recorder is not None
            self._clips_out.append(
                ClipWork(self.call_id, track.name, self.source, track.recorder.rate, ops)
            )

    def _finish_recorders(self) -> None:
        for track in self.tracks.values():
            if track.recorder is not None:
                self._clips(track, track.recorder.finish())

    def reconfigure(self, policy: CallPolicy) -> None:
        """SIGHUP: live smoothers take the new settings (keeping their state); new tracks get
        the whole new policy (track settings included)."""
        self.policy = policy
        for track in self.tracks.values():
            track.smoother.reconfigure(policy.smoothing, self.info.threshold)


def _declared_rate(metadata: dict[str, Any]) -> int | None:
    """The input sample rate a feed declared in its start metadata, if it did."""
    for key in ("sample_rate", "sampleRate", "rate"):
        value = metadata.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    fmt = metadata.get("mediaFormat") or metadata.get("media_format")
    if isinstance(fmt, dict):
        return _declared_rate(fmt)
    return None


class CallRefused(Exception):
    """A call the registry will not open: ``kind`` what the feed is told (:data:`FeedEndKind`),
    ``reason`` the ``source_rejects_total`` label, the message the refusal's reason."""

    kind: FeedEndKind = "busy"

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


class CallLimitReached(CallRefused):
    """The daemon already has ``max_calls`` open calls, or is shutting down."""

    def __init__(self, message: str, *, reason: str = "capacity") -> None:
        super().__init__(message, reason=reason)  # "capacity" or "draining"


class CallIdInUse(CallRefused):
    """Another connection carries a live call with this id, and this one may not join it
    (see :meth:`CallRegistry.open`)."""

    kind: FeedEndKind = "in_use"

    def __init__(self) -> None:
        super().__init__("call_id already live on another connection", reason="call_id_in_use")


class CallRegistry:
    """The open calls of one daemon, and the wiring between them, the engine and the bus."""

    def __init__(
        self,
        *,
        info: ModelInfo,
        policy: CallPolicy,
        submit: Submit,
        publish: Publish,
        max_calls: int = 200,
        metrics: Any = None,
        record: Callable[[ClipWork], None] | None = None,
        tracer: Tracer = NOOP,
    ) -> None:
        self.info = info
        self._record = record  # [evidence]: hands clip operations to the evidence writer
        self.policy = policy
        self.max_calls = max_calls
        self._submit = submit
        self._publish = publish
        self._metrics = metrics
        self._tracer = tracer
        self._traces: dict[int, Any] = {}  # id(session) -> its call span (telemetry.py)
        self.sessions: dict[int, CallSession] = {}  # keyed per connection: a callSid may repeat
        self._keys: dict[int, int] = {}  # id(session) -> key
        self._by_call_id: dict[str, list[CallSession]] = {}  # the sessions of each call id
        self._ids = itertools.count(1)
        self._all_finished = asyncio.Event()
        self._all_finished.set()
        self.accepting = True

    def open(self, start: CallStart) -> CallSession:
        """Start a session and publish its ``call_started``.

        Raises :class:`CallLimitReached` when full or shutting down, :class:`CallIdInUse` when
        ``start.call_id`` is live on another connection and this one may not join it. Anything
        else that fails once the session is registered (publishing ``call_started``) takes
        the session out again before the exception goes on: a call is either open with its
        ``call_started`` handed to the bus, or not open at all; never held open by a failure.
        """
        if not self.accepting:
            raise CallLimitReached("the daemon is shutting down", reason="draining")
        if len(self.sessions) >= self.max_calls:
            raise CallLimitReached(f"call limit reached ({self.max_calls} open calls)")
        self._check_call_id(start)
        session = CallSession(start, info=self.info, policy=self.policy)
        self._traces[id(session)] = self._tracer.start_call(session.call_id, session.source)
        key = next(self._ids)
        self.sessions[key] = session
        self._keys[id(session)] = key
        self._by_call_id.setdefault(session.call_id, []).append(session)
        self._all_finished.clear()
        try:
            self._flush(session)
        except BaseException:
            session.abort()
            self._closed(session)
            raise
        if self._metrics is not None:
            self._metrics.calls_total.labels(source=start.source).inc()
            self._metrics.calls_active.set(len(self.sessions))
        log.info("call_opened", call_id=start.call_id, source=start.source)
        return session

    def _check_call_id(self, start: CallStart) -> None:
        """A call id live on another connection is refused, so no feed can publish events
        (a ``call_ended`` above all) under a call it does not carry; except the other tracks
        of the same provider call: Twilio opens one stream per track for one callSid, each
        naming its tracks (``CallStart.share``). A session that already ended (waiting for
        its last scores) no longer holds its id."""
        live = [s for s in self._by_call_id.get(start.call_id, ()) if s.end_reason is None]
        if not live:
            return
        share = start.share
        if share is not None and all(
            s.share is not None
            and s.source == start.source
            and s.share.account == share.account
            and not (s.share.tracks & share.tracks)
            for s in live
        ):
            return
        raise CallIdInUse()

    def handle(self, session: CallSession, event: SourceEvent) -> None:
        """Give one source event to ``session`` and move what it produced."""
        session.handle(event)
        self._flush(session)

    def end(self, session: CallSession, reason: str) -> None:
        session.end(reason)
        self._flush(session)

    def _flush(self, session: CallSession) -> None:
        """Windows to the engine, events to the bus; forget the session once it finished."""
        if self._metrics is not None:
            skipped = session.windows_skipped_since_last_call()
            if skipped:
                self._metrics.windows_skipped_total.inc(skipped)
            thinned = session.windows_thinned_since_last_call()
            if thinned:
                self._metrics.windows_thinned_total.inc(thinned)
            lost = session.windows_lost_since_last_call()
            if lost:
                self._metrics.windows_dropped_total.labels(reason="overwritten").inc(lost)
        try:
            for pending in session.windows_to_score():
                self._submit(pending.window, self._on_outcome(session, pending))
            for event in session.events_to_publish():
                self._publish(event)
            clips = session.clips_to_write()
            if self._record is not None:
                for work in clips:
                    self._record(work)
        finally:  # a finished session leaves the registry even if a publish failed
            if session.finished:
                self._closed(session)

    def _on_outcome(
        self, session: CallSession, pending: PendingWindow
    ) -> Callable[[ScoreOutcome], None]:
        def deliver(outcome: ScoreOutcome) -> None:
            session.receive_score(pending, outcome)
            self._flush(session)

        if self._tracer.enabled:  # a score span per window; off, nothing per window
            trace = self._traces[id(session)]
            return self._tracer.score(trace, pending.track, pending.window, deliver)
        return deliver

    def _closed(self, session: CallSession) -> None:
        key = self._keys.pop(id(session), None)
        if key is None:
            return
        trace = self._traces.pop(id(session), None)
        self._tracer.end_call(trace, session.call_ended, list(session.tracks))
        self.sessions.pop(key, None)
        same = self._by_call_id.get(session.call_id, [])
        if session in same:
            same.remove(session)
        if not same:
            self._by_call_id.pop(session.call_id, None)
        if self._metrics is not None:
            self._metrics.calls_active.set(len(self.sessions))
        log.info("call_closed", call_id=session.call_id, reason=session.end_reason)
        if not self.sessions:
            self._all_finished.set()

    def reconfigure(self, policy: CallPolicy) -> None:
        self.policy = policy
        for session in self.sessions.values():
            session.reconfigure(policy)

    def set_model(self, info: ModelInfo) -> None:
        """A hot model swap: new sessions and live smoothers take the new model's threshold
        (same window and rate: :func:`streamguard.model_swap.prepare` checked)."""
        self.info = info
        for session in self.sessions.values():
            session.info = info
            session.reconfigure(self.policy)

    async def drain(self, reason: str = "shutdown") -> None:
        """Stop accepting, end every open call, and wait for their ``call_ended``."""
        self.accepting = False
        for session in list(self.sessions.values()):
            self.end(session, reason)
        await self._all_finished.wait()

    def count_reject(self, source: str, reason: str) -> None:
        """Count a feed this daemon refused or closed (``source_rejects_total``)."""
        if self._metrics is not None:
            self._metrics.source_rejects_total.labels(source=source, reason=reason).inc()


class CallFeed:
    """Routes one connection's (or one RTP stream's, or one microphone's) source events into its
    call session: the one place call routing and the daemon's refusals live for every edge.

    ``CallStart`` opens the session in the registry; a ``Reject``, a full daemon and a call
    over ``max_call_seconds`` (ended here with reason ``limit``) come back as a
    :class:`Refusal` for the edge to act on; everything else goes to the session.
    """

    def __init__(self, kind: str, registry: CallRegistry, *, tag_logs: bool = True) -> None:
        self.kind = kind
        self.registry = registry
        self.tag_logs = tag_logs  # False where one task carries many calls (RTP)
        self.session: CallSession | None = None
        self._limited = False

    def route(self, events: list[SourceEvent]) -> Refusal | None:
        """Apply ``events``; a :class:`Refusal` when the feed must be ended."""
        for event in events:
            if isinstance(event, CallStart):
                # Each feed runs in its own task, so this tags every later log line of this
                # call (and only this call) with its id.
                if self.tag_logs:
                    structlog.contextvars.bind_contextvars(
                        call_id=event.call_id, source=event.source
                    )
                try:
                    self.session = self.registry.open(event)
                except CallRefused as exc:
                    self.registry.count_reject(event.source, exc.reason)
                    if isinstance(exc, CallIdInUse):
                        log.warning("feed_refused", feed=self.kind, reason=exc.reason)
                    return Refusal(exc.kind, str(exc))
                except Exception as exc:  # a bug: the registry has let go of the call already
                    self.registry.count_reject(event.source, "error")
                    log.error(
                        "call_open_failed", feed=self.kind, error=f"{type(exc).__name__}: {exc}"
                    )
                    return Refusal("error", "internal error: the call could not be opened")
            elif isinstance(event, Reject):
                self.registry.count_reject(
                    self.session.source if self.session else self.kind, event.label
                )
                log.warning("feed_rejected", feed=self.kind, reason=event.reason, kind=event.kind)
                return Refusal(event.kind, event.reason)
            elif self.session is not None:
                self.registry.handle(self.session, event)
        if self.session is not None and self.session.over_limit and not self._limited:
            self._limited = True
            self.end("limit")
            return Refusal("limit", "call length limit reached")
        return None

    @property
    def over(self) -> bool:
        """True once this feed's call has ended (or was never opened)."""
        s = self.session
        return s is None or s.finished or s.end_reason is not None

    def end(self, reason: str) -> None:
        """End this feed's call (the edge hung up, hit a limit...), if it is still open."""
        if self.session is not None and not self.session.finished:
            self.registry.end(self.session, reason)
