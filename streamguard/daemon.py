"""The daemon's lifecycle: load the model, start sources, engine and alerts; signals; sd_notify.

``Daemon(settings).run()`` is ``streamguard serve``. Start-up order matters to systemd:
the model loads first (it can take seconds), then the engine and the listeners, and only then
``READY=1``, so a unit ordered after streamguard never sees a half-started daemon.

Signals:
- SIGTERM / SIGINT drain: stop accepting calls and feeds, end every open call (its buffered
  audio is scored and its ``call_ended`` published), let subscribers receive those events,
  then exit 0.
- SIGHUP reloads the reloadable config sections (smoothing and thresholds, verdict, logging) from
  the same file; other changes are logged as needing a restart.

The watchdog (``WatchdogSec=``) is pinged only while the scoring engine's worker heartbeat is
fresh, so a wedged inference thread gets the service restarted instead of hanging silently. A
drain is not a stall: once stopping (``STOPPING=1``, after which systemd's ``TimeoutStopSec``
bounds the stop, not the watchdog) the watchdog task is gone.

The edge (docs/operations.md, "Authentication" and "Limits and close codes"): listening beyond
loopback with a surface unprotected refuses to start; tokens and the Twilio signature are
checked at the handshake (:mod:`streamguard.server.access`); ``[server] tls_cert``/``tls_key``
serve wss/https.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import structlog
from websockets.asyncio.server import Server

from streamguard import telemetry
from streamguard.alerts.backends import EventBackend, end_open_calls, open_backend
from streamguard.alerts.bus import AlertBus
from streamguard.alerts.subscriptions import alerts_handler, close_subscribers
from streamguard.allowlist.checker import load_checker
from streamguard.calls import CallPolicy, CallRegistry
from streamguard.config import Settings, apply_reload, load_config
from streamguard.errors import StreamguardError
from streamguard.evidence.writer import open_writer
from streamguard.logs import configure_logging
from streamguard.metrics import Metrics
from streamguard.model.base import Detector
from streamguard.notify import Notifier
from streamguard.scoring.engine import ScoringEngine, probe_detector
from streamguard.scoring.runners import ProcessTuning
from streamguard.server.access import AccessPolicy, exposure_problem
from streamguard.server.api import ApiRoute
from streamguard.server.dashboard import (
    dashboard_url,
    status_document,
    status_route,
)
from streamguard.server.frontdoor import open_front_door
from streamguard.server.handshake import HandshakeGuard
from streamguard.server.health import Health, engine_details
from streamguard.sources.edges.websocket import FeedLimits
from streamguard.sources.table import (
    Listener,
    SourceContext,
    SourceSpec,
    enabled_sources,
    start_listeners,
    websocket_routes,
)
from streamguard.telemetry import NOOP, Tracer

log = structlog.get_logger(__name__)

#: How long a drain waits for subscribers to receive the last events before closing them.
FLUSH_SECONDS = 2.0
#: How long a drain waits for the event log to commit the last events (a failing disk).
FLUSH_LOG_SECONDS = 10.0
#: The GIL switch interval while a daemon runs (scoring/runners.py, ProcessTuning).
SWITCH_INTERVAL = 0.0005


def policy_from(settings: Settings, window_seconds: float = 4.0) -> CallPolicy:
    """The calls' policy from the config; ``window_seconds``: the model's (sizes the evidence
    look-back, :func:`streamguard.evidence.lookback_seconds`)."""
    from streamguard.evidence import lookback_seconds

    ev = settings.evidence
    return CallPolicy(
        track=settings.track,
        smoothing=settings.smoothing,
        min_verdict_speech_seconds=settings.verdict.min_speech_seconds,
        max_call_seconds=settings.limits.max_call_seconds,
        evidence_keep=ev.keep,
        evidence_lookback_seconds=lookback_seconds(
            window_seconds=window_seconds,
            hop_seconds=settings.track.hop_seconds,
            raise_after=settings.smoothing.raise_after,
            max_lag_seconds=settings.model.max_lag_seconds,
            coalesce_ms=settings.track.coalesce_ms,
        ),
        evidence_rate=ev.sample_rate,
        score_tracks=None if settings.tracks.score is None else frozenset(settings.tracks.score),
    )


class Daemon:
    """One streamguard daemon. Use :meth:`start` / :meth:`stop` (tests) or :meth:`run` (CLI)."""

    def __init__(
        self,
        settings: Settings,
        *,
        detector: Detector | None = None,
        config_path: Path | None = None,
        notifier: Notifier | None = None,
        mic_stream_factory: Any = None,
        span_exporter: Any = None,
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.detector = detector
        self.notifier = notifier or Notifier.from_env()
        self.metrics = Metrics()
        self._mic_stream_factory = mic_stream_factory
        # Traces: [telemetry] otlp_endpoint, or a test's own exporter (streamguard/telemetry.py)
        self._span_exporter = span_exporter
        self.tracer: Tracer = NOOP
        self.started_at = time.monotonic()
        self.ready = False
        self.engine: ScoringEngine | None = None
        self.bus: AlertBus | None = None
        self.backend: EventBackend | None = None
        self.webhooks: list[Any] = []
        self.registry: CallRegistry | None = None
        self.evidence: Any = None  # EvidenceWriter when [evidence] keep is not "none"
        self.model_identity: Any = None  # ModelIdentity of the serving model
        # [model] spec as the config FILE said at the last (re)load: SIGHUP swaps when the file
        # changes it, never because a --model flag differs from the file
        self._file_model_spec: str | None = None
        self._swap_lock = asyncio.Lock()
        self.server: Server | None = None
        self.access: AccessPolicy | None = None
        self._handshakes: HandshakeGuard | None = None
        self.sources: list[SourceSpec] = enabled_sources(settings)
        self.listeners: dict[str, Listener] = {}
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._ssl = None
        self._stopped = False
        m = settings.model
        self._tuning = ProcessTuning(m.threads, m.workers, SWITCH_INTERVAL)
        self.runners: list[Any] = []

    # -- addresses (port 0 in tests) -------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def rtp(self) -> Any:
        """The RTP edge (:class:`~streamguard.sources.edges.udp.RtpEndpoint`), if enabled."""
        return self.listeners.get("rtp")

    @property
    def audiosocket(self) -> Any:
        return self.listeners.get("audiosocket")

    @property
    def microphone(self) -> Any:
        mic = self.listeners.get("mic")
        return None if mic is None else mic.microphone  # type: ignore[attr-defined]

    @property
    def _mic_task(self) -> asyncio.Task | None:
        """The microphone's capture task (None when it never started), for the tests."""
        mic = self.listeners.get("mic")
        return None if mic is None else mic._task  # type: ignore[attr-defined]

    @property
    def rtp_port(self) -> int | None:
        return None if self.rtp is None else self.rtp.port

    @property
    def rtcp_port(self) -> int | None:
        return None if self.rtp is None else self.rtp.rtcp_port

    @property
    def audiosocket_port(self) -> int | None:
        return None if self.audiosocket is None else self.audiosocket.port

    # -- start --------------------------------------------------------------------------------
    async def start(self) -> None:
        """Model, event log, engine, front door, webhooks, sources; then ``READY=1``."""
        self._check_edge()
        self._tuning.apply()
        await self._load_model()
        await self._open_event_log()
        await self._start_engine()
        await self._start_server()
        self._start_webhooks()
        self.listeners = await start_listeners(self.sources, self.settings, self._source_context())
        self._tasks.append(asyncio.create_task(self._watchdog(), name="watchdog"))
        self.ready = True
        self.notifier.ready(self._status_line())
        self._log_ready()

    def _check_edge(self) -> None:
        """Before the model (seconds to load): an exposed surface or an unreadable secret file
        is one line, at once."""
        s = self.settings
        if problem := exposure_problem(s):
            raise StreamguardError(problem)
        self.access = AccessPolicy.from_settings(s)
        if s.server.tls:
            from streamguard.server.tls import server_context

            assert s.server.tls_cert is not None and s.server.tls_key is not None
            self._ssl = server_context(s.server.tls_cert, s.server.tls_key)

    async def _load_model(self) -> None:
        """The detector, one runner per engine worker (``[model] backend/worker/workers``),
        each probed: a model whose scores are not P(fake) values is refused here."""
        from streamguard.model_swap import identity_of

        s, m = self.settings, self.settings.model
        self.notifier.status("loading model")
        if self.detector is None:
            from streamguard.model import load_detector

            self.detector = await asyncio.to_thread(load_detector, m.spec, device=m.device)
        self.runners = await asyncio.to_thread(self._build_runners)
        for runner in self.runners:
            await asyncio.to_thread(probe_detector, runner)
        info = self.detector.info
        self.model_identity = identity_of(self.detector)
        if self.config_path is not None:
            with contextlib.suppress(Exception):  # the file was read once already; a race only
                self._file_model_spec = load_config(self.config_path).model.spec
        if s.track.min_speech_seconds > info.window_seconds:
            raise StreamguardError(
                f"[track] min_speech_seconds ({s.track.min_speech_seconds:g}) is longer than "
                f"the model's {info.window_seconds:g} s window: no window could ever be scored"
            )
        log.info(
            "model_loaded",
            backend=self.runners[0].backend,
            worker=m.worker,
            workers=len(self.runners),
            model=info.name,
            architecture=info.architecture,
            threshold=info.threshold,
            device=str(self.detector.device),
        )

    async def _open_event_log(self) -> None:
        """The bus, the ``[events]`` backend behind it, and the calls a crash left open."""
        s = self.settings
        assert self.detector is not None
        self.tracer = telemetry.from_settings(
            s.telemetry, model=self.detector.info.name, exporter=self._span_exporter
        )
        self.bus = AlertBus(
            self.detector.info.name,
            max_queue=s.alerts.subscriber_queue,
            history=s.alerts.history,
            metrics=self.metrics,
        )
        self.notifier.status("opening the event log")
        self.backend = await open_backend(
            s.events, self.bus, metrics=self.metrics, tracer=self.tracer
        )
        await end_open_calls(self.backend, self.bus, metrics=self.metrics)

    async def _start_engine(self) -> None:
        s = self.settings
        assert self.detector is not None and self.bus is not None
        self.engine = ScoringEngine(
            self.detector,
            runners=self.runners,
            max_batch=s.model.max_batch,
            max_wait_ms=s.model.max_wait_ms,
            max_lag_seconds=s.model.max_lag_seconds,
            queue_size=s.model.queue_size,
            hop_seconds=s.track.hop_seconds,
            batching=s.model.batching,
            batch_budget_ms=s.model.batch_budget_ms,
            metrics=self.metrics,
        )
        self.engine.allowlist = await load_checker(s.allowlist, s.events)
        self.engine.start()
        self.evidence = await open_writer(s.evidence, s.events, publish=self.bus.publish)
        info = self.detector.info
        self.registry = CallRegistry(
            info=info,
            policy=policy_from(s, info.window_seconds),
            submit=self.engine.submit,
            publish=self.bus.publish,
            max_calls=s.limits.max_calls,
            metrics=self.metrics,
            record=None if self.evidence is None else self.evidence.submit,
            tracer=self.tracer,
        )

    def _build_runners(self, detector: Any = None) -> list[Any]:
        """One inference runner per engine worker (``[model] backend/worker/workers``)."""
        from streamguard.scoring.runners import build_runners

        m = self.settings.model
        return build_runners(
            detector or self.detector,
            backend=m.backend,
            worker=m.worker,
            workers=m.workers,
            threads=self._tuning.worker_threads,
            max_batch=m.max_batch,
            torchscript=m.torchscript,
            build_in_background=True,
        )

    def _log_ready(self) -> None:
        s = self.settings
        assert self.access is not None
        log.info(
            "ready",
            host=s.server.host,
            port=self.port,
            rtp_port=self.rtp_port,
            rtcp_port=self.rtcp_port,
            audiosocket_port=self.audiosocket_port,
            audiohook_path=s.sources.audiohook.path if s.sources.audiohook.enabled else None,
            dashboard=dashboard_url(s.server.host, self.port),
            tls=s.server.tls,
            auth=sorted(path for path, g in self.access.guards.items() if not g.open) or None,
        )

    # -- the front door -------------------------------------------------------------------------
    async def _start_server(self) -> None:
        """The one port (:mod:`streamguard.server.frontdoor`)."""
        assert self.access is not None
        routes, checks = self._websocket_routes()
        door = await open_front_door(
            self.settings,
            routes=routes,
            handshake_checks=checks,
            api_routes=self._api_routes(),
            health=self.health,
            access=self.access,
            metrics=self.metrics,
            tls=self._ssl,
        )
        self.server, self.router, self._handshakes = door.server, door.router, door.handshakes

    def _websocket_routes(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """``/alerts`` and the table's sources on a path: handlers and checks by path."""
        s = self.settings
        assert self.bus is not None
        routes, checks = websocket_routes(self.sources, s, self._source_context())
        routes[s.alerts.path] = alerts_handler(
            self.bus,
            max_queue=s.alerts.subscriber_queue,
            backend=self.backend,
            disconnect_after_lost=s.alerts.disconnect_after_lost,
            close_timeout=s.alerts.close_timeout_seconds,
        )
        return routes, checks

    def _api_routes(self) -> list[ApiRoute]:
        """The daemon's ``/api/*`` table (:mod:`streamguard.server.api`): add a route here."""
        from streamguard.alerts.oneshot import publish_and_wait
        from streamguard.server.operator_api import OperatorApi, operator_routes

        async def commit_label(draft: Any) -> Any:
            assert self.bus is not None
            return await publish_and_wait(self.bus, draft)

        operator = OperatorApi(
            evidence=self.evidence,
            commit_label=commit_label,
            swap_model=self.swap_model,
            token_set=not self.access.is_open("/api/"),
        )
        routes = [status_route(self.status), *operator_routes(operator)]
        if self.settings.sources.kvs.enabled:
            from streamguard.sources.edges.kvs_streams import kvs_routes

            routes += kvs_routes(lambda: self.listeners.get("kvs"))
        return routes

    def _source_context(self) -> SourceContext:
        assert self.registry is not None
        limits = self.settings.limits
        return SourceContext(
            registry=self.registry,
            metrics=self.metrics,
            limits=FeedLimits(
                max_messages_per_second=limits.max_messages_per_second,
                idle_timeout_seconds=limits.idle_timeout_seconds,
            ),
            mic_stream_factory=self._mic_stream_factory,
            ingest_token=self.settings.auth.ingest_token_value(),
        )

    def _start_webhooks(self) -> None:
        if not self.settings.webhooks:
            return
        from streamguard.webhooks.delivery import WebhookDeliverer

        assert self.bus is not None and self.backend is not None
        for endpoint in self.settings.webhooks:
            deliverer = WebhookDeliverer(
                endpoint, self.bus, self.backend, metrics=self.metrics, tracer=self.tracer
            )
            self.webhooks.append(deliverer)
            self._tasks.append(
                asyncio.create_task(deliverer.run(), name=f"webhook {endpoint.label}")
            )

    # -- health & status ------------------------------------------------------------------------
    def health(self) -> Health:
        """What ``/healthz`` reports (the engine's details for a request with the token)."""
        engine = self.engine
        status = "draining" if self._stopped else "ready" if self.ready else "starting"
        events = self.backend.health() if self.backend is not None else {}
        if status == "ready" and events.get("degraded"):
            status = "degraded"
        extra: dict[str, Any] = {}
        if engine is not None:
            device = str(self.detector.device) if self.detector else None
            backend = self.runners[0].backend if self.runners else None
            extra = engine_details(engine, device, backend)
        if events:
            extra["events"] = events
        return Health(
            status=status,
            model=self.detector.info.name if self.detector else "",
            uptime_seconds=time.monotonic() - self.started_at,
            open_calls=len(self.registry.sessions) if self.registry else 0,
            engine_queue_depth=engine.depth if engine else 0,
            extra=extra,
        )

    def status(self) -> dict[str, Any]:
        """``GET /api/status`` (token-protected): what the dashboard shows beside the events."""
        return status_document(
            self.settings,
            self.detector.info if self.detector else None,
            last_seq=self.bus.last_seq if self.bus else 0,
            health=self.health().to_dict(),
        )

    def _status_line(self) -> str:
        calls = len(self.registry.sessions) if self.registry else 0
        stats = self.engine.stats if self.engine else None
        if stats is None:
            return "starting"
        return (
            f"{calls} calls, {stats.scored} windows scored, {stats.dropped_lag} dropped, "
            f"engine busy {stats.utilization:.0%}"
        )

    async def _watchdog(self) -> None:
        interval = self.notifier.watchdog_interval() or 5.0
        assert self.engine is not None
        while not self._stopped:
            await asyncio.sleep(interval)
            if self._stopped:  # draining: the engine winds down on purpose, not a stall
                return
            # The worker wakes at least once a second; a much older heartbeat means it is stuck.
            if self.engine.heartbeat_age() < max(2.0 * interval, 3.0):
                self.notifier.watchdog()
            else:
                log.error("engine_stalled", heartbeat_age=round(self.engine.heartbeat_age(), 1))
            self.notifier.status(self._status_line())

    # -- reload & stop --------------------------------------------------------------------------
    def reload(self) -> None:
        """SIGHUP: re-read the config file and apply its reloadable sections."""
        self.notifier.reloading()
        try:
            new = load_config(self.config_path)
        except Exception as exc:  # a bad edit must not take the daemon down
            log.error("reload_failed", error=str(exc))
        else:
            old_spec = self.settings.model.spec
            self.settings, ignored = apply_reload(self.settings, new)
            if new.model.spec != self._file_model_spec and self.engine is not None:
                self._file_model_spec = new.model.spec
                # [model] spec is the one model key SIGHUP applies: a hot swap
                self._tasks.append(
                    asyncio.create_task(self._swap_on_reload(new.model.spec), name="model swap")
                )
                others = new.model.model_copy(update={"spec": old_spec})
                if others == self.settings.model:
                    ignored = [name for name in ignored if name != "model"]
            configure_logging(self.settings.logging.level, self.settings.logging.format)
            assert self.registry is not None
            window = self.detector.info.window_seconds if self.detector else 4.0
            self.registry.reconfigure(policy_from(self.settings, window))
            log.info("reloaded", needs_restart=ignored or None)
        self.notifier.ready(self._status_line())

    async def swap_model(self, spec: str | None) -> Any:
        """Serve the model ``spec`` from the next batch on (see :mod:`streamguard.model_swap`);
        returns the published ``model_changed`` draft. Raises SwapRefused (the old model keeps
        serving) or SwapBusy."""
        from streamguard.model_swap import SwapBusy, SwapRefused, model_changed, prepare
        from streamguard.scoring.runners import close_runners

        if self._swap_lock.locked():
            raise SwapBusy("another model swap is under way")
        async with self._swap_lock:
            if self.engine is None or self.registry is None or self.bus is None or self.stopping:
                raise SwapRefused("the daemon is not serving")
            candidate = await asyncio.to_thread(
                prepare,
                spec,
                current=self.detector,
                device=self.settings.model.device,
                build_runners=self._build_runners,
                close_runners=close_runners,
            )
            old_runners, generation = self.engine.swap(candidate.detector, candidate.runners)
            old_identity, self.model_identity = self.model_identity, candidate.identity
            self.detector, self.runners = candidate.detector, candidate.runners
            info = candidate.detector.info
            self.bus.model_name = info.name  # every later event names the new model
            self.registry.set_model(info)
            event = model_changed(old_identity, candidate.identity)
            self.bus.publish(event)
            log.info("model_swapped", old=old_identity.name, new=info.name, spec=spec)
            await self.engine.released(generation)
            await asyncio.to_thread(close_runners, old_runners)
            return event

    async def _swap_on_reload(self, spec: str | None) -> None:
        """SIGHUP with a new ``[model] spec``: swap, or log why not (the old model serves on)."""
        from streamguard.errors import StreamguardError

        try:
            await self.swap_model(spec)
        except StreamguardError as exc:
            log.error("model_swap_failed", spec=spec, error=str(exc))
        else:
            self.settings.model.spec = spec

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """A stop was requested (signal or request_stop) or is under way."""
        return self._stop.is_set()

    async def stop(self) -> None:
        """Drain and stop (idempotent): intake first, then every call, the engine, the event
        log, subscribers; each step bounded, so nothing a peer does can hold the stop."""
        if self._stopped:
            return
        self._stopped = True
        # A start-up that failed (bad model, port taken) never served: no drain to announce,
        # so the CLI's one error line is all the operator sees.
        served = self.ready
        self.notifier.stopping()
        for task in self._tasks:  # the watchdog: a drain is not an engine stall
            task.cancel()
        if served:
            log.info("draining", open_calls=len(self.registry.sessions) if self.registry else 0)
        self._stop.set()
        await self._drain_calls()
        await self._flush_events()
        await self._close_connections()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.backend is not None:
            await self.backend.close()
        await asyncio.to_thread(self.tracer.shutdown)  # the last spans exported (off: nothing)
        self._tuning.restore()
        if served:
            log.info("stopped")

    async def _drain_calls(self) -> None:
        """Stop listening (open feeds go on), end every call (its buffered audio scored), wait
        for the engine."""
        if self.server is not None:
            self.server.server.close()
        if self._handshakes is not None:
            self._handshakes.abort_opening()  # half-open handshakes would hold the close
        for listener in self.listeners.values():
            await listener.stop()
        if self.registry is not None:
            await self.registry.drain("shutdown")
        for listener in self.listeners.values():
            await listener.closed()
        if self.engine is not None:
            await self.engine.stop()
        if self.evidence is not None:  # the last clips closed, their evidence_saved published
            await self.evidence.close()

    async def _flush_events(self) -> None:
        """Every ``call_ended`` committed (bounded: a failing disk) and handed to subscribers
        (bounded: :data:`FLUSH_SECONDS`); the runners closed meanwhile."""
        if self.backend is not None:
            try:
                await asyncio.wait_for(self.backend.flush(), FLUSH_LOG_SECONDS)
            except TimeoutError:
                log.error("event_log_flush_timed_out", seconds=FLUSH_LOG_SECONDS)
        if self.runners:
            from streamguard.scoring.runners import close_runners

            await asyncio.to_thread(close_runners, self.runners)
        if self.bus is not None:
            await self._flush_subscribers()

    async def _close_connections(self) -> None:
        """Every connection closed at once, each within ``[alerts] close_timeout_seconds``
        (:func:`~streamguard.alerts.subscriptions.close_subscribers`)."""
        if self.server is None:
            return
        await close_subscribers(
            list(self.server.connections), timeout=self.settings.alerts.close_timeout_seconds
        )
        self.server.close(close_connections=True)
        await self.server.wait_closed()

    async def _flush_subscribers(self) -> None:
        assert self.bus is not None
        deadline = time.monotonic() + FLUSH_SECONDS
        while self.bus.pending_deliveries() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    async def run(self) -> None:
        """Start, serve until SIGTERM/SIGINT, drain, return (exit 0)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            await self.stop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
