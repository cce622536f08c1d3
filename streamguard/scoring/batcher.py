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

The formation policy (the same as before it moved here): each worker keeps its own deadline,
armed ``max_wait`` after it first finds the queue non-empty; it takes a batch as soon as
``max_batch`` windows wait, or at its deadline, or at once when the engine is stopping; a batch
holds at most ``max_batch`` windows, oldest first. (One deadline shared by the workers would
make the second worker wait a full ``max_wait`` again after the first took a batch: larger
batches and more lag at moderate load, measured.)
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from streamguard.audio.windows import Window
from streamguard.scoring.outcome import ScoreOutcome, Unscored

__all__ = [
    "UTILIZATION_PERIOD",
    "Batch",
    "Batcher",
    "Completed",
    "EngineStats",
    "InOrder",
    "Request",
]

#: Seconds over which the workers' busy share (utilization) is measured.
UTILIZATION_PERIOD = 2.0

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
        now: float = 0.0,
    ) -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError("max_batch and queue_size must be >= 1")
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
        if len(self._queue) < self.max_batch and not self._stopping:
            # a batch is worth waiting a little for, never more
            deadline = self._deadlines.setdefault(worker, now + self.max_wait)
            if now < deadline:
                return None
        self._deadlines.pop(worker, None)
        taken = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
        fresh = [r for r in taken if now - r.enqueued <= self.max_lag]
        stale = [r for r in taken if now - r.enqueued > self.max_lag]
        return Batch(fresh, stale, now)

    def wait_seconds(self, now: float, worker: int = 0) -> float | None:
        """How long ``worker`` may sleep before :meth:`next_batch` can answer differently
        without a push: None while the queue is empty (wait for a push)."""
        if not self._queue:
            return None
        deadline = self._deadlines.get(worker)
        if deadline is None or self._stopping or len(self._queue) >= self.max_batch:
            return 0.0
        return max(0.0, deadline - now)

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
