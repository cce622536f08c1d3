"""Sans-I/O core for Asterisk AudioSocket (TCP; Asterisk connects to us, one call per connection).

Framing (docs.asterisk.org, "AudioSocket"): every message is a 3-byte header, a kind byte and a
16-bit **big-endian** payload length, then the payload. Kinds:

========  =======================================================================
``0x00``  hangup (no payload): the call is over              -> CallEnd("hangup")
``0x01``  the call's UUID, 16 bytes binary (always first)    -> CallStart(call_id = the UUID)
``0x03``  one DTMF digit, ASCII                              -> Dtmf
``0x10``  signed linear 16-bit **little-endian** mono, 8 kHz -> Audio (track ``"0"``)
``0x11``  ... 12 kHz; ``0x12`` 16 kHz; ``0x13`` 24 kHz; ``0x14`` 32 kHz; ``0x15`` 44.1 kHz;
          ``0x16`` 48 kHz; ``0x17`` 96 kHz; ``0x18`` 192 kHz: ``AST_AUDIOSOCKET_KIND_AUDIO_SLIN12``
          .. ``_SLIN192`` of include/asterisk/res_audiosocket.h, Asterisk 20.17, 21.12, 22.7,
          23.1 and later, sent when the channel's format is slin12..slin192 (16 kHz is 0x12,
          not 0x11). Rates above 64 kHz are refused.
``0xff``  error; payload = Asterisk's code (0x01 = the calling party hung up, 0x02 = frame
          forwarding error, 0x04 = memory error)
========  =======================================================================

:class:`AudioSocketParser` only frames bytes (``push(data) -> [Frame]``, raising
:class:`AudioSocketError` on a malformed stream); :class:`AudioSocketProtocol` turns frames into
source events. The track's rate comes from the first audio frame; a later frame of another rate,
a second UUID, audio before the UUID, an unknown kind or a malformed frame end the call
(``CallEnd("error")`` + ``Reject``) and the edge closes that connection only. An error kind with
code 0x01 ends the call with ``hangup``; other error codes with ``error``. End of stream without
a hangup gives ``CallEnd("closed")`` (via :meth:`AudioSocketProtocol.close`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final, NamedTuple

from streamguard.audio.codecs import StreamDecoder
from streamguard.sources.base import (
    Audio,
    CallLifecycle,
    Dtmf,
    OneCallCore,
    SourceEvent,
    rate_problem,
)

__all__ = [
    "AUDIO_KINDS",
    "KIND_DTMF",
    "KIND_ERROR",
    "KIND_HANGUP",
    "KIND_UUID",
    "AudioSocketError",
    "AudioSocketParser",
    "AudioSocketProtocol",
    "AudioSocketStats",
    "Frame",
    "encode_frame",
]

KIND_HANGUP: Final = 0x00
KIND_UUID: Final = 0x01
KIND_DTMF: Final = 0x03
KIND_ERROR: Final = 0xFF
#: Audio kinds and the sample rate each one carries (16-bit little-endian mono PCM).
AUDIO_KINDS: Final = {
    0x10: 8000,
    0x11: 12000,
    0x12: 16000,
    0x13: 24000,
    0x14: 32000,
    0x15: 44100,
    0x16: 48000,
    0x17: 96000,
    0x18: 192000,
}
KNOWN_KINDS: Final = frozenset({KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR, *AUDIO_KINDS})
#: Asterisk's error codes (payload of an 0xff message).
ERROR_CODES: Final = {
    0x01: "calling party hung up",
    0x02: "frame forwarding error",
    0x04: "memory error",
}
TRACK: Final = "0"
HEADER_BYTES: Final = 3


class AudioSocketError(ValueError):
    """The byte stream is not valid AudioSocket framing. ``frames`` holds the whole frames
    that came before the bad one (they are as valid as ever)."""

    def __init__(self, message: str, frames: list[Frame] | None = None) -> None:
        super().__init__(message)
        self.frames = frames or []


class Frame(NamedTuple):
    kind: int
    payload: bytes


def encode_frame(kind: int, payload: bytes = b"") -> bytes:
    """One message on the wire (used by tests and clients)."""
    if not 0 <= kind <= 0xFF or len(payload) > 0xFFFF:
        raise AudioSocketError("kind must be a byte and payload at most 65535 bytes")
    return bytes([kind]) + len(payload).to_bytes(2, "big") + payload


class AudioSocketParser:
    """Splits a TCP byte stream into frames; bytes of an unfinished frame wait for more."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    @property
    def pending_bytes(self) -> int:
        return len(self._buffer)

    def push(self, data: bytes | bytearray | memoryview) -> list[Frame]:
        """Frames completed by ``data``; AudioSocketError on a frame no sender would write."""
        self._buffer += data
        frames: list[Frame] = []
        offset = 0
        while len(self._buffer) - offset >= HEADER_BYTES:
            kind = self._buffer[offset]
            length = int.from_bytes(self._buffer[offset + 1 : offset + 3], "big")
            try:
                _check_header(kind, length)
            except AudioSocketError as exc:
                del self._buffer[:]
                raise AudioSocketError(str(exc), frames) from None
            end = offset + HEADER_BYTES + length
            if len(self._buffer) < end:
                break
            frames.append(Frame(kind, bytes(self._buffer[offset + HEADER_BYTES : end])))
            offset = end
        del self._buffer[:offset]
        return frames


