"""Sans-I/O core for the ``/ingest`` WebSocket endpoint: native PCM and L16 fork protocols.

One ``IngestProtocol`` per connection (= one call). The FIRST TEXT frame decides the protocol:

* **native** (``source="native"``) — ``{"sample_rate": 16000, "encoding": "pcm_s16le",
  "channels": 1, "call_id": "optional", "tracks": ["optional", "names"], ...}``; ``encoding`` is
  one of ``pcm_s16le``, ``pcm_s16be``, ``mulaw``, ``alaw``, ``f32le``; channels 1..8, interleaved.
  Tracks are named ``"0"``, ``"1"``, ... (channel index) unless ``tracks`` names them.
* **Vonage** (``source="l16"``) — ``{"event": "websocket:connected",
  "content-type": "audio/l16;rate=16000", ...custom headers}``; mono, track ``"0"``.
* **FreeSWITCH mod_audio_fork / mod_audio_stream, jambonz** (``source="l16"``) — a JSON object
  with ``sampleRate`` (number or digit string) and optionally ``mixType`` (``mono`` | ``mixed`` |
  ``stereo``) or ``channels``. For mod_audio_fork put ``sampleRate`` (and ``mixType`` for stereo)
  in the metadata argument of ``uuid_audio_fork``. Stereo gives tracks ``"0"`` (caller, left)
  and ``"1"`` (callee, right).

All forks then send binary frames of signed 16-bit little-endian PCM; native sends its declared
encoding. Frames need not align with samples or channel frames: the remainder is carried over.
Any other keys of the first frame become ``CallStart.metadata``; ``call_id`` is the first of
``call_id``, ``callSid``, ``call_sid``, ``callId``, ``uuid``, ``call_uuid``, ``conversation_uuid``
that is a non-empty string, else a fresh UUID.

Later text frames: ``{"event": "stop"}`` ends the call (``CallEnd("stop")``); a Vonage
``websocket:dtmf`` frame gives :class:`Dtmf`; anything else (including invalid JSON) is counted in
``stats.ignored_text`` and ignored, because forks send advisory text we have no use for.

Rejects: a first frame that is not a JSON object or names no known protocol, missing/invalid
fields, or binary audio before it -> kind ``protocol``; an unsupported encoding, rate or channel
count -> ``unsupported`` (closed 1008 / 1003 by the WebSocket edge).
Connection closed without stop: the edge calls :meth:`close`, which returns ``TrackEnd`` for each
track + ``CallEnd("closed")``.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from streamguard.audio.codecs import ENCODINGS, StreamDecoder
from streamguard.sources.base import (
    Audio,
    CallLifecycle,
    Dtmf,
    OneCallCore,
    ProtocolViolation,
    SourceEvent,
    rate_problem,
)

__all__ = ["MAX_CHANNELS", "IngestProtocol", "IngestStats"]

MAX_CHANNELS: Final = 8
_CALL_ID_KEYS: Final = (
    "call_id",
    "callSid",
    "call_sid",
    "callId",
    "uuid",
    "call_uuid",
    "conversation_uuid",
)
_MIX_CHANNELS: Final = {"mono": 1, "mixed": 1, "stereo": 2}
_L16_TYPE: Final = re.compile(r"\s*audio/l16\s*(;.*)?$", re.IGNORECASE)
_RATE_PARAM: Final = re.compile(r";\s*rate\s*=\s*([0-9]{1,6})\s*(;|$)", re.IGNORECASE)
_DIGITS: Final = re.compile(r"[0-9]{1,9}")
_MAX_NAME: Final = 64


@dataclass(slots=True)
class IngestStats:
    frames: int = 0  # binary frames received
    bytes: int = 0  # binary bytes received
    ignored_text: int = 0  # later text frames that were not stop/dtmf
    ignored_after_end: int = 0
    dropped_bytes: int = 0  # partial frame left over at the end


def _number(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise ProtocolViolation("protocol", f"{what} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        return int(value)
    raise ProtocolViolation("protocol", f"{what} must be an integer, got {str(value)[:20]!r}")


class IngestProtocol(OneCallCore):
    """Protocol core for one ``/ingest`` connection (native or L16 fork).

    ``call_id_factory`` makes the call id when the metadata carries none (default: UUID4 hex).
    """

    def __init__(self, *, call_id_factory: Callable[[], str] | None = None) -> None:
        self._new_call_id = call_id_factory or (lambda: uuid.uuid4().hex)
        self._call = CallLifecycle()
        self._decoder: StreamDecoder | None = None
        self._names: list[str] = []
        self.stats = IngestStats()

    @property
    def sample_rate(self) -> int | None:
        return next(iter(self._call.tracks.values()), None)

    # ------------------------------------------------------------------ public API
    def receive_text(self, text: str) -> list[SourceEvent]:
        if self._call.finished:
            self.stats.ignored_after_end += 1
            return []
        if not self._call.started:
            try:
                return self._metadata(text)
            except ProtocolViolation as exc:
                return self._call.reject(exc.kind, exc.reason)
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            msg = None
        event = msg.get("event") if isinstance(msg, dict) else None
        if event == "stop":
            return self._end("stop")
        if event == "websocket:dtmf":
            digit = msg.get("digit")
            if isinstance(msg.get("dtmf"), dict):  # Vonage nests it: {"dtmf": {"digit": "1"}}
                digit = msg["dtmf"].get("digit", digit)
            if isinstance(digit, str):
                return [Dtmf(self._names[0], digit[:8])]
        self.stats.ignored_text += 1
        return []

    def receive_bytes(self, data: bytes | bytearray | memoryview) -> list[SourceEvent]:
        if self._call.finished:
            self.stats.ignored_after_end += 1
            return []
        if self._decoder is None:
            return self._call.reject(
                "protocol", "binary audio before the metadata text frame (send metadata first)"
            )
        self.stats.frames += 1
        self.stats.bytes += len(data)
        frames = self._decoder.push(data)
        if not len(frames):
            return []
        if frames.shape[1] == 1:
            return [Audio(self._names[0], frames[:, 0])]
        return [Audio(name, frames[:, i].copy()) for i, name in enumerate(self._names)]

    def close(self) -> list[SourceEvent]:
        """The connection closed without stop: end the call (``CallEnd("closed")``)."""
        return self._end("closed")

    # ------------------------------------------------------------------ internals
    def _end(self, reason: str) -> list[SourceEvent]:
        if self._decoder is not None:
            self.stats.dropped_bytes += self._decoder.pending_bytes
        return self._call.end(reason)

    def _metadata(self, text: str) -> list[SourceEvent]:
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError):
            msg = None
        if not isinstance(msg, dict):
            raise ProtocolViolation(
                "protocol", "first frame must be a JSON object describing the audio"
            )
        if msg.get("event") == "websocket:connected":
            source, encoding, channels, rate = "l16", "pcm_s16le", 1, self._vonage_rate(msg)
            names = ["0"]
            used = {"event", "content-type"}
        elif "encoding" in msg or "sample_rate" in msg:
            source = "native"
            encoding, rate, channels, names = self._native(msg)
            used = {"encoding", "sample_rate", "channels", "tracks"}
        elif "sampleRate" in msg:
            source, encoding = "l16", "pcm_s16le"
            rate = _number(msg["sampleRate"], "sampleRate")
            channels = self._fork_channels(msg)
            names = [str(i) for i in range(channels)]
            used = {"sampleRate"}
        else:
            raise ProtocolViolation(
                "protocol",
                "first frame names no known protocol: send native {sample_rate, encoding} "
                "or fork metadata with sampleRate",
            )
        if problem := rate_problem(rate):
            raise ProtocolViolation("unsupported", problem)
        call_id = (
            next(
                (
                    msg[k]
                    for k in _CALL_ID_KEYS
                    if isinstance(msg.get(k), str) and 0 < len(msg[k]) <= 256
                ),
                None,
            )
            or self._new_call_id()
        )
        metadata = {k: v for k, v in msg.items() if k not in used and k != "call_id"}
        metadata.update(encoding=encoding, sample_rate=rate, channels=channels)
        self._decoder = StreamDecoder(encoding, channels)
        self._names = names
        events = self._call.start_call(call_id, source, metadata)
        for name in names:
            events += self._call.start_track(name, rate)
        return events

    @staticmethod
    def _vonage_rate(msg: dict[str, Any]) -> int:
        ctype = msg.get("content-type")
        if not isinstance(ctype, str) or not _L16_TYPE.match(ctype):
            raise ProtocolViolation(
                "unsupported",
                f"unsupported content-type {str(ctype)[:40]!r} (expected audio/l16;rate=N)",
            )
        rate = _RATE_PARAM.search(ctype)
        if rate is None:
            raise ProtocolViolation("protocol", "content-type audio/l16 without ;rate=N")
        return int(rate.group(1))

    @staticmethod
    def _native(msg: dict[str, Any]) -> tuple[str, int, int, list[str]]:
        encoding = msg.get("encoding")
        if "sample_rate" not in msg or encoding is None:
            raise ProtocolViolation(
                "protocol", "native metadata needs both sample_rate and encoding"
            )
        if encoding not in ENCODINGS:
            raise ProtocolViolation(
                "unsupported",
                f"unsupported encoding {str(encoding)[:32]!r} (accepted: {', '.join(ENCODINGS)})",
            )
        rate = _number(msg["sample_rate"], "sample_rate")
        channels = _number(msg.get("channels", 1), "channels")
        if not 1 <= channels <= MAX_CHANNELS:
            raise ProtocolViolation(
                "unsupported", f"channels must be 1..{MAX_CHANNELS}, got {channels}"
            )
        tracks = msg.get("tracks")
        if tracks is None:
            return encoding, rate, channels, [str(i) for i in range(channels)]
        if (
            not isinstance(tracks, list)
            or len(tracks) != channels
            or not all(isinstance(t, str) and 0 < len(t) <= _MAX_NAME for t in tracks)
            or len(set(tracks)) != len(tracks)
        ):
            raise ProtocolViolation(
                "protocol", "tracks must list one unique short name per channel"
            )
        return encoding, rate, channels, list(tracks)

    @staticmethod
    def _fork_channels(msg: dict[str, Any]) -> int:
        if "channels" in msg:
            channels = _number(msg["channels"], "channels")
        else:
            mix = msg.get("mixType", "mono")
            if not isinstance(mix, str) or mix.lower() not in _MIX_CHANNELS:
                raise ProtocolViolation(
                    "unsupported",
                    f"unsupported mixType {str(mix)[:20]!r} (accepted: mono, mixed, stereo)",
                )
            channels = _MIX_CHANNELS[mix.lower()]
        if channels not in (1, 2):
            raise ProtocolViolation(
                "unsupported", f"L16 forks send 1 or 2 channels, got {channels}"
            )
        return channels
