"""The durable event log: one SQLite file (WAL), plain synchronous code, no threads, no asyncio.

One :class:`EventStore` per connection. The daemon's writer thread owns the only writing one
(:mod:`streamguard.alerts.writer`); readers (``/alerts`` replay, ``streamguard events``, the
webhook deliverer) open their own, read-only or not, and never block the writer (WAL).
The file is created 0600 in a directory created 0700 (:func:`create_private`): SQLite gives
its ``-wal`` and ``-shm`` files the same mode.

Tables:

``events``
    ``seq`` (the log's own numbering: ``INTEGER PRIMARY KEY``), ``at`` (commit time, epoch s, for
    retention), ``type``, ``call_id`` (for filtered reads) and ``json``: the event exactly as
    ``/alerts`` sends it. ``seq`` continues from the highest one on disk, and retention never
    deletes the newest row, so ``seq`` never goes back, across restarts and retention alike.
``open_calls``
    Calls this node started and has not ended: a ``call_ended`` for each is published with
    reason ``crash`` when the daemon starts again after dying without its drain.
``cursors``
    Per-consumer positions (webhook endpoints): the last seq handled.
``dead_letters``
    Webhook deliveries given up after their last attempt.
``spool``
    Unnumbered events waiting for Redis (the fleet backend) while it is unreachable.
``rejected_events``
    Events the log could not hold (they cannot be serialised: a bug, or input no core should
    have let through), with the reason: set aside so the events around them go on.

Durability: every :meth:`append` is one transaction. With ``synchronous=NORMAL`` (the default)
a commit reaches the operating system, not the disk: a process crash (``kill -9``) loses
nothing committed, a power cut may lose the last commits (up to the last WAL checkpoint) but
never reorders or corrupts the log. ``synchronous=FULL`` fsyncs each commit (group commits
keep that affordable).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from streamguard.alerts.bus import SubscriptionFilter
from streamguard.alerts.events import (
    CallStarted,
    EventBase,
    parse_event,
    with_seq,
)
from streamguard.errors import StreamguardError

SCHEMA_VERSION = 1
Synchronous = Literal["normal", "full"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    call_id TEXT,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS open_calls (
    id INTEGER PRIMARY KEY,
    call_id TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS cursors (
    name TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    endpoint TEXT NOT NULL,
    seq INTEGER NOT NULL,
    attempts INTEGER NOT NULL,
    error TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spool (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    json TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    type TEXT NOT NULL,
    call_id TEXT,
    error TEXT NOT NULL
);
"""


class EventLogError(StreamguardError):
    """The event log file cannot be opened or used (one line for the CLI)."""


def _text(value: str | None, limit: int) -> str | None:
    """``value`` cut to ``limit`` and made writable (lone surrogates escaped)."""
    if value is None:
        return None
    return value[:limit].encode("utf-8", "backslashreplace").decode("utf-8")


def _where(flt: SubscriptionFilter | None) -> tuple[str, list[object]]:
    """SQL for a subscriber's filter (the same filter the live bus applies)."""
    clauses: list[str] = []
    args: list[object] = []
    if flt is not None and flt.call_id is not None:
        clauses.append("call_id = ?")
        args.append(flt.call_id)
    if flt is not None and flt.types is not None:
        clauses.append(f"type IN ({','.join('?' * len(flt.types))})")
        args.extend(sorted(flt.types))
    return "".join(f" AND {c}" for c in clauses), args


@dataclass(frozen=True)
class Page:
    """Events read, and how far the read looked: ``scanned_to`` is the highest seq examined
    (a filtered read may return nothing yet still move its cursor)."""

    events: list[EventBase]
    scanned_to: int


