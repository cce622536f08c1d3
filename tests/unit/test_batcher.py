"""The engine's batching policy, driven through schedules without a thread or a sleep: batch
formation (full batch at once, a partial one after max_wait, at once when stopping), the two
drops (queue overflow: the oldest; lag: at formation), counters, and in-order release."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.audio.windows import Window
from streamguard.scoring.batcher import UTILIZATION_PERIOD, Batcher, InOrder
from streamguard.scoring.outcome import Unscored


def window(start: float = 0.0) -> Window:
    return Window(int(start * 16000), np.zeros(16, np.float32), speech_ratio=1.0)


def batcher(**kw) -> Batcher:
    kw.setdefault("max_batch", 4)
    kw.setdefault("max_wait", 0.02)
    kw.setdefault("max_lag", 5.0)
    kw.setdefault("queue_size", 8)
    return Batcher(**kw)


def test_nothing_queued_means_no_batch_and_wait_for_a_push():
    b = batcher()
    assert b.next_batch(0.0) is None
    assert b.wait_seconds(0.0) is None
    assert not b.finished


def test_a_full_batch_goes_at_once_oldest_first_and_at_most_max_batch():
    b = batcher(max_batch=3)
    for i in range(5):
        b.push(window(i), f"t{i}", now=0.0)
    assert b.wait_seconds(0.0) == 0.0
    batch = b.next_batch(0.0)
    assert [r.ticket for r in batch.fresh] == ["t0", "t1", "t2"] and batch.stale == []
    assert [r.seq for r in batch.fresh] == [0, 1, 2]
    assert b.depth == 2


def test_a_partial_batch_waits_max_wait_from_when_a_worker_first_saw_it():
    b = batcher(max_batch=4, max_wait=0.02)
    b.push(window(), "a", now=1.0)
    assert b.next_batch(1.005) is None  # deadline armed at 1.005 -> 1.025
    assert b.wait_seconds(1.010) == pytest.approx(0.015)
    b.push(window(), "b", now=1.012)
    assert b.next_batch(1.020) is None  # still before the deadline: no re-arm by a push
    batch = b.next_batch(1.025)
    assert [r.ticket for r in batch.fresh] == ["a", "b"]
    # the next partial batch gets its own full wait
    b.push(window(), "c", now=2.0)
    assert b.next_batch(2.0) is None
    assert b.wait_seconds(2.0) == pytest.approx(0.02)


def test_each_worker_keeps_its_own_deadline():
    """Worker 1 saw the queue 10 ms after worker 0: when 0 takes the batch at its deadline,
    1 still leaves at its own (not a fresh max_wait after 0 took everything)."""
    b = batcher(max_batch=8, max_wait=0.02)
    b.push(window(), "a", now=0.0)
    assert b.next_batch(0.0, worker=0) is None  # worker 0: deadline 0.02
    b.push(window(), "b", now=0.01)
    assert b.next_batch(0.01, worker=1) is None  # worker 1: deadline 0.03
    assert b.wait_seconds(0.01, worker=1) == pytest.approx(0.02)
    assert [r.ticket for r in b.next_batch(0.02, worker=0).fresh] == ["a", "b"]
    b.push(window(), "c", now=0.025)
    assert b.next_batch(0.025, worker=1) is None
    assert [r.ticket for r in b.next_batch(0.03, worker=1).fresh] == ["c"]
    # a worker whose batch went to the other one arms afresh when windows come again
    b.push(window(), "d", now=0.04)
    assert b.next_batch(0.04, worker=0) is None  # 0: deadline 0.06
    assert b.next_batch(0.045, worker=1) is None  # 1: deadline 0.065
    assert [r.ticket for r in b.next_batch(0.06, worker=0).fresh] == ["d"]
    assert b.next_batch(0.07, worker=1) is None  # nothing left: 1's deadline dropped
    b.push(window(), "e", now=0.08)
    assert b.next_batch(0.08, worker=1) is None
    assert b.wait_seconds(0.08, worker=1) == pytest.approx(0.02)


def test_filling_up_while_waiting_sends_the_batch_before_the_deadline():
    b = batcher(max_batch=2, max_wait=1.0)
    b.push(window(), "a", now=0.0)
    assert b.next_batch(0.0) is None
    b.push(window(), "b", now=0.1)
    assert b.wait_seconds(0.1) == 0.0
    assert len(b.next_batch(0.1).fresh) == 2


def test_stopping_sends_what_waits_at_once_then_finishes():
    b = batcher(max_batch=4, max_wait=10.0)
    b.push(window(), "a", now=0.0)
    assert b.next_batch(0.0) is None
    b.stop()
    assert not b.finished  # something still queued
    assert b.wait_seconds(0.0) == 0.0
    assert [r.ticket for r in b.next_batch(0.0).fresh] == ["a"]
    assert b.finished and b.next_batch(0.0) is None


def test_a_full_queue_drops_its_oldest_window_and_counts_it():
    b = batcher(queue_size=2)
    assert b.push(window(), "a", now=0.0) is None
    assert b.push(window(), "b", now=0.0) is None
    dropped = b.push(window(), "c", now=0.0)
    assert dropped.ticket == "a" and dropped.seq == 0
    assert b.depth == 2 and b.stats.dropped_overflow == 1 and b.stats.submitted == 3


def test_windows_past_max_lag_at_formation_are_stale_and_complete_as_lag():
    b = batcher(max_batch=4, max_lag=1.0, max_wait=0.0)
    b.push(window(), "old", now=0.0)
    b.push(window(), "edge", now=1.0)  # exactly max_lag old: still scored
    b.push(window(), "new", now=1.5)
    batch = b.next_batch(2.0)
    assert [r.ticket for r in batch.stale] == ["old"]
    assert [r.ticket for r in batch.fresh] == ["edge", "new"]
    done = b.complete(batch, [0.25, Unscored("nonfinite")], elapsed=0.5, now=2.0)
    assert [(r.ticket, o) for r, o in done.results] == [
        ("edge", 0.25),
        ("new", Unscored("nonfinite")),
        ("old", Unscored("lag")),
    ]
    assert [r.ticket for r in done.scored] == ["edge"]
    assert done.failed == ["nonfinite"] and done.lag == 1 and done.size == 2
    s = b.stats
    assert (s.scored, s.failed, s.dropped_lag, s.batches) == (1, 1, 1, 1)
    assert s.batch_sizes == {2: 1} and list(s.batch_seconds) == [0.5]


def test_an_all_stale_batch_is_not_an_inference_batch():
    b = batcher(max_batch=2, max_lag=0.1, max_wait=0.0)
    b.push(window(), "a", now=0.0)
    batch = b.next_batch(1.0)
    assert batch.fresh == [] and batch.windows == []
    done = b.complete(batch, [], elapsed=0.0, now=1.0)
    assert done.size == 0 and b.stats.batches == 0 and b.stats.dropped_lag == 1


def test_complete_wants_one_outcome_per_fresh_window():
    b = batcher(max_wait=0.0)
    b.push(window(), "a", now=0.0)
    batch = b.next_batch(0.0)
    with pytest.raises(ValueError):
        b.complete(batch, [], elapsed=0.0, now=0.0)


def test_realtime_factor_and_utilization():
    b = batcher(max_wait=0.0, hop_seconds=0.5, workers=2, now=0.0)
    for i in range(4):
        b.push(window(i), i, now=0.0)
    batch = b.next_batch(0.0)
    done = b.complete(batch, [0.1] * 4, elapsed=1.0, now=0.5)
    assert not done.utilization_changed and b.stats.utilization == 0.0
    assert b.stats.audio_seconds_scored == 2.0
    assert b.stats.realtime_factor == pytest.approx(0.5)
    b.push(window(), 9, now=1.0)
    done = b.complete(b.next_batch(1.0), [0.2], elapsed=1.0, now=UTILIZATION_PERIOD)
    assert done.utilization_changed
    # 2 s of inference over 2 s of wall time, shared by 2 workers
    assert b.stats.utilization == pytest.approx(0.5)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError):
        Batcher(max_batch=0)
    with pytest.raises(ValueError):
        Batcher(queue_size=0)


@given(
    st.lists(
        st.tuples(st.sampled_from(["push", "take", "tick"]), st.floats(0, 0.05)),
        max_size=60,
    ),
    st.integers(1, 5),
    st.integers(1, 6),
)
def test_every_window_comes_out_exactly_once_in_order_and_batches_are_bounded(
    schedule, max_batch, queue_size
):
    """Any schedule of pushes, takes and clock ticks: each window leaves once (in a batch or
    as a queue drop), batches never exceed max_batch, seqs leave in submission order, and
    the queue never holds more than queue_size."""
    b = Batcher(max_batch=max_batch, max_wait=0.01, max_lag=0.1, queue_size=queue_size)
    now, pushed, out = 0.0, 0, []
    for action, dt in schedule:
        now += dt
        if action == "push":
            dropped = b.push(window(), pushed, now)
            pushed += 1
            if dropped is not None:
                out.append(dropped.seq)
        elif action == "take" and (batch := b.next_batch(now)) is not None:
            assert 1 <= len(batch.fresh) + len(batch.stale) <= max_batch
            out.extend(r.seq for r in batch.fresh + batch.stale)
        assert b.depth <= queue_size
    b.stop()
    while (batch := b.next_batch(now)) is not None:
        out.extend(r.seq for r in batch.fresh + batch.stale)
    assert b.finished
    assert sorted(out) == list(range(pushed))
    assert b.stats.submitted == pushed


def test_in_order_holds_back_what_overtook_an_earlier_item():
    order: InOrder[str] = InOrder()
    assert order.add([(1, "b"), (2, "c")]) == [] and order.held == 2
    assert order.add([(0, "a")]) == ["a", "b", "c"] and order.held == 0
    assert order.add([(4, "e")]) == []
    assert order.add([(3, "d")]) == ["d", "e"]


@given(st.permutations(list(range(12))), st.integers(1, 5))
def test_in_order_releases_any_completion_order_as_submitted(perm, chunk):
    order: InOrder[int] = InOrder()
    released = []
    for i in range(0, len(perm), chunk):
        released += order.add((seq, seq) for seq in perm[i : i + chunk])
    assert released == list(range(12)) and order.held == 0
