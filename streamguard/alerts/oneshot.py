"""Publishing from outside a daemon: one event at a time, as the durable log stores it.

The daemon's bus hands events to the log and returns nothing (producers never need a seq).
An API that answers with the stored event (``POST /api/labels`` -> 201 with its ``seq``), and a
CLI command that writes to the log without a daemon (``streamguard label``, ``streamguard
evidence delete``), wait for the event to come back through a subscription of their own:
:func:`publish_and_wait`. :func:`publish_once` does it through the configured backend (the
SQLite log when no daemon holds it; the Redis stream at any time, beside the fleet), so a
label written by the CLI is the same event, numbered the same way, as one the API writes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from streamguard.alerts.bus import AlertBus, SubscriptionFilter
from streamguard.alerts.events import EventBase
from streamguard.alerts.store import EventLogError
from streamguard.errors import ConfigError, StreamguardError

__all__ = ["DaemonOwnsLog", "offline_log", "publish_and_wait", "publish_once"]


class DaemonOwnsLog(StreamguardError):
    """A running daemon holds the SQLite log: write through its API instead."""


def _content(event: EventBase) -> dict[str, Any]:
    data = event.to_dict()
    for key in ("seq", "ts", "model"):
        data.pop(key, None)
    return data


async def publish_and_wait(bus: AlertBus, draft: EventBase, *, timeout: float = 5.0) -> EventBase:
    """Publish ``draft`` and return it as the log stored it (numbered, stamped); raises
    TimeoutError after ``timeout`` seconds (the event may still land)."""
    ready = asyncio.Event()
    flt = SubscriptionFilter(call_id=draft.call_id, types=frozenset({draft.type}))
    sub = bus.subscribe(flt, on_ready=ready.set)
    try:
        published = bus.publish(draft)
        if published is not None:  # no log attached: numbered at once
            return published
        want = _content(draft)
        async with asyncio.timeout(timeout):
            while True:
                await ready.wait()
                ready.clear()
                for event in sub.drain():
                    if _content(event) == want:
                        return event
    finally:
        bus.unsubscribe(sub)


@contextlib.asynccontextmanager
async def offline_log(settings: Any, *, model: str) -> AsyncIterator[AlertBus]:
    """A bus attached to the log ``settings`` (``[events]``) names, for the ``with`` block;
    ``model`` stamps the events' ``model`` field. Raises :class:`DaemonOwnsLog` (before the
    block runs) when a daemon writes the SQLite log now."""
    from streamguard.alerts.backends import make_backend

    if settings.backend == "memory":
        raise ConfigError("[events] backend is memory: there is no durable log to write to")
    backend = make_backend(settings)
    bus = AlertBus(model)
    try:
        await backend.start(bus)
    except EventLogError as exc:
        if "in use" in str(exc):
            raise DaemonOwnsLog(str(exc)) from None
        raise
    try:
        yield bus
    finally:
        await backend.close()


async def publish_once(
    settings: Any, drafts: Sequence[EventBase], *, model: str, timeout: float = 10.0
) -> list[EventBase]:
    """Store ``drafts`` in the log ``settings`` (``[events]``) names, in order, and return them
    as stored (see :func:`offline_log`)."""
    async with offline_log(settings, model=model) as bus:
        try:
            return [await publish_and_wait(bus, d, timeout=timeout) for d in drafts]
        except TimeoutError:
            raise StreamguardError(
                f"the event log did not store the event within {timeout:g} s"
            ) from None
