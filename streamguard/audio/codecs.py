"""Wire encodings of telephone audio <-> float32 samples in [-1, 1).

Every feed streamguard accepts carries one of five encodings:

============  =============================================  ==============
name          what it is                                     bytes/sample
============  =============================================  ==============
``mulaw``     G.711 mu-law (PCMU; Twilio, RTP PT 0)          1
``alaw``      G.711 A-law (PCMA; RTP PT 8)                   1
``pcm_s16le`` signed 16-bit little-endian (WebSocket forks)  2
``pcm_s16be`` signed 16-bit big-endian (RTP L16, RFC 3551)   2
``f32le``     IEEE float32 little-endian                     4
============  =============================================  ==============

G.711 is decoded with 256-entry tables and encoded with a vectorised version of the reference
segment search. Both are computed from the ITU-T G.711 formulas (as written in the classic Sun
reference code that CPython's ``audioop`` also uses), so nothing here depends on ``audioop``,
which Python 3.13 removed; the unit tests compare every code against ``audioop`` where it exists.
(The ``(x - 128) << 8`` shortcut seen in public code is wrong: G.711 is logarithmic.)

Scaling: 16-bit PCM ``v`` becomes ``v / 32768``, so full scale is [-1, 1 - 2**-15]. ``f32le`` is
clipped into that same range and NaN/inf become 0, because feed bytes are untrusted and one NaN
would poison a whole model batch.

Partial samples: :func:`decode` is stateless and strict — a payload whose length is not a whole
number of samples raises :class:`CodecError` (a single packet or message is supposed to carry whole
samples; RTP and Telnyx drop such a packet). Streams whose frames may split a sample (raw binary
WebSocket feeds) use :class:`StreamDecoder`, which carries the remainder over to the next push.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from streamguard.errors import AudioError

__all__ = [
    "ENCODINGS",
    "CodecError",
    "StreamDecoder",
    "alaw_decode",
    "alaw_encode",
    "bytes_per_sample",
    "decode",
    "encode",
    "float_to_int16",
    "mulaw_decode",
    "mulaw_encode",
]

ENCODINGS: Final = ("mulaw", "alaw", "pcm_s16le", "pcm_s16be", "f32le")
_WIDTH: Final = {"mulaw": 1, "alaw": 1, "pcm_s16le": 2, "pcm_s16be": 2, "f32le": 4}
_SCALE: Final = np.float32(1.0 / 32768.0)
_MAX_BELOW_ONE: Final = np.float32(1.0 - 2.0**-15)


class CodecError(AudioError, ValueError):
    """Payload cannot be decoded (unknown encoding, or not a whole number of samples)."""


# ----------------------------------------------------------------------------- G.711 tables
def _mulaw_to_linear(code: int) -> int:
    """ITU-T G.711 mu-law expansion of one code to a 16-bit linear value."""
    u = ~code & 0xFF
    t = ((u & 0x0F) << 3) + 0x84  # mantissa, plus the bias 132
    t <<= (u & 0x70) >> 4  # segment (exponent)
    return (0x84 - t) if (u & 0x80) else (t - 0x84)


def _alaw_to_linear(code: int) -> int:
    """ITU-T G.711 A-law expansion of one code to a 16-bit linear value."""
    a = code ^ 0x55  # even bits are inverted on the wire
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    if seg == 0:
        t += 8
    else:
        t = (t + 0x108) << (seg - 1)
    return t if (a & 0x80) else -t


def _table(fn) -> np.ndarray:
    table = np.array([fn(code) for code in range(256)], dtype=np.int16)
    table.setflags(write=False)
    return table


#: int16 value of each mu-law / A-law code (read-only, built once at import).
MULAW_TO_INT16: Final = _table(_mulaw_to_linear)
ALAW_TO_INT16: Final = _table(_alaw_to_linear)
_MULAW_F32: Final = (MULAW_TO_INT16.astype(np.float32) * _SCALE).astype(np.float32)
_ALAW_F32: Final = (ALAW_TO_INT16.astype(np.float32) * _SCALE).astype(np.float32)

# Segment end points of the reference encoder (14-bit magnitude for mu-law, 13-bit for A-law).
_MULAW_SEG_END: Final = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], np.int32)
_ALAW_SEG_END: Final = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], np.int32)


def mulaw_decode(payload: bytes) -> np.ndarray:
    """mu-law bytes -> float32 samples (one table lookup per byte)."""
    return _MULAW_F32[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> np.ndarray:
    """A-law bytes -> float32 samples (one table lookup per byte)."""
    return _ALAW_F32[np.frombuffer(payload, dtype=np.uint8)]


def mulaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> mu-law bytes, bit-exact with ``audioop.lin2ulaw(..., 2)``."""
    x = np.asarray(pcm, dtype=np.int16).astype(np.int32) >> 2  # 14-bit, arithmetic shift
    negative = x < 0
    mask = np.where(negative, 0x7F, 0xFF)
    magnitude = np.minimum(np.where(negative, -x, x), 8159) + 0x21  # clip, add bias 33
    seg = np.searchsorted(_MULAW_SEG_END, magnitude, side="left")
    mantissa = (magnitude >> (np.minimum(seg, 7) + 1)) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | mantissa) ^ mask
    return code.astype(np.uint8).tobytes()


