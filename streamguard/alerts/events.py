"""The one schema for every event streamguard publishes (README, "Events").

Every event is a frozen pydantic model with the common fields ``type``, ``seq``, ``ts``,
``call_id``, ``track``, ``source`` and ``model``, plus the fields of its type. Producers build
the typed model themselves (``Score(call_id=..., track=..., source=..., start=..., ...)``) and
hand it to :meth:`streamguard.alerts.bus.AlertBus.publish`, which stamps ``seq``, ``ts`` and
``model`` (:meth:`EventBase.stamped`). Events are serialised with :meth:`EventBase.to_json` and
read back with :func:`parse_event` (the ``watch`` client and tests). Keeping the schema here, and
nowhere else, is what lets the README document it once.

Building the model where the event is made means a bad field (a typo, a NaN probability, a
negative time) fails at its producer, in a unit test, rather than inside the publish path of a
running daemon. Models forbid unknown fields. Floats are rounded when the model is built
(probabilities to 4 decimals, seconds to milliseconds) so the JSON stays short and stable.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Self, TypeAlias

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from streamguard.policy.smoothing import AlertState
from streamguard.policy.verdict import Verdict

Source: TypeAlias = Literal[
    "twilio",
    "telnyx",
    "native",
    "l16",
    "rtp",
    "mic",
    "file",
    "audiohook",
    "audiosocket",
    "kvs",
    "acs",
]
"""Where a call's audio came from (README, "Events")."""

EventType: TypeAlias = Literal[
    "call_started",
    "score",
    "alert",
    "call_ended",
    "dropped",
    "label",
    "evidence_saved",
    "evidence_deleted",
    "model_changed",
]
DroppedReason: TypeAlias = Literal["slow", "retention"]
LabelValue: TypeAlias = Literal["fake", "real", "unsure"]
"""An analyst's verdict on a call or one of its tracks (``label`` events)."""
EvidenceDeletedReason: TypeAlias = Literal["request", "retention", "size"]
"""Why evidence audio was deleted: an operator asked (API/CLI), ``[evidence] retention_days``,
or ``[evidence] max_bytes`` (oldest first)."""
EndReason: TypeAlias = Literal[
    "stop", "hangup", "closed", "idle", "bye", "limit", "shutdown", "error", "crash"
]
"""Why a call ended (README "Events", ``call_ended``); a source with a new reason adds it here."""

EVENT_TYPES: frozenset[str] = frozenset(EventType.__args__)  # type: ignore[attr-defined]
SOURCES: frozenset[str] = frozenset(Source.__args__)  # type: ignore[attr-defined]
END_REASONS: frozenset[str] = frozenset(EndReason.__args__)  # type: ignore[attr-defined]
LABEL_VALUES: frozenset[str] = frozenset(LabelValue.__args__)  # type: ignore[attr-defined]

#: Longest analyst note a ``label`` event carries (characters): a sentence or two, never a
#: document; the events log, Redis and every webhook carry it.
MAX_LABEL_NOTE_CHARS = 1000
#: Longest ``who`` (a token's name, or "local").
MAX_WHO_CHARS = 128

PROB_DECIMALS = 4  # p_fake, smoothed, thresholds: 1e-4 is far below any model's resolution
TIME_DECIMALS = 3  # seconds: millisecond resolution (one audio sample is 62.5 us at 16 kHz)


class EventParseError(ValueError):
    """A line from the event stream is not a valid streamguard event."""


_TS_SECOND: list[Any] = [None, ""]  # the last whole second formatted, and its text


