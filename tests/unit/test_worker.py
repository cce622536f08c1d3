"""Inference in a worker process: the same scores, faults reported per batch, restarts."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from streamguard.audio.windows import Window
from streamguard.scoring.batching import score_windows
from streamguard.scoring.engine import ScoringEngine
from streamguard.scoring.outcome import Unscored
from streamguard.scoring.worker import ProcessDetector, WorkerFailed

pytestmark = pytest.mark.slow  # each test spawns a Python process that imports torch


class RaisesOnLoud(torch.nn.Module):
    """Module-level (picklable into the child): fails on any row peaking above 0.7."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x.abs().amax(dim=1) > 0.7).any()):
            raise RuntimeError("simulated kernel failure")
        return self.inner(x)


def _windows(n: int, size: int, loud: set[int] = frozenset()) -> list[Window]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        samples = (0.1 * rng.standard_normal(size)).astype(np.float32)
        if i in loud:
            samples[0] = 0.95
        out.append(Window(i * 16000, samples, 1.0))
    return out


def test_worker_scores_like_the_detector_in_process(tiny_detector):
    worker = ProcessDetector(tiny_detector, backend="eager", threads=1, max_batch=4)
    try:
        items = _windows(6, tiny_detector.window_samples)
        got = score_windows(worker, items, max_batch=4)
        expected = score_windows(tiny_detector, items, max_batch=4)
        np.testing.assert_allclose(got, expected, atol=1e-6)
        assert worker.backend == "eager"
        # the child got a copy: the caller's weights were not moved into shared memory
        assert not any(p.is_shared() for p in tiny_detector.module.parameters())
    finally:
        worker.close()


async def test_engine_fault_isolation_holds_across_the_process_boundary(tiny_detector):
    from streamguard.model import Detector

    broken = Detector(RaisesOnLoud(tiny_detector.module), tiny_detector.info, device="cpu")
    worker = ProcessDetector(broken, backend="eager", threads=1, max_batch=4)
    engine = ScoringEngine(broken, runners=[worker], max_batch=4, max_wait_ms=50)
    engine.start()
    try:
        items = _windows(6, broken.window_samples, loud={2})
        results: list = [None] * len(items)
        for i, w in enumerate(items):
            engine.submit(w, lambda o, i=i: results.__setitem__(i, o))
        await asyncio.wait_for(engine.drain(), 60)
        assert results[2] == Unscored("error")
        assert all(isinstance(r, float) for i, r in enumerate(results) if i != 2)
    finally:
        await engine.stop()
        worker.close()


def test_a_dead_worker_fails_one_batch_and_is_restarted(tiny_detector):
    worker = ProcessDetector(tiny_detector, backend="eager", threads=1, max_batch=2)
    try:
        waves = np.zeros((2, tiny_detector.window_samples), np.float32)
        worker._proc.kill()
        worker._proc.join()
        scores = worker(waves)  # restarted before this batch
        assert worker.restarts == 1 and scores.shape == (2,)
        np.testing.assert_allclose(scores, tiny_detector(waves), atol=1e-6)
    finally:
        worker.close()
    with pytest.raises(WorkerFailed, match="closed"):
        worker(waves)
