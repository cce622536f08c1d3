"""Source events: what every feed's protocol core emits, whatever its wire format.

A protocol core (Twilio/Telnyx, /ingest, RTP, microphone) turns feed input into an ordered list of
these events. The asyncio edge that owns the socket routes them:

* :class:`CallStart` — a call began; create per-call state (``source`` is one of ``twilio``,
  ``telnyx``, ``native``, ``l16``, ``audiohook``, ``audiosocket``, ``rtp``, ``mic``, ``kvs``,
  ``acs``).
* :class:`TrackStart` — a track of that call began; create a ``TrackPipeline(sample_rate, ...)``.
* :class:`Audio` — float32 mono samples at the track's ``sample_rate``; push them to the pipeline.
* :class:`Gap` — audio that was lost (dropped packets, missing chunks): push ``n_samples`` of
  silence so that call time (samples seen) stays equal to wall time on the call.
* :class:`Dtmf` — a key press the feed reported. Informational; edges may ignore it.
* :class:`TrackEnd` — finish that track's pipeline (``finish()``).
* :class:`CallEnd` — the call is over (``reason``: ``stop`` = the feed said so, ``hangup`` = the
  PBX said so (AudioSocket), ``closed`` = the connection went away, ``idle`` = RTP went quiet,
  ``bye`` = an RTCP BYE, ``error`` = ended by a :class:`Reject`).
* :class:`Reject` — the input is unacceptable: the edge ends the connection. A core says what
  KIND of refusal it is (:data:`RefusalKind`: ``protocol``, a violation; ``unsupported``,
  understood but not supported; ``metadata``, call metadata over the bounds below) and one
  short ``reason``, never a transport's close code: the WebSocket edge maps the kind to its
  close code (:mod:`streamguard.sources.edges.websocket`), a TCP or UDP edge just drops the
  connection or the stream. A core that rejects mid-call has already emitted
  ``TrackEnd``/``CallEnd("error")`` just before it, so the edge never needs to clean up on its
  own.

Call metadata is data from strangers (any ``/ingest`` client, Twilio ``customParameters``, an
AudioHook ``customConfig``): it is stored in the event log, sent to every subscriber and webhook
and logged. :meth:`CallLifecycle.start_call` refuses a call whose metadata is nested deeper than
:data:`MAX_METADATA_DEPTH`, holds more than :data:`MAX_METADATA_KEYS` keys or serialises to more
than :data:`MAX_METADATA_BYTES`, or whose id is longer than :data:`MAX_CALL_ID_CHARS`
(:func:`call_start_problem`), so every core that starts calls through it bounds them the same way.

Invariants every core keeps: ``CallStart`` comes first and at most once; ``TrackStart`` precedes
any ``Audio``/``Gap`` of its track; every started track gets exactly one ``TrackEnd`` before the
single ``CallEnd``; nothing follows ``CallEnd`` or ``Reject``. Cores never raise on bad input.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeAlias

import numpy as np

__all__ = [
    "MAX_CALL_ID_CHARS",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_METADATA_KEYS",
    "MAX_SAMPLE_RATE",
    "MAX_TRACK_NAME_CHARS",
    "MIN_SAMPLE_RATE",
    "Audio",
    "CallEnd",
    "CallLifecycle",
    "CallShare",
    "CallStart",
    "Dtmf",
    "Gap",
    "OneCallCore",
    "ProtocolViolation",
    "RefusalKind",
    "Reject",
    "SourceEvent",
    "TrackEnd",
    "TrackStart",
    "call_start_problem",
    "is_text",
    "metadata_problem",
    "rate_problem",
    "sequence_problems",
]

#: Why a core refuses its input: ``protocol`` (bad JSON, missing fields, messages out of
#: order), ``unsupported`` (understood, not supported: an encoding, a rate, binary frames where
#: only text is expected), ``metadata`` (call metadata or id over the bounds below).
RefusalKind: TypeAlias = Literal["protocol", "unsupported", "metadata"]

#: Input sample rates the cores accept (any integer in between; soxr resamples them to 16 kHz).
#: 64 kHz is included because jambonz can send it.
MIN_SAMPLE_RATE: Final = 8000
MAX_SAMPLE_RATE: Final = 64000
#: Longest reason a refusal carries: what a WebSocket close frame can hold (125-byte payload
#: minus the code), the tightest of the transports.
MAX_CLOSE_REASON_BYTES: Final = 123

#: Bounds on a call's metadata (see the module docstring). Depth counts the metadata object
#: itself as level 1: ``{"customParameters": {"a": 1}}`` is 2 levels deep.
MAX_METADATA_DEPTH: Final = 8
#: Keys of every object in the metadata together.
MAX_METADATA_KEYS: Final = 128
#: The metadata as compact UTF-8 JSON.
MAX_METADATA_BYTES: Final = 8192
#: A call id (it is in every event, log line and subscriber filter).
MAX_CALL_ID_CHARS: Final = 256
#: A track name (the cores bound theirs to 64 already).
MAX_TRACK_NAME_CHARS: Final = 64


@dataclass(frozen=True, slots=True)
class CallShare:
    """Who else may carry tracks of a call: connections of the same provider ``account``
    carrying none of these ``tracks`` (Twilio opens one stream per track for one callSid)."""

    account: str
    tracks: frozenset[str]


@dataclass(frozen=True, slots=True)
class CallStart:
    """``share``: set by a core whose connection may be one of several carrying the call
    (each naming its tracks); None (the rule) means this connection is the whole call, and
    another live connection with the same ``call_id`` is refused (``CallRegistry.open``)."""

    call_id: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    share: CallShare | None = None


@dataclass(frozen=True, slots=True)
class TrackStart:
    track: str
    sample_rate: int


@dataclass(frozen=True, slots=True, eq=False)
class Audio:
    """Decoded mono samples of one track (float32, in [-1, 1), at the track's sample rate)."""

    track: str
    samples: np.ndarray


@dataclass(frozen=True, slots=True)
class Gap:
    """``n_samples`` (at the track's rate) of audio that never arrived; insert silence."""

    track: str
    n_samples: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    track: str
    digit: str


@dataclass(frozen=True, slots=True)
class TrackEnd:
    track: str


@dataclass(frozen=True, slots=True)
class CallEnd:
    reason: str


@dataclass(frozen=True, slots=True)
class Reject:
    """End the connection: ``kind`` what was wrong (:data:`RefusalKind`), ``reason`` one
    short line (at most :data:`MAX_CLOSE_REASON_BYTES`)."""

    kind: RefusalKind
    reason: str

    def __post_init__(self) -> None:
        # A WebSocket close frame carries at most 123 bytes of UTF-8 reason; longer ones fail.
        raw = self.reason.encode("utf-8")
        if len(raw) > MAX_CLOSE_REASON_BYTES:
            short = raw[: MAX_CLOSE_REASON_BYTES - 3].decode("utf-8", "ignore") + "..."
            object.__setattr__(self, "reason", short)

    @property
    def label(self) -> str:
        """What the daemon counts it as (``source_rejects_total{reason}``): ``metadata``, else
        ``protocol``."""
        return "metadata" if self.kind == "metadata" else "protocol"


SourceEvent = CallStart | TrackStart | Audio | Gap | Dtmf | TrackEnd | CallEnd | Reject


def rate_problem(rate: object) -> str | None:
    """Why ``rate`` is not an acceptable input sample rate, or None if it is."""
    if isinstance(rate, bool) or not isinstance(rate, int):
        return f"sample rate must be an integer, got {rate!r}"
    if not MIN_SAMPLE_RATE <= rate <= MAX_SAMPLE_RATE:
        return (
            f"sample rate {rate} Hz not supported (accepted: {MIN_SAMPLE_RATE}..{MAX_SAMPLE_RATE})"
        )
    return None


def metadata_problem(metadata: Any) -> str | None:
    """Why ``metadata`` is over the bounds (depth, keys, bytes), or None.

    Walks the structure without recursion and stops at the first bound crossed, so a value
    nested a thousand levels deep (it parses: ``json`` allows that) costs no more than the
    first few levels; only a structure within the depth and key bounds is serialised to be
    measured.
    """
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    keys = items = 0
    while stack:
        node, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            return f"metadata nested deeper than {MAX_METADATA_DEPTH} levels"
        if isinstance(node, dict):
            keys += len(node)
            if keys > MAX_METADATA_KEYS:
                return f"metadata has more than {MAX_METADATA_KEYS} keys"
            children: Any = node.values()
        else:
            children = node
        items += len(node)
        if items > MAX_METADATA_BYTES:  # every item is at least one byte of JSON
            return f"metadata larger than {MAX_METADATA_BYTES} bytes"
        for child in children:
            if isinstance(child, dict | list | tuple):
                stack.append((child, depth + 1))
    try:
        text = json.dumps(metadata, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError):
        return "metadata is not JSON"
    if not is_text(text):
        return "metadata is not valid UTF-8 text (lone surrogate escapes)"
    size = len(text.encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        return f"metadata larger than {MAX_METADATA_BYTES} bytes ({size})"
    return None


def is_text(value: str) -> bool:
    """True when ``value`` can be written as UTF-8. JSON lets a peer send lone surrogates
    (``"\\ud800"``); Python keeps them in a str, but no event holding one can be serialised."""
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def call_start_problem(call_id: str, metadata: dict[str, Any]) -> str | None:
    """Why a call with this id and metadata must not start, or None (see the module docs)."""
    if len(call_id) > MAX_CALL_ID_CHARS:
        return f"call id longer than {MAX_CALL_ID_CHARS} characters"
    if not is_text(call_id):
        return "call id is not valid UTF-8 text"
    return metadata_problem(metadata)


class ProtocolViolation(Exception):
    """Raised inside a core's parsing and turned into a :class:`Reject` at its public method,
    so parsing code can bail out from any depth while the core itself never raises."""

    def __init__(self, kind: RefusalKind, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason


class CallLifecycle:
    """Start/end bookkeeping one connection-per-call core needs, so every core keeps the
    invariants in the module docstring the same way (one CallStart, TrackEnd for each started
    track, one CallEnd, nothing after the end)."""

    def __init__(self) -> None:
        self.call_id: str | None = None
        self.source: str | None = None
        self.tracks: dict[str, int] = {}  # track name -> sample rate, in start order
        self.finished = False

    @property
    def started(self) -> bool:
        return self.call_id is not None

    def start_call(
        self,
        call_id: str,
        source: str,
        metadata: dict[str, Any],
        share: CallShare | None = None,
    ) -> list[SourceEvent]:
        """The call's :class:`CallStart`; raises :class:`ProtocolViolation` (kind ``metadata``)
        for an id or metadata over the bounds, before anything starts."""
        if problem := call_start_problem(call_id, metadata):
            raise ProtocolViolation("metadata", problem)
        self.call_id, self.source = call_id, source
        return [CallStart(call_id, source, metadata, share)]

    def start_track(self, track: str, sample_rate: int) -> list[SourceEvent]:
        """The track's :class:`TrackStart` ([] if it started already); raises
        :class:`ProtocolViolation` for a name that could not be written in an event."""
        if track in self.tracks:
            return []
        if not track or len(track) > MAX_TRACK_NAME_CHARS or not is_text(track):
            raise ProtocolViolation("protocol", "a track name must be short UTF-8 text")
        self.tracks[track] = sample_rate
        return [TrackStart(track, sample_rate)]

    def end(self, reason: str) -> list[SourceEvent]:
        """TrackEnd for every track + CallEnd(reason), once; [] if never started or already over."""
        if self.finished:
            return []
        self.finished = True
        if not self.started:
            return []
        events: list[SourceEvent] = [TrackEnd(track) for track in self.tracks]
        events.append(CallEnd(reason))
        return events

    def reject(self, kind: RefusalKind, reason: str) -> list[SourceEvent]:
        """End whatever started (reason ``error``), then Reject; [] if already over."""
        if self.finished:
            return []
        return [*self.end("error"), Reject(kind, reason)]


def sequence_problems(events: list[SourceEvent]) -> list[str]:
    """Check one call's event sequence against the invariants above; return what is wrong.

    Meant for tests of the cores and of the edges that route their events (an empty list means
    the sequence is valid; a sequence that has not ended yet is valid too).
    """
    problems: list[str] = []
    started = ended = rejected = False
    open_tracks: set[str] = set()
    seen_tracks: set[str] = set()
    for i, ev in enumerate(events):
        if rejected or (ended and not isinstance(ev, Reject)):  # Reject may follow CallEnd
            problems.append(f"#{i} {type(ev).__name__} after the end")
        if isinstance(ev, CallStart):
            if started:
                problems.append(f"#{i} second CallStart")
            started = True
        elif isinstance(ev, Reject):
            rejected = True
        elif not started:
            problems.append(f"#{i} {type(ev).__name__} before CallStart")
        elif isinstance(ev, TrackStart):
            if ev.track in seen_tracks:
                problems.append(f"#{i} track {ev.track!r} started twice")
            if ev.sample_rate <= 0:
                problems.append(f"#{i} TrackStart with rate {ev.sample_rate}")
            seen_tracks.add(ev.track)
            open_tracks.add(ev.track)
        elif isinstance(ev, Audio | Gap):
            if ev.track not in open_tracks:
                problems.append(f"#{i} {type(ev).__name__} on track {ev.track!r} not open")
            if isinstance(ev, Gap) and ev.n_samples <= 0:
                problems.append(f"#{i} Gap of {ev.n_samples} samples")
            if isinstance(ev, Audio):
                s = ev.samples
                if s.dtype != np.float32 or s.ndim != 1 or not len(s):
                    problems.append(f"#{i} Audio is not non-empty 1-D float32")
                elif not (np.isfinite(s).all() and s.min() >= -1.0 and s.max() < 1.0):
                    problems.append(f"#{i} Audio samples outside [-1, 1)")
        elif isinstance(ev, TrackEnd):
            if ev.track not in open_tracks:
                problems.append(f"#{i} TrackEnd for track {ev.track!r} not open")
            open_tracks.discard(ev.track)
        elif isinstance(ev, CallEnd):
            if open_tracks:
                problems.append(f"#{i} CallEnd with tracks still open: {sorted(open_tracks)}")
            ended = True
    return problems


class OneCallCore:
    """What the edges read off a one-call-per-connection core (``/twilio``, ``/ingest``):
    the call's id, its source and whether it is over. Subclasses keep a ``CallLifecycle`` in
    ``self._call``."""

    _call: CallLifecycle

    @property
    def call_id(self) -> str | None:
        return self._call.call_id

    @property
    def source(self) -> str | None:
        """The source name once the call has started (e.g. ``twilio``, ``telnyx``, ``l16``)."""
        return self._call.source

    @property
    def finished(self) -> bool:
        """True after stop, Reject or close(): the edge should close the connection."""
        return self._call.finished

    def data_to_send(self) -> list[str | bytes]:
        """Frames the core wants written back to the feed, oldest first (most feeds are
        one-way: none). The edge sends them before acting on ``finished`` or a Reject."""
        return []