def format_ts(epoch_seconds: float) -> str:
    """Wall-clock time as ISO 8601 UTC with milliseconds and ``Z``: ``2025-01-31T12:00:00.123Z``.

    Every event calls it; the date-time part is formatted once per second (rounding as
    ``datetime.fromtimestamp`` does: to the microsecond, then truncated to milliseconds).
    """
    frac, whole = math.modf(epoch_seconds)
    micro = round(frac * 1_000_000)
    second = int(whole)
    if micro >= 1_000_000:
        second, micro = second + 1, micro - 1_000_000
    elif micro < 0:
        second, micro = second - 1, micro + 1_000_000
    cached = _TS_SECOND
    if cached[0] != second:
        text = datetime.fromtimestamp(second, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached[0], cached[1] = second, text
    return f"{cached[1]}.{micro // 1000:03d}Z"


def _round_prob(value: float) -> float:
    return round(float(value), PROB_DECIMALS)


def _round_time(value: float) -> float:
    return round(float(value), TIME_DECIMALS)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CallSummary(_Frozen):
    """What one track (or, combined, one call) looked like when it ended.

    ``verdict`` comes from :func:`streamguard.policy.verdict.policy_verdict`: the track's alert
    history under the alert policy, the rule the offline ``scan`` command replays
    (:func:`streamguard.policy.replay`), so a recorded call and the live call get the same
    answer.
    """

    duration: float = Field(ge=0, description="seconds of audio seen (call time)")
    speech_seconds: float = Field(ge=0, description="seconds the VAD judged to be speech")
    windows_scored: int = Field(ge=0, description="windows the model scored")
    windows_skipped: int = Field(ge=0, description="windows skipped for too little speech")
    windows_dropped: int = Field(
        ge=0, default=0, description="windows dropped unscored: the engine lagged or was full"
    )
    windows_failed: int = Field(
        ge=0, default=0, description="windows the model failed on (error or non-finite score)"
    )
    windows_not_scored: int = Field(
        ge=0, default=0, description="windows of a track [tracks] score leaves out: counted only"
    )
    windows_allowlisted: int = Field(
        ge=0, default=0, description="windows whose speaker is an enrolled allow-list voice"
    )
    max_smoothed: float | None = Field(description="highest smoothed score; null if none scored")
    mean_smoothed: float | None = Field(description="mean smoothed score; null if none scored")
    verdict: Verdict

    _round_t = field_validator("duration", "speech_seconds")(_round_time)

    @field_validator("max_smoothed", "mean_smoothed")
    @classmethod
    def _round_p(cls, value: float | None) -> float | None:
        return None if value is None else _round_prob(value)


def combine_summaries(tracks: dict[str, CallSummary]) -> CallSummary:
    """Fold per-track summaries into one call summary.

    The call is ``fake`` if any track is fake (one synthetic leg is the whole point), else
    ``real`` if any track is real, else ``inconclusive``. Durations take the longest track,
    counts and speech add up, ``mean_smoothed`` is weighted by windows scored.
    """
    if not tracks:
        return CallSummary(
            duration=0,
            speech_seconds=0,
            windows_scored=0,
            windows_skipped=0,
            windows_dropped=0,
            windows_failed=0,
            max_smoothed=None,
            mean_smoothed=None,
            verdict="inconclusive",
        )
    summaries = list(tracks.values())
    verdicts = {s.verdict for s in summaries}
    verdict: Verdict = (
        "fake" if "fake" in verdicts else "real" if "real" in verdicts else "inconclusive"
    )
    scored = [s for s in summaries if s.windows_scored and s.mean_smoothed is not None]
    n_scored = sum(s.windows_scored for s in scored)
    return CallSummary(
        duration=max(s.duration for s in summaries),
        speech_seconds=sum(s.speech_seconds for s in summaries),
        windows_scored=sum(s.windows_scored for s in summaries),
        windows_skipped=sum(s.windows_skipped for s in summaries),
        windows_dropped=sum(s.windows_dropped for s in summaries),
        windows_failed=sum(s.windows_failed for s in summaries),
        windows_not_scored=sum(s.windows_not_scored for s in summaries),
        windows_allowlisted=sum(s.windows_allowlisted for s in summaries),
        max_smoothed=max((s.max_smoothed for s in scored), default=None),  # type: ignore[type-var]
        mean_smoothed=(
            sum(s.mean_smoothed * s.windows_scored for s in scored) / n_scored  # type: ignore[operator]
            if n_scored
            else None
        ),
        verdict=verdict,
    )


class EventBase(_Frozen):
    """Fields every event carries.

    ``seq``, ``ts`` and ``model`` belong to the publisher: a producer leaves them at their
    defaults and :meth:`stamped` fills them in when the event is published.
    """

    type: str
    seq: int = Field(0, ge=0, description="assigned when published; a resumable cursor")
    ts: str = Field("", description="wall clock when published, ISO 8601 UTC with ms and Z")
    call_id: str | None = Field(description="the call; null on `dropped`")
    track: str | None = Field(description="the track; null on call-level events")
    source: Source | None = Field(description="feed kind; null on `dropped`")
    model: str = Field("", description="name of the detector model the daemon runs")

    @property
    def published(self) -> bool:
        """True once the publisher has stamped it (seqs start at 1)."""
        return self.seq > 0

    # The event's JSON, made once (see to_json). Private: not a field, not in equality.
    _json: str | None = PrivateAttr(default=None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EventBase):
            return NotImplemented
        return type(self) is type(other) and self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]  # metadata dicts make events unhashable anyway

    def stamped(self, *, seq: int, ts: str, model: str) -> Self:
        """A copy carrying the publisher's fields (the fields of the type are already valid)."""
        if seq < 1:
            raise ValueError(f"seq must be >= 1, got {seq}")
        return self.model_copy(update={"seq": seq, "ts": ts, "model": model})

    def unnumbered(self, *, ts: str, model: str) -> Self:
        """A copy with ``ts`` and ``model`` but ``seq`` still 0: what the publisher hands the
        event log, which assigns ``seq`` when it commits (:func:`with_seq`)."""
        return self.model_copy(update={"seq": 0, "ts": ts, "model": model})

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        copy = super().model_copy(update=update, deep=deep)
        copy._json = None  # a copy may differ: never carry the original's JSON over
        return copy

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        """Compact one-line JSON: the wire format of ``/alerts``, the log, Redis and webhooks.

        Made once per event and cached, so the log, every subscriber and every webhook send
        the very same text (and an event read back from the log is sent byte for byte as it
        was stored). The cache is private state of a frozen model: it never changes the event.
        """
        if self._json is None:
            # pydantic's own serialiser: compact, the same text json.dumps(to_dict(),
            # separators=(",", ":")) gives for ASCII, about 4x faster (non-ASCII stays UTF-8)
            self._json = self.model_dump_json()
        return self._json


