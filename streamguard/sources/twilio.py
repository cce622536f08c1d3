"""Sans-I/O core for Twilio Media Streams and Telnyx media streaming (JSON text frames).

Usage by the WebSocket edge (one ``MediaStreamProtocol`` per connection = one call)::

    core = MediaStreamProtocol()
    async for message in websocket:
        events = core.receive_text(message) if isinstance(message, str) else \\
                 core.receive_bytes(message)
        route(events)                      # Reject -> the edge closes (kind -> close code)
        if core.finished: break
    route(core.close())                    # connection gone: ends what is still open

Both dialects are detected from the messages themselves (Telnyx uses snake_case keys), so one
endpoint (``/twilio``) serves both; ``source`` on :class:`CallStart` says which one it was.

Twilio: ``connected`` -> ``start`` (``start.callSid`` is the call id; ``start.tracks`` starts
tracks ``inbound``/``outbound``) -> ``media`` (base64 8 kHz mu-law; ``media.timestamp`` = ms since
stream start, ``media.chunk`` counts per track) -> ``stop``. Numbers arrive as strings.

Telnyx: the same shape in snake_case (``sequence_number``, ``stream_id``,
``start.call_control_id``, ``start.media_format.{encoding,sample_rate,channels}`` with encodings
PCMU, PCMA and L16 — an RTP payload, so L16 is big-endian). Telnyx does not guarantee frame order,
so messages carrying ``sequence_number`` go through a small :class:`ReorderBuffer` (starting at
1, the ``start`` frame's number) and are handled in order; duplicates are dropped.

Gaps: when a chunk's timestamp is more than one chunk ahead of the samples already emitted on its
track, a :class:`Gap` of the missing samples (at most ``max_gap_seconds``) comes first, so track
time stays call time. Chunks whose ``chunk`` number is not above the last one on their track are
duplicates or late and are dropped.

Errors never raise: invalid JSON, a missing field, bad base64, media before ``start`` or an
unsupported format give ``Reject(kind, reason)`` (``protocol`` | ``unsupported``; after
``TrackEnd``/``CallEnd("error")`` for
a call already started). Unknown events, ``mark``, ``error`` and ``connected`` are counted and
ignored.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final

from streamguard.audio.codecs import CodecError, decode
from streamguard.sources.base import (
    Audio,
    CallLifecycle,
    CallShare,
    Dtmf,
    Gap,
    OneCallCore,
    ProtocolViolation,
    SourceEvent,
    rate_problem,
)
from streamguard.sources.reorder import ReorderBuffer, ReorderStats

__all__ = ["MediaStreamProtocol", "MediaStreamStats"]

_ENCODINGS: Final = {
    "audio/x-mulaw": "mulaw",
    "audio/x-alaw": "alaw",
    "pcmu": "mulaw",
    "pcma": "alaw",
    "l16": "pcm_s16be",
}
_TRACK_ALIASES: Final = {"inbound_track": "inbound", "outbound_track": "outbound"}
_MAX_TRACKS: Final = 4
_MAX_INT_DIGITS: Final = 18
_MAX_TRACK_NAME: Final = 64
_TWILIO_FMT: Final = ("encoding", "sampleRate", "channels")
_TELNYX_FMT: Final = ("encoding", "sample_rate", "channels")
_TWILIO_META: Final = ("accountSid", "streamSid", "customParameters", "tracks")
_TELNYX_META: Final = (
    "stream_id",
    "call_session_id",
    "from",
    "to",
    "custom_parameters",
    "tags",
    "client_state",
)


@dataclass(slots=True)
class MediaStreamStats:
    messages: int = 0
    media: int = 0  # media messages turned into Audio
    ignored: int = 0  # connected/mark/error/unknown events, input after the end
    duplicates: int = 0  # media whose chunk number was not above the track's last one
    gaps: int = 0
    gap_samples: int = 0
    reorder: ReorderStats = field(default_factory=ReorderStats)  # Telnyx sequence_number


@dataclass(slots=True)
class _Track:
    sample_rate: int
    samples_seen: int = 0
    last_chunk: int | None = None
    offset: int = 0  # samples of timestamp advance deliberately not filled (gap cap)


def _int(value: Any, what: str) -> int:
    """Numbers arrive as strings ("42") or ints; anything else is a protocol violation."""
    if isinstance(value, bool):
        raise ProtocolViolation("protocol", f"{what} is not an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _is_int_text(value):
        return int(value)
    raise ProtocolViolation("protocol", f"{what} is not an integer: {str(value)[:20]!r}")


def _is_int_text(text: str) -> bool:
    """``-?[0-9]{1,18}`` without a regex (this runs for three fields of every media frame)."""
    digits = text[1:] if text[:1] == "-" else text
    return 0 < len(digits) <= _MAX_INT_DIGITS and digits.isascii() and digits.isdigit()


def _obj(msg: dict[str, Any], key: str, what: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise ProtocolViolation("protocol", f"{what} message without a {key!r} object")
    return value


def _track_name(value: Any) -> str:
    if value is None:
        return "inbound"
    if not isinstance(value, str) or not value or len(value) > _MAX_TRACK_NAME:
        raise ProtocolViolation("protocol", "media.track must be a short non-empty string")
    return _TRACK_ALIASES.get(value, value)


class MediaStreamProtocol(OneCallCore):
    """Protocol core for one Twilio / Telnyx media-stream WebSocket connection.

    ``max_gap_seconds`` bounds one inserted :class:`Gap`; ``reorder_depth`` is how many Telnyx
    messages may be held waiting for a missing ``sequence_number``; ``timestamp_gaps=False``
    turns timestamp-based gap filling off.
    """

    def __init__(
        self,
        *,
        max_gap_seconds: float = 10.0,
        reorder_depth: int = 16,
        timestamp_gaps: bool = True,
    ) -> None:
        self.max_gap_seconds = max_gap_seconds
        self.timestamp_gaps = timestamp_gaps
        self.stats = MediaStreamStats()
        self._call = CallLifecycle()
        self._tracks: dict[str, _Track] = {}
        self._encoding = "mulaw"
        self._declared: frozenset[str] = frozenset()  # start.tracks, when it names them
        self._reorder: ReorderBuffer[dict[str, Any]] = ReorderBuffer(reorder_depth, next_key=1)
        self.stats.reorder = self._reorder.stats

    # ------------------------------------------------------------------ public API
    def receive_text(self, text: str) -> list[SourceEvent]:
        """Handle one text frame; return the events it causes (possibly none)."""
        if self._call.finished:
            self.stats.ignored += 1
            return []
        self.stats.messages += 1
        # Each handler validates before it changes state, so on a violation the events already
        # produced (e.g. a TrackStart) are still delivered ahead of the Reject.
        events: list[SourceEvent] = []
        try:
            msg = self._parse(text)
            if "sequence_number" in msg:  # Telnyx: ordered through the reorder buffer
                seq = _int(msg["sequence_number"], "sequence_number")
                released = [m for _, m in self._reorder.push(seq, msg)]
                if msg["event"] == "stop":  # nothing follows stop: release what is held
                    released += [m for _, m in self._reorder.flush()]
            else:
                released = [msg]
            for m in released:
                events += self._handle(m)
                if self._call.finished:
                    break
            return events
        except ProtocolViolation as exc:
            return events + self._call.reject(exc.kind, exc.reason)

    def receive_bytes(self, data: bytes) -> list[SourceEvent]:
        """Media streams are JSON text only; a binary frame is rejected."""
        if self._call.finished:
            return []
        return self._call.reject(
            "unsupported", "binary frames are not part of the media-stream protocol"
        )

    def close(self) -> list[SourceEvent]:
        """The connection closed: release held Telnyx messages, then end what is open."""
        if self._call.finished:
            return []
        events: list[SourceEvent] = []
        try:
            for _, m in self._reorder.flush():
                events += self._handle(m)
                if self._call.finished:
                    return events
        except ProtocolViolation as exc:
            return events + self._call.reject(exc.kind, exc.reason)
        return events + self._call.end("closed")

    # ------------------------------------------------------------------ internals
    def _parse(self, text: str) -> dict[str, Any]:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            raise ProtocolViolation("protocol", "message is not valid JSON") from None
        if not isinstance(msg, dict):
            raise ProtocolViolation("protocol", "message is not a JSON object")
        if not isinstance(msg.get("event"), str):
            raise ProtocolViolation("protocol", "message without an 'event' string")
        return msg

    def _handle(self, msg: dict[str, Any]) -> list[SourceEvent]:
        event = msg["event"]
        if event == "start":
            return self._start(msg)
        if event == "media":
            return self._media(msg)
        if event == "stop":
            if not self._call.started:
                raise ProtocolViolation("protocol", "stop before start")
            return self._call.end("stop")
        if event == "dtmf" and self._call.started:
            dtmf = msg.get("dtmf")
            if isinstance(dtmf, dict) and isinstance(dtmf.get("digit"), str):
                track = dtmf.get("track")
                name = _TRACK_ALIASES.get(track, track) if isinstance(track, str) else "inbound"
                return [Dtmf(name[:_MAX_TRACK_NAME], dtmf["digit"][:8])]
        self.stats.ignored += 1  # connected, mark, error, unknown or malformed dtmf
        return []

    def _start(self, msg: dict[str, Any]) -> list[SourceEvent]:
        if self._call.started:
            raise ProtocolViolation("protocol", "second start message on one stream")
        start = _obj(msg, "start", "start")
        if "callSid" in start:
            source, call_id, fmt_key, keys = "twilio", start["callSid"], "mediaFormat", _TWILIO_FMT
            meta = {k: start[k] for k in _TWILIO_META if k in start}
            meta.setdefault("streamSid", msg.get("streamSid"))
        elif "call_control_id" in start:
            source, call_id, fmt_key, keys = (
                "telnyx",
                start["call_control_id"],
                "media_format",
                _TELNYX_FMT,
            )
            meta = {k: start[k] for k in _TELNYX_META if k in start}
            meta.setdefault("stream_id", msg.get("stream_id"))
        else:
            raise ProtocolViolation(
                "protocol",
                "start without start.callSid (Twilio) or start.call_control_id (Telnyx)",
            )
        if not isinstance(call_id, str) or not call_id:
            raise ProtocolViolation("protocol", "call id in start must be a non-empty string")
        fmt = start.get(fmt_key)
        fmt = {} if fmt is None else fmt
        if not isinstance(fmt, dict):
            raise ProtocolViolation("protocol", f"start.{fmt_key} is not an object")
        enc_name, rate_v, chan_v = (fmt.get(k) for k in keys)
        # Absent fields mean the platforms' default: 8 kHz mono mu-law.
        encoding = _ENCODINGS.get(enc_name.lower()) if isinstance(enc_name, str) else None
        if enc_name is not None and encoding is None:
            raise ProtocolViolation(
                "unsupported",
                f"unsupported media encoding {str(enc_name)[:32]!r} (accepted: PCMU, PCMA, L16)",
            )
        rate = 8000 if rate_v is None else _int(rate_v, "sample rate")
        channels = 1 if chan_v is None else _int(chan_v, "channels")
        if problem := rate_problem(rate):
            raise ProtocolViolation("unsupported", problem)
        if channels != 1:
            raise ProtocolViolation(
                "unsupported", f"only mono media streams are supported, got {channels}"
            )
        tracks = start.get("tracks")
        names = (
            list(dict.fromkeys(_track_name(t) for t in tracks or ()))
            if isinstance(tracks, list)
            else []
        )
        if len(names) > _MAX_TRACKS:
            raise ProtocolViolation("protocol", f"more than {_MAX_TRACKS} tracks on one stream")
        self._encoding = encoding or "mulaw"
        self._rate = rate
        self._declared = frozenset(names)
        meta.update(encoding=self._encoding, sample_rate=rate)
        # A stream that names its tracks may be one of several carrying the call (Twilio:
        # <Stream track="inbound_track"> and another with "outbound_track", same callSid).
        account = start.get("accountSid") if source == "twilio" else None
        share = CallShare(f"{source}:{account or ''}", self._declared) if names else None
        events = self._call.start_call(call_id, source, meta, share)
        for name in names:
            events += self._track(name)
        return events

    def _track(self, name: str) -> list[SourceEvent]:
        if self._declared and name not in self._declared:
            raise ProtocolViolation("protocol", "media on a track the start message did not name")
        if name not in self._tracks:
            if len(self._tracks) >= _MAX_TRACKS:
                raise ProtocolViolation("protocol", f"more than {_MAX_TRACKS} tracks on one stream")
            self._tracks[name] = _Track(self._rate)
        return self._call.start_track(name, self._rate)

    def _media(self, msg: dict[str, Any]) -> list[SourceEvent]:
        if not self._call.started:
            raise ProtocolViolation("protocol", "media before start")
        media = _obj(msg, "media", "media")
        payload = media.get("payload")
        if not isinstance(payload, str):
            raise ProtocolViolation("protocol", "media without a base64 'payload' string")
        name = _track_name(media.get("track"))
        chunk = None if media.get("chunk") is None else _int(media["chunk"], "media.chunk")
        stamp = None if media.get("timestamp") is None else _int(media["timestamp"], "timestamp")
        try:
            raw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ProtocolViolation("protocol", "media payload is not valid base64") from None
        try:
            samples = decode(self._encoding, raw)
        except CodecError as exc:
            raise ProtocolViolation("protocol", str(exc)) from None
        events = self._track(name)
        track = self._tracks[name]
        if chunk is not None:
            if track.last_chunk is not None and chunk <= track.last_chunk:
                self.stats.duplicates += 1
                return events
            track.last_chunk = chunk
        if stamp is not None and self.timestamp_gaps:
            events += self._gap(name, track, stamp, len(samples))
        if len(samples):
            self.stats.media += 1
            track.samples_seen += len(samples)
            events.append(Audio(name, samples))
        return events

    def _gap(self, name: str, track: _Track, stamp_ms: int, frame: int) -> list[SourceEvent]:
        position = stamp_ms * track.sample_rate // 1000 - track.offset
        ahead = position - track.samples_seen
        if ahead <= max(frame, 1):
            return []
        limit = int(self.max_gap_seconds * track.sample_rate)
        if ahead > limit:  # resync: do not keep inserting gaps for a clock we cannot follow
            track.offset += ahead - limit
            ahead = limit
        if ahead <= 0:
            return []
        self.stats.gaps += 1
        self.stats.gap_samples += ahead
        track.samples_seen += ahead
        return [Gap(name, ahead)]
