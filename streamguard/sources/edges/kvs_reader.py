"""The reader edge for Amazon Connect calls in Kinesis Video Streams: GetMedia -> KvsCallCore.

One :class:`KvsReader` per call reads one stream: ``GetDataEndpoint(APIName=GET_MEDIA)`` on
the Kinesis Video control plane, then ``GetMedia`` on the data endpoint it returns, with the
payload's bytes fed to :class:`~streamguard.sources.kvs.KvsCallCore`. Its output is the core's
source events, through ``async for event in reader.events()``: what a ``CallFeed`` routes, so
the daemon's source table can start one reader per ``POST /api/kvs/streams``.

Why threads: boto3 is blocking. Every boto3 call and every read of the payload runs in the
default executor (``asyncio.to_thread``), one chunk at a time, so a slow stream never blocks
the event loop and a stopped reader leaves at most one read in flight.

* **Start**: after ``start_fragment`` (``StartSelectorType=FRAGMENT_NUMBER``, the Lambda's
  ``StartFragmentNumber``, as AWS's own Connect consumer does), else from ``start_timestamp``
  (``PRODUCER_TIMESTAMP``), else ``NOW``.
* **Resume**: when a response breaks off (a dropped connection, a read error) or ends, the next
  ``GetMedia`` starts after the last complete fragment (``FRAGMENT_NUMBER``); the core drops
  audio it already emitted, so whether KVS repeats that fragment or not, nothing is doubled.
  GetMedia allows 5 calls per second per stream: calls are spaced by at least
  ``1.05 / max_calls_per_second`` (0.21 s) and back off (up to 2 s) while they keep failing.
* **End**: ``CallEnd("idle")`` when no new fragment has arrived for ``idle_timeout_seconds``
  (the contact ended: Connect stops writing; KVS may keep the response open or end it);
  ``CallEnd("stop")`` on :meth:`stop` or when the stream moves to another contact;
  ``CallEnd("error")`` when KVS refuses the stream (not found, not authorised, bad argument),
  with the reason in :attr:`error`.
* **Credentials**: only boto3's default chain (environment, shared config, container or
  instance role). Nothing here logs a credential, a signed header or a payload.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import structlog

from streamguard.sources.base import CallEnd, Reject, SourceEvent
from streamguard.sources.kvs import KvsCallCore

__all__ = ["KvsReader", "KvsReaderStats", "region_of"]

log = structlog.get_logger("streamguard.kvs")

#: Errors that end the call: retrying cannot help.
FATAL_ERRORS: Final = frozenset(
    {"ResourceNotFoundException", "NotAuthorizedException", "InvalidArgumentException"}
)
MAX_BACKOFF: Final = 2.0
REFRESH_ENDPOINT_AFTER: Final = 3  # consecutive failures before asking for the endpoint again


def region_of(stream_arn: str) -> str | None:
    """``arn:aws:kinesisvideo:REGION:ACCOUNT:stream/NAME/ID`` -> REGION (None if not an ARN)."""
    parts = stream_arn.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "kinesisvideo" and parts[3]:
        return parts[3]
    return None


@dataclass(slots=True)
class KvsReaderStats:
    call_times: deque[float] = field(default_factory=lambda: deque(maxlen=32))  # monotonic
    get_media_calls: int = 0
    endpoint_calls: int = 0
    reconnects: int = 0  # responses that broke off or ended before the call did
    read_errors: int = 0
    throttled: int = 0


class KvsReader:
    """Read one Amazon Connect call from ``stream_arn`` (see the module docstring).

    ``session``: a ``boto3.session.Session`` (default: a new one, i.e. the default credential
    chain); ``region`` defaults to the ARN's; ``endpoint_url`` points the control plane
    elsewhere (a VPC endpoint; the tests' local server); ``chunk_bytes`` is one payload read.
    """

    def __init__(
        self,
        *,
        stream_arn: str,
        call_id: str,
        contact_id: str | None = None,
        start_fragment: str | None = None,
        start_timestamp: datetime | float | None = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        idle_timeout_seconds: float = 10.0,
        max_calls_per_second: float = 5.0,
        chunk_bytes: int = 16384,
        session: Any = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self.stream_arn = stream_arn
        self.region = region or region_of(stream_arn)
        self.endpoint_url = endpoint_url
        self.idle_timeout_seconds = idle_timeout_seconds
        # 5 % under the limit: KVS counts arrivals, and arrivals jitter
        self.min_interval = 1.05 / max_calls_per_second
        self.chunk_bytes = chunk_bytes
        self._session = session
        self._start_fragment = start_fragment
        if isinstance(start_timestamp, int | float):
            start_timestamp = datetime.fromtimestamp(start_timestamp, tz=UTC)
        self._start_timestamp = start_timestamp
        meta = {"stream_arn": stream_arn, **(metadata or {})}
        if start_fragment:
            meta["start_fragment"] = start_fragment
        self.core = KvsCallCore(call_id=call_id, contact_id=contact_id, metadata=meta)
        self.error: str | None = None
        self.stats = KvsReaderStats()
        self._stop = asyncio.Event()
        self._media: Any = None
        self._last_call = float("-inf")
        self._failures = 0
        self._body: Any = None  # the payload being read, while a read may be in flight

    @property
    def call_id(self) -> str:
        return self.core._call_id

    def stop(self) -> None:
        """End the call (``stop``) at the next chunk boundary or wait; a read blocked on a
        quiet stream is cut short (its socket shut down), so a drain never waits for the read
        timeout (``idle_timeout_seconds``)."""
        self._stop.set()
        if self._body is not None:
            _abort(self._body)

    def selector(self) -> dict[str, Any]:
        """The next GetMedia ``StartSelector``: after the last complete fragment if any."""
        after = self.core.last_fragment_number or self._start_fragment
        if after:
            return {"StartSelectorType": "FRAGMENT_NUMBER", "AfterFragmentNumber": after}
        if self._start_timestamp is not None:
            return {
                "StartSelectorType": "PRODUCER_TIMESTAMP",
                "StartTimestamp": self._start_timestamp,
            }
        return {"StartSelectorType": "NOW"}

    async def events(self) -> AsyncIterator[SourceEvent]:
        """The call's source events, from CallStart to its CallEnd (or a Reject)."""
        last_progress = time.monotonic()
        try:
            while not self.core.finished:
                if self._stop.is_set():
                    for event in self.core.close("stop"):
                        yield event
                    return
                if time.monotonic() - last_progress > self.idle_timeout_seconds:
                    for event in self.core.close("idle"):
                        yield event
                    return
                body = await self._get_media()
                if body is None:
                    if self.error is not None:
                        for event in self.core.close("error"):
                            yield event
                        return
                    continue
                async for events, progressed in self._read(body):
                    if progressed:
                        last_progress = time.monotonic()
                    for event in events:
                        yield event
                    if self.core.finished or self._stop.is_set():
                        break
                if not self.core.finished:
                    self.stats.reconnects += 1
        finally:
            self._media = None

    # ------------------------------------------------------------------ internals
    def _client(self, service: str, endpoint_url: str | None) -> Any:
        import boto3
        from botocore.config import Config

        session = self._session or boto3.session.Session()
        self._session = session
        config = Config(
            connect_timeout=5,
            read_timeout=max(1.0, self.idle_timeout_seconds),
            retries={"max_attempts": 1, "mode": "standard"},  # this module paces retries
            user_agent_extra="streamguard",
        )
        return session.client(
            service, region_name=self.region, endpoint_url=endpoint_url, config=config
        )

    def _endpoint(self) -> Any:
        """The kinesis-video-media client for this stream's GET_MEDIA data endpoint."""
        control = self._client("kinesisvideo", self.endpoint_url)
        answer = control.get_data_endpoint(StreamARN=self.stream_arn, APIName="GET_MEDIA")
        return self._client("kinesis-video-media", answer["DataEndpoint"])

    async def _pace(self) -> None:
        backoff = min(MAX_BACKOFF, self.min_interval * (2**self._failures)) if self._failures else 0
        wait = max(self.min_interval, backoff) - (time.monotonic() - self._last_call)
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), wait)

    async def _get_media(self) -> Any:
        """One GetMedia call; its payload, or None (failed: retry, or fatal: ``error``)."""
        from botocore.exceptions import BotoCoreError, ClientError

        await self._pace()
        if self._stop.is_set():
            return None
        try:
            if self._media is None or self._failures >= REFRESH_ENDPOINT_AFTER:
                self.stats.endpoint_calls += 1
                self._media = await asyncio.to_thread(self._endpoint)
            self.stats.get_media_calls += 1
            self._last_call = time.monotonic()
            self.stats.call_times.append(self._last_call)
            selector = self.selector()
            answer = await asyncio.to_thread(
                self._media.get_media, StreamARN=self.stream_arn, StartSelector=selector
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            if code in FATAL_ERRORS:
                self.error = f"KVS refused the stream: {code}"
                log.error("kvs_refused", stream_arn=self.stream_arn, error=code)
                return None
            self._failures += 1
            self.stats.throttled += code.endswith("LimitExceededException")
            log.info("kvs_get_media_retry", stream_arn=self.stream_arn, error=code)
            return None
        except BotoCoreError as exc:
            self._failures += 1
            log.info("kvs_get_media_retry", stream_arn=self.stream_arn, error=type(exc).__name__)
            return None
        return answer["Payload"]

    def _progress(self, step: Any, arg: Any) -> tuple[list[SourceEvent], bool]:
        """Run one core step; progress = new audio, or a fragment not seen before (a resumed
        response that repeats what was read is not progress: idle still ends the call)."""
        before = self.core.last_fragment_number
        events = step(arg)
        progressed = self.core.last_fragment_number != before or any(
            not isinstance(e, CallEnd | Reject) for e in events
        )
        return events, progressed

    async def _read(self, body: Any) -> AsyncIterator[tuple[list[SourceEvent], bool]]:
        """Feed one response's payload to the core, chunk by chunk, off the event loop."""
        from botocore.exceptions import BotoCoreError
        from urllib3.exceptions import HTTPError

        clean = False
        self._body = body
        try:
            while not self.core.finished and not self._stop.is_set():
                try:
                    chunk = await asyncio.to_thread(read_available, body, self.chunk_bytes)
                except (BotoCoreError, OSError, ValueError, HTTPError) as exc:
                    self.stats.read_errors += 1
                    log.info("kvs_read_broke_off", stream_arn=self.stream_arn,
                             error=type(exc).__name__)  # fmt: skip
                    break
                if not chunk:
                    clean = True
                    break
                self._failures = 0
                yield self._progress(self.core.receive_data, chunk)
            if not self.core.finished:
                yield self._progress(lambda _: self.core.end_of_response(clean=clean), None)
        finally:
            self._body = None
            await asyncio.to_thread(_close_quietly, body)


def read_available(body: Any, amount: int) -> bytes:
    """Up to ``amount`` bytes of ``body`` as soon as some have arrived (``b""`` at its end).

    botocore's ``StreamingBody.read(n)`` waits until ``n`` bytes have come: on a live stream the
    tail of each fragment (its ContactId tag, which releases the fragment's audio) would wait for
    the next fragment, a second later. urllib3's ``read1`` returns what one read of the socket
    gives (its errors are urllib3's own, which the caller catches); without it (another HTTP
    client under botocore) this falls back to ``read``."""
    read1 = getattr(getattr(body, "_raw_stream", None), "read1", None)
    if read1 is None:
        return body.read(amount)
    return read1(amount)


def _abort(body: Any) -> None:
    """Shut down the socket under ``body`` (urllib3's connection): a read blocked on it in
    another thread returns at once. Closing alone would not wake it."""
    connection = getattr(getattr(body, "_raw_stream", None), "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _close_quietly(body: Any) -> None:
    with contextlib.suppress(Exception):  # a broken connection may fail to close: gone anyway
        body.close()
