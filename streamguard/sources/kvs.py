"""Sans-I/O core for Amazon Connect call audio read from Kinesis Video Streams (``GetMedia``).

One :class:`KvsCallCore` per call (= per stream being read): the reader edge (kvs_reader.py)
feeds it the bytes of each GetMedia response, in any chunking, and routes the source events it
returns. What it reads (docs/sources.md, "Amazon Connect", says which facts are verified how):

* A stream of **fragments** (~1 s each), each a Matroska document: EBML header, Segment (often
  of unknown size) with Info (TimestampScale), Tracks, Tags and a Cluster of SimpleBlocks.
  Parsed by :class:`~streamguard.sources.mkv.MkvReader` (bounded, never raises).
* **Tracks** by name: ``AUDIO_FROM_CUSTOMER`` -> track ``inbound`` (the caller),
  ``AUDIO_TO_CUSTOMER`` -> ``outbound`` (what the caller hears: agent, prompts), and the older
  ``Track_audio/L16`` -> ``inbound``. Other tracks are ignored and counted; a fragment with
  none of these tracks is refused.
* **Audio**: mono signed 16-bit little-endian PCM. Amazon Connect labels these tracks with
  CodecID ``A_AAC`` although the payload is L16 (its MimeType tag says
  ``audio/L16;rate=8000;channels=1;``), so ``A_AAC`` is read as L16 little-endian, as AWS's own
  Connect consumer does. ``A_PCM/INT/LIT`` and ``A_PCM/INT/BIG`` are read as what they say.
  The rate is the track's SamplingFrequency (Matroska's default: 8000 Hz).
* **Tags** (names compared case-insensitively: ffmpeg writes them upper-case):
  ``AWS_KINESISVIDEO_FRAGMENT_NUMBER`` (the resume point: :attr:`last_fragment_number` is the
  last *complete* fragment), ``AWS_KINESISVIDEO_MILLIS_BEHIND_NOW`` (:attr:`millis_behind_now`,
  the lag behind live), ``AWS_KINESISVIDEO_PRODUCER_TIMESTAMP`` / ``_SERVER_TIMESTAMP``,
  ``AWS_KINESISVIDEO_ERROR_CODE`` / ``_ERROR_ID`` (:attr:`error_tag`), and ``ContactId``.

Time: block times are absolute (Cluster timestamp + block offset, times TimestampScale), so
both tracks share the call's clock: a track that starts later begins with a :class:`Gap`, a
hole in a track's blocks becomes a Gap (at most ``max_gap_seconds``), and audio already
emitted is dropped when it comes again, which is what makes resuming after a dropped
connection safe whether GetMedia repeats the last fragment or not.

Contacts: Connect reuses a stream for later contacts. With ``contact_id`` given, each fragment's
audio is held until its ``ContactId`` tag (Connect writes it after the fragment's Cluster) says
it is this contact's, and is released at once when it does; a fragment whose ContactId is
another contact's ends the call (``CallEnd("stop")``, nothing of it emitted). A fragment with no
ContactId tag is released when it completes. This costs at most one fragment (~1 s) of latency.

Ends: :meth:`close` (the edge's reason: ``idle`` when no fragment came for a while, ``stop``
when told to stop, ``closed``...). Bad input, never raised: ``CallEnd("error")`` +
:class:`Reject` with one reason (kind ``protocol`` for malformed Matroska or audio,
``unsupported`` for a codec, rate or channel count it cannot read: the two kinds every
core reports today).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from streamguard.audio.codecs import CodecError, decode
from streamguard.sources.base import (
    Audio,
    CallLifecycle,
    Gap,
    OneCallCore,
    ProtocolViolation,
    SourceEvent,
    rate_problem,
)
from streamguard.sources.mkv import (
    CLUSTER,
    EBML_HEADER,
    SEGMENT,
    SIMPLE_TAG,
    TRACK_ENTRY,
    TRACKS,
    Block,
    ElementEnd,
    ElementStart,
    Leaf,
    MkvEvent,
    MkvReader,
    ParseError,
)

__all__ = ["CODECS", "TRACK_NAMES", "KvsCallCore", "KvsStats"]

SOURCE: Final = "kvs"
#: KVS track name -> streamguard track.
TRACK_NAMES: Final = {
    "AUDIO_FROM_CUSTOMER": "inbound",
    "AUDIO_TO_CUSTOMER": "outbound",
    "Track_audio/L16": "inbound",  # older Connect streams (AWS's consumer still accepts it)
}
#: Matroska CodecID -> how the payload is read. A_AAC: Amazon Connect's label on L16.
CODECS: Final = {
    "A_AAC": "pcm_s16le",
    "A_PCM/INT/LIT": "pcm_s16le",
    "A_PCM/INT/BIG": "pcm_s16be",
}
_TIMESTAMP_SCALE: Final = 0x2AD7B1
_TIMESTAMP: Final = 0xE7
_TRACK_NUMBER: Final = 0xD7
_NAME: Final = 0x536E
_CODEC_ID: Final = 0x86
_SAMPLING_FREQUENCY: Final = 0xB5
_CHANNELS: Final = 0x9F
_BIT_DEPTH: Final = 0x6264
_TAG_NAME: Final = 0x45A3
_TAG_STRING: Final = 0x4487
_DEFAULT_SCALE_NS: Final = 1_000_000  # Matroska's default TimestampScale
_DEFAULT_RATE: Final = 8000.0  # Matroska's default SamplingFrequency (and Connect's rate)
_MAX_HELD_SECONDS: Final = 30.0
_MAX_NAME: Final = 64


@dataclass(slots=True)
class KvsStats:
    bytes: int = 0
    fragments: int = 0  # complete fragments
    blocks: int = 0  # blocks turned into audio
    responses: int = 1  # GetMedia responses read (reconnects + 1)
    duplicate_samples: int = 0  # audio already emitted, dropped (a resumed response repeats it)
    gaps: int = 0
    gap_samples: int = 0
    unknown_track_blocks: int = 0
    unknown_tracks: set[str] = field(default_factory=set)
    discarded_blocks: int = 0  # held audio of a cut or foreign fragment, dropped
    ignored_after_end: int = 0


@dataclass(slots=True)
class _TrackSpec:
    number: int | None = None
    name: str = ""
    codec: str = ""
    rate: float = _DEFAULT_RATE
    channels: int = 1
    bit_depth: int | None = None


@dataclass(slots=True)
class _Fragment:
    scale_ns: int = _DEFAULT_SCALE_NS
    tracks: dict[int, str] = field(default_factory=dict)  # track number -> our track name
    cluster_ticks: int | None = None
    number: str | None = None
    contact: str | None = None  # ContactId tag, once seen
    held: list[tuple[str, int, np.ndarray]] = field(default_factory=list)
    held_samples: int = 0


@dataclass(slots=True)
class _TrackClock:
    track: str
    codec: str
    rate: int
    encoding: str
    seen: int = 0  # samples emitted (audio + gaps) since the call's origin
    offset: int = 0  # samples of time skipped beyond the gap cap


def _int_tag(value: str) -> int | None:
    text = value.strip()
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 18 else None


class KvsCallCore(OneCallCore):
    """Protocol core for one Amazon Connect call read from a Kinesis video stream.

    ``call_id`` names the call (the contact id the Lambda sent); ``contact_id`` (usually the
    same) makes fragments of another contact end the call; ``metadata`` (e.g. the stream ARN)
    goes into ``CallStart``.
    """

    def __init__(
        self,
        *,
        call_id: str,
        contact_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        max_element_bytes: int = 1 << 20,
        max_gap_seconds: float = 10.0,
    ) -> None:
        self._call = CallLifecycle()
        self._call_id = call_id
        self.contact_id = contact_id
        self._metadata = dict(metadata or {})
        self._max_element_bytes = max_element_bytes
        self.max_gap_seconds = max_gap_seconds
        self._reader = MkvReader(max_element_bytes=max_element_bytes)
        self._fragment: _Fragment | None = None
        self._spec: _TrackSpec | None = None
        self._tag: list[str | None] = [None, None]
        self._clocks: dict[str, _TrackClock] = {}
        self._origin_ns: int | None = None
        self.last_fragment_number: str | None = None
        self.millis_behind_now: int | None = None
        self.producer_timestamp: str | None = None
        self.error_tag: tuple[str | None, str | None] | None = None
        self.stats = KvsStats()

    # ------------------------------------------------------------------ public API
    def receive_data(self, data: bytes | bytearray | memoryview) -> list[SourceEvent]:
        """Bytes of the current GetMedia response, in any chunking."""
        if self._call.finished:
            self.stats.ignored_after_end += 1
            return []
        self.stats.bytes += len(data)
        return self._route(self._reader.push(data))

    def end_of_response(self, *, clean: bool) -> list[SourceEvent]:
        """The current GetMedia response is over: ``clean`` when its body ended normally (the
        last fragment, if whole, completes), else it broke off (a partial fragment is
        discarded: the next response, from :attr:`last_fragment_number`, brings it again).
        The next bytes are read as a new response."""
        events: list[SourceEvent] = []
        if not self._call.finished and clean:
            tail = self._reader.close()
            if not any(isinstance(e, ParseError) for e in tail):
                events = self._route(tail)
        self._discard_fragment()
        self._reader = MkvReader(max_element_bytes=self._max_element_bytes)
        self.stats.responses += 1
        return events

    def close(self, reason: str = "closed") -> list[SourceEvent]:
        """The call is over (``idle``, ``stop``, ``closed``, ...): end its tracks and the call.
        Audio of a fragment still unconfirmed is discarded."""
        self._discard_fragment()
        return self._call.end(reason)

    @property
    def tracks(self) -> dict[str, int]:
        """Started tracks -> sample rate."""
        return dict(self._call.tracks)

    # ------------------------------------------------------------------ events from the reader
    def _route(self, mkv_events: list[MkvEvent]) -> list[SourceEvent]:
        events: list[SourceEvent] = []
        try:
            for ev in mkv_events:
                events += self._handle(ev)
                if self._call.finished:
                    break
        except ProtocolViolation as exc:
            self._discard_fragment()
            events += self._call.reject(exc.kind, exc.reason)
        return events

    def _handle(self, ev: MkvEvent) -> list[SourceEvent]:
        if isinstance(ev, ParseError):
            raise ProtocolViolation("protocol", f"bad Matroska from KVS: {ev.reason}")
        if isinstance(ev, Block):
            return self._block(ev)
        if isinstance(ev, Leaf):
            self._leaf(ev)
            return []
        if isinstance(ev, ElementStart):
            if ev.id == EBML_HEADER:
                return self._complete_fragment()
            if ev.id == SEGMENT:
                out = self._complete_fragment()
                self._fragment = _Fragment()
                return out
            if ev.id == TRACK_ENTRY:
                self._spec = _TrackSpec()
            elif ev.id == SIMPLE_TAG:
                self._tag = [None, None]
            elif ev.id == CLUSTER and self._fragment is not None:
                self._fragment.cluster_ticks = None
            return []
        assert isinstance(ev, ElementEnd)
        if ev.id == TRACK_ENTRY:
            self._track_entry()
        elif ev.id == TRACKS:
            return self._tracks_done()
        elif ev.id == SIMPLE_TAG:
            return self._simple_tag()
        elif ev.id == SEGMENT:
            return self._complete_fragment()
        return []

    def _leaf(self, leaf: Leaf) -> None:
        value = leaf.value
        spec, fragment = self._spec, self._fragment
        if leaf.id == _TAG_NAME and isinstance(value, str):
            self._tag[0] = value
        elif leaf.id == _TAG_STRING and isinstance(value, str):
            self._tag[1] = value
        elif fragment is not None and leaf.id == _TIMESTAMP_SCALE and isinstance(value, int):
            if not 1 <= value <= 10**9:
                raise ProtocolViolation("protocol", f"TimestampScale {value} out of range")
            fragment.scale_ns = value
        elif fragment is not None and leaf.id == _TIMESTAMP and isinstance(value, int):
            fragment.cluster_ticks = value
        elif spec is not None:
            if leaf.id == _TRACK_NUMBER and isinstance(value, int):
                spec.number = value
            elif leaf.id == _NAME and isinstance(value, str):
                spec.name = value[:_MAX_NAME]
            elif leaf.id == _CODEC_ID and isinstance(value, str):
                spec.codec = value[:_MAX_NAME]
            elif leaf.id == _SAMPLING_FREQUENCY and isinstance(value, float):
                spec.rate = value
            elif leaf.id == _CHANNELS and isinstance(value, int):
                spec.channels = value
            elif leaf.id == _BIT_DEPTH and isinstance(value, int):
                spec.bit_depth = value

    # ------------------------------------------------------------------ tracks
    def _track_entry(self) -> None:
        spec, fragment, self._spec = self._spec, self._fragment, None
        if spec is None or fragment is None or spec.number is None:
            return
        track = TRACK_NAMES.get(spec.name)
        if track is None:
            self.stats.unknown_tracks.add(spec.name or f"#{spec.number}")
            return
        encoding = CODECS.get(spec.codec)
        if encoding is None:
            raise ProtocolViolation(
                "unsupported",
                f"track {spec.name} has codec {spec.codec!r} "
                f"(accepted: {', '.join(CODECS)}, read as 16-bit PCM)",
            )
        if spec.channels != 1:
            raise ProtocolViolation(
                "unsupported", f"track {spec.name} has {spec.channels} channels (mono only)"
            )
        if spec.bit_depth not in (None, 16):
            raise ProtocolViolation(
                "unsupported", f"track {spec.name} has {spec.bit_depth}-bit samples (16 only)"
            )
        rate = spec.rate
        if not math.isfinite(rate) or not rate.is_integer():
            raise ProtocolViolation("unsupported", f"track {spec.name} has sample rate {rate!r}")
        if problem := rate_problem(int(rate)):
            raise ProtocolViolation("unsupported", f"track {spec.name}: {problem}")
        clock = self._clocks.get(track)
        if clock is not None and (clock.rate, clock.encoding) != (int(rate), encoding):
            raise ProtocolViolation(
                "unsupported", f"track {spec.name} changed format between fragments"
            )
        if track in fragment.tracks.values():
            raise ProtocolViolation("protocol", f"two {spec.name} tracks in one fragment")
        fragment.tracks[spec.number] = track
        if clock is None:
            self._clocks[track] = _TrackClock(track, spec.codec, int(rate), encoding)

    def _tracks_done(self) -> list[SourceEvent]:
        fragment = self._fragment
        if fragment is None:
            return []
        if not fragment.tracks:
            seen = ", ".join(sorted(self.stats.unknown_tracks)) or "none"
            raise ProtocolViolation(
                "protocol",
                f"no AUDIO_FROM_CUSTOMER or AUDIO_TO_CUSTOMER track in the fragment "
                f"(tracks: {seen})",
            )
        events: list[SourceEvent] = []
        if not self._call.started:
            codecs = {c.track: c.codec for c in self._clocks.values()}
            meta = {**self._metadata, "codecs": codecs}
            if self.contact_id:
                meta["contact_id"] = self.contact_id
            events += self._call.start_call(self._call_id, SOURCE, meta)
        return events

    # ------------------------------------------------------------------ tags
    def _simple_tag(self) -> list[SourceEvent]:
        name, value = self._tag
        self._tag = [None, None]
        if name is None or value is None:
            return []
        key = name.upper()
        fragment = self._fragment
        if key == "AWS_KINESISVIDEO_FRAGMENT_NUMBER" and fragment is not None:
            fragment.number = value.strip()[:64]
        elif key == "AWS_KINESISVIDEO_MILLIS_BEHIND_NOW":
            self.millis_behind_now = _int_tag(value)
        elif key == "AWS_KINESISVIDEO_PRODUCER_TIMESTAMP":
            self.producer_timestamp = value.strip()[:32]
        elif key in ("AWS_KINESISVIDEO_ERROR_CODE", "AWS_KINESISVIDEO_ERROR_ID"):
            code, error_id = self.error_tag or (None, None)
            if key.endswith("CODE"):
                code = value[:120]
            else:
                error_id = value[:16]
            self.error_tag = (code, error_id)
        elif key == "CONTACTID" and fragment is not None:
            fragment.contact = value.strip()
            if self.contact_id and fragment.contact != self.contact_id:
                self.stats.discarded_blocks += len(fragment.held)
                fragment.held.clear()
                return self._call.end("stop")
            return self._release(fragment)
        return []

    # ------------------------------------------------------------------ audio
    def _block(self, block: Block) -> list[SourceEvent]:
        fragment = self._fragment
        if fragment is None or not self._call.started:
            raise ProtocolViolation("protocol", "audio block before the fragment's Tracks")
        track = fragment.tracks.get(block.track)
        if track is None:
            self.stats.unknown_track_blocks += 1
            return []
        if fragment.cluster_ticks is None:
            raise ProtocolViolation("protocol", "audio block before its Cluster timestamp")
        clock = self._clocks[track]
        payload = b"".join(block.frames)
        try:
            samples = decode(clock.encoding, payload)
        except CodecError:
            raise ProtocolViolation(
                "protocol", f"{track} block of {len(payload)} bytes is not whole 16-bit samples"
            ) from None
        if not len(samples):
            return []
        start_ns = (fragment.cluster_ticks + block.timecode) * fragment.scale_ns
        if self.contact_id and fragment.contact is None:  # not confirmed yet: hold it
            fragment.held.append((track, start_ns, samples))
            fragment.held_samples += len(samples)
            if fragment.held_samples > _MAX_HELD_SECONDS * clock.rate * len(self._clocks):
                raise ProtocolViolation(
                    "protocol",
                    f"a fragment over {_MAX_HELD_SECONDS:g} s without its ContactId tag",
                )
            return []
        return self._emit(track, start_ns, samples, fragment.scale_ns)

    def _emit(
        self, track: str, start_ns: int, samples: np.ndarray, scale_ns: int
    ) -> list[SourceEvent]:
        clock = self._clocks[track]
        events: list[SourceEvent] = []
        if self._origin_ns is None:
            self._origin_ns = start_ns
        if track not in self._call.tracks:
            events += self._call.start_track(track, clock.rate)
        start = round((start_ns - self._origin_ns) * clock.rate / 1e9) - clock.offset
        # timestamps are rounded to ticks: closer than a tick (plus a sample) is contiguous
        slack = max(2, math.ceil(scale_ns * clock.rate / 1e9) + 1)
        self.stats.blocks += 1
        if start < clock.seen - slack:
            overlap = clock.seen - start
            if overlap >= len(samples):
                self.stats.duplicate_samples += len(samples)
                return events
            self.stats.duplicate_samples += overlap
            samples = samples[overlap:]
        elif start > clock.seen + slack:
            gap = start - clock.seen
            cap = int(self.max_gap_seconds * clock.rate)
            if gap > cap:
                clock.offset += gap - cap
                gap = cap
            events.append(Gap(track, gap))
            clock.seen += gap
            self.stats.gaps += 1
            self.stats.gap_samples += gap
        clock.seen += len(samples)
        events.append(Audio(track, samples))
        return events

    def _release(self, fragment: _Fragment) -> list[SourceEvent]:
        events: list[SourceEvent] = []
        held, fragment.held, fragment.held_samples = fragment.held, [], 0
        for track, start_ns, samples in held:
            events += self._emit(track, start_ns, samples, fragment.scale_ns)
        return events

    def _complete_fragment(self) -> list[SourceEvent]:
        fragment, self._fragment = self._fragment, None
        if fragment is None:
            return []
        self.stats.fragments += 1
        if fragment.number is not None:
            self.last_fragment_number = fragment.number
        return self._release(fragment)

    def _discard_fragment(self) -> None:
        if self._fragment is not None:
            self.stats.discarded_blocks += len(self._fragment.held)
        self._fragment = None
        self._spec = None
