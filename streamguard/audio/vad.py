"""Speech gate: webrtcvad decisions for fixed frames of a float32 stream.

Why a gate: a deepfake detector scores voices; windows of hold music, line noise or silence
give it nothing to judge and only add false alarms and compute. webrtcvad is fast (a 30 ms
frame costs microseconds), needs no model download and works on 8-48 kHz 16-bit PCM.

webrtcvad accepts only frames of exactly 10, 20 or 30 ms, so the gate buffers any remainder
between pushes. Each decision comes with the absolute sample index where its frame starts, so
callers (the windower) can line decisions up with audio in the ring buffer.

The track chain converts its audio to int16 once (:func:`float_to_pcm16`) and hands the same
array to the ring buffer and to :meth:`SpeechGate.push_pcm16`, so nothing is converted twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamguard.audio.pcm import INT16_SCALE

__all__ = ["SpeechFrame", "SpeechGate", "float_to_pcm16"]

_VALID_RATES = (8_000, 16_000, 32_000, 48_000)
_VALID_FRAME_MS = (10, 20, 30)


@dataclass(frozen=True, slots=True)
class SpeechFrame:
    """One VAD decision over samples ``[start_sample, start_sample + n_samples)``."""

    start_sample: int
    n_samples: int
    is_speech: bool

    @property
    def end_sample(self) -> int:
        return self.start_sample + self.n_samples


def float_to_pcm16(samples: np.ndarray) -> np.ndarray:
    """Float32 in [-1, 1] -> int16: ``x * 32768``, rounded, clipped to [-32768, 32767].

    The one convention of :mod:`streamguard.audio.pcm` (16-bit PCM ``v`` is ``v / 32768``),
    so int16 -> float -> int16 is exact. Clipped, because a hot signal must not wrap around.
    Three in-place numpy passes: this runs on every chunk of every live track, so it stays in
    float32 (:func:`~streamguard.audio.pcm.float_to_int16` is the float64, NaN-safe general form;
    a source's audio is finite and within [-1, 1) by contract, sources/base.py).
    """
    x = np.multiply(np.asarray(samples, dtype=np.float32).reshape(-1), np.float32(INT16_SCALE))
    np.rint(x, out=x)
    np.maximum(x, -32768.0, out=x)  # two ufuncs: cheaper to dispatch than np.clip
    np.minimum(x, 32767.0, out=x)
    return x.astype(np.int16)


class SpeechGate:
    """Per-track VAD: ``push`` float32 samples of any length, get per-frame decisions.

    ``flush`` classifies a final partial frame (zero-padded to a full frame; the decision
    covers only its real samples) so that every pushed sample ends up decided.
    Counters: ``samples_decided``, ``speech_samples``.
    """

    def __init__(self, sample_rate: int = 16_000, frame_ms: int = 30, aggressiveness: int = 2):
        if sample_rate not in _VALID_RATES:
            raise ValueError(f"webrtcvad needs a rate in {_VALID_RATES}, got {sample_rate}")
        if frame_ms not in _VALID_FRAME_MS:
            raise ValueError(f"webrtcvad needs frames of {_VALID_FRAME_MS} ms, got {frame_ms}")
        if aggressiveness not in (0, 1, 2, 3):
            raise ValueError(f"aggressiveness must be 0-3, got {aggressiveness}")
        import webrtcvad

        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self._vad = webrtcvad.Vad(aggressiveness)
        self._pending = np.zeros(0, dtype=np.int16)
        self.samples_decided = 0
        self.speech_samples = 0

    def _decide(self, frame: bytes, n_real: int) -> SpeechFrame:
        speech = bool(self._vad.is_speech(frame, self.sample_rate))
        out = SpeechFrame(self.samples_decided, n_real, speech)
        self.samples_decided += n_real
        if speech:
            self.speech_samples += n_real
        return out

    def push(self, samples: np.ndarray) -> list[SpeechFrame]:
        """Float samples of any length -> decisions for every whole frame so far."""
        return self.push_pcm16(float_to_pcm16(samples))

    def push_pcm16(self, pcm: np.ndarray) -> list[SpeechFrame]:
        """int16 samples of any length -> decisions for every whole frame so far."""
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        if self._pending.size:
            pcm = np.concatenate([self._pending, pcm])
        n_frames = pcm.size // self.frame_samples
        fs = self.frame_samples
        data = pcm.tobytes()  # one copy; each frame is then a slice of bytes
        bpf = 2 * fs
        frames = [self._decide(data[i * bpf : (i + 1) * bpf], fs) for i in range(n_frames)]
        self._pending = pcm[n_frames * fs :].copy()
        return frames

    def flush(self) -> list[SpeechFrame]:
        """Decide the buffered remainder (if any), zero-padded to one frame."""
        n = self._pending.size
        if n == 0:
            return []
        frame = np.zeros(self.frame_samples, dtype=np.int16)
        frame[:n] = self._pending
        self._pending = np.zeros(0, dtype=np.int16)
        return [self._decide(frame.tobytes(), n)]
