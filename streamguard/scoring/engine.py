"""The scoring engine: one per daemon, batching the windows of every live track.

Windows from all tracks meet in one bounded queue, the pure
:class:`~streamguard.scoring.batcher.Batcher` (batch formation, drop policy, counters); this
module is its edge: one worker thread per runner (``[model] workers``, 2 by default in the
daemon; one when the engine is built from a bare detector), each taking what is waiting (up
to ``max_batch``, waiting at most ``max_wait_ms`` for a batch to fill), scoring it with
:func:`streamguard.scoring.batching.score_windows` (the one place windows become model
input) on its runner, and handing each score back to the asyncio loop with
``call_soon_threadsafe``. A runner is the detector itself (inference in this process; the
backends release the GIL while they compute) or a
:class:`~streamguard.scoring.worker.ProcessDetector` (inference in a child process fed through
shared memory, so no per-frame Python of the event loop ever waits on it). Two workers with one
CPU thread each use two cores without the barrier waits of one batch split over two threads,
which collapse when a shared host takes a core away (benchmarks/README.md).

It never falls behind silently:
- a window that waited longer than ``max_lag_seconds`` is dropped (its callback gets
  ``Unscored("lag")``) and counted, so latency stays bounded when compute is slower than real
  time;
- when the queue is full the *oldest* waiting window is dropped the same way (``"queue"``);
- queue depth, batch size, inference time, lag and the real-time factor are exported.

One bad window never costs another anything: a batch that raises, or that returns a
non-finite (NaN/inf) or out-of-range score for some rows, has those rows retried once each,
alone; what still fails is handed back as ``Unscored("error" | "nonfinite" | "out_of_range")``
and counted in ``windows_failed_total{reason}``, and everything else in the batch keeps its
score. A CUDA out-of-memory error halves the batch size (for the rest of the run) and
retries. Each callback runs on its own, so one that raises cannot keep the others (and the
drain that waits for them) from completing. Nothing non-finite ever leaves the engine.

A model swap (:meth:`ScoringEngine.swap`) replaces the runners between batches: a batch a
worker already took finishes on the runner it started with, every later batch uses the new
one; the queue is untouched, so no window is lost or scored twice.

The worker also stamps a heartbeat after every wake-up; the daemon only pings the systemd
watchdog while that heartbeat is fresh, so a stalled engine gets the service restarted.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import numpy as np
import structlog

from streamguard.audio.windows import Window
from streamguard.errors import StreamguardError
from streamguard.model.base import Detector
from streamguard.scoring.batcher import Batch, Batcher, Completed, EngineStats, InOrder
from streamguard.scoring.batching import score_windows
from streamguard.scoring.outcome import ScoreOutcome, Unscored, stamp_timing

log = structlog.get_logger(__name__)

#: Scores this far outside [0, 1] are rounding (fp16 sigmoids); further out is a broken model.
RANGE_TOLERANCE = 1e-4

#: Called on the loop thread with P(fake), or :class:`Unscored` saying why there is none.
ScoreCallback = Callable[[ScoreOutcome], None]


class ScoringEngine:
    """Batch windows from every track onto the runners, one worker thread per runner.

    The batching policy is :class:`~streamguard.scoring.batcher.Batcher` (pure); this class is
    its edge: a lock and a condition around it, the worker threads, inference with failure
    isolation, metrics, and the hand-off of outcomes to the event loop.

    **Swapping the model between batches**: a worker asks :attr:`runner_for` for its runner
    each time it takes a batch, under the batcher's lock, ``runner_for(worker_index) ->
    Detector`` (by default ``runners[worker_index]``). :meth:`swap` (the hot model swap,
    ``Daemon.swap_model``) replaces ``runners`` and bumps :attr:`generation`, so each worker's
    next batch runs on the new runner while a batch in flight finishes on the old one, and
    :meth:`released` says when the old runners are free. The number of workers is fixed at
    :meth:`start`.
    """

    def __init__(
        self,
        detector: Detector,
        *,
        runners: list[Detector] | None = None,
        max_batch: int = 16,
        max_wait_ms: float = 20.0,
        max_lag_seconds: float = 5.0,
        queue_size: int = 256,
        hop_seconds: float = 1.0,
        batching: str = "greedy",
        batch_budget_ms: float = 400.0,
        metrics=None,
    ) -> None:
        if runners is not None and not runners:
            raise ValueError("runners must name at least one runner")
        self.detector = detector
        # One worker thread per runner; each runner scores one batch at a time.
        self.runners = list(runners) if runners is not None else [detector]
        self.runner_for: Callable[[int], Detector] = lambda index: self.runners[index]
        self.batcher = Batcher(
            max_batch=max_batch,
            max_wait=max_wait_ms / 1000.0,
            max_lag=max_lag_seconds,
            queue_size=queue_size,
            hop_seconds=hop_seconds,
            workers=len(self.runners),
            batching=batching,
            budget=batch_budget_ms / 1000.0,
            now=time.monotonic(),
        )
        self.metrics = metrics
        self._cond = threading.Condition()  # guards the batcher (and its stats)
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._batch_cap = max_batch  # halved on CUDA out-of-memory
        self._pending = 0  # submitted, callback not yet run (loop thread only)
        self._in_order: InOrder[tuple[ScoreCallback, ScoreOutcome]] = InOrder()
        # Model swaps: the generation of the runners each worker is scoring with (None: idle)
        self.generation = 0
        self._busy: list[int | None] = [None] * len(self.runners)
        # [allowlist]: (windows, outcomes) -> outcomes with enrolled voices marked; run on the
        # worker thread after each batch (streamguard.allowlist.checker)
        self.allowlist: Callable[[list[Window], list[ScoreOutcome]], list[ScoreOutcome]] | None
        self.allowlist = None

    @property
    def stats(self) -> EngineStats:
        return self.batcher.stats

    @property
    def max_batch(self) -> int:
        return self.batcher.max_batch

    # -- loop side ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the workers; call from the running loop."""
        self._loop = asyncio.get_running_loop()
        self._idle.set()
        for i in range(len(self.runners)):
            thread = threading.Thread(
                target=self._run, args=(i,), name=f"scoring-engine-{i}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def submit(self, window: Window, callback: ScoreCallback) -> None:
        """Queue one window; ``callback`` runs later on the loop thread."""
        with self._cond:
            overflow = self.batcher.push(window, callback, time.monotonic())
            depth = self.batcher.depth
            self._cond.notify()
        self._pending += 1
        self._idle.clear()
        if overflow is not None:
            self._count_drop("queue")
            self._complete([(overflow.seq, overflow.ticket, Unscored("queue"))])
        if self.metrics is not None:
            self.metrics.engine_queue_depth.set(depth)

    @property
    def depth(self) -> int:
        with self._cond:
            return self.batcher.depth

    def heartbeat_age(self) -> float:
        """Seconds since a worker last proved it is alive."""
        return time.monotonic() - self.stats.last_heartbeat

    def swap(self, detector: Detector, runners: list[Detector]) -> tuple[list[Detector], int]:
        """Serve ``runners`` (one per worker, checked already) from the next batch on; returns
        the old runners and the new generation (see :meth:`released`)."""
        if len(runners) != len(self.runners):
            raise ValueError(f"need {len(self.runners)} runners, got {len(runners)}")
        with self._cond:
            old, self.runners = self.runners, list(runners)
            self.detector = detector
            self.generation += 1
            return old, self.generation

    async def released(self, generation: int, poll: float = 0.01) -> None:
        """Wait until no worker still scores a batch taken before ``generation``: the old
        runners may then be closed."""
        while True:
            with self._cond:
                if all(g is None or g >= generation for g in self._busy):
                    return
            await asyncio.sleep(poll)

    async def drain(self) -> None:
        """Wait until every queued window has been scored (or dropped)."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Score what is queued, then stop the workers."""
        await self.drain()
        with self._cond:
            self.batcher.stop()
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    # -- worker side ---------------------------------------------------------------------------
    def _take_batch(self, worker: int) -> tuple[Batch, Detector] | None:
        """Block until the batcher hands out a batch: it and the runner to score it with (the
        current generation's, :attr:`runner_for`); None when stopping with nothing left.
        Wakes at least once a second to stamp the heartbeat."""
        with self._cond:
            while True:
                now = time.monotonic()
                self.stats.last_heartbeat = now
                batch = self.batcher.next_batch(now, worker)
                if batch is not None:
                    self._busy[worker] = self.generation
                    return batch, self.runner_for(worker)
                if self.batcher.finished:
                    return None
                wait = self.batcher.wait_seconds(now, worker)
                self._cond.wait(timeout=1.0 if wait is None else min(wait, 1.0))

    def _run(self, worker: int) -> None:
        while True:
            taken = self._take_batch(worker)
            if taken is None:
                return
            try:
                self._run_batch(*taken)
            finally:
                with self._cond:
                    self._busy[worker] = None

    def _run_batch(self, batch: Batch, runner: Detector) -> None:
        """One batch: inference, the allow-list, counting, the hand-off to the loop."""
        outcomes: list[ScoreOutcome] = []
        elapsed = 0.0
        if batch.fresh:
            started = time.perf_counter()
            outcomes = self._score(runner, batch.windows)
            elapsed = time.perf_counter() - started
            # for callbacks that trace (telemetry.py)
            stamp_timing([(r.ticket, r.enqueued) for r in batch.fresh], batch.formed, elapsed)
            outcomes = self._check_allowlist(batch.windows, outcomes)
        with self._cond:  # several workers may finish at once
            self.stats.last_heartbeat = time.monotonic()
            done = self.batcher.complete(batch, outcomes, elapsed, batch.formed)
            depth = self.batcher.depth
        self._export(done, elapsed, batch.formed, depth)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(
            self._complete, [(r.seq, r.ticket, o) for r, o in done.results]
        )

    def _check_allowlist(
        self, windows: list[Window], outcomes: list[ScoreOutcome]
    ) -> list[ScoreOutcome]:
        check = self.allowlist
        if check is None:
            return outcomes
        try:
            return check(windows, outcomes)
        except Exception as exc:  # the allow-list failing must not cost the scores
            log.warning("allowlist_failed", error=_describe(exc))
            return outcomes

    # -- inference, one window's failure isolated from the rest -----------------------------------
    def _score(self, runner: Detector, windows: list[Window]) -> list[ScoreOutcome]:
        """One outcome per window; rows that fail in the batch are retried once, alone."""
        try:
            raw: np.ndarray | None = self._infer(runner, windows)
        except Exception as exc:  # retry each row alone: find the one that breaks the batch
            log.warning("inference_failed", batch=len(windows), error=_describe(exc))
            raw = None
        outcomes: list[ScoreOutcome] = []
        for i, window in enumerate(windows):
            value = None if raw is None else _checked(raw[i])
            outcomes.append(
                value if isinstance(value, float) else self._score_alone(runner, window)
            )
        return outcomes

    def _score_alone(self, runner: Detector, window: Window) -> ScoreOutcome:
        try:
            outcome = _checked(self._infer(runner, [window])[0])
        except Exception as exc:
            log.warning("window_failed", start=window.start, error=_describe(exc))
            return Unscored("error")
        if isinstance(outcome, Unscored):
            log.warning("window_failed", start=window.start, reason=outcome.reason)
        return outcome

    def _infer(self, runner: Detector, windows: list[Window]) -> np.ndarray:
        """Scores for ``windows``; on CUDA out-of-memory, halve the batch size and retry."""
        while True:
            try:
                return score_windows(runner, windows, max_batch=self._batch_cap)
            except _CUDA_OOM:
                if self._batch_cap == 1:
                    raise
                self._batch_cap = max(1, min(self._batch_cap, len(windows)) // 2)
                log.warning("cuda_out_of_memory", max_batch=self._batch_cap)
                _empty_cuda_cache()

    def _export(self, done: Completed, elapsed: float, now: float, depth: int) -> None:
        m = self.metrics
        if m is None:
            return
        if done.scored:
            m.windows_scored_total.inc(len(done.scored))
            m.engine_batch_size.observe(done.size)
            m.engine_inference_seconds.observe(elapsed)
            for r in done.scored:
                m.engine_lag_seconds.observe(now - r.enqueued + elapsed)
            m.realtime_factor.set(self.stats.realtime_factor)
        for reason in done.failed:
            m.windows_failed_total.labels(reason=reason).inc()
        if done.lag:
            m.windows_dropped_total.labels(reason="lag").inc(done.lag)
        m.engine_queue_depth.set(depth)
        if done.utilization_changed:
            m.engine_utilization.set(self.stats.utilization)

    def _complete(self, results: list[tuple[int, ScoreCallback, ScoreOutcome]]) -> None:
        """On the loop thread: run callbacks in submission order (holding back outcomes that
        overtook an earlier window still being scored); idle once nothing is outstanding."""
        for callback, outcome in self._in_order.add((seq, (c, o)) for seq, c, o in results):
            self._pending -= 1
            _run_callback(callback, outcome)
        if self._pending == 0:
            self._idle.set()

    def _count_drop(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.windows_dropped_total.labels(reason=reason).inc()


def _run_callback(callback: ScoreCallback, outcome: ScoreOutcome) -> None:
    """A callback that raises is a bug in its call; it must not cost the others their scores."""
    try:
        callback(outcome)
    except Exception:
        log.exception("score_delivery_failed")


def _checked(value: float) -> ScoreOutcome:
    """A model output as a P(fake) in [0, 1], or why it is not one."""
    value = float(value)
    if not np.isfinite(value):
        return Unscored("nonfinite")
    if not -RANGE_TOLERANCE <= value <= 1 + RANGE_TOLERANCE:
        return Unscored("out_of_range")
    return min(max(value, 0.0), 1.0)


def _describe(exc: BaseException) -> str:
    """One line about an exception (no traceback: it would carry frame locals into the log)."""
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}"[:200]


def _cuda_oom_type() -> type[BaseException]:
    import torch

    return getattr(torch.cuda, "OutOfMemoryError", MemoryError)


_CUDA_OOM = _cuda_oom_type()


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def probe_detector(detector: Detector) -> None:
    """Refuse, in one line, a model whose scores are not finite P(fake) values.

    Run once at start-up on a silent and a noisy window: a broken fine-tune or an fp16
    overflow that turns every output into NaN would otherwise start, take calls, and alert on
    nothing. Raises :class:`StreamguardError`.
    """
    n = detector.window_samples
    rng = np.random.default_rng(0)
    probe = np.stack([np.zeros(n, np.float32), (0.1 * rng.standard_normal(n)).astype(np.float32)])
    try:
        scores = np.asarray(detector(probe), dtype=np.float64).reshape(-1)
    except Exception as exc:
        raise StreamguardError(
            f"model {detector.info.name} fails on a probe window: {_describe(exc)}"
        ) from None
    bad = [s for s in scores if not isinstance(_checked(s), float)]
    if bad or scores.shape[0] != probe.shape[0]:
        raise StreamguardError(
            f"model {detector.info.name} returns invalid scores on a probe window "
            f"({', '.join(f'{s:g}' for s in scores)}): not a P(fake) in [0, 1]; "
            "refusing to serve it"
        )
