"""The alert bus: THE one place every event is published, numbered, logged and fanned out.

Usage (daemon wiring)::

    bus = AlertBus(detector.info.name, metrics=metrics)
    bus.publish(CallStarted(call_id=call_id, track=None, source="twilio", metadata={...}))
    bus.publish(Score(call_id=call_id, track="inbound", source="twilio",
                      start=0.0, end=4.0, p_fake=0.7, smoothed=0.6))

    sub = bus.subscribe(SubscriptionFilter(call_id="CA123", types={"alert"}), max_queue=256)
    sub.on_ready = some_callback    # called (synchronously, inside publish) when events arrive
    for event in sub.drain(): ...   # never blocks
    sub.close()

The core is synchronous and network-free: each :class:`Subscription` is a bounded deque. When a
subscriber's queue is full the **oldest** queued event is dropped and counted; the next read
first yields ONE ``dropped`` event (count, first_seq, last_seq) and then the queued events. So a
slow subscriber costs O(1) per publish and never slows the publisher or the other subscribers.

Thread model: ``publish``/``subscribe``/``drain`` run on the event-loop thread only (the scoring
engine hands results back to the loop before publishing). The ``on_ready`` hook is where the
async edge (alerts/subscriptions.py) sets an ``asyncio.Event``.

Durability: in the daemon a backend (alerts/backends.py: the SQLite log, or a fleet's Redis
Stream) is attached with :meth:`AlertBus.attach_log`. ``publish`` then only hands the event
over; the backend numbers and commits it and calls :meth:`AlertBus.deliver`, so no subscriber
ever sees an event the log does not hold. ``/alerts`` replays (``since``, ``tail``) are read
from the backend and joined to the live queue without a gap (alerts/follow.py). Without a
backend the bus numbers events itself and its in-memory ring answers ``since``/``tail``.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import structlog

from streamguard.alerts.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    Dropped,
    EventBase,
    format_ts,
)

if TYPE_CHECKING:
    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.alerts")
# The stdlib logger structlog writes through: asked first, so a score (hundreds a second on a
# busy daemon, logged at debug) costs no dict and no structlog call when debug is off.
_stdlog = logging.getLogger("streamguard.alerts")
_LEVEL_NUMBERS = {"debug": logging.DEBUG, "info": logging.INFO}

_PUBLISHABLE = frozenset(m for name, m in EVENT_MODELS.items() if name != "dropped")

# Log level per event type: scores are one per hop per track (hundreds a second on a busy
# daemon), so they go to debug; an alert being raised is what an operator must see.
_LOG_LEVELS = {"score": "debug", "dropped": "debug"}


#: ``sink(draft, ts, model)``: where publish hands events when a log is attached.
Sink = Callable[[EventBase, str, str], None]


@dataclass(frozen=True)
class SubscriptionFilter:
    """Which events a subscriber wants. ``None`` means no restriction."""

    call_id: str | None = None
    types: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.types is not None:
            object.__setattr__(self, "types", frozenset(self.types))
            unknown = sorted(self.types - EVENT_TYPES)
            if unknown:
                raise ValueError(
                    f"unknown event type(s): {', '.join(unknown)} "
                    f"(known: {', '.join(sorted(EVENT_TYPES))})"
                )

    def matches(self, event: EventBase) -> bool:
        if self.types is not None and event.type not in self.types:
            return False
        # call_id filters on calls; a subscriber for one call still hears nothing else.
        return self.call_id is None or event.call_id == self.call_id


@dataclass
class _Gap:
    count: int
    first_seq: int
    last_seq: int


@dataclass(eq=False)
class Subscription:
    """One subscriber's bounded queue. Created by :meth:`AlertBus.subscribe`."""

    filter: SubscriptionFilter
    max_queue: int
    _bus: AlertBus
    on_ready: Callable[[], None] | None = None
    dropped_total: int = 0  # events this subscriber lost, over its lifetime
    closed: bool = False
    #: What a full queue does: "drop" the oldest and tell the subscriber (``/alerts``), or
    #: "resync": forget the queue and set :attr:`resync`, so the reader reads the missed
    #: events back from the log (webhooks: nothing may be skipped).
    overflow: Literal["drop", "resync"] = "drop"
    #: Lost events in a row (never read in between) after which the subscriber is evicted:
    #: :attr:`evicted` is set and ``on_evicted`` called once. ``None``: never.
    evict_after: int | None = None
    on_evicted: Callable[[], None] | None = None
    evicted: bool = False
    #: While True the reader is replaying from the log: live events are not queued (the
    #: reader reads on until it has passed the bus's ``last_seq``, then calls :meth:`go_live`).
    catching_up: bool = False
    resync: bool = False
    live_only: bool = False  # subscribed without since/tail: wants what happens from now on
    after: int = 0  # events with seq <= after were delivered by the replay: never again
    _queue: deque[EventBase] = field(default_factory=deque)
    _gap: _Gap | None = None

    def _lose(self, count: int, first_seq: int, last_seq: int) -> None:
        self.dropped_total += count
        if self._gap is None:
            self._gap = _Gap(count, first_seq, last_seq)
        else:
            self._gap.count += count
            self._gap.last_seq = last_seq
        if (
            self.evict_after is not None
            and not self.evicted
            and self._gap.count >= self.evict_after
        ):
            self.evicted = True
            self._bus._count_eviction()
            if self.on_evicted is not None:
                self.on_evicted()

    def _offer(self, event: EventBase) -> None:
        if self.catching_up or event.seq <= self.after:
            return
        if len(self._queue) >= self.max_queue:
            if self.overflow == "resync":
                self._queue.clear()
                self.catching_up = self.resync = True
                return
            lost = self._queue.popleft()
            self._lose(1, lost.seq, lost.seq)
            self._bus._count_drop()
        self._queue.append(event)

    def go_live(self, cursor: int) -> None:
        """The replay has delivered everything up to ``cursor`` (>= the bus's ``last_seq``):
        from now on live events are queued. Called in the same loop step as the check, so no
        event is delivered in between: no gap and no duplicate at the seam."""
        self.after = cursor
        self.catching_up = self.resync = False

    def __len__(self) -> int:
        """Events ready to read (a pending ``dropped`` notice counts as one)."""
        return len(self._queue) + (self._gap is not None)

    def get_nowait(self) -> EventBase | None:
        """The next event, or ``None`` if there is none (never blocks)."""
        if self._gap is not None:
            gap, self._gap = self._gap, None
            return self._bus._make_dropped(gap.count, gap.first_seq, gap.last_seq)
        return self._queue.popleft() if self._queue else None

    def drain(self) -> Iterator[EventBase]:
        """Yield everything ready now, ``dropped`` notice first."""
        while (event := self.get_nowait()) is not None:
            yield event

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        if not self.closed:
            self.closed = True
            self._bus._remove(self)
            self._queue.clear()
            self._gap = None

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AlertBus:
    """Numbers, logs and fans out events. One per daemon."""

    def __init__(
        self,
        model_name: str,
        *,
        max_queue: int = 256,
        history: int = 1000,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ):
        if max_queue < 1:
            raise ValueError("max_queue must be >= 1")
        self.model_name = model_name
        self.max_queue = max_queue
        self._clock = clock
        self._metrics = metrics
        self._seq = 0
        self._history: deque[EventBase] = deque(maxlen=max(history, 0))
        self._subs: list[Subscription] = []
        self._sink: Sink | None = None

    def attach_log(self, sink: Sink) -> None:
        """From now on :meth:`publish` hands events to ``sink(draft, ts, model)`` (the durable
        log's writer), which stamps, numbers and commits them, then calls :meth:`deliver`.
        The copy and the serialisation happen there, off the loop's hot path."""
        self._sink = sink

    @property
    def last_seq(self) -> int:
        """Seq of the last published event (0 before the first; seqs start at 1)."""
        return self._seq

    @property
    def subscriber_count(self) -> int:
        return len(self._subs)

    def pending_deliveries(self) -> int:
        """Events queued for subscribers but not yet taken by their senders.

        The daemon polls this at shutdown (bounded) so the final ``call_ended`` events reach
        subscribers before their connections close.
        """
        return sum(len(sub) for sub in self._subs)

    def publish(self, draft: EventBase) -> EventBase | None:
        """Time-stamp, log and hand on one event.

        ``draft`` is a typed event built by its producer (its own fields already validated
        there); the bus adds ``ts`` and ``model``. ``dropped`` notices are the bus's own, per
        subscriber, and an event that was already published cannot be published again.

        With a durable log attached (the daemon) the event goes to the log, which assigns
        ``seq`` when it commits and only then delivers it (:meth:`deliver`): publish returns
        ``None`` and never waits. Without one (unit tests, in-process tools) the bus numbers
        the event itself, delivers it at once and returns it. Producers never need the seq.
        """
        if isinstance(draft, Dropped) or type(draft) not in _PUBLISHABLE:
            raise ValueError(f"cannot publish event type {draft.type!r}")
        if draft.published:
            raise ValueError(f"event already published as seq {draft.seq}")
        ts = format_ts(self._clock())
        kind = draft.type
        if self._metrics is not None:
            self._metrics.events_published_total.labels(type=kind).inc()
        level = _LOG_LEVELS.get(kind, "info")
        logged = _stdlog.isEnabledFor(_LEVEL_NUMBERS[level])
        if self._sink is not None:
            if logged:
                fields = draft.to_dict()
                del fields["seq"]  # the log numbers it; subscribers see the seq
                getattr(log, level)(kind, **{**fields, "ts": ts, "model": self.model_name})
            self._sink(draft, ts, self.model_name)
            return None
        event = draft.stamped(seq=self._seq + 1, ts=ts, model=self.model_name)
        if logged:
            getattr(log, level)(kind, **event.to_dict())
        self.deliver([event])
        return event

    def deliver(self, events: Collection[EventBase]) -> None:
        """Fan committed, numbered events (in seq order) out to the subscribers."""
        for event in events:
            if event.seq <= self._seq:  # already delivered (a duplicate read): never twice
                continue
            self._seq = event.seq
            self._history.append(event)
            for sub in list(self._subs):
                if sub.filter.matches(event):
                    sub._offer(event)
                    if sub.on_ready is not None:
                        sub.on_ready()

    def subscribe(
        self,
        filter: SubscriptionFilter | None = None,
        *,
        max_queue: int | None = None,
        since: int | None = None,
        tail: int | None = None,
        on_ready: Callable[[], None] | None = None,
        catching_up: bool = False,
        overflow: Literal["drop", "resync"] = "drop",
        evict_after: int | None = None,
        on_evicted: Callable[[], None] | None = None,
    ) -> Subscription:
        """Add a subscriber. With ``since``, first replay matching events with ``seq > since``;
        with ``tail``, first replay the last ``tail`` matching events (what a dashboard wants
        after a reload: recent calls, without knowing a seq). Not both.

        Events older than the history ring are reported as one ``dropped`` notice (its count is
        then the number of missing seqs, an upper bound for a filtered subscriber).
        """
        if since is not None and tail is not None:
            raise ValueError("since and tail are mutually exclusive")
        if tail is not None and tail < 0:
            raise ValueError("tail must be >= 0")
        sub = Subscription(
            filter=filter or SubscriptionFilter(),
            max_queue=max_queue or self.max_queue,
            _bus=self,
            on_ready=on_ready,
            catching_up=catching_up,
            overflow=overflow,
            evict_after=evict_after,
            on_evicted=on_evicted,
        )
        if tail:
            matching = [e for e in self._history if sub.filter.matches(e)]
            for event in matching[-tail:]:
                sub._offer(event)
        if since is not None and since < self._seq:
            oldest = self._history[0].seq if self._history else self._seq + 1
            if since + 1 < oldest:
                sub._lose(oldest - since - 1, since + 1, oldest - 1)
            for event in self._history:
                if event.seq > since and sub.filter.matches(event):
                    sub._offer(event)
        self._subs.append(sub)
        if self._metrics is not None:
            self._metrics.subscribers.set(len(self._subs))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        sub.close()

    def _remove(self, sub: Subscription) -> None:
        if sub in self._subs:
            self._subs.remove(sub)
        if self._metrics is not None:
            self._metrics.subscribers.set(len(self._subs))

    def _count_drop(self) -> None:
        if self._metrics is not None:
            self._metrics.subscriber_drops_total.inc()

    def _count_eviction(self) -> None:
        if self._metrics is not None:
            self._metrics.subscriber_disconnects_total.labels(reason="slow").inc()

    def set_last_seq(self, seq: int) -> None:
        """Continue after ``seq``: the log's last seq when the daemon starts, or the stream's
        end found late (Redis unreachable at start). Events up to ``seq`` are in the log but
        were never delivered here, so subscribers that asked for a replay read them from the
        log (they resync); live-only subscribers just start after them."""
        if seq <= self._seq:
            return
        self._seq = seq
        for sub in list(self._subs):
            if sub.live_only and not sub.catching_up:
                sub.after = max(sub.after, seq)
            else:
                sub.catching_up = sub.resync = True
                if sub.on_ready is not None:
                    sub.on_ready()

    def _make_dropped(
        self, count: int, first_seq: int, last_seq: int, reason: str = "slow"
    ) -> Dropped:
        return Dropped(
            reason=reason,  # type: ignore[arg-type]
            seq=last_seq,
            ts=format_ts(self._clock()),
            call_id=None,
            track=None,
            source=None,
            model=self.model_name,
            count=count,
            first_seq=first_seq,
            last_seq=last_seq,
        )

    def history(self, since: int = 0) -> list[EventBase]:
        """Events still in the ring with ``seq > since`` (oldest first)."""
        return [e for e in self._history if e.seq > since]


def parse_types(
    text: str | None, *, allowed: Collection[str] = EVENT_TYPES
) -> frozenset[str] | None:
    """``"alert,call_ended"`` -> ``frozenset``; empty/None -> None (all). ValueError if unknown."""
    if not text:
        return None
    types = frozenset(t.strip() for t in text.split(",") if t.strip())
    unknown = sorted(types - frozenset(allowed))
    if unknown:
        raise ValueError(
            f"unknown event type(s): {', '.join(unknown)} (known: {', '.join(sorted(allowed))})"
        )
    return types or None
