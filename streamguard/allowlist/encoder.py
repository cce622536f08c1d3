"""Audio to a speaker embedding: Resemblyzer's GE2E voice encoder (256 floats, unit length).

Resemblyzer's wheel ships the pretrained encoder weights (``pretrained.pt``, a plain state
dict: torch loads it with ``weights_only``); nothing is downloaded. Install it with
``pip install --no-deps resemblyzer`` (its runtime needs, librosa, scipy, webrtcvad and torch,
are streamguard's already; ``--no-deps`` keeps out the obsolete ``typing`` backport and the
unmaintained ``webrtcvad`` sdist it names). ``make bootstrap`` does it.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from streamguard.errors import StreamguardError

__all__ = ["ENCODER_NAME", "SpeakerEncoder", "load_encoder"]

#: Recorded in each enrolled voice: embeddings of different encoders are not comparable.
ENCODER_NAME = "resemblyzer-ge2e"
SAMPLE_RATE = 16_000


class SpeakerEncoder:
    """``embed(audio)`` -> unit-length embedding; ``audio``: float32 mono at 16 kHz."""

    name = ENCODER_NAME

    def __init__(self, device: str = "cpu") -> None:
        try:
            from resemblyzer import VoiceEncoder
        except ImportError:
            raise StreamguardError(
                "the allow-list needs Resemblyzer's voice encoder: pip install --no-deps "
                "resemblyzer"
            ) from None
        self._encoder: Any = VoiceEncoder(device=device, verbose=False)
        self._lock = threading.Lock()  # one torch module: one caller at a time

    def embed(self, audio: np.ndarray) -> np.ndarray:
        from resemblyzer import preprocess_wav

        wav = preprocess_wav(np.asarray(audio, dtype=np.float32), source_sr=SAMPLE_RATE)
        if wav.size < SAMPLE_RATE // 4:  # the VAD trim left (almost) nothing: no speaker
            wav = np.asarray(audio, dtype=np.float32)
        with self._lock:
            return np.asarray(self._encoder.embed_utterance(wav), dtype=np.float32)


def load_encoder(device: str = "cpu") -> SpeakerEncoder:
    return SpeakerEncoder(device)
