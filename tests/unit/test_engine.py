"""ScoringEngine: batching across tracks, lag and overflow drops, drain (real tiny detector)."""

from __future__ import annotations

import asyncio

import numpy as np

from streamguard.audio.windows import Window
from streamguard.metrics import Metrics
from streamguard.scoring.batching import score_windows
from streamguard.scoring.engine import ScoringEngine


def windows(n: int, detector) -> list[Window]:
    rng = np.random.default_rng(0)
    size = detector.window_samples
    return [
        Window(i * 16000, (0.1 * rng.standard_normal(size)).astype(np.float32), 1.0)
        for i in range(n)
    ]


async def run_all(engine: ScoringEngine, items: list[Window]) -> list[float | None]:
    results: list[float | None] = [None] * len(items)
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
    assert got == [None, None, None]
    assert engine.stats.dropped_lag == 3 and engine.stats.scored == 0
    assert 'streamguard_windows_dropped_total{reason="lag"} 3.0' in metrics.render().decode()


async def test_full_queue_drops_the_oldest_window(tiny_detector):
    engine = ScoringEngine(tiny_detector, queue_size=2)
    # not started: nothing consumes, so the third submit overflows
    results: list = []
    for w in windows(3, tiny_detector):
        engine.submit(w, results.append)
    assert results == [None]  # the oldest was told it was dropped, at once
    assert engine.stats.dropped_overflow == 1 and engine.depth == 2
    engine.start()
    await asyncio.wait_for(engine.drain(), 30)
    await engine.stop()
    assert len(results) == 3 and all(r is not None for r in results[1:])


async def test_heartbeat_advances_while_idle(tiny_detector):
    """The watchdog relies on the worker stamping its heartbeat even with nothing to score."""
    engine = ScoringEngine(tiny_detector)
    engine.start()
    first = engine.stats.last_heartbeat
    await asyncio.sleep(2.5)  # the idle worker wakes at least once a second
    assert engine.stats.last_heartbeat > first
    await engine.stop()
