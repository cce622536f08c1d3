"""ScoringEngine: batching across tracks, lag and overflow drops, drain (real tiny detector)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from streamguard.audio.windows import Window
from streamguard.errors import StreamguardError
from streamguard.metrics import Metrics
from streamguard.scoring.batching import score_windows
from streamguard.scoring.engine import ScoringEngine, probe_detector
from streamguard.scoring.outcome import Unscored
from tests.conftest import misbehaving_detector


def windows(n: int, detector) -> list[Window]:
    rng = np.random.default_rng(0)
    size = detector.window_samples
    return [
        Window(i * 16000, (0.1 * rng.standard_normal(size)).astype(np.float32), 1.0)
        for i in range(n)
    ]


def loud(window: Window) -> Window:
    """The same window, peaking at 0.95: what a misbehaving detector fails on."""
    samples = window.samples.copy()
    samples[0] = 0.95
    return Window(window.start_sample, samples, window.speech_ratio)


async def run_all(engine: ScoringEngine, items: list[Window]) -> list:
    results: list = [None] * len(items)
    done = [False] * len(items)

    def callback(i):
        def cb(score):
            results[i] = score
            done[i] = True

        return cb

    for i, w in enumerate(items):
        engine.submit(w, callback(i))
    await asyncio.wait_for(engine.drain(), 30)
    assert all(done)
    return results


async def test_scores_equal_the_shared_scoring_function_and_batch(tiny_detector):
    metrics = Metrics()
    engine = ScoringEngine(tiny_detector, max_batch=4, max_wait_ms=50, metrics=metrics)
    engine.start()
    items = windows(10, tiny_detector)
    got = await run_all(engine, items)
    await engine.stop()
    expected = score_windows(tiny_detector, items, max_batch=4)
    np.testing.assert_allclose(np.array(got, dtype=np.float32), expected, atol=1e-6)
    assert engine.stats.scored == 10
    assert engine.stats.batches < 10  # windows submitted together were batched
    assert "streamguard_windows_scored_total 10.0" in metrics.render().decode()


async def test_windows_older_than_max_lag_are_dropped_and_counted(tiny_detector):
    metrics = Metrics()
    engine = ScoringEngine(tiny_detector, max_batch=2, max_lag_seconds=0.0, metrics=metrics)
    engine.start()
    got = await run_all(engine, windows(3, tiny_detector))
    await engine.stop()
    assert got == [Unscored("lag")] * 3
    assert engine.stats.dropped_lag == 3 and engine.stats.scored == 0
    assert 'streamguard_windows_dropped_total{reason="lag"} 3.0' in metrics.render().decode()


async def test_full_queue_drops_the_oldest_window(tiny_detector):
    engine = ScoringEngine(tiny_detector, queue_size=2)
    # not started: nothing consumes, so the third submit overflows
    results: list = []
    for w in windows(3, tiny_detector):
        engine.submit(w, results.append)
    assert results == [Unscored("queue")]  # the oldest was told it was dropped, at once
    assert engine.stats.dropped_overflow == 1 and engine.depth == 2
    engine.start()
    await asyncio.wait_for(engine.drain(), 30)
    await engine.stop()
    assert len(results) == 3 and all(isinstance(r, float) for r in results[1:])


async def test_heartbeat_advances_while_idle(tiny_detector):
    """The watchdog relies on the worker stamping its heartbeat even with nothing to score."""
    engine = ScoringEngine(tiny_detector)
    engine.start()
    first = engine.stats.last_heartbeat
    await asyncio.sleep(2.5)  # the idle worker wakes at least once a second
    assert engine.stats.last_heartbeat > first
    await engine.stop()


async def test_nonfinite_scores_fail_only_their_windows(tiny_detector):
    """A model that turns some rows into NaN: the rest of the batch keeps its scores."""
    broken = misbehaving_detector(tiny_detector, mode="nan")
    metrics = Metrics()
    engine = ScoringEngine(broken, max_batch=8, max_wait_ms=50, metrics=metrics)
    engine.start()
    items = windows(6, tiny_detector)
    items[1], items[4] = loud(items[1]), loud(items[4])
    got = await run_all(engine, items)
    await engine.stop()
    expected = score_windows(tiny_detector, items, max_batch=8)
    for i in (0, 2, 3, 5):
        assert abs(got[i] - expected[i]) < 1e-6
    assert got[1] == got[4] == Unscored("nonfinite")
    assert engine.stats.failed == 2 and engine.stats.scored == 4
    text = metrics.render().decode()
    assert 'streamguard_windows_failed_total{reason="nonfinite"} 2.0' in text
    assert 'streamguard_windows_dropped_total{reason="lag"}' not in text  # not a capacity drop


async def test_a_raising_batch_is_retried_row_by_row(tiny_detector):
    broken = misbehaving_detector(tiny_detector, mode="raise")
    engine = ScoringEngine(broken, max_batch=8, max_wait_ms=50)
    engine.start()
    items = windows(4, tiny_detector)
    items[2] = loud(items[2])
    got = await run_all(engine, items)
    await engine.stop()
    assert got[2] == Unscored("error")
    assert all(isinstance(got[i], float) for i in (0, 1, 3))


async def test_cuda_out_of_memory_halves_the_batch(tiny_detector):
    broken = misbehaving_detector(tiny_detector, mode="oom")
    engine = ScoringEngine(broken, max_batch=8, max_wait_ms=200)
    engine.start()
    got = await run_all(engine, windows(8, tiny_detector))
    await engine.stop()
    assert all(isinstance(g, float) for g in got)
    assert engine._batch_cap == 2


async def test_a_raising_callback_cannot_hold_up_the_others_or_the_drain(tiny_detector):
    engine = ScoringEngine(tiny_detector, max_batch=4, max_wait_ms=50)
    engine.start()
    got: list = []

    def bad(outcome):
        raise ValueError("a bug in one call's handling")

    items = windows(3, tiny_detector)
    engine.submit(items[0], bad)
    engine.submit(items[1], got.append)
    engine.submit(items[2], got.append)
    await asyncio.wait_for(engine.drain(), 30)
    await engine.stop()
    assert len(got) == 2 and all(isinstance(g, float) for g in got)


def test_probe_refuses_a_model_that_returns_nan(tiny_detector):
    always_nan = misbehaving_detector(tiny_detector, mode="nan", loud=-1.0, name="nan-model")
    with pytest.raises(StreamguardError, match="nan-model returns invalid scores"):
        probe_detector(always_nan)
    probe_detector(tiny_detector)  # a sound model passes
