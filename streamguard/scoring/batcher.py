"""The scoring engine's batching policy as a plain object: which windows go together, which are
dropped, and what the counters say. No threads, no locks, no clock of its own.

Owns: the bounded queue of windows from every live track (:meth:`Batcher.push`), batch
formation (:meth:`Batcher.next_batch`), the two capacity drops (``queue``: the oldest waiting
window when the queue is full; ``lag``: a window that waited longer than ``max_lag`` when its
batch is formed), and :class:`EngineStats` (:meth:`Batcher.complete`). :class:`InOrder` hands
outcomes back in submission order, whichever batch finished first.

The engine (:mod:`streamguard.scoring.engine`) is the edge: it holds a lock around one
``Batcher``, sleeps its worker threads for :meth:`Batcher.wait_seconds`, runs inference and
moves outcomes to the event loop. Everything here takes ``now`` as an argument, so the unit
tests drive it through any schedule without a thread or a sleep.

Two formation policies (``[model] batching``); under both a batch holds at most ``max_batch``
windows, oldest first, and goes at once when ``max_batch`` windows wait or the engine is
stopping:

- ``greedy`` (the policy from before it moved here): each worker keeps its own deadline, armed
  ``max_wait`` after it first finds the queue non-empty, and takes whatever waits then. (One
  deadline shared by the workers would make the second worker wait a full ``max_wait`` again
  after the first took a batch: larger batches and more lag at moderate load, measured.)
- ``deadline`` (issue #20): a partial batch of ``n`` windows goes when the oldest of them has
  waited ``budget`` minus the expected inference seconds of ``n`` windows, so that it is scored
  within ``budget`` of being queued while the workers keep up: under load batches fill up (fewer,
  larger, cheaper per window), at low load the latency stays bounded. The expected seconds per
  batch size are learnt from :meth:`Batcher.complete` (:class:`BatchCost`; before the first
  batch, 0: the first window waits its whole budget). A window that would make the batch end
  past the oldest one's budget waits for the next batch, unless the oldest is past saving.
  The bound needs a free worker when a batch is due; under load it is the budget plus the
  batch already running (unit-tested on simulated schedules).
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from streamguard.audio.windows import Window
from streamguard.scoring.outcome import ScoreOutcome, Unscored

__all__ = [
    "BATCHING",
    "UTILIZATION_PERIOD",
    "Batch",
    "BatchCost",
    "Batcher",
    "Completed",
    "EngineStats",
    "InOrder",
    "Request",
]

#: Seconds over which the workers' busy share (utilization) is measured.
UTILIZATION_PERIOD = 2.0

#: The batch formation policies (the module docstring says what each does).
BATCHING = ("greedy", "deadline")

T = TypeVar("T")


@dataclass
class Request:
    """One window waiting to be scored. ``ticket`` is the edge's (a callback); ``seq`` is the
    submission order outcomes are delivered in."""

    window: Window
    ticket: Any
    enqueued: float
    seq: int = 0


@dataclass
class Batch:
    """What a worker takes: ``fresh`` to score, ``stale`` already past ``max_lag``."""

    fresh: list[Request]
    stale: list[Request]
    formed: float  # the ``now`` it was formed at (lag is measured from it)

    @property
    def windows(self) -> list[Window]:
        return [r.window for r in self.fresh]


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
    last_heartbeat: float = 0.0
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


@dataclass
class Completed:
    """A finished batch as the edge needs it: every request with its outcome (stale ones as
    ``Unscored("lag")``), and what the metrics count."""

    results: list[tuple[Request, ScoreOutcome]]
    scored: list[Request]
    failed: list[str]  # reasons of the model failures
    lag: int  # windows dropped for lag
    size: int  # windows that went to the model
    utilization_changed: bool


class BatchCost:
    """Expected inference seconds of a batch of ``n`` windows, learnt from the finished ones:
    an exponential moving average per batch size (the cost of a size is not linear in it, and
    drifts with the host's load). A size not seen yet is estimated from the nearest smaller one
    seen, scaled up by ``n / k`` (no less than its true cost while batches have a fixed
    overhead), else from the smallest one seen, unscaled; 0.0 before any batch."""

    def __init__(self, smoothing: float = 0.2) -> None:
        self.smoothing = smoothing
        self._seconds: dict[int, float] = {}

    def add(self, size: int, seconds: float) -> None:
        old = self._seconds.get(size)
        self._seconds[size] = seconds if old is None else old + self.smoothing * (seconds - old)

    def expected(self, size: int) -> float:
        if size in self._seconds:
            return self._seconds[size]
        if not self._seconds:
            return 0.0
        smaller = [k for k in self._seconds if k < size]
        if smaller:
            k = max(smaller)
            return self._seconds[k] * size / k
        return self._seconds[min(self._seconds)]


class Batcher:
    """See the module docstring. Not thread-safe: the engine holds a lock around it."""

    def __init__(
        self,
        *,
        max_batch: int = 16,
        max_wait: float = 0.02,
        max_lag: float = 5.0,
        queue_size: int = 256,
        hop_seconds: float = 1.0,
        workers: int = 1,
        batching: str = "greedy",
        budget: float = 0.4,
        now: float = 0.0,
    ) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be >= 1")
        if batching not in BATCHING:
            raise ValueError(f"batching must be one of {', '.join(BATCHING)}, not {batching!r}")
        self.batching = batching
        # deadline policy: seconds from queueing to scored that a partial batch may use
        self.budget = budget
        self.cost = BatchCost()
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.max_lag = max_lag
        self.queue_size = queue_size
        # Each scored window advances its track by one hop of new audio: the honest unit
        # for the real-time factor (a 4 s window every 1 s is 1 s of audio to keep up with).
        self.hop_seconds = hop_seconds
        self.workers = workers
        self.stats = EngineStats(last_heartbeat=now)
        self._queue: collections.deque[Request] = collections.deque()
        self._next_seq = 0
        self._deadlines: dict[int, float] = {}  # per worker: when its batch must go
        self._stopping = False
        self._util_mark = (now, 0.0)  # (when, inference_seconds then)

    # -- in -------------------------------------------------------------------------------------
    def push(self, window: Window, ticket: Any, now: float) -> Request | None:
        """Queue one window. Returns the oldest waiting request when the queue was full: it is
        dropped (``Unscored("queue")``, counted in ``dropped_overflow``)."""
        overflow = None
        if len(self._queue) >= self.queue_size:
            overflow = self._queue.popleft()
            self.stats.dropped_overflow += 1
        request = Request(window, ticket, now, self._next_seq)
        self._next_seq += 1
        self._queue.append(request)
        self.stats.submitted += 1
        return overflow

    def stop(self) -> None:
        """From now on a waiting batch goes at once, and :meth:`finished` says when to quit."""
        self._stopping = True

    # -- out ------------------------------------------------------------------------------------
    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def finished(self) -> bool:
        """Stopping with nothing left: a worker may exit."""
        return self._stopping and not self._queue

    def next_batch(self, now: float, worker: int = 0) -> Batch | None:
        """The batch ``worker`` scores now, or None (nothing queued, or worth waiting a little
        more: ask :meth:`wait_seconds` how long)."""
        if not self._queue:
            self._deadlines.pop(worker, None)  # its batch went to another worker
            return None
        size = min(self.max_batch, len(self._queue))
        if size < self.max_batch and not self._stopping and now < self._release(now, worker):
            return None
        if self.batching == "deadline" and not self._stopping:
            size = self._fitting(now, size)
        self._deadlines.pop(worker, None)
        taken = [self._queue.popleft() for _ in range(size)]
        fresh = [r for r in taken if now - r.enqueued <= self.max_lag]
        stale = [r for r in taken if now - r.enqueued > self.max_lag]
        return Batch(fresh, stale, now)

    def wait_seconds(self, now: float, worker: int = 0) -> float | None:
        """How long ``worker`` may sleep before :meth:`next_batch` can answer differently
        without a push: None while the queue is empty (wait for a push)."""
        if not self._queue:
            return None
        if self._stopping or len(self._queue) >= self.max_batch:
            return 0.0
        if self.batching == "greedy" and worker not in self._deadlines:
            return 0.0  # next_batch arms the worker's deadline first
        return max(0.0, self._release(now, worker) - now)

    def _fitting(self, now: float, size: int) -> int:
        """The most of the ``size`` waiting windows (at least one) that can still be scored
        within the oldest one's budget: a window that came just before the release makes the
        batch costlier than the release allowed for, and must wait for the next batch. When
        the oldest is already past saving (a worker came late), all of them go."""
        due = self._queue[0].enqueued + self.budget
        if now + self.cost.expected(1) > due:
            return size
        while size > 1 and now + self.cost.expected(size) > due:
            size -= 1
        return size

    def _release(self, now: float, worker: int) -> float:
        """When the partial batch now waiting goes to ``worker`` (queue not empty)."""
        if self.batching == "deadline":
            # the oldest window's budget, less what scoring the batch is expected to take
            oldest = self._queue[0].enqueued
            return oldest + self.budget - self.cost.expected(len(self._queue))
        # greedy: worth waiting a little for, never more
        return self._deadlines.setdefault(worker, now + self.max_wait)

    def complete(
        self, batch: Batch, outcomes: list[ScoreOutcome], elapsed: float, now: float
    ) -> Completed:
        """Count a scored batch (``outcomes`` for ``batch.fresh``, in order; ``elapsed``
        inference seconds) and return every request with its outcome."""
        stats = self.stats
        results = list(zip(batch.fresh, outcomes, strict=True))
        results += [(r, Unscored("lag")) for r in batch.stale]
        scored = [r for r, o in results if not isinstance(o, Unscored)]  # Allowlisted is scored
        failed = [o.reason for _, o in results if isinstance(o, Unscored) and o.failed]
        lag, size = len(batch.stale), len(batch.fresh)
        if size:
            stats.batches += 1
            stats.batch_sizes[size] += 1
            stats.batch_seconds.append(elapsed)
            self.cost.add(size, elapsed)
        stats.scored += len(scored)
        stats.failed += len(failed)
        stats.dropped_lag += lag
        stats.inference_seconds += elapsed
        stats.audio_seconds_scored += len(scored) * self.hop_seconds
        changed = self._update_utilization(now)
        return Completed(results, scored, failed, lag, size, changed)

    def _update_utilization(self, now: float) -> bool:
        since, busy = self._util_mark
        if now - since < UTILIZATION_PERIOD:
            return False
        # Busy share of the workers together: 1.0 = every worker computing all the time.
        share = (self.stats.inference_seconds - busy) / (now - since) / max(1, self.workers)
        self.stats.utilization = min(1.0, share)
        self._util_mark = (now, self.stats.inference_seconds)
        return True


class InOrder(Generic[T]):
    """Releases items in sequence order (0, 1, 2 ...), holding back those that overtook an
    earlier one: a track's smoother must see its windows in call order, whichever worker
    finished first."""

    def __init__(self) -> None:
        self._next = 0
        self._ready: dict[int, T] = {}

    def add(self, items: Iterable[tuple[int, T]]) -> list[T]:
        """Take ``(seq, item)`` pairs; return the items now due, in order."""
        for seq, item in items:
            self._ready[seq] = item
        due = []
        while self._next in self._ready:
            due.append(self._ready.pop(self._next))
            self._next += 1
        return due

    @property
    def held(self) -> int:
        """Items waiting for an earlier one."""
        return len(self._ready)
