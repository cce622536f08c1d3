"""The scoring engine: one per daemon, batching the windows of every live track.

Windows from all tracks meet in one bounded queue. A single worker thread takes what is
waiting (up to ``max_batch``, waiting at most ``max_wait_ms`` for a batch to fill), scores it
with :func:`streamguard.scoring.batching.score_windows` — the same function the file scanner
uses — and hands each score back to the asyncio loop with ``call_soon_threadsafe``.

It never falls behind silently:
- a window that waited longer than ``max_lag_seconds`` is dropped (its callback is told
  ``None``) and counted, so latency stays bounded when compute is slower than real time;
- when the queue is full the *oldest* waiting window is dropped the same way;
- queue depth, batch size, inference time, lag and the real-time factor are exported.

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

import structlog

from streamguard.audio.windows import Window
from streamguard.model.base import Detector
from streamguard.scoring.batching import score_windows

log = structlog.get_logger(__name__)

#: Seconds over which the worker's busy share (utilization) is measured.
UTILIZATION_PERIOD = 2.0

#: Called on the loop thread with P(fake), or ``None`` when the window was dropped.
ScoreCallback = Callable[[float | None], None]


@dataclass
class _Request:
    window: Window
    callback: ScoreCallback
    enqueued: float  # time.monotonic() at submit


@dataclass
class EngineStats:
    """Counters the engine keeps; read by /healthz, /metrics and ``bench``."""

    submitted: int = 0
    scored: int = 0
    dropped_lag: int = 0
    dropped_overflow: int = 0
    batches: int = 0
    inference_seconds: float = 0.0
    audio_seconds_scored: float = 0.0
    last_heartbeat: float = field(default_factory=time.monotonic)
    utilization: float = 0.0  # busy share of wall time over the last UTILIZATION_PERIOD

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
        max_batch: int = 16,
        max_wait_ms: float = 20.0,
        max_lag_seconds: float = 5.0,
        queue_size: int = 256,
        hop_seconds: float = 1.0,
        metrics=None,
    ) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be >= 1")
        self.detector = detector
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
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._idle = asyncio.Event()
        self._util_mark = (time.monotonic(), 0.0)  # (when, inference_seconds then)
        self._pending = 0  # submitted, callback not yet run (loop thread only)

    # -- loop side ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the worker; call from the running loop."""
        self._loop = asyncio.get_running_loop()
        self._idle.set()
        self._thread = threading.Thread(target=self._run, name="scoring-engine", daemon=True)
        self._thread.start()

    def submit(self, window: Window, callback: ScoreCallback) -> None:
        """Queue one window; ``callback`` runs later on the loop thread."""
        overflow: _Request | None = None
        with self._cond:
            if len(self._queue) >= self.queue_size:
                overflow = self._queue.popleft()
                self.stats.dropped_overflow += 1
            self._queue.append(_Request(window, callback, time.monotonic()))
            self.stats.submitted += 1
            depth = len(self._queue)
            self._cond.notify()
        self._pending += 1
        self._idle.clear()
        if overflow is not None:
            self._pending -= 1
            self._count_drop("queue")
            overflow.callback(None)
        if self.metrics is not None:
            self.metrics.engine_queue_depth.set(depth)

    @property
    def depth(self) -> int:
        with self._cond:
            return len(self._queue)

    def heartbeat_age(self) -> float:
        """Seconds since the worker last proved it is alive."""
        return time.monotonic() - self.stats.last_heartbeat

    async def drain(self) -> None:
        """Wait until every queued window has been scored (or dropped)."""
        await self._idle.wait()

    async def stop(self) -> None:
        """Score what is queued, then stop the worker."""
        await self.drain()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # -- worker side ---------------------------------------------------------------------------
    def _take_batch(self) -> list[_Request] | None:
        """Block until a batch is ready; None when stopping with nothing left."""
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
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            batch = self._take_batch()
            self.stats.last_heartbeat = time.monotonic()
            if batch is None:
                return
            now = time.monotonic()
            fresh = [r for r in batch if now - r.enqueued <= self.max_lag]
            stale = [r for r in batch if now - r.enqueued > self.max_lag]
            scores = []
            elapsed = 0.0
            if fresh:
                started = time.perf_counter()
                try:
                    scores = score_windows(
                        self.detector, [r.window for r in fresh], max_batch=self.max_batch
                    )
                except Exception:  # a bug in a model must not kill the daemon silently
                    log.exception("inference_failed", batch=len(fresh))
                    stale.extend(fresh)
                    fresh, scores = [], []
                elapsed = time.perf_counter() - started
            self.stats.last_heartbeat = time.monotonic()
            self._deliver(fresh, scores, stale, elapsed, now)

    def _deliver(self, fresh, scores, stale, elapsed: float, now: float) -> None:
        stats = self.stats
        stats.batches += 1 if fresh else 0
        stats.scored += len(fresh)
        stats.dropped_lag += len(stale)
        stats.inference_seconds += elapsed
        stats.audio_seconds_scored += len(fresh) * self.hop_seconds
        self._update_utilization(now)
        m = self.metrics
        if m is not None:
            if fresh:
                m.windows_scored_total.inc(len(fresh))
                m.engine_batch_size.observe(len(fresh))
                m.engine_inference_seconds.observe(elapsed)
                for r in fresh:
                    m.engine_lag_seconds.observe(now - r.enqueued + elapsed)
                m.realtime_factor.set(stats.realtime_factor)
            m.engine_queue_depth.set(self.depth)
        assert self._loop is not None
        results = [(r.callback, float(s)) for r, s in zip(fresh, scores, strict=True)]
        results += [(r.callback, None) for r in stale]
        self._loop.call_soon_threadsafe(self._complete, results, len(stale))

    def _update_utilization(self, now: float) -> None:
        since, busy = self._util_mark
        if now - since >= UTILIZATION_PERIOD:
            share = (self.stats.inference_seconds - busy) / (now - since)
            self.stats.utilization = min(1.0, share)
            self._util_mark = (now, self.stats.inference_seconds)
            if self.metrics is not None:
                self.metrics.engine_utilization.set(self.stats.utilization)

    def _complete(self, results, n_stale: int) -> None:
        """On the loop thread: run the callbacks; idle once nothing submitted is outstanding."""
        for _ in range(n_stale):
            self._count_drop("lag")
        self._pending -= len(results)
        for callback, score in results:
            callback(score)
        if self._pending == 0:
            self._idle.set()

    def _count_drop(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.windows_dropped_total.labels(reason=reason).inc()
