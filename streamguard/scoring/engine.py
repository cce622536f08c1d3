"""The scoring engine: one per daemon, batching the windows of every live track.

Windows from all tracks meet in one bounded queue. ``workers`` worker threads (one by
default) each take what is waiting (up to ``max_batch``, waiting at most ``max_wait_ms`` for a
batch to fill), score it with :func:`streamguard.scoring.batching.score_windows` — the same
function the file scanner uses — on their own runner, and hand each score back to the asyncio
loop with ``call_soon_threadsafe``. A runner is the detector itself (inference in this
process; the backends release the GIL while they compute) or a
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
import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import structlog

from streamguard.audio.windows import Window
from streamguard.errors import StreamguardError
from streamguard.model.base import Detector
from streamguard.scoring.batching import score_windows
from streamguard.scoring.outcome import ScoreOutcome, Unscored, stamp_timing

log = structlog.get_logger(__name__)

#: Seconds over which the worker's busy share (utilization) is measured.
UTILIZATION_PERIOD = 2.0

#: Scores this far outside [0, 1] are rounding (fp16 sigmoids); further out is a broken model.
RANGE_TOLERANCE = 1e-4

#: Called on the loop thread with P(fake), or :class:`Unscored` saying why there is none.
ScoreCallback = Callable[[ScoreOutcome], None]


@dataclass
class _Request:
    window: Window
    callback: ScoreCallback
    enqueued: float  # time.monotonic() at submit
    seq: int = 0  # submission order: outcomes are delivered in it


@dataclass
class EngineStats:
    """Counters the engine keeps; read by /healthz, /metrics and ``bench``."""

    submitted: int = 0
    scored: int = 0
    failed: int = 0
    dropped_lag: int = 0
    dropped_overflow: int = 0
    batches: int = 0
    inference_seconds: float = 0.0
    audio_seconds_scored: float = 0.0
    last_heartbeat: float = field(default_factory=time.monotonic)
    utilization: float = 0.0  # busy share of wall time over the last UTILIZATION_PERIOD
    #: windows per inference batch -> batches (what ``bench`` prints)
    batch_sizes: collections.Counter[int] = field(default_factory=collections.Counter)
    #: wall seconds of the most recent inference batches (bounded)
    batch_seconds: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=10_000)
    )

    @property
    def realtime_factor(self) -> float:
        """Inference seconds per second of track audio (all tracks together): the cost of a
        call-second. Saturation shows in :attr:`utilization`, not here."""
        if not self.audio_seconds_scored:
            return 0.0
        return self.inference_seconds / self.audio_seconds_scored


class ScoringEngine:
    """Batch windows from every track onto one detector, on one worker thread."""

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
        metrics=None,
    ) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be >= 1")
        if runners is not None and not runners:
            raise ValueError("runners must name at least one runner")
        self.detector = detector
        # One worker thread per runner; each runner scores one batch at a time.
        self.runners = list(runners) if runners is not None else [detector]
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_lag = max_lag_seconds
        self.queue_size = queue_size
        # Each scored window advances its track by one hop of new audio: the honest unit
        # for the real-time factor (a 4 s window every 1 s is 1 s of audio to keep up with).
        self.hop_seconds = hop_seconds
        self.metrics = metrics
        self.stats = EngineStats()
        self._queue: collections.deque[_Request] = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._stats_lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._util_mark = (time.monotonic(), 0.0)  # (when, inference_seconds then)
        self._batch_cap = max_batch  # halved on CUDA out-of-memory
        self._pending = 0  # submitted, callback not yet run (loop thread only)
        # Outcomes are handed back in submission order, whichever worker finishes first: a
        # track's smoother must see its windows in call order (loop thread only).
        self._next_seq = 0
        self._next_delivery = 0
        self._ready: dict[int, tuple[ScoreCallback, ScoreOutcome]] = {}
        # Model swaps: the generation of the runners each worker is scoring with (None: idle)
        self.generation = 0
        self._busy: list[int | None] = [None] * len(self.runners)
        # [allowlist]: (windows, outcomes) -> outcomes with enrolled voices marked; run on the
        # worker thread after each batch (streamguard.allowlist.checker)
        self.allowlist: Callable[[list[Window], list[ScoreOutcome]], list[ScoreOutcome]] | None
        self.allowlist = None

    # -- loop side ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker; call from the running loop."""
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
        overflow: _Request | None = None
        seq, self._next_seq = self._next_seq, self._next_seq + 1
        with self._cond:
            if len(self._queue) >= self.queue_size:
                overflow = self._queue.popleft()
                self.stats.dropped_overflow += 1
            self._queue.append(_Request(window, callback, time.monotonic(), seq))
            self.stats.submitted += 1
            depth = len(self._queue)
            self._cond.notify()
        self._pending += 1
        self._idle.clear()
        if overflow is not None:
            self._count_drop("queue")
            self._complete([(overflow.seq, overflow.callback, Unscored("queue"))])
        if self.metrics is not None:
            self.metrics.engine_queue_depth.set(depth)

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def heartbeat_age(self) -> float:
        """Seconds since the worker last proved it is alive."""
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
        """Score what is queued, then stop the worker."""
        await self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            await asyncio.to_thread(thread.join)

    # -- worker side ---------------------------------------------------------------------------
    def _take_batch(self, worker: int = 0) -> tuple[list[_Request], Detector] | None:
        """Block until a batch is ready: it and the runner to score it with (the current
        generation's); None when stopping with nothing left."""
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait(timeout=1.0)
                self.stats.last_heartbeat = time.monotonic()
            # A batch is worth waiting a little for, but never longer than max_wait.
            deadline = time.monotonic() + self.max_wait
            while len(self._queue) < self.max_batch and not self._stopping:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(timeout=remaining)
            n = min(self.max_batch, len(self._queue))
            self._busy[worker] = self.generation
            return [self._queue.popleft() for _ in range(n)], self.runners[worker]

    def _run(self, worker: int) -> None:
        while True:
            taken = self._take_batch(worker)
            self.stats.last_heartbeat = time.monotonic()
            if taken is None:
                return
            batch, runner = taken
            try:
                self._run_batch(runner, batch)
            finally:
                with self._cond:
                    self._busy[worker] = None

    def _run_batch(self, runner: Detector, batch: list[_Request]) -> None:
        now = time.monotonic()
        fresh = [r for r in batch if now - r.enqueued <= self.max_lag]
        stale = [r for r in batch if now - r.enqueued > self.max_lag]
        outcomes: list[ScoreOutcome] = []
        elapsed = 0.0
        if fresh:
            started = time.perf_counter()
            outcomes = self._score(runner, [r.window for r in fresh])
            elapsed = time.perf_counter() - started
            stamp_timing(fresh, now, elapsed)  # for callbacks that trace (telemetry.py)
            check = self.allowlist
            if check is not None:
                try:
                    outcomes = check([r.window for r in fresh], outcomes)
                except Exception as exc:  # the allow-list failing must not cost the scores
                    log.warning("allowlist_failed", error=_describe(exc))
        self.stats.last_heartbeat = time.monotonic()
        results = list(zip(fresh, outcomes, strict=True))
        results += [(r, Unscored("lag")) for r in stale]
        self._deliver(results, elapsed, now)

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

    def _deliver(self, results: list[tuple[_Request, ScoreOutcome]], elapsed: float, now: float):
        with self._stats_lock:  # several workers may finish at once
            self._record(results, elapsed, now)
        assert self._loop is not None
        self._loop.call_soon_threadsafe(
            self._complete, [(r.seq, r.callback, o) for r, o in results]
        )

    def _record(self, results: list[tuple[_Request, ScoreOutcome]], elapsed: float, now: float):
        stats = self.stats
        scored = [r for r, o in results if not isinstance(o, Unscored)]
        failed = [o.reason for _, o in results if isinstance(o, Unscored) and o.failed]
        n_lag = sum(1 for _, o in results if isinstance(o, Unscored) and o.reason == "lag")
        if len(results) > n_lag:
            stats.batches += 1
            stats.batch_sizes[len(results) - n_lag] += 1
            stats.batch_seconds.append(elapsed)
        stats.scored += len(scored)
        stats.failed += len(failed)
        stats.dropped_lag += n_lag
        stats.inference_seconds += elapsed
        stats.audio_seconds_scored += len(scored) * self.hop_seconds
        self._update_utilization(now)
        m = self.metrics
        if m is not None:
            if scored:
                m.windows_scored_total.inc(len(scored))
                m.engine_batch_size.observe(len(results) - n_lag)
                m.engine_inference_seconds.observe(elapsed)
                for r in scored:
                    m.engine_lag_seconds.observe(now - r.enqueued + elapsed)
                m.realtime_factor.set(stats.realtime_factor)
            for reason in failed:
                m.windows_failed_total.labels(reason=reason).inc()
            if n_lag:
                m.windows_dropped_total.labels(reason="lag").inc(n_lag)
            m.engine_queue_depth.set(self.depth)

    def _update_utilization(self, now: float) -> None:
        since, busy = self._util_mark
        if now - since >= UTILIZATION_PERIOD:
            # Busy share of the workers together: 1.0 = every worker computing all the time.
            share = (self.stats.inference_seconds - busy) / (now - since) / len(self.runners)
            self.stats.utilization = min(1.0, share)
            self._util_mark = (now, self.stats.inference_seconds)
            if self.metrics is not None:
                self.metrics.engine_utilization.set(self.stats.utilization)

    def _complete(self, results: list[tuple[int, ScoreCallback, ScoreOutcome]]) -> None:
        """On the loop thread: run callbacks in submission order (holding back outcomes that
        overtook an earlier window still being scored); idle once nothing is outstanding."""
        for seq, callback, outcome in results:
            self._ready[seq] = (callback, outcome)
        while self._next_delivery in self._ready:
            callback, outcome = self._ready.pop(self._next_delivery)
            self._next_delivery += 1
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