class CallStarted(EventBase):
    """A call was accepted by a source; tracks start when their audio does."""

    type: Literal["call_started"] = "call_started"
    metadata: dict[str, Any] = Field(
        default_factory=dict,
        description="feed metadata (e.g. streamSid, callSid, customParameters, mediaFormat)",
    )
    sample_rate: int | None = Field(default=None, description="input rate in Hz, if declared")


class Score(EventBase):
    """One window of one track was scored."""

    type: Literal["score"] = "score"
    start: float = Field(ge=0, description="window start, call seconds")
    end: float = Field(ge=0, description="window end, call seconds")
    p_fake: float = Field(ge=0, le=1, description="model P(fake) for this window")
    smoothed: float = Field(ge=0, le=1, description="smoothed score after this window")
    allowlisted: str | None = Field(
        default=None,
        max_length=64,
        description="the enrolled allow-list voice this window's speaker matched; such a "
        "window never counts towards an alert",
    )

    _round_t = field_validator("start", "end")(_round_time)
    _round_p = field_validator("p_fake", "smoothed")(_round_prob)


class Alert(EventBase):
    """The track's alert state changed (hysteresis, see smoothing.py)."""

    type: Literal["alert"] = "alert"
    state: AlertState
    smoothed: float = Field(ge=0, le=1, description="smoothed score at the transition")
    threshold: float = Field(description="the threshold crossed: on- (raised) or off- (cleared)")
    start: float = Field(ge=0, description="start of the first window of the triggering run")
    end: float = Field(ge=0, description="end of the window that completed the run")

    _round_t = field_validator("start", "end")(_round_time)
    _round_p = field_validator("smoothed", "threshold")(_round_prob)


class CallEnded(EventBase):
    """The call ended; one per call (``track`` null) with a per-track breakdown."""

    type: Literal["call_ended"] = "call_ended"
    summary: CallSummary
    reason: EndReason = Field(description="why the call ended (README: call_ended reasons)")
    tracks: dict[str, CallSummary] = Field(default_factory=dict, description="per-track summary")


class Dropped(EventBase):
    """Told to one subscriber that fell behind: events it will never see.

    ``seq`` equals ``last_seq`` (the notice stands in for the lost range) so each subscriber's
    stream stays strictly increasing in ``seq``. To recover, resubscribe with
    ``since=first_seq - 1`` while the daemon's history still holds them.
    """

    type: Literal["dropped"] = "dropped"
    count: int = Field(ge=1, description="events lost by this subscriber (upper bound on a gap)")
    first_seq: int = Field(ge=0, description="seq of the first lost event")
    last_seq: int = Field(ge=0, description="seq of the last lost event")
    reason: DroppedReason = Field(
        "slow",
        description="slow: this subscriber fell behind (its queue overflowed); retention: the "
        "events asked for (?since=) are older than the log keeps, and last_seq + 1 is the "
        "oldest seq still available",
    )


class Label(EventBase):
    """An analyst's verdict on a call (``track`` null) or on one of its tracks.

    Stored in the log like every event, so labels replay with ``?since=``, reach the fleet and
    webhooks, and ``streamguard calibrate`` reads them back; the last label of a call (or
    track) wins. Built from a request by :func:`streamguard.labels.parse_label_request`.
    """

    type: Literal["label"] = "label"
    label: LabelValue = Field(description="fake, real or unsure")
    note: str | None = Field(
        default=None, max_length=MAX_LABEL_NOTE_CHARS, description="the analyst's remark"
    )
    who: str = Field(
        min_length=1, max_length=MAX_WHO_CHARS, description='the token\'s name, or "local"'
    )


