"""The one float <-> int16 convention and the one pad/crop helper of streamguard.

**Scaling.** 16-bit PCM ``v`` is the float ``v / 32768``; a float ``x`` becomes
``clip(round(x * 32768), -32768, 32767)``. Full scale is therefore [-1, 1 - 2**-15], ``-1.0``
round-trips exactly and ``+1.0`` clips to 32767. This is what the wire codecs
(:mod:`streamguard.audio.codecs`), the VAD, the training cache and the corpus builder use; before
there was one convention, some paths multiplied by 32767 and others by 32768, so a clip stored and
re-read drifted by one part in 32768 and never compared equal.

**Length.** A model takes windows of exactly ``n`` samples. :func:`fit_length` pads at the end
with zeros (a short clip, the end of a call) or crops ("start", "center", or a seeded "random"
piece for training); it works on numpy arrays and torch tensors alike, so the trainer, the
evaluator and the detector share it.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import numpy as np

__all__ = ["INT16_SCALE", "CropMode", "fit_length", "float_to_int16", "int16_to_float"]

INT16_SCALE: Final = 32768.0

CropMode = Literal["start", "center", "random"]


def float_to_int16(samples: Any) -> np.ndarray:
    """float samples (nominally [-1, 1]) -> int16: ``x * 32768``, rounded, clipped; NaN -> 0."""
    x = np.nan_to_num(np.asarray(samples, dtype=np.float64), nan=0.0, posinf=1.0, neginf=-1.0)
    return np.clip(np.rint(x * INT16_SCALE), -32768, 32767).astype(np.int16)


def int16_to_float(samples: Any) -> np.ndarray:
    """int16 samples -> float32 ``v / 32768`` in [-1, 1 - 2**-15]."""
    return (np.asarray(samples, dtype=np.int16).astype(np.float32)) * np.float32(1.0 / INT16_SCALE)


def fit_length(x: Any, n: int, mode: CropMode = "start", rng: np.random.Generator | None = None):
    """Exactly ``n`` samples along the last axis: zero-padded at the end when short; when long,
    the first ``n`` (``"start"``), the middle (``"center"``) or a random piece (``"random"``,
    needs ``rng``). numpy in, numpy (float32, contiguous) out; a torch tensor in, a tensor out."""
    length = x.shape[-1]
    is_torch = hasattr(x, "new_zeros")
    if length <= n:
        if is_torch:
            import torch

            return torch.nn.functional.pad(x, (0, n - length))
        out = np.zeros((*np.shape(x)[:-1], n), dtype=np.float32)
        out[..., :length] = x
        return out
    if mode == "start":
        start = 0
    elif mode == "center":
        start = (length - n) // 2
    elif mode == "random":
        if rng is None:
            raise ValueError("fit_length(mode='random') needs an rng")
        start = int(rng.integers(0, length - n + 1))
    else:
        raise ValueError(f"unknown crop mode {mode!r}")
    piece = x[..., start : start + n]
    return piece if is_torch else np.ascontiguousarray(piece, dtype=np.float32)