def alaw_encode(pcm: np.ndarray) -> bytes:
    """int16 samples -> A-law bytes, bit-exact with ``audioop.lin2alaw(..., 2)``."""
    x = np.asarray(pcm, dtype=np.int16).astype(np.int32) >> 3  # 13-bit, arithmetic shift
    negative = x < 0
    mask = np.where(negative, 0x55, 0xD5)
    magnitude = np.where(negative, -x - 1, x)
    seg = np.searchsorted(_ALAW_SEG_END, magnitude, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    mantissa = (magnitude >> shift) & 0x0F
    code = np.where(seg >= 8, 0x7F, (seg << 4) | mantissa) ^ mask
    return code.astype(np.uint8).tobytes()


# ----------------------------------------------------------------------------- generic API
def bytes_per_sample(encoding: str) -> int:
    """Bytes one sample of one channel takes in ``encoding``."""
    try:
        return _WIDTH[encoding]
    except KeyError:
        raise CodecError(
            f"unsupported encoding {encoding!r}; expected one of {', '.join(ENCODINGS)}"
        ) from None


def float_to_int16(samples: np.ndarray) -> np.ndarray:
    """float samples in [-1, 1] -> int16 (rounded, clipped; NaN -> 0): the convention of
    :mod:`streamguard.audio.pcm`."""
    from streamguard.audio.pcm import float_to_int16 as convert

    return convert(samples)


def decode(encoding: str, payload: bytes | bytearray | memoryview) -> np.ndarray:
    """Decode one payload to float32 samples in [-1, 1).

    Multi-channel payloads come back interleaved, exactly as on the wire (reshape to
    ``(-1, channels)``). Raises :class:`CodecError` for an unknown encoding or a payload that is not
    a whole number of samples.
    """
    width = bytes_per_sample(encoding)
    if len(payload) % width:
        raise CodecError(
            f"{encoding} payload of {len(payload)} bytes is not a whole number of "
            f"{width}-byte samples"
        )
    if encoding == "mulaw":
        return mulaw_decode(payload)
    if encoding == "alaw":
        return alaw_decode(payload)
    if encoding == "f32le":
        x = np.frombuffer(payload, dtype="<f4").astype(np.float32)
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        return np.clip(x, -1.0, _MAX_BELOW_ONE, out=x)
    dtype = "<i2" if encoding == "pcm_s16le" else ">i2"
    return np.frombuffer(payload, dtype=dtype).astype(np.float32) * _SCALE


def encode(encoding: str, samples: np.ndarray) -> bytes:
    """Encode samples to ``encoding`` bytes.

    ``samples`` may be float (in [-1, 1], clipped) or int16 (used as-is); multi-channel data must
    already be interleaved (pass ``array.reshape(-1)`` of a ``(frames, channels)`` array).
    """
    bytes_per_sample(encoding)  # validates the name
    arr = np.asarray(samples)
    if encoding == "f32le":
        if arr.dtype == np.int16:
            arr = arr.astype(np.float32) * _SCALE
        return np.asarray(arr, dtype="<f4").tobytes()
    pcm = arr if arr.dtype == np.int16 else float_to_int16(arr)
    if encoding == "mulaw":
        return mulaw_encode(pcm)
    if encoding == "alaw":
        return alaw_encode(pcm)
    return pcm.astype("<i2" if encoding == "pcm_s16le" else ">i2").tobytes()


class StreamDecoder:
    """Decode a byte stream whose chunks may split a sample or a multi-channel frame.

    ``push(chunk)`` returns float32 ``(frames, channels)`` for every whole frame received so far
    and keeps the remainder (at most ``frame_bytes - 1`` bytes) for the next push. Used by the
    raw-binary WebSocket feeds, where the sender's framing is not aligned to samples.
    """

    def __init__(self, encoding: str, channels: int = 1) -> None:
        if channels < 1:
            raise CodecError(f"channels must be >= 1, got {channels}")
        self.encoding = encoding
        self.channels = channels
        self.frame_bytes = bytes_per_sample(encoding) * channels
        self._pending = b""

    @property
    def pending_bytes(self) -> int:
        """Bytes held back because they do not yet make a whole frame."""
        return len(self._pending)

    def push(self, chunk: bytes | bytearray | memoryview) -> np.ndarray:
        data = self._pending + bytes(chunk) if self._pending else bytes(chunk)
        whole = len(data) - len(data) % self.frame_bytes
        self._pending = data[whole:]
        samples = decode(self.encoding, data[:whole])
        return samples.reshape(-1, self.channels)
