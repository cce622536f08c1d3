"""The bundled demo call as model input: windows of real speech, cut by the per-track chain.

Owns :func:`demo_windows` and :func:`check_windows`: what the serving backends
(:mod:`streamguard.model.serving`) calibrate the int8 quantizer on and check score parity on,
and what the start-up probe times. Here, not in ``model/``, so the model layer reads no audio
files and runs no track chain itself; here, not in ``scoring/``, because ``model/`` may use
``audio/`` and nothing above it.
"""

from __future__ import annotations

from importlib import resources

import numpy as np

from streamguard.audio.file import read_audio
from streamguard.audio.track import TrackPipeline, TrackSettings

__all__ = ["check_windows", "demo_windows"]


def demo_windows(window_samples: int, *, offset_seconds: float = 0.0) -> np.ndarray:
    """Windows of real speech from the bundled demo call (both tracks), ``[N, window]``.

    ``offset_seconds`` shifts the window grid, so calibration and check windows differ.
    """
    path = resources.files("streamguard") / "demo" / "demo_call.wav"
    rate, channels = read_audio(str(path))
    skip = round(offset_seconds * rate)
    settings = TrackSettings(min_speech_seconds=0.5)
    out = []
    for channel in channels:
        pipe = TrackPipeline(rate, settings, window_seconds=window_samples / 16_000)
        windows = pipe.push(channel[skip:]) + pipe.finish()
        out += [w.samples for w in windows]
    return np.stack(out).astype(np.float32)


def check_windows(window_samples: int) -> np.ndarray:
    """What parity is checked on: demo-call speech off the calibration grid, noise, silence."""
    rng = np.random.default_rng(1)
    speech = demo_windows(window_samples, offset_seconds=0.5)
    noise = (0.05 * rng.standard_normal((2, window_samples))).astype(np.float32)
    return np.concatenate([speech, noise, np.zeros((1, window_samples), np.float32)])
