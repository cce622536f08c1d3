"""Sans-I/O core for Azure Communication Services (ACS) call-automation media streaming.

ACS connects to a WebSocket of ours (``MediaStreamingOptions`` with transport WebSocket,
content Audio) and sends JSON messages, one per frame (text frames; the SDKs' parsers also
accept the same UTF-8 JSON in binary frames, so :meth:`receive_bytes` does too). Shapes, from
Microsoft's audio-streaming quickstart and the Call Automation SDKs' streaming models
(docs/sources.md, "Azure Communication Services", says which were read)::

    {"kind": "AudioMetadata",
     "audioMetadata": {"subscriptionId": "89e8...", "encoding": "PCM", "sampleRate": 16000,
                       "channels": 1, "length": 640}}
    {"kind": "AudioData",
     "audioData": {"timestamp": "2024-11-15T19:16:12.925Z", "participantRawID": "8:acs:...",
                   "data": "<base64 16-bit little-endian PCM>", "silent": false}}
    {"kind": "DtmfData", "dtmfData": {"data": "5", ...}}

* ``AudioMetadata`` comes first and starts the call: ``call_id`` is the one the edge passes (the
  ``x-ms-call-connection-id`` of the handshake, say) or else ``subscriptionId``; source ``acs``.
  ``encoding`` must be PCM, ``channels`` 1; ACS sends 16 or 24 kHz (any 8-64 kHz is read).
* **Mixed** audio (``MediaStreamingAudioChannel.Mixed``) has no participant: track ``"0"``.
  **Unmixed** audio carries ``participantRawID`` (up to four dominant speakers at a time): one
  track per participant, named ``p1``, ``p2``... in order of appearance, because raw IDs of
  phone participants are phone numbers (``4:+1555...``); :attr:`AcsMediaCore.participants`
  maps raw ID -> track for the edge, and ``raw_id_tracks=True`` names tracks by raw ID.
* ``silent`` frames are audio too (zeros: the time passed); one with no data lasts
  ``length`` bytes of the metadata.
* Time: frames carry their capture ``timestamp``. A participant's track that falls silent in
  unmixed mode (not a dominant speaker) gets a :class:`Gap` when it speaks again, so every
  track keeps the call's clock; a track starting later starts with a Gap (at most
  ``max_gap_seconds`` each).
* ``DtmfData`` gives :class:`Dtmf`; transcription messages and unknown kinds are counted and
  ignored. ACS sends no stop message: the call ends when the WebSocket closes (the call hung
  up, or media streaming was stopped): :meth:`close` gives ``CallEnd("closed")``.

Bad input never raises: invalid JSON, audio before its metadata, bad base64, a frame that is
not whole samples -> ``Reject("protocol")``; another encoding, channel count or rate, or more
than ``max_tracks`` participants -> ``Reject("unsupported")`` (after ``CallEnd("error")``
if the call had started).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np

from streamguard.audio.codecs import CodecError, decode
from streamguard.sources.base import (
    Audio,
    CallLifecycle,
    Dtmf,
    Gap,
    OneCallCore,
    ProtocolViolation,
    SourceEvent,
    rate_problem,
)

__all__ = ["AcsMediaCore", "AcsStats"]

SOURCE: Final = "acs"
MIXED_TRACK: Final = "0"
_IGNORED_KINDS: Final = frozenset({"TranscriptionMetadata", "TranscriptionData", "DtmfMetadata"})
_MAX_ID: Final = 256


@dataclass(slots=True)
class AcsStats:
    messages: int = 0
    frames: int = 0
    silent_frames: int = 0
    ignored: int = 0  # transcription, unknown kinds, input after the end
    gaps: int = 0
    gap_samples: int = 0


@dataclass(slots=True)
class _Track:
    seen: int = 0  # samples emitted (audio + gaps) since the call's first frame
    offset: int = 0  # samples of timestamp advance not filled (gap cap)


def _obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolViolation("protocol", f"{msg.get('kind')} message without {key!r}")
    return value


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolViolation("protocol", f"{what} must be an integer")
    return value


class AcsMediaCore(OneCallCore):
    """Protocol core for one ACS media-streaming WebSocket connection (= one call)."""

    def __init__(
        self,
        *,
        call_id: str | None = None,
        metadata: dict[str, Any] | None = None,
        raw_id_tracks: bool = False,
        max_tracks: int = 8,
        max_gap_seconds: float = 10.0,
    ) -> None:
        self._call = CallLifecycle()
        self._call_id = call_id
        self._metadata = dict(metadata or {})
        self.raw_id_tracks = raw_id_tracks
        self.max_tracks = max_tracks
        self.max_gap_seconds = max_gap_seconds
        self.participants: dict[str, str] = {}  # participantRawID -> track
        self._rate = 0
        self._frame_bytes = 0
        self._origin: datetime | None = None
        self._tracks: dict[str, _Track] = {}
        self.stats = AcsStats()

    @property
    def sample_rate(self) -> int | None:
        return self._rate or None

    # ------------------------------------------------------------------ public API
    def receive_text(self, text: str) -> list[SourceEvent]:
        if self._call.finished:
            self.stats.ignored += 1
            return []
        self.stats.messages += 1
        try:
            return self._message(text)
        except ProtocolViolation as exc:
            return self._call.reject(exc.kind, exc.reason)

    def receive_bytes(self, data: bytes | bytearray | memoryview) -> list[SourceEvent]:
        """The same JSON as UTF-8 in a binary frame (the SDK parsers accept both)."""
        try:
            text = bytes(data).decode("utf-8")
        except UnicodeDecodeError:
            if self._call.finished:
                return []
            return self._call.reject("protocol", "binary frame that is not UTF-8 JSON")
        return self.receive_text(text)

    def close(self) -> list[SourceEvent]:
        """The WebSocket closed (ACS's only end of a stream)."""
        return self._call.end("closed")

    # ------------------------------------------------------------------ messages
    def _message(self, text: str) -> list[SourceEvent]:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise ProtocolViolation("protocol", "message is not JSON") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("kind"), str):
            raise ProtocolViolation("protocol", "message without a string 'kind'")
        kind = msg["kind"]
        if kind == "AudioMetadata":
            return self._audio_metadata(_obj(msg, "audioMetadata"))
        if kind == "AudioData":
            return self._audio_data(_obj(msg, "audioData"))
        if kind == "DtmfData":
            return self._dtmf(_obj(msg, "dtmfData"))
        self.stats.ignored += 1  # transcription and kinds added later
        return []

    def _audio_metadata(self, meta: dict[str, Any]) -> list[SourceEvent]:
        if self._call.started:
            raise ProtocolViolation("protocol", "a second AudioMetadata on one connection")
        encoding = meta.get("encoding")
        if not isinstance(encoding, str) or encoding.upper() != "PCM":
            raise ProtocolViolation(
                "unsupported", f"unsupported encoding {str(encoding)[:20]!r} (accepted: PCM)"
            )
        rate = _int(meta.get("sampleRate"), "audioMetadata.sampleRate")
        if problem := rate_problem(rate):
            raise ProtocolViolation("unsupported", problem)
        channels = _int(meta.get("channels", 1), "audioMetadata.channels")
        if channels != 1:
            raise ProtocolViolation(
                "unsupported", f"{channels} channels (ACS streams mono; 1 accepted)"
            )
        length = meta.get("length")
        self._frame_bytes = length if isinstance(length, int) and 0 < length <= 1 << 16 else 0
        self._rate = rate
        subscription = meta.get("subscriptionId")
        if not isinstance(subscription, str) or not 0 < len(subscription) <= _MAX_ID:
            subscription = None
        call_id = self._call_id or subscription
        if not call_id:
            raise ProtocolViolation("protocol", "AudioMetadata without a subscriptionId")
        metadata = {
            **self._metadata,
            "subscriptionId": subscription,
            "encoding": "pcm_s16le",
            "sample_rate": rate,
            "channels": 1,
        }
        return self._call.start_call(call_id, SOURCE, metadata)

    def _track_of(self, raw_id: Any) -> str:
        if raw_id is None or raw_id == "":
            return MIXED_TRACK
        if not isinstance(raw_id, str) or len(raw_id) > _MAX_ID:
            raise ProtocolViolation("protocol", "participantRawID must be a short string")
        track = self.participants.get(raw_id)
        if track is None:
            if len(self.participants) >= self.max_tracks:
                raise ProtocolViolation("unsupported", f"more than {self.max_tracks} participants")
            track = raw_id if self.raw_id_tracks else f"p{len(self.participants) + 1}"
            self.participants[raw_id] = track
        return track

    def _audio_data(self, frame: dict[str, Any]) -> list[SourceEvent]:
        if not self._call.started:
            raise ProtocolViolation("protocol", "AudioData before AudioMetadata")
        track = self._track_of(frame.get("participantRawID"))
        data = frame.get("data", "")
        if not isinstance(data, str):
            raise ProtocolViolation("protocol", "audioData.data must be a base64 string")
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolViolation("protocol", "audioData.data is not valid base64") from None
        silent = frame.get("silent") is True
        try:
            samples = decode("pcm_s16le", payload)
        except CodecError:
            raise ProtocolViolation(
                "protocol", f"audio frame of {len(payload)} bytes is not whole 16-bit samples"
            ) from None
        self.stats.frames += 1
        if silent:
            self.stats.silent_frames += 1
            n = len(samples) or self._frame_bytes // 2
            samples = np.zeros(n, np.float32)
        when = self._timestamp(frame.get("timestamp"))  # checked before anything starts
        events = self._call.start_track(track, self._rate)
        self._tracks.setdefault(track, _Track())
        events += self._clock(track, when)
        if len(samples):
            self._tracks[track].seen += len(samples)
            events.append(Audio(track, samples))
        return events

    @staticmethod
    def _timestamp(stamp: Any) -> datetime | None:
        if not isinstance(stamp, str):
            return None
        try:
            when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        except ValueError:
            raise ProtocolViolation("protocol", "audioData.timestamp is not ISO 8601") from None
        return when if when.tzinfo is not None else None

    def _clock(self, track: str, when: datetime | None) -> list[SourceEvent]:
        """A Gap when this frame's timestamp is more than one frame past the track's audio."""
        if when is None:
            return []
        if self._origin is None:
            self._origin = when
        clock = self._tracks[track]
        due = round((when - self._origin).total_seconds() * self._rate) - clock.offset
        frame = max(self._frame_bytes // 2, self._rate // 50)  # one 20 ms frame
        gap = due - clock.seen
        if gap <= frame:
            return []
        cap = int(self.max_gap_seconds * self._rate)
        if gap > cap:
            clock.offset += gap - cap
            gap = cap
        clock.seen += gap
        self.stats.gaps += 1
        self.stats.gap_samples += gap
        return [Gap(track, gap)]

    def _dtmf(self, dtmf: dict[str, Any]) -> list[SourceEvent]:
        if not self._call.started:
            raise ProtocolViolation("protocol", "DtmfData before AudioMetadata")
        digit = dtmf.get("data")
        if not isinstance(digit, str) or not digit:
            raise ProtocolViolation("protocol", "dtmfData.data must be a string")
        return [Dtmf(self._track_of(dtmf.get("participantRawID")), digit[:8])]
