"""score_windows: one detector call per batch, scores in window order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamguard.audio.windows import Window
from streamguard.model import Detector, ModelInfo
from streamguard.scoring.batching import batched, score_windows


class MeanLevel(torch.nn.Module):
    """A transparent architecture: logit = mean sample value; records its batch sizes."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return x.mean(dim=1)


def _detector(window_seconds: float = 0.01) -> Detector:
    info = ModelInfo(name="level", architecture="test", window_seconds=window_seconds)
    return Detector(MeanLevel(), info, device="cpu")


def _windows(n: int, size: int = 160) -> list[Window]:
    return [Window(i * size, np.full(size, i / 10, np.float32), 1.0) for i in range(n)]


@pytest.mark.parametrize(("n", "max_batch", "calls"), [(0, 4, []), (3, 4, [3]), (9, 4, [4, 4, 1])])
def test_batches_and_order(n, max_batch, calls):
    det = _detector()
    scores = score_windows(det, _windows(n), max_batch=max_batch)
    assert det.module.batches == calls
    expected = 1 / (1 + np.exp(-np.arange(n) / 10))
    np.testing.assert_allclose(scores, expected, rtol=1e-5)
    assert scores.dtype == np.float32 and scores.shape == (n,)


def test_batch_size_does_not_change_scores(tiny_detector):
    rng = np.random.default_rng(0)
    windows = [
        Window(0, rng.standard_normal(64_000).astype(np.float32) * 0.1, 1.0) for _ in range(5)
    ]
    one = score_windows(tiny_detector, windows, max_batch=1)
    five = score_windows(tiny_detector, windows, max_batch=5)
    np.testing.assert_allclose(one, five, atol=1e-5)
    np.testing.assert_allclose(five, tiny_detector(np.stack([w.samples for w in windows])))


def test_wrong_window_length_is_a_value_error():
    with pytest.raises(ValueError, match="detector expects 160"):
        score_windows(_detector(), _windows(2, size=100))


def test_batched_rejects_zero():
    with pytest.raises(ValueError):
        list(batched([1, 2], 0))
    assert [list(b) for b in batched([1, 2, 3], 2)] == [[1, 2], [3]]