def _check_header(kind: int, length: int) -> None:
    if kind not in KNOWN_KINDS:
        raise AudioSocketError(f"unknown message kind 0x{kind:02x}")
    if kind == KIND_UUID and length != 16:
        raise AudioSocketError(f"UUID message of {length} bytes (expected 16)")
    if kind == KIND_DTMF and length != 1:
        raise AudioSocketError(f"DTMF message of {length} bytes (expected 1)")
    if kind == KIND_HANGUP and length:
        raise AudioSocketError("hangup message with a payload")
    if kind in AUDIO_KINDS and length % 2:
        raise AudioSocketError(f"audio message of {length} bytes (16-bit samples: even)")


@dataclass(slots=True)
class AudioSocketStats:
    frames: int = 0
    audio_bytes: int = 0
    dtmf: int = 0
    error_code: int | None = None  # the code of an 0xff message, if one came
    ignored_after_end: int = 0


class AudioSocketProtocol(OneCallCore):
    """Protocol core for one AudioSocket TCP connection. ``remote`` (``host:port``) goes into
    the call's metadata."""

    def __init__(self, *, remote: str | None = None) -> None:
        self._call = CallLifecycle()
        self._parser = AudioSocketParser()
        self._decoder = StreamDecoder("pcm_s16le")
        self._rate: int | None = None
        self.remote = remote
        self.stats = AudioSocketStats()

    @property
    def sample_rate(self) -> int | None:
        """The call's rate, from its first audio frame's kind (also in its ``TrackStart``)."""
        return self._rate

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[SourceEvent]:
        """Bytes from the socket, in any chunking."""
        if self._call.finished:
            self.stats.ignored_after_end += 1
            return []
        events: list[SourceEvent] = []
        error: AudioSocketError | None = None
        try:
            frames = self._parser.push(data)
        except AudioSocketError as exc:
            frames, error = exc.frames, exc
        for frame in frames:
            events += self._frame(frame)
            if self._call.finished:
                return events
        if error is not None:
            events += self._call.reject("protocol", str(error))
        return events

    def close(self) -> list[SourceEvent]:
        """The connection closed: end the call (``closed``)."""
        return self._call.end("closed")

    # ------------------------------------------------------------------ internals
    def _frame(self, frame: Frame) -> list[SourceEvent]:
        self.stats.frames += 1
        kind, payload = frame
        if kind == KIND_UUID:
            if self._call.started:
                return self._call.reject("protocol", "second UUID message on one connection")
            call_id = str(uuid.UUID(bytes=payload))
            metadata = {"uuid": call_id, "encoding": "pcm_s16le"}
            if self.remote:
                metadata["remote"] = self.remote
            return self._call.start_call(call_id, "audiosocket", metadata)
        if not self._call.started:
            return self._call.reject("protocol", f"message kind 0x{kind:02x} before the UUID")
        if kind == KIND_HANGUP:
            return self._call.end("hangup")
        if kind == KIND_ERROR:
            code = payload[0] if payload else None
            self.stats.error_code = code
            if code == 0x01:
                return self._call.end("hangup")
            what = ERROR_CODES.get(code, "error") if code is not None else "error"
            return self._call.reject("protocol", f"Asterisk reported an error: {what}")
        if kind == KIND_DTMF:
            self.stats.dtmf += 1
            return [Dtmf(TRACK, payload.decode("ascii", "replace"))]
        return self._audio(AUDIO_KINDS[kind], payload)

    def _audio(self, rate: int, payload: bytes) -> list[SourceEvent]:
        events: list[SourceEvent] = []
        if self._rate is None:
            if problem := rate_problem(rate):
                return self._call.reject("unsupported", problem)
            self._rate = rate
            events += self._call.start_track(TRACK, rate)
        elif rate != self._rate:
            return self._call.reject(
                "unsupported", f"sample rate changed from {self._rate} to {rate} Hz mid-call"
            )
        self.stats.audio_bytes += len(payload)
        samples = self._decoder.push(payload)[:, 0]
        if len(samples):
            events.append(Audio(TRACK, samples))
        return events
