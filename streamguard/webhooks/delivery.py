"""Deliver events to one ``[[webhooks]]`` endpoint: from the log, at least once, in order.

One :class:`WebhookDeliverer` task per endpoint reads the event log from the endpoint's
persisted cursor (alerts/follow.py, lossless: a slow endpoint never skips an event, it reads
on from the log) and POSTs each matching event, one at a time, in seq order:

- body: the event's JSON, exactly as ``/alerts`` sends it;
- ``scheme = "streamguard"`` (default): ``Streamguard-Signature: t=<unix>,v1=<hex>``
  (webhooks/signing.py) and ``Idempotency-Key: <seq>`` (the same on every retry of an event;
  with a fleet, seq is fleet-wide, so receivers can drop duplicates with it);
- ``scheme = "standard-webhooks"``: ``webhook-id`` (derived from the endpoint and seq: the
  same on every retry), ``webhook-timestamp``, ``webhook-signature`` (webhooks/standard.py);
- both: ``Streamguard-Event: <type>``.

A 2xx answer delivers the event and moves the cursor. Anything else (another status, a
timeout, a refused connection) is retried after ``backoff_seconds * 2**(attempt-1)`` (capped
at ``max_backoff_seconds``) scaled by a random factor in [0.5, 1) so that many daemons do not
retry in step; after ``max_attempts`` the event is dead-lettered (kept in the log's
``dead_letters`` table, counted, logged) and delivery moves on. The cursor is persisted after
deliveries (at most every 0.2 s, and when the task stops), so after a crash a few events may be
sent again: at least once, never skipped. A new endpoint starts at the current end of the log.

With the Redis backend, one node of the fleet delivers to each endpoint at a time (a lease in
Redis); its cursor is kept in Redis, so another node takes over where it stopped.

Secrets are never logged; errors name the endpoint by its label (host and path).
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog

from streamguard import __version__
from streamguard.alerts.bus import AlertBus, SubscriptionFilter
from streamguard.alerts.events import EventBase
from streamguard.alerts.follow import follow
from streamguard.errors import ConfigError
from streamguard.telemetry import NOOP, Tracer
from streamguard.webhooks import standard
from streamguard.webhooks.signing import (
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    SignatureError,
    sign,
)

if TYPE_CHECKING:
    import httpx

    from streamguard.alerts.backends import EventBackend
    from streamguard.config import WebhookSettings
    from streamguard.metrics import Metrics

log = structlog.get_logger("streamguard.webhooks")

CURSOR_EVERY = 0.2
LEASE_SECONDS = 15.0


def backoff_delay(attempt: int, base: float, cap: float, rng: Callable[[], float]) -> float:
    """Delay before retry number ``attempt`` (1-based): exponential, capped, jittered."""
    return min(cap, base * 2 ** (attempt - 1)) * (0.5 + rng() / 2)


class Signer:
    """The signature headers of one endpoint's attempts, keys decoded once at start.

    ``headers(seq, body, timestamp)`` is pure: the same event gets the same id (Idempotency-Key
    or webhook-id) on every attempt; the timestamp is the attempt's.
    """

    def __init__(
        self,
        scheme: str,
        label: str,
        *,
        secrets: list[str],
        signing_key: str | None = None,
    ) -> None:
        self.scheme = scheme
        self.label = label
        self._secrets = secrets  # current first, then the previous ones
        self._hmac_keys: list[bytes] = []
        self._ed25519: list[Any] = []
        if scheme == "standard-webhooks":
            try:
                self._hmac_keys = [standard.decode_secret(s) for s in secrets]
                if signing_key is not None:
                    self._ed25519 = [standard.load_signing_key(signing_key)]
            except SignatureError as exc:
                raise ConfigError(f"webhook {label}: {exc}") from None

    @classmethod
    def for_endpoint(cls, endpoint: WebhookSettings) -> Signer:
        current = endpoint.secret_value()
        secrets = [current, *endpoint.previous_secret_values()] if current else []
        return cls(
            endpoint.scheme,
            endpoint.label,
            secrets=secrets,
            signing_key=endpoint.signing_key_value(),
        )

    def headers(self, seq: int, body: bytes, timestamp: int) -> dict[str, str]:
        if self.scheme == "standard-webhooks":
            msg_id = standard.webhook_id(self.label, seq)
            return standard.headers(
                msg_id, timestamp, body, secrets=self._hmac_keys, signing_keys=self._ed25519
            )
        current, *previous = self._secrets
        return {
            SIGNATURE_HEADER: sign(current, body, timestamp, previous=previous),
            IDEMPOTENCY_HEADER: str(seq),
        }


class WebhookDeliverer:
    def __init__(
        self,
        endpoint: WebhookSettings,
        bus: AlertBus,
        backend: EventBackend,
        *,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        tracer: Tracer = NOOP,
    ):
        self.endpoint = endpoint
        self.label = endpoint.label
        self.bus = bus
        self.backend = backend
        self._metrics = metrics
        self._tracer = tracer
        self._clock = clock
        self._rng = rng
        self._signer = Signer.for_endpoint(endpoint)  # read once: a bad secret fails at start
        self.filter = SubscriptionFilter(
            call_id=endpoint.call_id,
            types=frozenset(endpoint.types) if endpoint.types else None,
        )
        self.cursor: int | None = None
        self._saved: int | None = None
        self._saved_at = 0.0
        self._holder = uuid.uuid4().hex
        self.delivered = 0
        self.dead = 0

    @property
    def cursor_name(self) -> str:
        return f"webhook:{self.label}"

    async def run(self) -> None:
        import httpx

        timeout = httpx.Timeout(self.endpoint.timeout_seconds)
        headers = {"User-Agent": f"streamguard/{__version__}"}
        async with httpx.AsyncClient(timeout=timeout, headers=headers) as client:
            try:
                while True:
                    if not await self._lease():
                        await asyncio.sleep(LEASE_SECONDS / 3)
                        continue
                    await self._deliver_while_leader(client)
            finally:
                await asyncio.shield(self._save_cursor(force=True))

    async def _lease(self) -> bool:
        acquire = getattr(self.backend, "acquire_lease", None)
        if acquire is None:
            return True
        try:
            return bool(await acquire(self.cursor_name, self._holder, LEASE_SECONDS))
        except Exception:  # backend unreachable: nobody delivers from it meanwhile
            return False

    async def _deliver_while_leader(self, client: httpx.AsyncClient) -> None:
        self.cursor = await self.backend.get_cursor(self.cursor_name)
        if self.cursor is None:
            self.cursor = self.bus.last_seq
            await self._save_cursor(force=True)
        self._saved = self.cursor
        lease_checked = time.monotonic()
        events = follow(self.bus, self.backend, self.filter, since=self.cursor, lossless=True)
        try:
            async for event in events:
                if event.type == "dropped":  # older than retention: those are gone
                    log.warning(
                        "webhook_events_expired",
                        endpoint=self.label,
                        first_seq=event.first_seq,  # type: ignore[attr-defined]
                        last_seq=event.last_seq,  # type: ignore[attr-defined]
                    )
                    self.cursor = event.last_seq  # type: ignore[attr-defined]
                    continue
                await self._deliver(client, event)
                self.cursor = event.seq
                await self._save_cursor()
                if self._metrics is not None:
                    lag = max(self.bus.last_seq - event.seq, 0)
                    self._metrics.webhook_lag_events.labels(endpoint=self.label).set(lag)
                if time.monotonic() - lease_checked > LEASE_SECONDS / 3:
                    lease_checked = time.monotonic()
                    if not await self._lease():
                        log.info("webhook_lease_lost", endpoint=self.label)
                        return
        finally:
            await events.aclose()  # type: ignore[attr-defined]

    async def _save_cursor(self, *, force: bool = False) -> None:
        if self.cursor is None or self.cursor == self._saved:
            return
        now = time.monotonic()
        if not force and now - self._saved_at < CURSOR_EVERY:
            return
        try:
            await self.backend.set_cursor(self.cursor_name, self.cursor)
        except Exception as exc:  # at least once: worst case, events are sent again
            log.warning("webhook_cursor_not_saved", endpoint=self.label, error=str(exc)[:200])
            return
        self._saved, self._saved_at = self.cursor, now

    def _count(self, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.webhook_deliveries_total.labels(
                endpoint=self.label, outcome=outcome
            ).inc()

    async def _deliver(self, client: httpx.AsyncClient, event: EventBase) -> None:
        """POST one event until a 2xx or its last attempt (then dead-letter it)."""
        import httpx

        body = event.to_json().encode()
        ep = self.endpoint
        attempt = 0
        while True:
            attempt += 1
            headers = {
                "Content-Type": "application/json",
                **self._signer.headers(event.seq, body, int(self._clock())),
                EVENT_HEADER: event.type,
            }
            with self._tracer.webhook_attempt(event, self.label, attempt) as span:
                try:
                    response = await client.post(ep.url, content=body, headers=headers)
                    ok = 200 <= response.status_code < 300
                    error = f"HTTP {response.status_code}"
                    span.set(status=response.status_code)
                except httpx.HTTPError as exc:
                    ok, error = False, f"{type(exc).__name__}: {str(exc)[:160]}"
                span.set(outcome="ok" if ok else "retry" if attempt < ep.max_attempts else "dead")
            if ok:
                self._count("ok")
                self.delivered += 1
                return
            if attempt >= ep.max_attempts:
                self._count("dead")
                self.dead += 1
                if self._metrics is not None:
                    self._metrics.webhook_dead_letters_total.labels(endpoint=self.label).inc()
                log.error(
                    "webhook_dead_letter",
                    endpoint=self.label,
                    seq=event.seq,
                    attempts=attempt,
                    error=error,
                )
                await self.backend.add_dead_letter(self.label, event.seq, attempt, error)
                return
            self._count("retry")
            delay = backoff_delay(attempt, ep.backoff_seconds, ep.max_backoff_seconds, self._rng)
            log.info(
                "webhook_retry",
                endpoint=self.label,
                seq=event.seq,
                attempt=attempt,
                error=error,
                delay=round(delay, 2),
            )
            await asyncio.sleep(delay)


def summary(deliverers: list[WebhookDeliverer]) -> list[dict[str, Any]]:
    return [
        {"endpoint": d.label, "cursor": d.cursor, "delivered": d.delivered, "dead": d.dead}
        for d in deliverers
    ]
