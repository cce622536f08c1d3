"""The scoring core shared by ``streamguard scan`` and the daemon's engine.

Why batches: a detector call has a fixed overhead (kernel launches, Python, host<->device
copies) that dwarfs the per-window cost on a GPU, so scoring 16 windows at once is nearly as
fast as scoring one. Both the file scanner and the live engine call :func:`score_windows`, so
there is exactly one place where windows become model input.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import numpy as np

from streamguard.audio.windows import Window

__all__ = ["batched", "score_windows"]

T = TypeVar("T")


def batched(items: Sequence[T], max_batch: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most ``max_batch`` items."""
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    for i in range(0, len(items), max_batch):
        yield items[i : i + max_batch]


def score_windows(detector: Any, windows: Sequence[Window], max_batch: int = 16) -> np.ndarray:
    """P(fake) for each window, in order: float32 ``[len(windows)]``.

    Windows are stacked into batches of at most ``max_batch`` rows and the detector
    (``detector(np.float32 [B, window_samples]) -> [B]``) is called once per batch. No windows
    means no detector call and an empty array. A window whose length differs from the
    detector's window raises ``ValueError`` (a wiring bug, not user input).
    """
    scores = np.empty(len(windows), dtype=np.float32)
    expected = getattr(detector, "window_samples", None)
    # A detector that owns its input memory (an inference worker's shared block) gets each
    # window written straight into it: no stacked temporary, no second copy.
    buffer = getattr(detector, "input_buffer", None)
    done = 0
    for chunk in batched(windows, max_batch):
        width = len(chunk[0].samples)
        if expected is not None and any(len(w.samples) != expected for w in chunk):
            bad = next(len(w.samples) for w in chunk if len(w.samples) != expected)
            raise ValueError(f"window of {bad} samples, detector expects {expected}")
        batch = buffer(len(chunk)) if buffer is not None else None
        if batch is None or batch.shape[1] != width:
            batch = np.empty((len(chunk), width), dtype=np.float32)
        for row, w in zip(batch, chunk, strict=True):
            row[:] = w.samples
        out = np.asarray(detector(batch), dtype=np.float32).reshape(-1)
        if out.shape[0] != len(chunk):
            raise ValueError(f"detector returned {out.shape[0]} scores for {len(chunk)} windows")
        scores[done : done + len(chunk)] = out
        done += len(chunk)
    return scores