def default_path() -> Path:
    """Where the log lives when ``[events] path`` is not set.

    ``$STATE_DIRECTORY`` under systemd (``StateDirectory=streamguard``), else the per-user state
    directory (``~/.local/state/streamguard`` on Linux). ``serve`` and ``streamguard events``
    both resolve it this way, so with the same config and user they find the same file.
    """
    state = os.environ.get("STATE_DIRECTORY")
    if state:
        # systemd may pass several directories separated by ':'; the first is ours.
        return Path(state.split(":")[0]) / "events.db"
    from platformdirs import user_state_path

    return user_state_path("streamguard", appauthor=False) / "events.db"


def create_private(path: Path) -> None:
    """Create the log file (and its directory) readable by this user only, before SQLite
    opens it: call metadata and the spool are in it, and SQLite gives the ``-wal`` and
    ``-shm`` files it makes beside the log the log's own permissions. An existing file is
    left as it is (an operator may have widened it on purpose)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with contextlib.suppress(FileExistsError):
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))


class WriterLock:
    """An exclusive lock on ``<log>.lock``: one daemon writes a log file at a time.

    Two daemons numbering the same file would both hand out the same seqs; the second one
    stops at start-up with one line instead. Readers never take it.
    """

    def __init__(self, path: Path):
        self.path = Path(str(path) + ".lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise EventLogError(
                f"event log {str(self.path)[:-5]} is in use by another streamguard daemon "
                "(set [events] path to another file)"
            ) from None
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class EventStore:
    """One connection to the log file. Not thread-safe: one per thread."""

    def __init__(
        self,
        path: Path | str,
        *,
        readonly: bool = False,
        synchronous: Synchronous = "normal",
        create: bool = True,
        busy_timeout_ms: int = 5000,
    ):
        self.path = Path(path)
        self.readonly = readonly
        try:
            if readonly:
                if not self.path.exists():
                    raise EventLogError(f"no event log at {self.path} (has the daemon run?)")
                uri = f"file:{self.path}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, check_same_thread=False)
            else:
                create_private(self.path)
                self.db = sqlite3.connect(self.path, check_same_thread=False)
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            if not readonly:
                self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # before any table exists
                mode = self.db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if mode.lower() != "wal":
                    raise EventLogError(f"{self.path}: cannot use WAL mode (got {mode})")
                self.db.execute(f"PRAGMA synchronous = {synchronous.upper()}")
                if create:
                    self.db.executescript(_SCHEMA)
                    self.db.execute(
                        "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                        (str(SCHEMA_VERSION),),
                    )
                    self.db.commit()
            # SQLite reads the file's header only now: "file is not a database" is raised here.
            self._last_seq = self._max_seq()
        except sqlite3.Error as exc:
            raise EventLogError(f"cannot open event log {self.path}: {exc}") from None

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.db.close()

    # -- numbering and appending -----------------------------------------------------------
    def _max_seq(self) -> int:
        try:
            row = self.db.execute("SELECT max(seq) FROM events").fetchone()
        except sqlite3.OperationalError:  # a read-only open of a file with no table yet
            return 0
        return int(row[0] or 0)

    @property
    def last_seq(self) -> int:
        """The highest seq in the log (0 when empty). Fresh for readers, cached for the writer."""
        return self._max_seq() if self.readonly else self._last_seq

    def oldest_seq(self) -> int | None:
        row = self.db.execute("SELECT min(seq) FROM events").fetchone()
        return None if row[0] is None else int(row[0])

    def append(
        self,
        drafts: Sequence[EventBase],
        *,
        stamps: Sequence[tuple[str, str]] | None = None,
        now: float | None = None,
    ) -> list[EventBase]:
        """Number ``drafts`` (in order) and commit them in ONE transaction.

        ``drafts`` are unnumbered events, stamped already (``ts``, ``model``), or, with
        ``stamps``, producers' drafts and their ``(ts, model)`` (the writer's path: one copy,
        one serialisation per event). Returns the numbered events. If the commit fails
        nothing is numbered: the same drafts can be appended again.
        """
        if not drafts:
            return []
        at = time.time() if now is None else now
        first = self._last_seq + 1
        if stamps is None:
            events = [with_seq(d, first + i) for i, d in enumerate(drafts)]
        else:
            events = [
                d.stamped(seq=first + i, ts=ts, model=model)
                for i, (d, (ts, model)) in enumerate(zip(drafts, stamps, strict=True))
            ]
        rows = [(e.seq, at, e.type, e.call_id, e.to_json()) for e in events]
        try:
            with self.db:
                self.db.executemany(
                    "INSERT INTO events (seq, at, type, call_id, json) VALUES (?, ?, ?, ?, ?)",
                    rows,
                )
                self._note_calls(events)
        except sqlite3.Error as exc:
            raise EventLogError(f"event log {self.path}: commit failed: {exc}") from None
        self._last_seq = events[-1].seq
        return events

    def _note_calls(self, events: Iterable[EventBase]) -> None:
        for e in events:
            if e.type == "call_started" and e.call_id is not None:
                self.db.execute(
                    "INSERT INTO open_calls (call_id, json) VALUES (?, ?)",
                    (e.call_id, e.to_json()),
                )
            elif e.type == "call_ended" and e.call_id is not None:
                self.db.execute(
                    "DELETE FROM open_calls WHERE id = "
                    "(SELECT min(id) FROM open_calls WHERE call_id = ?)",
                    (e.call_id,),
                )

    def note_calls(self, events: Sequence[EventBase]) -> None:
        """Track open calls for events that are not appended here (the Redis backend)."""
        with self.db:
            self._note_calls(events)

    def open_calls(self) -> list[CallStarted]:
        """Calls started on this node and never ended (the daemon died without its drain)."""
        rows = self.db.execute("SELECT json FROM open_calls ORDER BY id").fetchall()
        return [parse_event(r[0]) for r in rows]  # type: ignore[misc]

    # -- reading ----------------------------------------------------------------------------
    def read(self, after: int, flt: SubscriptionFilter | None = None, *, limit: int = 500) -> Page:
        """Events with ``seq > after`` (oldest first, at most ``limit``) matching ``flt``."""
        upto = self._max_seq()
        where, args = _where(flt)
        rows = self.db.execute(
            f"SELECT seq, json FROM events WHERE seq > ? AND seq <= ?{where} ORDER BY seq LIMIT ?",
            [after, upto, *args, limit],
        ).fetchall()
        scanned = upto if len(rows) < limit else rows[-1][0]
        return Page([parse_event(j) for _, j in rows], max(scanned, after))

    def tail_start(self, count: int, flt: SubscriptionFilter | None = None) -> int:
        """Where to :meth:`read` from for the last ``count`` matching events: the seq before
        the ``count``-th newest one (0 when fewer match). One index lookup; the events are
        then read in pages, never all at once."""
        if count < 1:
            return self._max_seq()
        where, args = _where(flt)
        row = self.db.execute(
            f"SELECT seq FROM events WHERE seq <= ?{where} ORDER BY seq DESC LIMIT 1 OFFSET ?",
            [self._max_seq(), *args, count - 1],
        ).fetchone()
        return 0 if row is None else int(row[0]) - 1

    def tail(self, count: int, flt: SubscriptionFilter | None = None) -> Page:
        """The last ``count`` matching events (oldest first)."""
        upto = self._max_seq()
        where, args = _where(flt)
        rows = self.db.execute(
            f"SELECT seq, json FROM events WHERE seq <= ?{where} ORDER BY seq DESC LIMIT ?",
            [upto, *args, count],
        ).fetchall()
        return Page([parse_event(j) for _, j in reversed(rows)], upto)

    # -- retention --------------------------------------------------------------------------
    def used_bytes(self) -> int:
        pages = self.db.execute("PRAGMA page_count").fetchone()[0]
        free = self.db.execute("PRAGMA freelist_count").fetchone()[0]
        size = self.db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def enforce_retention(
        self,
        *,
        now: float,
        retain_seconds: float | None,
        max_bytes: int | None,
        chunk: int = 2000,
    ) -> int:
        """Delete at most ``chunk`` of the oldest rows that are too old or over the size cap.

        Small chunks, so the writer goes back to committing between them. The newest row is
        never deleted (it carries the numbering). Returns the rows deleted (0: nothing to do).
        """
        deleted = 0
        with self.db:
            if retain_seconds is not None:
                deleted = self.db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM (SELECT seq, at FROM "
                    "events ORDER BY seq LIMIT ?) WHERE at < ?) "
                    "AND seq < (SELECT max(seq) FROM events)",
                    (chunk, now - retain_seconds),
                ).rowcount
            if not deleted and max_bytes is not None and self.used_bytes() > max_bytes:
                deleted = self.db.execute(
                    "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq "
                    "LIMIT ?) AND seq < (SELECT max(seq) FROM events)",
                    (max(chunk // 4, 1),),
                ).rowcount
        if deleted:
            self.db.execute("PRAGMA incremental_vacuum(2000)")
        return deleted

    # -- cursors and dead letters (webhooks) ------------------------------------------------
    def get_cursor(self, name: str) -> int | None:
        row = self.db.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    def set_cursor(self, name: str, seq: int) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO cursors (name, seq, updated) VALUES (?, ?, ?) "
                "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq, updated = excluded.updated",
                (name, seq, time.time()),
            )

    def add_dead_letter(self, endpoint: str, seq: int, attempts: int, error: str) -> None:
        with self.db:
            self.db.execute(
                "INSERT INTO dead_letters (endpoint, seq, attempts, error, at) "
                "VALUES (?, ?, ?, ?, ?)",
                (endpoint, seq, attempts, error[:500], time.time()),
            )

    def dead_letters(self, endpoint: str | None = None) -> list[tuple[str, int, int, str]]:
        rows = self.db.execute(
            "SELECT endpoint, seq, attempts, error FROM dead_letters "
            "WHERE ? IS NULL OR endpoint = ? ORDER BY id",
            (endpoint, endpoint),
        ).fetchall()
        return [(r[0], int(r[1]), int(r[2]), r[3]) for r in rows]

    # -- events the log cannot hold ---------------------------------------------------------
    def add_rejected_event(self, event: EventBase, error: str) -> None:
        """Record an event that cannot be written (what it was, never its content)."""
        with self.db:
            self.db.execute(
                "INSERT INTO rejected_events (at, type, call_id, error) VALUES (?, ?, ?, ?)",
                (time.time(), event.type, _text(event.call_id, 300), _text(error, 500)),
            )

    def rejected_events(self) -> list[tuple[str, str | None, str]]:
        """``(type, call_id, error)`` of every event set aside, oldest first."""
        rows = self.db.execute(
            "SELECT type, call_id, error FROM rejected_events ORDER BY id"
        ).fetchall()
        return [(r[0], r[1], r[2]) for r in rows]

    # -- the spool (Redis unreachable) ------------------------------------------------------
    def spool_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM spool").fetchone()[0])

    def spool_put(self, drafts: Sequence[EventBase], *, limit: int) -> list[EventBase]:
        """Spool unnumbered events, up to ``limit`` spooled in all; returns those refused."""
        room = max(limit - self.spool_count(), 0)
        kept, refused = drafts[:room], list(drafts[room:])
        if kept:
            at = time.time()
            with self.db:
                self.db.executemany(
                    "INSERT INTO spool (at, type, json) VALUES (?, ?, ?)",
                    [(at, d.type, d.to_json()) for d in kept],
                )
        return refused

    def spool_peek(self, count: int) -> list[tuple[int, EventBase]]:
        rows = self.db.execute(
            "SELECT id, json FROM spool ORDER BY id LIMIT ?", (count,)
        ).fetchall()
        return [(int(i), parse_event(j)) for i, j in rows]

    def spool_delete(self, upto_id: int) -> None:
        with self.db:
            self.db.execute("DELETE FROM spool WHERE id <= ?", (upto_id,))


__all__ = [
    "EventLogError",
    "EventStore",
    "Page",
    "WriterLock",
    "default_path",
]
