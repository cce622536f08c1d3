"""The fleet backend: every node appends to, and reads from, one Redis Stream.

Writing: published events go to an in-memory outbox; one sender task appends them in batches
with one server-side Lua script (:data:`APPEND_LUA`) that numbers and ``XADD``\\ s them
atomically: ``seq`` is fleet-wide, strictly increasing and gap-free, and the stream entry id
is ``<seq>-0``, so the stream's order *is* seq order and ``?since=N`` is an ``XRANGE`` from
``(N-0``. Each entry has one field, ``event``: the JSON ``/alerts`` sends, byte for byte.

Reading: one reader task ``XREAD``\\ s the stream from where it is and hands every entry, this
node's and the other nodes', to the bus; so each node's ``/alerts`` serves the whole fleet,
live and replayed, and a subscriber can attach to any node.

Redis unreachable: scoring goes on; batches go to the local spool (SQLite, the ``spool`` table
of ``[events] path``, at most ``spool_max_events``; beyond it events are lost, counted in
``streamguard_events_spool_lost_total`` and logged), ``/healthz`` says ``degraded``. When
Redis answers again the spool is appended first, oldest first, then the outbox: in order.
Subscribers of this node see spooled events once they are in the stream (they have a seq
only then), never before.

One event cannot stop the others: an event that cannot be serialised is set aside (the local
file's ``rejected_events`` table, ``streamguard_events_rejected_total``) before a batch is
appended or spooled, a stream entry that does not parse is logged, counted and skipped, and the
sender and reader tasks outlive whatever else fails. ``/healthz`` says ``degraded`` while Redis
is unreachable, when the sender is gone, or when the oldest event not yet appended or spooled
has waited longer than :data:`~streamguard.alerts.writer.STALL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter as Tally
from typing import TYPE_CHECKING, Any

import structlog

from streamguard.alerts.bus import AlertBus, SubscriptionFilter
from streamguard.alerts.events import (
    CallStarted,
    EventBase,
    json_problem,
    parse_event,
    split_at_seq,
    with_seq,
)
from streamguard.alerts.store import EventStore, Page, WriterLock
from streamguard.alerts.writer import STALL_SECONDS, set_aside
from streamguard.telemetry import NOOP, Tracer

if TYPE_CHECKING:
    from streamguard.config import EventsSettings
    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.events")

#: KEYS[1] the stream, KEYS[2] its seq counter; ARGV[1] MAXLEN, then (head, tail) per event:
#: the event's JSON split around its seq value (events.split_at_seq). The counter never goes
#: below the stream's newest id, so a lost counter key cannot reuse a seq.
APPEND_LUA = """
local n = (#ARGV - 1) / 2
local last = tonumber(redis.call('GET', KEYS[2]) or '0')
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then
  local newest = tonumber(string.match(top[1][1], '^(%d+)'))
  if newest > last then last = newest end
end
for i = 1, n do
  local seq = last + i
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], seq .. '-0',
             'event', ARGV[2 * i] .. seq .. ARGV[2 * i + 1])
end
redis.call('SET', KEYS[2], last + n)
return last + n
"""

#: KEYS[1] the lease; ARGV[1] the holder, ARGV[2] its time to live in ms. 1 if held.
LEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

BATCH = 500
RETRY_SECONDS = 1.0
BLOCK_MS = 1000


def _event_of(fields: dict) -> EventBase | None:
    """A stream entry's event, or None when the entry holds none."""
    try:
        return parse_event(fields[b"event"])
    except (KeyError, ValueError):
        return None


def seq_of(entry_id: bytes | str) -> int:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.split("-", 1)[0])


