"""The event log's writer thread: group commits off the event loop.

``publish`` on the loop only puts the event on a queue (:meth:`GroupCommitWriter.submit`).
The thread takes whatever has queued up (after waiting ``interval`` seconds for more, at most
``max_events``), numbers and commits it in one transaction (:meth:`EventStore.append`), and
hands the committed events back to the loop with ``call_soon_threadsafe``, where the bus fans
them out. So no subscriber or webhook ever sees an event the log does not hold, and the loop
never waits for the disk. Retention runs on the same thread, in small chunks between commits.

A failed commit (disk full, I/O error) is logged, counted and retried every second with the
same events, in order; nothing queued behind it is lost or reordered. An event the log cannot
hold at all (it cannot be serialised) is set aside (:func:`set_aside`: the log's
``rejected_events`` table, ``streamguard_events_rejected_total``, one error line) and the events
committed with it go on. Nothing one event does stops the thread: whatever else goes wrong is
logged, counted and retried, and :attr:`GroupCommitWriter.problem` says so (``/healthz``
``degraded``), as it does when the thread is gone or a commit has been under way longer than
:data:`STALL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from streamguard.alerts.events import EventBase, json_problem
from streamguard.alerts.store import EventLogError, EventStore

if TYPE_CHECKING:
    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.events")

#: How often the writer looks at retention when it has nothing else to do (seconds).
RETENTION_EVERY = 5.0
#: Events waiting this long (seconds) to be committed mean the log is not committing: degraded.
STALL_SECONDS = 10.0


def set_aside(
    event: EventBase,
    error: str,
    *,
    metrics: Metrics | None,
    record: Callable[[EventBase, str], None] | None,
) -> None:
    """An event the log cannot hold: one error line (what it was, never its content), counted,
    and recorded with ``record`` (the log's ``rejected_events`` table) when that still works.
    Shared by the SQLite writer and the Redis backend."""
    log.error(
        "event_rejected",
        type=event.type,
        call_id=None if event.call_id is None else event.call_id[:100],
        error=error,
    )
    if metrics is not None:
        metrics.events_rejected_total.labels(type=event.type).inc()
    if record is not None:
        try:
            record(event, error)
        except Exception as exc:  # the log itself is failing: the line above is all we keep
            log.error("event_rejected_not_recorded", error=str(exc)[:200])


@dataclass
class _Flush:
    future: asyncio.Future[None]


_STOP = object()


class GroupCommitWriter:
    """Owns the writing :class:`EventStore` on one thread. Create on the loop, then
    :meth:`start`; :meth:`close` flushes and joins."""

    def __init__(
        self,
        store: EventStore,
        *,
        loop: asyncio.AbstractEventLoop,
        on_committed: Callable[[list[EventBase]], None],
        interval: float = 0.002,
        max_events: int = 1000,
        retain_seconds: float | None = None,
        max_bytes: int | None = None,
        metrics: Metrics | None = None,
    ):
        self.store = store
        self._loop = loop
        self._on_committed = on_committed
        self.interval = interval
        self.max_events = max_events
        self.retain_seconds = retain_seconds
        self.max_bytes = max_bytes
        self._metrics = metrics
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="event-log-writer", daemon=True)
        self.failing = False  # the last commit failed (health: degraded)
        self.rejected = 0  # events set aside because the log cannot hold them
        self._committing_since: float | None = None  # submit time of the batch being committed
        self._closing = False

    def start(self) -> None:
        self._thread.start()

    def submit(self, draft: EventBase, ts: str, model: str) -> None:
        """Queue one event to stamp, number and commit (never blocks): the bus's sink."""
        self._queue.put((draft, ts, model, time.perf_counter()))

    async def flush(self) -> None:
        """Wait until everything submitted so far is committed and delivered."""
        if not self._thread.is_alive():
            return
        future = self._loop.create_future()
        self._queue.put(_Flush(future))
        await future

    @property
    def problem(self) -> str | None:
        """Why events are not being committed now (``/healthz`` says ``degraded``), or None."""
        if self._thread.ident is not None and not self._thread.is_alive() and not self._closing:
            return "the event log writer has stopped"
        if self.failing:
            return "commits are failing (retried every second)"
        since = self._committing_since
        if since is not None and time.perf_counter() - since > STALL_SECONDS:
            return f"events waiting more than {STALL_SECONDS:g} s to be committed"
        return None

    async def close(self, timeout: float = 10.0) -> None:
        """Flush, stop the thread, close the file. A log that cannot commit (disk full) is
        given ``timeout`` seconds, then abandoned with one error line: a shutdown never hangs
        on it (the events it could not write are lost, and said so)."""
        try:
            await asyncio.wait_for(self.flush(), timeout)
        except TimeoutError:
            log.error(
                "event_log_not_flushed", pending=self._queue.qsize(), path=str(self.store.path)
            )
            return
        self._closing = True
        self._queue.put(_STOP)
        await asyncio.to_thread(self._thread.join)
        self.store.close()

    # -- the thread ---------------------------------------------------------------------------
    def _run(self) -> None:
        next_retention = 0.0
        while True:
            try:
                first = self._queue.get(timeout=RETENTION_EVERY)
            except queue.Empty:
                next_retention = self._retention(next_retention)
                continue
            items = [first]
            if first is not _STOP and not isinstance(first, _Flush):
                self._gather(items)
            try:
                stop = self._commit(items)
            except Exception as exc:  # a bug: say so, and keep the thread for the next events
                log.error("event_log_writer_error", error=f"{type(exc).__name__}: {exc}"[:300])
                if self._metrics is not None:
                    self._metrics.events_log_errors_total.inc()
                stop = any(item is _STOP for item in items)
                for item in items:
                    if isinstance(item, _Flush):
                        self._loop.call_soon_threadsafe(_resolve, item.future)
            finally:
                self._committing_since = None
            if stop:
                return
            now = time.monotonic()
            if now >= next_retention:
                next_retention = self._retention(next_retention)

    def _gather(self, items: list[object]) -> None:
        deadline = time.monotonic() + self.interval
        while len(items) < self.max_events:
            remaining = deadline - time.monotonic()
            try:
                item = (
                    self._queue.get(timeout=remaining)
                    if remaining > 0
                    else self._queue.get_nowait()
                )
            except queue.Empty:
                return
            items.append(item)
            if item is _STOP or isinstance(item, _Flush):
                return

    def _commit(self, items: list[object]) -> bool:
        drafts: list[EventBase] = []
        stamps: list[tuple[str, str]] = []
        started: list[float] = []
        flushes: list[_Flush] = []
        stop = False
        for item in items:
            if item is _STOP:
                stop = True
            elif isinstance(item, _Flush):
                flushes.append(item)
            else:
                draft, ts, model, t0 = item  # type: ignore[misc]
                drafts.append(draft)
                stamps.append((ts, model))
                started.append(t0)
        if started:
            self._committing_since = started[0]
        while drafts:
            try:
                events = self.store.append(drafts, stamps=stamps)
            except EventLogError as exc:
                self._failed(str(exc), len(drafts))
                continue
            except Exception as exc:  # not the disk: an event the log cannot hold?
                kept = [i for i, d in enumerate(drafts) if not self._set_aside_if_unwritable(d)]
                if len(kept) == len(drafts):  # no single event to blame: retry like the disk
                    self._failed(f"{type(exc).__name__}: {exc}"[:300], len(drafts))
                    continue
                drafts = [drafts[i] for i in kept]
                stamps = [stamps[i] for i in kept]
                started = [started[i] for i in kept]
                continue
            if self.failing:
                log.warning("event_log_commit_recovered")
            self.failing = False
            self._loop.call_soon_threadsafe(self._delivered, events, started)
            break
        for flush in flushes:
            self._loop.call_soon_threadsafe(_resolve, flush.future)
        return stop

    def _failed(self, error: str, pending: int) -> None:
        """A commit failed for all its events: log once per outage, count, wait, retry."""
        if not self.failing:
            log.error("event_log_commit_failed", error=error, pending=pending)
        self.failing = True
        if self._metrics is not None:
            self._metrics.events_log_errors_total.inc()
        time.sleep(1.0)

    def _set_aside_if_unwritable(self, draft: EventBase) -> bool:
        """True (and the event set aside) when ``draft`` cannot be serialised."""
        error = json_problem(draft)
        if error is None:
            return False
        self.rejected += 1
        set_aside(draft, error, metrics=self._metrics, record=self.store.add_rejected_event)
        return True

    def _delivered(self, events: list[EventBase], started: list[float]) -> None:
        """On the loop: hand the committed events to the bus, then count them."""
        self._on_committed(events)
        if self._metrics is not None:
            now = time.perf_counter()
            self._metrics.events_committed_total.inc(len(events))
            self._metrics.events_commit_batch.observe(len(events))
            for t0 in started:
                self._metrics.events_commit_seconds.observe(now - t0)
            self._metrics.events_last_seq.set(events[-1].seq)

    def _retention(self, due: float) -> float:
        """One chunk of retention; returns when to look again (soon if there is more)."""
        if time.monotonic() < due:
            return due
        try:
            deleted = self.store.enforce_retention(
                now=time.time(), retain_seconds=self.retain_seconds, max_bytes=self.max_bytes
            )
        except Exception as exc:  # retention must never take the writer down
            log.error("event_log_retention_failed", error=str(exc))
            return time.monotonic() + 60
        if deleted and self._metrics is not None:
            self._metrics.events_retention_deleted_total.inc(deleted)
        # More to delete: come back after the next commits, not in a tight loop.
        return time.monotonic() + (0.05 if deleted else RETENTION_EVERY)


def _resolve(future: asyncio.Future[None]) -> None:
    with contextlib.suppress(asyncio.InvalidStateError):
        future.set_result(None)
