"""The port's connection class: opening handshakes watched, request bodies read.

Owns what happens on a connection before the WebSocket exists:

* a handshake that never finishes is counted and logged, and dropped at shutdown
  (:class:`HandshakeGuard`);
* an HTTP request with a body (``POST /api/...`` with JSON) has its body taken off the wire
  here (:class:`BodyReadingConnection`). websockets' HTTP parser refuses any request whose
  ``Content-Length`` is not 0, so the connection reads the request head itself first: a head
  with a body length has that header taken out before websockets parses it, and the body bytes
  that follow are kept aside for :meth:`BodyReadingConnection.read_body`, which the ``/api``
  table awaits inside ``process_request``. Nothing else changes: WebSocket handshakes and bodiless
  GETs go through websockets untouched, and the whole exchange stays inside websockets'
  ``open_timeout`` (a slow body is cut like a slow handshake). A client that sends
  ``Expect: 100-continue`` (curl, for bodies over 1 KiB) is told ``100 Continue`` once the
  request passed its checks, when the body is first awaited. ``Transfer-Encoding`` (chunked)
  bodies are not supported (websockets drops such a request); every HTTP client sends a JSON
  body with a ``Content-Length``. See docs/architecture.md, "Decisions".
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog
from websockets.asyncio.server import ServerConnection

from streamguard.server.httputil import peer_address

if TYPE_CHECKING:
    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.server")

#: The most bytes of request head read before handing over to websockets' own parser (which
#: then applies its own line and header limits).
MAX_HEAD_BYTES = 16 * 1024
#: The largest request body the port accepts at all (a route may accept less): larger is 413.
MAX_BODY_BYTES = 1024 * 1024


class BodyTooLarge(Exception):
    """The request announced a body over :data:`MAX_BODY_BYTES`."""


class BodyReadingConnection(ServerConnection):
    """A ``ServerConnection`` that can serve HTTP requests with a body (see the module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head: bytearray | None = bytearray()  # None once the head was handed over
        self._body = bytearray()
        self.body_length = 0  # announced by Content-Length (0: no body)
        self._expects_continue = False  # Expect: 100-continue: the client waits for our go
        self._body_done: asyncio.Future[None] = self.loop.create_future()

    def data_received(self, data: bytes) -> None:
        if self._head is None:
            if self.body_length:
                self._take_body(data)
            else:
                super().data_received(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD_BYTES:  # websockets refuses it with its own answer
                data, self._head = bytes(self._head), None
                super().data_received(data)
            return
        head, rest = bytes(self._head[: end + 4]), bytes(self._head[end + 4 :])
        self._head = None
        head, self.body_length = _without_body_length(head)
        self._expects_continue = bool(self.body_length) and _expects_continue(head)
        super().data_received(head)
        if self.body_length:
            self._take_body(rest)
        elif rest:
            super().data_received(rest)

    def _take_body(self, data: bytes) -> None:
        if self._body_done.done():
            return  # bytes past the body (or past a refused one): never read
        if self.body_length <= MAX_BODY_BYTES:
            self._body += data[: self.body_length - len(self._body)]
            if len(self._body) < self.body_length:
                return
        self._body_done.set_result(None)

    async def read_body(self, limit: int = MAX_BODY_BYTES) -> bytes:
        """The request's body (``b""`` when it has none), once all of it arrived.

        Raises :class:`BodyTooLarge` at once when the announced length is over ``limit``, and
        ``ConnectionError`` when the client goes away first.
        """
        if not self.body_length:
            return b""
        if self.body_length > min(limit, MAX_BODY_BYTES):
            raise BodyTooLarge(self.body_length)
        if self._expects_continue and not self._body_done.done():
            self._expects_continue = False
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await asyncio.wait(
            [self._body_done, self.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED
        )
        if not self._body_done.done():
            raise ConnectionError("client went away before its request body arrived")
        return bytes(self._body)


def _expects_continue(head: bytes) -> bool:
    return any(
        name.strip().lower() == b"expect" and value.strip().lower() == b"100-continue"
        for line in head.split(b"\r\n")[1:]
        for name, sep, value in [line.partition(b":")]
        if sep
    )


def _without_body_length(head: bytes) -> tuple[bytes, int]:
    """``head`` without its ``Content-Length`` header, and that length; unchanged and 0 when
    it announces no body, or an unusable length (websockets then refuses the request)."""
    lines = head.split(b"\r\n")
    found = [
        (i, value.strip())
        for i, line in enumerate(lines[1:], 1)
        for name, sep, value in [line.partition(b":")]
        if sep and name.strip().lower() == b"content-length"
    ]
    values = {value for _, value in found}
    if len(values) != 1:
        return head, 0
    (value,) = values
    if not value.isdigit() or int(value) == 0:
        return head, 0
    drop = {i for i, _ in found}
    return b"\r\n".join(line for i, line in enumerate(lines) if i not in drop), int(value)


class HandshakeGuard:
    """``serve(create_connection=guard)``: connections whose opening handshake is watched
    (and which read request bodies: :class:`BodyReadingConnection`).

    websockets aborts a connection whose opening handshake outlives ``open_timeout`` without a
    word; this counts it (``streamguard_handshake_timeouts_total``) and logs one line with the
    peer, so a client that never finishes its handshake is visible. :meth:`abort_opening` drops
    the connections still in their handshake, so a shutdown never waits for them.
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        guard = self
        self.metrics = metrics
        self.opening: set[ServerConnection] = set()

        class Connection(BodyReadingConnection):
            async def handshake(self, *args: Any, **kwargs: Any) -> None:
                guard.opening.add(self)
                try:
                    await super().handshake(*args, **kwargs)
                except asyncio.CancelledError:
                    if self.request is None:  # cancelled by open_timeout mid-request
                        guard.timed_out(self)
                    raise
                finally:
                    guard.opening.discard(self)

        self.connection_class = Connection

    def timed_out(self, connection: ServerConnection) -> None:
        if self.metrics is not None:
            self.metrics.handshake_timeouts_total.inc()
        log.warning("handshake_timeout", remote=peer_address(connection))

    def abort_opening(self) -> None:
        """Drop every connection still in its opening handshake (at shutdown)."""
        for connection in list(self.opening):
            if connection.request is None:
                connection.transport.abort()

    def __call__(self, *args: Any, **kwargs: Any) -> ServerConnection:
        return self.connection_class(*args, **kwargs)