class RedisBackend:
    """See the module docstring. One per daemon."""

    name = "redis"

    def __init__(
        self, settings: EventsSettings, *, metrics: Metrics | None = None, tracer: Tracer = NOOP
    ):
        self.settings = settings
        self._tracer = tracer
        self.stream = settings.redis_stream
        self.counter_key = f"{self.stream}:seq"
        self.cursor_key = f"{self.stream}:cursors"
        self.spool_path = settings.resolved_path()
        self._metrics = metrics
        self._lock = WriterLock(self.spool_path)
        self._store: EventStore | None = None
        self._store_lock = asyncio.Lock()
        self.bus: AlertBus | None = None
        self.redis: Any = None
        self._reader_redis: Any = None
        self._script: Any = None
        self._outbox: list[tuple[EventBase, float]] = []
        self._own: dict[int, EventBase] = {}
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task] = []
        self.up = False
        self.spooled = 0
        self.lost = 0
        self._appended_upto = 0  # highest seq this node appended
        self._start_after: int | None = None  # where the reader starts (None: the stream end)
        self._read_upto = 0  # highest stream entry read (unparsable ones included)
        self._sending_since: float | None = None  # submit time of the batch being sent
        self.rejected = 0  # events set aside: they cannot be serialised (or parsed back)

    # -- lifecycle ------------------------------------------------------------------------------
    async def start(self, bus: AlertBus) -> None:
        import redis.asyncio as aioredis

        self.bus = bus
        self._lock.acquire()
        self._store = await asyncio.to_thread(EventStore, self.spool_path)
        self.spooled = await self._in_store(lambda s: s.spool_count())
        url = self.settings.redis_url
        self.redis = aioredis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self._reader_redis = aioredis.from_url(
            url, socket_timeout=BLOCK_MS / 1000 + 5, socket_connect_timeout=2
        )
        self._script = self.redis.register_script(APPEND_LUA)
        try:
            end = await self._stream_end()
            bus.set_last_seq(end)
            self._start_after = end
            self._set_up(True)
        except Exception as exc:  # unreachable at start: the reader finds the end later
            self._degraded(exc)
        bus.attach_log(self._submit)
        self._tasks = [
            asyncio.create_task(self._send_loop(), name="redis sender"),
            asyncio.create_task(self._read_loop(), name="redis reader"),
        ]
        if self.spooled:
            self._wake.set()

    async def flush(self, timeout: float = 5.0) -> None:
        """Everything published so far appended (and seen back by the reader) or spooled."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.bus is not None
            sent = not self._outbox and not self._sending
            if sent and (not self.up or self.bus.last_seq >= self._appended_upto):
                return
            await asyncio.sleep(0.01)
        await self._spool(self._take_outbox())  # out of time: keep them on disk

    _closing = False

    async def close(self) -> None:
        """Flush and release everything. Safe after a start that failed part-way (its spool
        locked by another daemon, say): only what was opened is closed."""
        if self._tasks:
            await self.flush()
        # Let the tasks finish on their own: cancelling redis-py in the middle of a blocking
        # XREAD can leave the cancellation hanging. The reader returns within BLOCK_MS.
        self._closing = True
        self._wake.set()
        if self._tasks:
            _, late = await asyncio.wait(self._tasks, timeout=BLOCK_MS / 1000 + 2)
            for task in late:
                task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 2)
        for client in (self.redis, self._reader_redis):
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
        if self._store is not None:
            self._store.close()
        self._lock.release()

    # -- writing --------------------------------------------------------------------------------
    _sending = False

    def _submit(self, draft: EventBase, ts: str, model: str) -> None:
        self._outbox.append((draft.unnumbered(ts=ts, model=model), time.perf_counter()))
        self._wake.set()

    def _take_outbox(self) -> list[tuple[EventBase, float]]:
        taken, self._outbox = self._outbox, []
        return taken

    async def _send_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._closing:
                return
            self._sending = True
            try:
                ok = await self._send_once()
            except Exception as exc:  # a bug (or the spool's disk): keep the sender alive
                log.error("event_sender_error", error=f"{type(exc).__name__}: {exc}"[:300])
                if self._metrics is not None:
                    self._metrics.events_log_errors_total.inc()
                ok = False
            finally:
                self._sending = False
                self._sending_since = None
            if not ok:  # Redis failed: what was pending is spooled; try again in a while
                await asyncio.sleep(RETRY_SECONDS)
                self._wake.set()

    async def _writable(
        self, batch: list[tuple[EventBase, float]]
    ) -> list[tuple[EventBase, float]]:
        """``batch`` without the events that cannot be serialised (each set aside). Their JSON
        is made here once and kept, so appending or spooling them costs nothing more."""
        kept = []
        for item in batch:
            error = json_problem(item[0])
            if error is None:
                kept.append(item)
            else:
                await self._reject(item[0], error)
        return kept

    async def _reject(self, event: EventBase, error: str) -> None:
        self.rejected += 1
        set_aside(event, error, metrics=self._metrics, record=None)
        try:
            await self._in_store(lambda s: s.add_rejected_event(event, error))
        except Exception as exc:
            log.error("event_rejected_not_recorded", error=str(exc)[:200])

    async def _send_once(self) -> bool:
        if self.spooled and not await self._drain_spool():
            await self._spool(self._take_outbox())
            return False
        while self._outbox:
            batch, self._outbox = self._outbox[:BATCH], self._outbox[BATCH:]
            self._sending_since = batch[0][1]
            batch = await self._writable(batch)
            if not batch:
                continue
            try:
                drafts = [e for e, _ in batch]
                with self._tracer.redis_append(drafts):
                    await self._append(drafts)
            except Exception as exc:
                self._degraded(exc)
                await self._spool(batch + self._take_outbox())
                return False
            self._set_up(True)
            await self._note_calls([e for e, _ in batch])
            self._count(batch)
        return True

    async def _append(self, drafts: list[EventBase]) -> int:
        args: list[Any] = [self.settings.redis_maxlen]
        splits = [split_at_seq(draft) for draft in drafts]
        for split in splits:
            args.extend(split)
        last = int(await self._script(keys=[self.stream, self.counter_key], args=args))
        self._appended_upto = max(self._appended_upto, last)
        # Our own events, numbered here: the reader takes these instead of parsing them back
        # (validating JSON is the dearest step of a fleet node's read path).
        first = last - len(drafts) + 1
        for i, (draft, split) in enumerate(zip(drafts, splits, strict=True)):
            self._own[first + i] = with_seq(draft, first + i, split)
        return last

    async def _drain_spool(self) -> bool:
        """Append the spool, oldest first; False if Redis failed on the way (kept spooled)."""
        while self.spooled:
            rows = await self._in_store(lambda s: s.spool_peek(BATCH))
            if not rows:
                self.spooled = 0
                break
            try:
                await self._append([event for _, event in rows])
            except Exception as exc:
                self._degraded(exc)
                return False
            await self._in_store(lambda s, upto=rows[-1][0]: s.spool_delete(upto))
            self.spooled = await self._in_store(lambda s: s.spool_count())
            self._set_up(True)
            log.info("event_spool_drained", events=len(rows), left=self.spooled)
        self._gauge_spool()
        return True

    async def _spool(self, batch: list[tuple[EventBase, float]]) -> None:
        batch = await self._writable(batch)
        if not batch:
            return
        drafts = [e for e, _ in batch]
        limit = self.settings.spool_max_events
        refused = await self._in_store(lambda s: s.spool_put(drafts, limit=limit))
        await self._note_calls(drafts)
        if refused:
            if not self.lost:
                log.error("event_spool_full", limit=limit, lost=len(refused))
            self.lost += len(refused)
            if self._metrics is not None:
                for kind, n in Tally(e.type for e in refused).items():
                    self._metrics.events_spool_lost_total.labels(type=kind).inc(n)
        self.spooled = await self._in_store(lambda s: s.spool_count())
        self._gauge_spool()

    async def _note_calls(self, drafts: list[EventBase]) -> None:
        if any(e.type in ("call_started", "call_ended") for e in drafts):
            await self._in_store(lambda s: s.note_calls(drafts))

    def _count(self, batch: list[tuple[EventBase, float]]) -> None:
        if self._metrics is not None:
            now = time.perf_counter()
            self._metrics.events_committed_total.inc(len(batch))
            self._metrics.events_commit_batch.observe(len(batch))
            for _, t0 in batch:
                self._metrics.events_commit_seconds.observe(now - t0)

    def _gauge_spool(self) -> None:
        if self._metrics is not None:
            self._metrics.events_spooled.set(self.spooled)

    def _set_up(self, up: bool) -> None:
        if up and not self.up:
            if self._metrics is not None:
                self._metrics.events_backend_up.set(1)
            log.info("event_backend_up", backend="redis", stream=self.stream)
            self._down_logged = False
        self.up = up

    _down_logged = False

    def _degraded(self, exc: BaseException) -> None:
        if not self._down_logged:  # one line per outage, not one per retry
            log.error("event_backend_unreachable", backend="redis", error=str(exc)[:200])
            self._down_logged = True
        self.up = False
        if self._metrics is not None:
            self._metrics.events_backend_up.set(0)
            self._metrics.events_log_errors_total.inc()

    async def _in_store(self, fn: Any) -> Any:
        async with self._store_lock:
            return await asyncio.to_thread(fn, self._store)

    # -- reading --------------------------------------------------------------------------------
    async def _stream_end(self) -> int:
        top = await self.redis.xrevrange(self.stream, "+", "-", count=1)
        return seq_of(top[0][0]) if top else 0

    async def _read_loop(self) -> None:
        assert self.bus is not None
        while not self._closing:
            try:
                if self._start_after is None:
                    self._start_after = await self._stream_end()
                    self.bus.set_last_seq(self._start_after)
                after = max(self.bus.last_seq, self._start_after, self._read_upto)
                reply = await self._reader_redis.xread(
                    {self.stream: f"{after}-0"}, count=BATCH, block=BLOCK_MS
                )
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._closing:
                    return
                self._degraded(exc)
                self._wake.set()  # let the sender try (and drain the spool) when back
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if not self.up:
                self._set_up(True)
                self._wake.set()
            for _stream, entries in reply or ():
                own = self._own
                events = []
                for entry_id, fields in entries:
                    seq = seq_of(entry_id)
                    self._read_upto = max(self._read_upto, seq)
                    event = own.pop(seq, None) or self._parse_entry(seq, fields)
                    if event is not None:
                        events.append(event)
                if own and len(own) > 10 * BATCH:  # read before we numbered them: forget
                    for seq in [q for q in own if q <= self.bus.last_seq]:
                        del own[seq]
                if events:
                    self.bus.deliver(events)
                    if self._metrics is not None:
                        self._metrics.events_last_seq.set(events[-1].seq)

    def _parse_entry(self, seq: int, fields: dict) -> EventBase | None:
        """A stream entry as an event; None (logged, counted) for one that is not an event
        (another writer's bug): the entries after it are still delivered."""
        event = _event_of(fields)
        if event is None:
            self.rejected += 1
            log.error("event_entry_unreadable", seq=seq)
            if self._metrics is not None:
                self._metrics.events_rejected_total.labels(type="unreadable").inc()
        return event

    async def read(self, after: int, flt: SubscriptionFilter | None, limit: int) -> Page:
        flt = flt or SubscriptionFilter()
        entries = await self.redis.xrange(self.stream, f"({after}-0", "+", count=limit)
        scanned = seq_of(entries[-1][0]) if entries else after
        events = [_event_of(fields) for _, fields in entries]  # the reader logged bad ones
        return Page([e for e in events if e is not None and flt.matches(e)], scanned)

    async def tail_start(self, count: int, flt: SubscriptionFilter | None) -> int:
        """The seq before the ``count``-th newest matching entry (0 when fewer match), walking
        back one batch at a time: only a batch is ever held."""
        flt = flt or SubscriptionFilter()
        top, seen = "+", 0
        while True:
            entries = await self.redis.xrevrange(self.stream, top, "-", count=BATCH)
            if not entries:
                return 0
            for entry_id, fields in entries:
                event = _event_of(fields)
                if event is not None and flt.matches(event):
                    seen += 1
                    if seen >= count:
                        return seq_of(entry_id) - 1
            top = f"({entries[-1][0].decode()}"

    async def oldest_seq(self) -> int | None:
        first = await self.redis.xrange(self.stream, "-", "+", count=1)
        return seq_of(first[0][0]) if first else None

    # -- crash recovery, cursors ----------------------------------------------------------------
    async def open_calls(self) -> list[CallStarted]:
        return await self._in_store(lambda s: s.open_calls())

    async def get_cursor(self, name: str) -> int | None:
        value = await self.redis.hget(self.cursor_key, name)
        return None if value is None else int(value)

    async def set_cursor(self, name: str, seq: int) -> None:
        await self.redis.hset(self.cursor_key, name, seq)

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> bool:
        """Take or renew a fleet-wide lease (one node delivers to each webhook endpoint)."""
        if self._lease_script is None:
            self._lease_script = self.redis.register_script(LEASE_LUA)
        key = f"{self.stream}:lease:{name}"
        return bool(await self._lease_script(keys=[key], args=[holder, int(ttl * 1000)]))

    _lease_script: Any = None

    async def add_dead_letter(self, endpoint: str, seq: int, attempts: int, error: str) -> None:
        await self._in_store(lambda s: s.add_dead_letter(endpoint, seq, attempts, error))

    @property
    def problem(self) -> str | None:
        """Why events are not being committed now (``/healthz`` says ``degraded``), or None."""
        if not self.up:
            return "redis unreachable: events are spooled"
        if self._tasks and self._tasks[0].done() and not self._closing:
            return "the event sender has stopped"
        oldest = self._sending_since or (self._outbox[0][1] if self._outbox else None)
        if oldest is not None and time.perf_counter() - oldest > STALL_SECONDS:
            return f"events waiting more than {STALL_SECONDS:g} s to be appended"
        return None

    def health(self) -> dict[str, Any]:
        problem = self.problem
        out: dict[str, Any] = {
            "backend": self.name,
            "degraded": problem is not None,
            "redis_stream": self.stream,
            "spooled": self.spooled,
            "spool_lost": self.lost,
            "rejected": self.rejected,
        }
        if problem is not None:
            out["problem"] = problem
        return out
