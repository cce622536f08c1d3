"""Event backends: where published events are numbered, kept and read back (async edges).

The bus (alerts/bus.py) fans events out; a backend sits behind it:

- :class:`SqliteBackend` (default): the durable log in one SQLite file, written by a
  group-commit thread (alerts/writer.py), read by ``/alerts`` replay and webhooks off the loop.
- :class:`RedisBackend` (alerts/redis_backend.py): a fleet's shared Redis Stream.
- :class:`MemoryBackend`: nothing kept beyond the bus's in-memory history; seq restarts at 1
  (``streamguard demo``, tests that do not care).

Every backend answers the same questions, so ``/alerts``, webhooks and ``streamguard events``
are written once (alerts/follow.py): ``read(after, filter, limit)`` (one page),
``tail_start(n, filter)`` (where the last n matching events begin: replays are then read in
pages, never held whole), ``oldest_seq()``, plus webhook cursors and crash recovery
(``open_calls()``). :func:`open_backend` starts the configured one (or closes what a failed
start opened) and :func:`end_open_calls` ends the calls a crash left open.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from streamguard.alerts.bus import AlertBus, SubscriptionFilter
from streamguard.alerts.events import CallEnded, CallStarted, EventBase, combine_summaries
from streamguard.alerts.store import EventStore, Page, WriterLock
from streamguard.alerts.writer import GroupCommitWriter

_log = structlog.get_logger("streamguard.daemon")

if TYPE_CHECKING:
    from streamguard.config import EventsSettings
    from streamguard.metrics import Metrics


class EventBackend(Protocol):
    name: str

    async def start(self, bus: AlertBus) -> None: ...
    async def flush(self) -> None: ...
    async def close(self) -> None: ...
    async def read(self, after: int, flt: SubscriptionFilter | None, limit: int) -> Page: ...
    async def tail_start(self, count: int, flt: SubscriptionFilter | None) -> int: ...
    async def oldest_seq(self) -> int | None: ...
    async def open_calls(self) -> list[CallStarted]: ...
    async def get_cursor(self, name: str) -> int | None: ...
    async def set_cursor(self, name: str, seq: int) -> None: ...
    async def add_dead_letter(self, endpoint: str, seq: int, attempts: int, error: str) -> None: ...
    def health(self) -> dict[str, Any]: ...


class MemoryBackend:
    """No durability: the bus numbers events and its history ring answers replays."""

    name = "memory"

    def __init__(self) -> None:
        self.bus: AlertBus | None = None
        self._cursors: dict[str, int] = {}
        self.dead: list[tuple[str, int, int, str]] = []

    async def start(self, bus: AlertBus) -> None:
        self.bus = bus

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def read(self, after: int, flt: SubscriptionFilter | None, limit: int) -> Page:
        assert self.bus is not None
        flt = flt or SubscriptionFilter()
        picked: list[EventBase] = []
        scanned = max(after, self.bus.last_seq)
        for event in self.bus.history(after):
            if flt.matches(event):
                if len(picked) == limit:
                    scanned = picked[-1].seq
                    break
                picked.append(event)
        return Page(picked, scanned)

    async def tail_start(self, count: int, flt: SubscriptionFilter | None) -> int:
        assert self.bus is not None
        flt = flt or SubscriptionFilter()
        seen = 0
        for event in reversed(self.bus.history(0)):
            if flt.matches(event):
                seen += 1
                if seen == count:
                    return event.seq - 1
        return 0 if count else self.bus.last_seq

    async def oldest_seq(self) -> int | None:
        assert self.bus is not None
        history = self.bus.history(0)
        return history[0].seq if history else None

    async def open_calls(self) -> list[CallStarted]:
        return []

    async def get_cursor(self, name: str) -> int | None:
        return self._cursors.get(name)

    async def set_cursor(self, name: str, seq: int) -> None:
        self._cursors[name] = seq

    async def add_dead_letter(self, endpoint: str, seq: int, attempts: int, error: str) -> None:
        self.dead.append((endpoint, seq, attempts, error))

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "degraded": False}


class _ThreadStores:
    """One extra connection per worker thread (sqlite3 connections are per thread)."""

    def __init__(self, path: Any, *, readonly: bool):
        self.path = path
        self.readonly = readonly
        self._local = threading.local()
        self._all: list[EventStore] = []
        self._lock = threading.Lock()

    def get(self) -> EventStore:
        store = getattr(self._local, "store", None)
        if store is None:
            store = EventStore(self.path, readonly=self.readonly, create=False)
            self._local.store = store
            with self._lock:
                self._all.append(store)
        return store

    def close(self) -> None:
        with self._lock:
            for store in self._all:
                store.close()
            self._all.clear()


class SqliteBackend:
    """The durable log (the default). Writes on the writer thread, reads on worker threads."""

    name = "sqlite"

    def __init__(self, settings: EventsSettings, *, metrics: Metrics | None = None):
        self.settings = settings
        self.path = settings.resolved_path()
        self._metrics = metrics
        self._lock = WriterLock(self.path)
        self.writer: GroupCommitWriter | None = None
        self._readers = _ThreadStores(self.path, readonly=True)
        self._writers = _ThreadStores(self.path, readonly=False)

    async def start(self, bus: AlertBus) -> None:
        s = self.settings
        self._lock.acquire()
        store = await asyncio.to_thread(EventStore, self.path, synchronous=s.synchronous)
        bus.set_last_seq(store.last_seq)
        self.writer = GroupCommitWriter(
            store,
            loop=asyncio.get_running_loop(),
            on_committed=bus.deliver,
            interval=s.commit_interval_ms / 1000,
            # A commit is delivered to subscribers in one go: it must fit in their queues.
            max_events=max(1, min(s.commit_max_events, bus.max_queue // 2)),
            retain_seconds=s.retain_hours * 3600,
            max_bytes=int(s.max_mb * 1024 * 1024),
            metrics=self._metrics,
        )
        self.writer.start()
        bus.attach_log(self.writer.submit)
        if self._metrics is not None:
            self._metrics.events_backend_up.set(1)
            self._metrics.events_last_seq.set(store.last_seq)

    async def flush(self) -> None:
        if self.writer is not None:
            await self.writer.flush()

    async def close(self) -> None:
        if self.writer is not None:
            await self.writer.close()
            self.writer = None
        self._readers.close()
        self._writers.close()
        self._lock.release()

    async def read(self, after: int, flt: SubscriptionFilter | None, limit: int) -> Page:
        return await asyncio.to_thread(lambda: self._readers.get().read(after, flt, limit=limit))

    async def tail_start(self, count: int, flt: SubscriptionFilter | None) -> int:
        return await asyncio.to_thread(lambda: self._readers.get().tail_start(count, flt))

    async def oldest_seq(self) -> int | None:
        return await asyncio.to_thread(lambda: self._readers.get().oldest_seq())

    async def open_calls(self) -> list[CallStarted]:
        return await asyncio.to_thread(lambda: self._readers.get().open_calls())

    async def get_cursor(self, name: str) -> int | None:
        return await asyncio.to_thread(lambda: self._writers.get().get_cursor(name))

    async def set_cursor(self, name: str, seq: int) -> None:
        await asyncio.to_thread(lambda: self._writers.get().set_cursor(name, seq))

    async def add_dead_letter(self, endpoint: str, seq: int, attempts: int, error: str) -> None:
        await asyncio.to_thread(
            lambda: self._writers.get().add_dead_letter(endpoint, seq, attempts, error)
        )

    def health(self) -> dict[str, Any]:
        """``degraded`` whenever events are not being committed (``problem`` says why);
        ``rejected``: events set aside because the log cannot hold them."""
        problem = self.writer.problem if self.writer is not None else None
        out: dict[str, Any] = {
            "backend": self.name,
            "degraded": problem is not None,
            "event_log": str(self.path),
            "rejected": self.writer.rejected if self.writer is not None else 0,
        }
        if problem is not None:
            out["problem"] = problem
        return out


def make_backend(
    settings: EventsSettings, *, metrics: Metrics | None = None, tracer: Any = None
) -> EventBackend:
    """The ``[events] backend``; ``tracer`` (streamguard/telemetry.py) traces Redis appends."""
    if settings.backend == "sqlite":
        return SqliteBackend(settings, metrics=metrics)
    if settings.backend == "redis":
        from streamguard.alerts.redis_backend import RedisBackend
        from streamguard.telemetry import NOOP

        return RedisBackend(settings, metrics=metrics, tracer=tracer or NOOP)
    return MemoryBackend()


async def open_backend(
    settings: EventsSettings,
    bus: AlertBus,
    *,
    metrics: Metrics | None = None,
    tracer: Any = None,
) -> EventBackend:
    """The ``[events]`` backend, started behind ``bus``. A start that fails (its file locked
    by another daemon, say) closes what it opened before the error goes on, so the caller
    holds no half-started backend and the error's one line is the whole story."""
    backend = make_backend(settings, metrics=metrics, tracer=tracer)
    try:
        await backend.start(bus)
    except BaseException:
        await backend.close()
        raise
    return backend


async def end_open_calls(
    backend: EventBackend, bus: AlertBus, *, metrics: Metrics | None = None
) -> None:
    """End the calls the log shows open: the previous run died (``kill -9``, power cut)
    without its drain. Each gets a ``call_ended`` with reason ``crash`` (an empty,
    inconclusive summary: the audio is gone), so no call stays open forever."""
    for started in await backend.open_calls():
        bus.publish(
            CallEnded(
                call_id=started.call_id,
                track=None,
                source=started.source,
                summary=combine_summaries({}),
                reason="crash",
            )
        )
        if metrics is not None:
            metrics.events_recovered_calls_total.inc()
        _log.warning("call_recovered_after_crash", call_id=started.call_id, seq=started.seq)
