"""Speech gate: webrtcvad decisions for fixed frames of a float32 stream.

Why a gate: a deepfake detector scores voices; windows of hold music, line noise or silence
give it nothing to judge and only add false alarms and compute. webrtcvad is fast (a 30 ms
frame costs microseconds), needs no model download and works on 8-48 kHz 16-bit PCM.

webrtcvad accepts only frames of exactly 10, 20 or 30 ms, so the gate buffers any remainder
between pushes. Each decision comes with the absolute sample index where its frame starts, so
callers (the windower) can line decisions up with audio in the ring buffer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamguard.audio.pcm import float_to_int16

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
    """Float32 in [-1, 1] -> int16, clipped (a hot signal must not wrap around); the one
    convention of :mod:`streamguard.audio.pcm` (x 32768)."""
    return float_to_int16(samples)


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

    def _decide(self, frame: np.ndarray, n_real: int) -> SpeechFrame:
        speech = bool(self._vad.is_speech(frame.tobytes(), self.sample_rate))
        out = SpeechFrame(self.samples_decided, n_real, speech)
        self.samples_decided += n_real
        if speech:
            self.speech_samples += n_real
        return out

    def push(self, samples: np.ndarray) -> list[SpeechFrame]:
        pcm = float_to_pcm16(np.asarray(samples).reshape(-1))
        if self._pending.size:
            pcm = np.concatenate([self._pending, pcm])
        n_frames = pcm.size // self.frame_samples
        fs = self.frame_samples
        frames = [self._decide(pcm[i * fs : (i + 1) * fs], fs) for i in range(n_frames)]
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
        return [self._decide(frame, n)]
