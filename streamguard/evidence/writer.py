"""The daemon's evidence thread: the store's blocking file I/O, off the event loop.

One :class:`EvidenceWriter` per daemon (``[evidence] keep`` not ``none``). The call registry
hands it each session's clip operations (:class:`streamguard.calls.ClipWork`) in order; one
worker thread carries them out on the :class:`~streamguard.evidence.store.EvidenceStore` (which
is used by that thread only), and the ``evidence_saved`` / ``evidence_deleted`` drafts the store
returns are published on the loop. At start it closes the clips a crash left open; every
``sweep_seconds`` it applies retention; at stop it finishes what was queued and closes what is
still open. The API handlers (:mod:`streamguard.evidence.api`) run on the same thread through
:meth:`EvidenceWriter.call`, so a listing never sees a half-applied operation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from streamguard.alerts.events import EventBase
from streamguard.evidence.store import EvidenceStore

__all__ = ["SWEEP_SECONDS", "EvidenceWriter"]

log = structlog.get_logger(__name__)

#: How often retention runs (``retention_days`` is coarse; ``max_bytes`` wants it soon).
SWEEP_SECONDS = 60.0

T = TypeVar("T")


class EvidenceWriter:
    """See the module docstring. ``publish`` is the bus's (called on the loop)."""

    def __init__(
        self,
        store: EvidenceStore,
        *,
        publish: Callable[[EventBase], Any],
        sweep_seconds: float = SWEEP_SECONDS,
        clock: Callable[[], float] = time.time,
        metrics: Any = None,
    ) -> None:
        self.store = store
        self._publish = publish
        self._sweep_seconds = sweep_seconds
        self._clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evidence")
        self._pending: set[asyncio.Future] = set()
        self._sweeper: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failures = 0

    async def start(self) -> None:
        """Close what a crash left open, then sweep on a timer."""
        self._loop = asyncio.get_running_loop()
        self._emit(await self.call_raw(self.store.recover))
        self._sweeper = asyncio.create_task(self._sweep_loop(), name="evidence retention")

    # -- the registry's side ---------------------------------------------------------------------
    def submit(self, work: Any) -> None:
        """Queue one :class:`~streamguard.calls.ClipWork` (on the loop; never blocks)."""
        assert self._loop is not None, "start() first"
        fut = self._loop.run_in_executor(self._executor, self._apply, work)
        self._pending.add(fut)
        fut.add_done_callback(self._done)

    def _apply(self, work: Any) -> list[EventBase]:
        try:
            return list(
                self.store.apply(
                    work.ops,
                    call_id=work.call_id,
                    track=work.track,
                    source=work.source,
                    rate=work.rate,
                )
            )
        except Exception as exc:  # a full disk must not stop the calls: logged, counted
            self.failures += 1
            log.error(
                "evidence_write_failed", call_id=work.call_id, track=work.track, error=str(exc)
            )
            return []

    def _done(self, fut: asyncio.Future) -> None:
        self._pending.discard(fut)
        if not fut.cancelled() and fut.exception() is None:
            self._emit(fut.result())

    def _emit(self, events: list[Any]) -> None:
        for event in events:
            if event is not None:
                self._publish(event)

    # -- the API's side ---------------------------------------------------------------------------
    async def call_raw(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the evidence thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)

    async def call(self, handler: Callable[..., T], *args: Any) -> T:
        """An API handler ``handler(store, *args)`` on the evidence thread (after everything
        queued before it). A handler's ``publish`` argument is called on that thread: pass
        :meth:`publish_threadsafe`."""
        return await self.call_raw(handler, self.store, *args)

    def publish_threadsafe(self, event: EventBase) -> None:
        """``publish`` from the evidence thread: hops to the loop."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._publish, event)

    # -- retention and stop -----------------------------------------------------------------------
    async def sweep(self) -> None:
        self._emit(await self.call_raw(self.store.sweep, self._clock()))

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception as exc:  # pragma: no cover - an unreadable folder, logged
                log.error("evidence_retention_failed", error=str(exc))
            await asyncio.sleep(self._sweep_seconds)

    async def close(self) -> None:
        """Finish everything queued, close any clip still open, stop the thread."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)
        if self._loop is not None:
            self._emit(await self.call_raw(self.store.close))
        await asyncio.sleep(0)  # the done callbacks publish before the log's last flush
        self._executor.shutdown(wait=True)


async def open_writer(
    settings: Any, events: Any, *, publish: Callable[[EventBase], None]
) -> EvidenceWriter | None:
    """``[evidence]`` (``settings``; ``events``: where its folder defaults to): the store and
    its started thread (a clip a crash left open is closed now), or None with ``keep =
    "none"``."""
    if settings.keep == "none":
        return None
    store = await asyncio.to_thread(
        EvidenceStore,
        settings.resolved_path(events),
        retention_days=settings.retention_days,
        max_bytes=settings.max_bytes,
    )
    writer = EvidenceWriter(store, publish=publish)
    await writer.start()
    return writer
