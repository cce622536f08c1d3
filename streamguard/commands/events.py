"""``streamguard events``: read the event log, with or without a daemon running.

Reads the same log ``serve`` writes (the same ``--config`` finds the same file: ``[events]
path``, else ``$STATE_DIRECTORY``, else the per-user state directory), read-only, so it is
safe beside a running daemon. ``--backend redis`` reads the fleet's stream instead.
Human lines as ``streamguard watch`` prints them, or the stored JSON lines with ``--json``.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Iterator
from pathlib import Path

HELP = "read the event log (no daemon needed): --since SEQ, --tail N, filters, --follow"

POLL_SECONDS = 0.25
PAGE = 500


def _non_negative(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the daemon's config file (for [events])")
    parser.add_argument(
        "--backend",
        choices=("sqlite", "redis"),
        help="where to read (default: [events] backend of the config)",
    )
    parser.add_argument("--path", type=Path, help="the SQLite log file (default: from config)")
    parser.add_argument("--redis-url", help="Redis URL (default: [events] redis_url)")
    parser.add_argument("--since", type=_non_negative, help="events after this seq (default: all)")
    parser.add_argument(
        "--tail", type=_non_negative, help="only the last N matching events (then --follow)"
    )
    parser.add_argument("--call-id", help="only this call's events")
    parser.add_argument(
        "--types", help="comma-separated types: call_started,score,alert,call_ended"
    )
    parser.add_argument("--json", action="store_true", help="JSON lines, as stored")
    parser.add_argument(
        "--follow",
        "-f",
        action="store_true",
        help="keep printing new events as they are logged (Ctrl-C stops); without "
        "--since/--tail it starts with the last 10",
    )


class _Reader:
    def read(self, after, flt, limit):  # pragma: no cover - interface
        raise NotImplementedError

    def tail(self, count, flt):  # pragma: no cover - interface
        raise NotImplementedError

    def oldest_seq(self) -> int | None:  # pragma: no cover - interface
        raise NotImplementedError

    def wait(self, after: int) -> None:
        time.sleep(POLL_SECONDS)


class _SqliteReader(_Reader):
    def __init__(self, path: Path):
        from streamguard.alerts.store import EventStore

        self.store = EventStore(path, readonly=True)

    def read(self, after, flt, limit):
        return self.store.read(after, flt, limit=limit)

    def tail(self, count, flt):
        return self.store.tail(count, flt)

    def oldest_seq(self):
        return self.store.oldest_seq()


class _RedisReader(_Reader):
    def __init__(self, url: str, stream: str):
        import redis

        self.client = redis.Redis.from_url(url, socket_connect_timeout=3, socket_timeout=10)
        self.stream = stream
        try:
            self.client.ping()
        except redis.RedisError as exc:
            from streamguard.errors import StreamguardError

            raise StreamguardError(f"cannot reach Redis at {_safe_url(url)}: {exc}") from None

    def _parse(self, entries):
        from streamguard.alerts.events import parse_event
        from streamguard.alerts.redis_backend import seq_of

        return [(seq_of(i), parse_event(f[b"event"])) for i, f in entries]

    def read(self, after, flt, limit):
        from streamguard.alerts.store import Page

        rows = self._parse(self.client.xrange(self.stream, f"({after}-0", "+", count=limit))
        scanned = rows[-1][0] if rows else after
        return Page([e for _, e in rows if flt.matches(e)], scanned)

    def tail(self, count, flt):
        from streamguard.alerts.store import Page

        rows = self._parse(self.client.xrevrange(self.stream, "+", "-", count=max(count, 1) * 20))
        upto = rows[0][0] if rows else 0
        picked = [e for _, e in rows if flt.matches(e)][:count]
        return Page(list(reversed(picked)), upto)

    def oldest_seq(self):
        first = self.client.xrange(self.stream, "-", "+", count=1)
        return self._parse(first)[0][0] if first else None

    def wait(self, after):
        self.client.xread({self.stream: f"{after}-0"}, count=1, block=int(POLL_SECONDS * 4000))


def _safe_url(url: str) -> str:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}:{parts.port or 6379}"


def events(reader: _Reader, flt, *, since, tail, follow) -> Iterator:
    """The events to print, in seq order (a retention notice first if ``since`` is too old)."""
    from streamguard.alerts.events import Dropped

    if tail is None and since is None and follow:
        tail = 10
    if tail is not None:
        page = reader.tail(tail, flt)
        yield from page.events
        cursor = page.scanned_to
    else:
        cursor = since or 0
        oldest = reader.oldest_seq()
        if since is not None and oldest is not None and since + 1 < oldest:
            yield Dropped(
                seq=oldest - 1,
                call_id=None,
                track=None,
                source=None,
                count=oldest - since - 1,
                first_seq=since + 1,
                last_seq=oldest - 1,
                reason="retention",
            )
            cursor = oldest - 1
    while True:
        page = reader.read(cursor, flt, PAGE)
        yield from page.events
        advanced = page.scanned_to > cursor
        cursor = max(cursor, page.scanned_to)
        if advanced and len(page.events) == PAGE:
            continue
        if not follow:
            if not advanced:
                return
            continue
        if not advanced:
            reader.wait(cursor)


def run(args: argparse.Namespace) -> int:
    from streamguard.alerts.bus import SubscriptionFilter, parse_types
    from streamguard.commands.watch import format_event
    from streamguard.config import load_config
    from streamguard.errors import ConfigError, StreamguardError

    if args.since is not None and args.tail is not None:
        raise ConfigError("--since and --tail are mutually exclusive")
    try:
        flt = SubscriptionFilter(call_id=args.call_id, types=parse_types(args.types))
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    settings = load_config(args.config).events
    backend = args.backend or settings.backend
    if backend == "redis":
        reader: _Reader = _RedisReader(args.redis_url or settings.redis_url, settings.redis_stream)
    elif backend == "memory":
        raise ConfigError("[events] backend is memory: there is no log to read")
    else:
        reader = _SqliteReader(args.path or settings.resolved_path())
    out = sys.stdout
    try:
        for event in events(reader, flt, since=args.since, tail=args.tail, follow=args.follow):
            out.write((event.to_json() if args.json else format_event(event)) + "\n")
            out.flush()
    except KeyboardInterrupt:
        return 0
    except sqlite3.Error as exc:  # a SQLite file, but not one a daemon wrote
        raise StreamguardError(
            f"cannot read event log {args.path or settings.resolved_path()}: {exc} "
            "(not a streamguard event log?)"
        ) from None
    return 0
