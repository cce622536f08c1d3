"""Deadline batch formation (issue #20, ``[model] batching = "deadline"``), driven through
schedules without a thread or a sleep: the release time (the oldest window's budget less the
learnt inference time of the batch), the cost estimate, and whole simulated runs of a model
with a fixed cost per batch size on one or two workers: the latency bound, batch sizes against
the greedy policy, no starvation, and the lag/queue drops as before."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.audio.windows import Window
from streamguard.scoring.batcher import BatchCost, Batcher


def window() -> Window:
    return Window(0, np.zeros(16, np.float32), speech_ratio=1.0)


def deadline(**kw) -> Batcher:
    kw.setdefault("max_batch", 4)
    kw.setdefault("budget", 0.4)
    kw.setdefault("max_lag", 5.0)
    kw.setdefault("queue_size", 64)
    return Batcher(batching="deadline", **kw)


def learn(b: Batcher, size: int, seconds: float) -> None:
    """Teach ``b`` the cost of a batch of ``size`` (through a real batch)."""
    for _ in range(size):
        b.push(window(), None, now=-10.0)
    b.stop()  # hand out at once
    batch = b.next_batch(-10.0)
    b._stopping = False
    b.complete(batch, [0.5] * size, elapsed=seconds, now=-10.0)


# -- the cost estimate ---------------------------------------------------------------------------
def test_cost_estimate_is_zero_before_any_batch_then_a_moving_average_per_size():
    cost = BatchCost(smoothing=0.5)
    assert cost.expected(4) == 0.0
    cost.add(4, 0.2)
    assert cost.expected(4) == pytest.approx(0.2)  # the first sample as is
    cost.add(4, 0.4)
    assert cost.expected(4) == pytest.approx(0.3)


def test_an_unseen_size_is_estimated_no_lower_than_a_fixed_overhead_model_would_cost():
    cost = BatchCost()
    cost.add(2, 0.10)
    cost.add(8, 0.25)
    assert cost.expected(4) == pytest.approx(0.20)  # from 2, scaled by 4/2
    assert cost.expected(16) == pytest.approx(0.50)  # from 8, scaled by 16/8
    assert cost.expected(1) == pytest.approx(0.10)  # below every size seen: the smallest, as is


# -- the release time ----------------------------------------------------------------------------
def test_unknown_policy_is_refused():
    with pytest.raises(ValueError, match="batching"):
        Batcher(batching="eager")


def test_before_any_batch_a_partial_batch_waits_the_oldest_windows_whole_budget():
    b = deadline(budget=0.4)
    b.push(window(), "a", now=1.0)
    assert b.next_batch(1.0) is None
    assert b.wait_seconds(1.0) == pytest.approx(0.4)
    b.push(window(), "b", now=1.3)  # a younger window does not move the release
    assert b.next_batch(1.39) is None
    assert b.wait_seconds(1.3) == pytest.approx(0.1)
    assert [r.ticket for r in b.next_batch(1.4).fresh] == ["a", "b"]
    assert b.next_batch(1.4) is None and b.wait_seconds(1.4) is None


def test_the_release_leaves_room_for_the_learnt_inference_time_of_that_batch():
    b = deadline(budget=0.4, max_batch=8)
    learn(b, 2, 0.1)
    learn(b, 3, 0.15)
    b.push(window(), "a", now=0.0)
    # one window: estimated from the smallest size seen (2 -> 0.1 s)
    assert b.wait_seconds(0.0) == pytest.approx(0.3)
    b.push(window(), "b", now=0.05)
    assert b.wait_seconds(0.05) == pytest.approx(0.25)  # 0.4 - 0.1 - 0.05
    b.push(window(), "c", now=0.1)
    # three windows cost more: the batch goes earlier (0.25), not when first planned (0.3)
    assert b.wait_seconds(0.1) == pytest.approx(0.15)
    assert b.next_batch(0.24) is None
    assert len(b.next_batch(0.25).fresh) == 3


def test_a_window_that_would_push_the_oldest_past_its_budget_waits_for_the_next_batch():
    b = deadline(budget=0.4, max_batch=4)
    learn(b, 1, 0.05)
    learn(b, 2, 0.10)
    learn(b, 3, 0.30)
    b.push(window(), "a", now=0.0)
    b.push(window(), "b", now=0.0)
    assert b.wait_seconds(0.25) == pytest.approx(0.05)  # due at 0.4 - 0.1
    b.push(window(), "c", now=0.29)  # three would end at 0.59: only two still fit
    assert [r.ticket for r in b.next_batch(0.29).fresh] == ["a", "b"]
    assert b.depth == 1
    # a full batch is trimmed the same way
    b = deadline(budget=0.4, max_batch=3)
    learn(b, 2, 0.10)
    learn(b, 3, 0.30)
    b.push(window(), "a", now=0.0)
    b.push(window(), "b", now=0.0)
    b.push(window(), "c", now=0.2)
    assert [r.ticket for r in b.next_batch(0.2).fresh] == ["a", "b"]
    # ... unless the oldest is past saving anyway: then everything waiting goes
    b = deadline(budget=0.4, max_batch=3)
    learn(b, 1, 0.05)
    learn(b, 3, 0.30)
    for t in ("a", "b", "c"):
        b.push(window(), t, now=0.0)
    assert len(b.next_batch(0.5).fresh) == 3


def test_a_full_batch_goes_at_once_and_stopping_sends_what_waits():
    b = deadline(max_batch=2, budget=10.0)
    b.push(window(), "a", now=0.0)
    assert b.next_batch(0.0) is None
    b.push(window(), "b", now=0.0)
    assert b.wait_seconds(0.0) == 0.0
    assert len(b.next_batch(0.0).fresh) == 2
    b.push(window(), "c", now=0.0)
    assert b.next_batch(0.0) is None
    b.stop()
    assert b.wait_seconds(0.0) == 0.0
    assert [r.ticket for r in b.next_batch(0.0).fresh] == ["c"]
    assert b.finished


def test_a_model_slower_than_the_budget_means_no_wait_not_a_stuck_window():
    b = deadline(budget=0.1)
    learn(b, 1, 0.5)
    b.push(window(), "a", now=0.0)
    assert b.wait_seconds(0.0) == 0.0
    assert [r.ticket for r in b.next_batch(0.0).fresh] == ["a"]


def test_lag_drops_are_decided_at_formation_as_under_greedy():
    for b in (deadline(max_lag=1.0, budget=0.05), Batcher(max_batch=4, max_lag=1.0, max_wait=0)):
        b.push(window(), "old", now=0.0)
        b.push(window(), "edge", now=1.0)
        b.push(window(), "new", now=1.5)
        batch = b.next_batch(2.1)
        assert [r.ticket for r in batch.stale] == ["old", "edge"]
        assert [r.ticket for r in batch.fresh] == ["new"]


# -- simulated runs ------------------------------------------------------------------------------
def linear_cost(fixed: float, per_window: float):
    return lambda n: fixed + per_window * n


def simulate(b: Batcher, arrivals: list[float], cost, workers: int = 1) -> dict:
    """Run ``b`` against a model whose batch of n takes ``cost(n)`` seconds on each of
    ``workers`` workers, windows queued at ``arrivals``; event by event, as the engine's
    threads would (a worker asks for a batch whenever it is idle and something changed, or
    when its ``wait_seconds`` is up). Returns latencies (queued -> scored), batch sizes, and
    the ids that came out."""
    arrivals = sorted(arrivals)
    now, i = 0.0, 0
    running: dict[int, tuple[object, float]] = {}
    latencies: list[float] = []
    sizes: list[int] = []
    out: list[int] = []
    while i < len(arrivals) or b.depth or running:
        wakes = []
        for k in range(workers):
            if k not in running and (wait := b.wait_seconds(now, k)) is not None:
                wakes.append(now + max(wait, 1e-9))
        ends = [end for _, end in running.values()]
        upcoming = arrivals[i] if i < len(arrivals) else math.inf
        now = min([upcoming, *wakes, *ends])
        assert now < math.inf, "a window is stuck"
        for k, (batch, end) in list(running.items()):
            if end <= now:
                del running[k]
                done = b.complete(batch, [0.5] * len(batch.fresh), end - batch.formed, end)
                latencies += [end - r.enqueued for r in done.scored]
                out += [r.ticket for r, _ in done.results]
        while i < len(arrivals) and arrivals[i] <= now:
            dropped = b.push(window(), i, now)
            if dropped is not None:
                out.append(dropped.ticket)
            i += 1
        for k in range(workers):
            if k in running:
                continue
            batch = b.next_batch(now, k)
            if batch is None:
                continue
            assert all(now - r.enqueued > b.max_lag for r in batch.stale)
            assert all(now - r.enqueued <= b.max_lag for r in batch.fresh)
            if batch.fresh:
                sizes.append(len(batch.fresh))
            running[k] = (batch, now + (cost(len(batch.fresh)) if batch.fresh else 0.0))
    return {"latencies": latencies, "sizes": sizes, "out": out}


def periodic(rate: float, seconds: float) -> list[float]:
    return [k / rate for k in range(int(rate * seconds))]


def jittered(rate: float, seconds: float, seed: int) -> list[float]:
    """Poisson arrivals (live tracks' windows come at independent phases)."""
    rng, t, times = random.Random(seed), 0.0, []
    while (t := t + rng.expovariate(rate)) < seconds:
        times.append(t)
    return times


COST = linear_cost(0.02, 0.005)  # 16 windows in 0.1 s: 160 windows/s per worker


def warmed(batching: str, workers: int = 1, **kw) -> Batcher:
    kw = {"max_batch": 16, "max_wait": 0.02, "budget": 0.4, "max_lag": 5.0, **kw}
    b = Batcher(batching=batching, queue_size=512, workers=workers, **kw)
    if batching == "deadline":
        learn(b, 1, COST(1))  # the daemon's start-up probe does this through the engine
        b.stats = type(b.stats)()
    return b


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("rate", [1, 5, 20, 40])
@pytest.mark.parametrize("arrive", ["periodic", "jittered"])
def test_at_low_load_no_window_waits_past_its_budget(workers, rate, arrive):
    """While a worker is free whenever a batch is due, every window is scored within the
    budget (wait + inference), and the batches are larger than one window."""
    times = periodic(rate, 20) if arrive == "periodic" else jittered(rate, 20, seed=rate)
    run = simulate(warmed("deadline", workers), times, COST, workers)
    assert sorted(run["out"]) == list(range(len(times)))
    assert max(run["latencies"]) <= 0.4 + 1e-9
    if rate >= 5:
        assert np.mean(run["sizes"]) > 1.5


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("load", [0.5, 0.7, 0.9])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_under_load_the_bound_holds_within_one_batch_and_batches_beat_greedy(workers, load, seed):
    """Up to 90 % of what the workers serve at full batches: no window waits more than its
    budget plus one full batch that was already running when its batch was due; batches are
    larger than greedy's on the same arrivals, so the workers are busy for less time; and
    nothing is dropped."""
    rate = load * workers * 16 / COST(16)
    times = jittered(rate, 20, seed)
    runs = {p: simulate(warmed(p, workers), times, COST, workers) for p in ("greedy", "deadline")}
    for run in runs.values():
        assert sorted(run["out"]) == list(range(len(times)))
    d, g = runs["deadline"], runs["greedy"]
    assert max(d["latencies"]) <= 0.4 + COST(16) + 1e-9
    assert np.mean(d["sizes"]) > np.mean(g["sizes"])
    assert sum(map(COST, d["sizes"])) < sum(map(COST, g["sizes"]))


def test_when_greedys_small_batches_saturate_the_workers_deadline_still_keeps_up():
    """A cost with a large fixed part: greedy's small batches cannot keep up with 200
    windows/s on one worker (its lag drops pile up), deadline's full ones can."""
    cost = linear_cost(0.06, 0.0015)  # 1 window 61.5 ms, 16 windows 84 ms (190 w/s)
    times = jittered(170, 20, seed=7)
    stats = {}
    for policy in ("greedy", "deadline"):
        b = warmed(policy, max_lag=1.0)
        b.cost = BatchCost()
        b.cost.add(1, cost(1))
        run = simulate(b, times, cost)
        assert sorted(run["out"]) == list(range(len(times)))
        stats[policy] = b.stats
    assert stats["deadline"].dropped_lag == 0 and stats["deadline"].dropped_overflow == 0
    assert stats["deadline"].scored == len(times)
    assert stats["deadline"].scored >= stats["greedy"].scored


@given(
    st.lists(st.floats(0, 0.3), min_size=1, max_size=80),
    st.sampled_from(["greedy", "deadline"]),
    st.integers(1, 2),
    st.floats(0.001, 0.3),
    st.floats(0.0, 0.05),
)
def test_no_starvation_every_window_leaves_once_and_lag_drops_are_counted(
    gaps, batching, workers, fixed, per_window
):
    """Any arrivals, either policy, any model speed (also slower than the budget or max_lag):
    every window leaves exactly once, scored or dropped (lag or queue), and the counters add
    up; a window dropped for lag had waited more than max_lag when its batch formed."""
    b = Batcher(
        batching=batching,
        max_batch=4,
        max_wait=0.02,
        budget=0.2,
        max_lag=0.5,
        queue_size=8,
        workers=workers,
    )
    times = list(np.cumsum(gaps))
    run = simulate(b, times, linear_cost(fixed, per_window), workers)
    assert sorted(run["out"]) == list(range(len(times)))
    s = b.stats
    assert s.submitted == len(times)
    assert s.scored + s.dropped_lag + s.dropped_overflow == len(times)
    assert all(1 <= n <= 4 for n in run["sizes"])
