"""Replay from the log, then live from the bus: one reader for ``/alerts``, webhooks and
``streamguard events --follow`` inside the daemon.

The seam: a subscription is registered first, in *catching-up* mode (live events are not
queued). The reader pages through the backend from its cursor until the cursor has reached the
bus's ``last_seq`` (everything the bus delivered is committed, so the log holds it), then, in
the same loop step (no ``await`` in between, so nothing is delivered meanwhile), calls
``go_live(cursor)``: from then on the bus queues events with ``seq > cursor``. No gap, no
duplicate, whatever was published during the replay.

A ``since`` older than the backend keeps (retention, ``redis_maxlen``) gives one ``dropped``
notice with ``reason: "retention"`` first: ``last_seq + 1`` is the oldest seq available.

Replays are read :data:`PAGE` events at a time, ``tail`` included (it only finds where the last
``tail`` events begin), so a subscriber costs one page of memory however much it asks for and
however slowly it reads (its sender awaits each send before the next page is read).

``lossless`` (webhooks): a full live queue does not drop; the reader goes back to the log from
its cursor. Otherwise (``/alerts``) the bus's bounded queue and ``dropped`` notices apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from streamguard.alerts.backends import EventBackend
from streamguard.alerts.bus import AlertBus, SubscriptionFilter
from streamguard.alerts.events import EventBase

PAGE = 500


async def follow(
    bus: AlertBus,
    backend: EventBackend,
    flt: SubscriptionFilter | None = None,
    *,
    since: int | None = None,
    tail: int | None = None,
    max_queue: int = 256,
    lossless: bool = False,
    evict_after: int | None = None,
    on_evicted: Callable[[], None] | None = None,
) -> AsyncIterator[EventBase]:
    """Yield matching events: the replay asked for, then live ones, in strict seq order."""
    if since is not None and tail is not None:
        raise ValueError("since and tail are mutually exclusive")
    flt = flt or SubscriptionFilter()
    wake = asyncio.Event()
    sub = bus.subscribe(
        flt,
        max_queue=max_queue,
        on_ready=wake.set,
        catching_up=True,
        overflow="resync" if lossless else "drop",
        evict_after=evict_after,
        on_evicted=on_evicted,
    )
    try:
        if tail:  # the last ``tail`` events, read in pages like any replay
            cursor = await backend.tail_start(tail, flt)
        elif since is not None:
            cursor = since
            oldest = await backend.oldest_seq()
            if oldest is not None and since + 1 < oldest:
                yield bus._make_dropped(oldest - since - 1, since + 1, oldest - 1, "retention")
                cursor = oldest - 1
        else:
            cursor = bus.last_seq
            sub.live_only = True
        while not sub.closed:
            while cursor < bus.last_seq:  # catch up from the log
                page = await backend.read(cursor, flt, PAGE)
                for event in page.events:
                    if event.seq > cursor:
                        cursor = event.seq
                        yield event
                if not page.events and cursor >= page.scanned_to < bus.last_seq:
                    await asyncio.sleep(0.005)  # the backend lags the bus: rare, brief
                cursor = max(cursor, page.scanned_to)
            sub.go_live(cursor)
            while not sub.catching_up and not sub.closed:
                if not len(sub):
                    wake.clear()
                    await wake.wait()
                while (event := sub.get_nowait()) is not None:
                    cursor = event.last_seq if event.type == "dropped" else event.seq  # type: ignore[attr-defined]
                    yield event
                    if sub.catching_up:  # lossless overflow while we were away: resync
                        break
    finally:
        sub.close()