class EvidenceSaved(EventBase):
    """A clip of a track's audio was written to the evidence store (``[evidence]``)."""

    type: Literal["evidence_saved"] = "evidence_saved"
    clip: str = Field(min_length=1, max_length=64, description="the clip's id")
    start: float = Field(ge=0, description="clip start, call seconds")
    end: float = Field(ge=0, description="clip end, call seconds")
    bytes: int = Field(ge=0, description="size of the WAV file")

    _round_t = field_validator("start", "end")(_round_time)


class EvidenceDeleted(EventBase):
    """Evidence clips of one call were deleted (``track`` null)."""

    type: Literal["evidence_deleted"] = "evidence_deleted"
    clips: list[str] = Field(description="ids of the clips deleted")
    bytes: int = Field(ge=0, description="bytes freed")
    reason: EvidenceDeletedReason


class ModelIdentity(_Frozen):
    """Which model: what ``model_changed`` names on each side."""

    name: str = Field(min_length=1)
    architecture: str = Field(min_length=1)
    sha256: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{64}$",
        description="sha256 of the weights file; null when the model has none (built in memory)",
    )


class ModelChanged(EventBase):
    """The daemon switched models between batches (``call_id``, ``track``, ``source`` null)."""

    type: Literal["model_changed"] = "model_changed"
    old: ModelIdentity
    new: ModelIdentity


Event: TypeAlias = Annotated[
    CallStarted
    | Score
    | Alert
    | CallEnded
    | Dropped
    | Label
    | EvidenceSaved
    | EvidenceDeleted
    | ModelChanged,
    Field(discriminator="type"),
]
EVENT_MODELS: dict[str, type[EventBase]] = {
    "call_started": CallStarted,
    "score": Score,
    "alert": Alert,
    "call_ended": CallEnded,
    "dropped": Dropped,
    "label": Label,
    "evidence_saved": EvidenceSaved,
    "evidence_deleted": EvidenceDeleted,
    "model_changed": ModelChanged,
}
_ADAPTER: TypeAdapter[Any] = TypeAdapter(Event)


def parse_event(data: str | bytes | dict[str, Any]) -> EventBase:
    """Parse one event (JSON text or a dict). Raises :class:`EventParseError` with one line.

    An event parsed from text keeps that text as its JSON (:meth:`EventBase.to_json`), so
    what the log or Redis stored is what a subscriber receives, byte for byte.
    """
    try:
        if isinstance(data, dict):
            return _ADAPTER.validate_python(data)
        event = _ADAPTER.validate_json(data)
        text = data.decode() if isinstance(data, bytes) else data
        event._json = text.strip()
        return event
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "event"
        raise EventParseError(f"invalid event: {where}: {first['msg']}") from None


def json_problem(event: EventBase) -> str | None:
    """Why ``event`` cannot be serialised (one line), or None. Its JSON is made (and kept, as
    :meth:`EventBase.to_json` keeps it) to find out; the event logs call it to set aside the
    one event they cannot hold rather than fail every event committed with it."""
    try:
        event.to_json()
    except Exception as exc:  # pydantic's serialiser: PydanticSerializationError, ValueError...
        return f"{type(exc).__name__}: {exc}"[:300]
    return None


# The JSON of an unnumbered event starts ``{"type":"<type>","seq":0,``: ``type`` is always the
# first field and its value a fixed name, so this is the first occurrence of ``"seq":0,``.
_SEQ_PLACEHOLDER = '"seq":0,'


def split_at_seq(event: EventBase) -> tuple[str, str]:
    """The JSON of an unnumbered event, split around its ``seq`` value.

    ``head + str(seq) + tail`` is the numbered event's JSON, exactly what :meth:`to_json` of
    ``event.stamped(seq=...)`` would give. The event log (a writer thread, or a Lua script in
    Redis) numbers events this way without serialising them again.
    """
    if event.seq != 0:
        raise ValueError(f"event is already numbered (seq {event.seq})")
    text = event.to_json()
    at = text.index(_SEQ_PLACEHOLDER) + len('"seq":')
    return text[:at], text[at + 1 :]


def with_seq(event: EventBase, seq: int, split: tuple[str, str] | None = None) -> EventBase:
    """The unnumbered ``event`` numbered ``seq``, its JSON spliced rather than re-made
    (``split``: its :func:`split_at_seq`, when the caller has it already)."""
    head, tail = split or split_at_seq(event)
    numbered = event.model_copy(update={"seq": seq})
    numbered._json = f"{head}{seq}{tail}"
    return numbered
