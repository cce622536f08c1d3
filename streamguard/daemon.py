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
fresh, so a wedged inference thread gets the service restarted instead of hanging silently.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import sys
import time
from pathlib import Path
from typing import Any

import structlog
from websockets.asyncio.server import Server, serve

from streamguard.alerts.bus import AlertBus
from streamguard.alerts.server import (
    Health,
    WebSocketRouter,
    alerts_handler,
    healthz_route,
    make_process_request,
    metrics_route,
    select_subprotocol,
)
from streamguard.calls import CallPolicy, CallRegistry
from streamguard.config import Settings, apply_reload, load_config
from streamguard.errors import StreamguardError
from streamguard.logs import configure_logging
from streamguard.metrics import Metrics
from streamguard.model.base import Detector
from streamguard.notify import Notifier
from streamguard.scoring.engine import ScoringEngine, probe_detector
from streamguard.sources.native import IngestProtocol
from streamguard.sources.twilio import MediaStreamProtocol
from streamguard.sources.websocket import feed_handler

log = structlog.get_logger(__name__)

#: How long a drain waits for subscribers to receive the last events before closing them.
FLUSH_SECONDS = 2.0
#: The GIL switch interval while a daemon runs (see Daemon._tune_process).
SWITCH_INTERVAL = 0.0005


def policy_from(settings: Settings) -> CallPolicy:
    return CallPolicy(
        track=settings.track,
        smoothing=settings.smoothing,
        min_verdict_speech_seconds=settings.verdict.min_speech_seconds,
        max_call_seconds=settings.limits.max_call_seconds,
    )


def bind_error(what: str, host: str, port: int, exc: OSError) -> StreamguardError:
    """A listener that cannot bind, as the one-line error the CLI prints (not a traceback)."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    if exc.errno == errno.EADDRINUSE:
        reason = "address already in use (another streamguard running? pick another port)"
    return StreamguardError(f"cannot listen for {what} on {host}:{port}: {reason}")


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
    ) -> None:
        self.settings = settings
        self.config_path = config_path
        self.detector = detector
        self.notifier = notifier or Notifier.from_env()
        self.metrics = Metrics()
        self._mic_stream_factory = mic_stream_factory
        self.started_at = time.monotonic()
        self.ready = False
        self.engine: ScoringEngine | None = None
        self.bus: AlertBus | None = None
        self.registry: CallRegistry | None = None
        self.server: Server | None = None
        self.rtp = None
        self.microphone = None
        self._mic_task: asyncio.Task | None = None
        self._tasks: list[asyncio.Task] = []
        self._stop = asyncio.Event()
        self._stopped = False
        self._switch_interval: float | None = None

    # -- addresses (port 0 in tests) -------------------------------------------------------------
    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    @property
    def rtp_port(self) -> int | None:
        return None if self.rtp is None else self.rtp.port

    # -- start --------------------------------------------------------------------------------
    async def start(self) -> None:
        s = self.settings
        self._tune_process()
        self.notifier.status("loading model")
        if self.detector is None:
            from streamguard.model import load_detector

            self.detector = await asyncio.to_thread(
                load_detector, s.model.spec, device=s.model.device
            )
        if s.model.torchscript:
            await asyncio.to_thread(self.detector.use_torchscript)
        await asyncio.to_thread(probe_detector, self.detector)
        info = self.detector.info
        log.info(
            "model_loaded",
            torchscript=self.detector.torchscript,
            model=info.name,
            architecture=info.architecture,
            threshold=info.threshold,
            device=str(self.detector.device),
        )
        self.bus = AlertBus(
            info.name,
            max_queue=s.alerts.subscriber_queue,
            history=s.alerts.history,
            metrics=self.metrics,
        )
        self.engine = ScoringEngine(
            self.detector,
            max_batch=s.model.max_batch,
            max_wait_ms=s.model.max_wait_ms,
            max_lag_seconds=s.model.max_lag_seconds,
            queue_size=s.model.queue_size,
            hop_seconds=s.track.hop_seconds,
            metrics=self.metrics,
        )
        self.engine.start()
        self.registry = CallRegistry(
            info=info,
            policy=policy_from(s),
            submit=self.engine.submit,
            publish=self.bus.publish,
            max_calls=s.limits.max_calls,
            metrics=self.metrics,
        )
        await self._start_server()
        if s.sources.rtp.enabled:
            from streamguard.sources.udp import start_rtp

            try:
                self.rtp = await start_rtp(s.sources.rtp, self.registry, metrics=self.metrics)
            except OSError as exc:
                rtp = s.sources.rtp
                raise bind_error("RTP (UDP)", rtp.host, rtp.port, exc) from None
        if s.sources.mic.enabled:
            self._start_mic()
        self._tasks.append(asyncio.create_task(self._watchdog(), name="watchdog"))
        self.ready = True
        self.notifier.ready(self._status_line())
        log.info("ready", host=s.server.host, port=self.port, rtp_port=self.rtp_port)

    def _tune_process(self) -> None:
        """Inference shares the process with the event loop.

        torch drops and re-takes the GIL around every operator; with Python's default 5 ms
        switch interval the inference thread waits behind the loop's per-frame work, which
        halved engine throughput at saturation (benchmarks/README.md). A 0.5 ms interval lets it
        back in promptly. ``[model] threads`` caps torch's CPU threads on shared hosts.
        """
        import torch

        self._switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(SWITCH_INTERVAL)
        if self.settings.model.threads is not None:
            torch.set_num_threads(self.settings.model.threads)

    async def _start_server(self) -> None:
        s = self.settings
        assert self.bus is not None and self.registry is not None
        routes = {s.alerts.path: alerts_handler(self.bus, max_queue=s.alerts.subscriber_queue)}
        if s.sources.twilio.enabled:
            routes[s.sources.twilio.path] = feed_handler(
                "twilio", MediaStreamProtocol, self.registry, metrics=self.metrics
            )
        if s.sources.ingest.enabled:
            routes[s.sources.ingest.path] = feed_handler(
                "native", IngestProtocol, self.registry, metrics=self.metrics
            )
        self.router = WebSocketRouter(routes)
        process_request = make_process_request(
            self.router,
            http_routes={
                "/healthz": healthz_route(self.health),
                "/metrics": metrics_route(self.metrics),
            },
            token=s.auth.token_value(),
            protected_paths=s.protected_paths(),
            max_connections=s.server.max_connections,
        )
        try:
            self.server = await serve(
                self.router,
                s.server.host,
                s.server.port,
                process_request=process_request,
                max_size=s.server.max_message_bytes,
                # Audio barely compresses; permessage-deflate would only cost CPU per frame.
                compression=None,
                select_subprotocol=select_subprotocol,
            )
        except OSError as exc:  # port taken, address not ours, host unknown: one clear line
            raise bind_error("HTTP/WebSocket", s.server.host, s.server.port, exc) from None

    def _start_mic(self) -> None:
        from streamguard.calls import CallFeed
        from streamguard.sources.mic import Microphone

        cfg = self.settings.sources.mic
        self.microphone = Microphone(
            device=cfg.device,
            sample_rate=cfg.sample_rate,
            channels=cfg.channels,
            block_seconds=cfg.block_ms / 1000,
            stream_factory=self._mic_stream_factory,
        )
        assert self.registry is not None
        feed = CallFeed("mic", self.registry, metrics=self.metrics)

        async def capture() -> None:
            assert self.microphone is not None
            try:
                async for event in self.microphone.events():
                    feed.route([event])
            except StreamguardError as exc:
                # One clear line; the other sources keep running without a microphone.
                log.error("microphone_unavailable", error=str(exc))
            finally:
                self.metrics.mic_overflows_total.inc(self.microphone.stats.input_overflows)

        self._mic_task = asyncio.create_task(capture(), name="microphone")

    # -- health & status ------------------------------------------------------------------------
    def health(self) -> Health:
        engine = self.engine
        status = "draining" if self._stopped else "ready" if self.ready else "starting"
        extra: dict[str, Any] = {}
        if engine is not None:
            extra = {
                "engine_heartbeat_age_seconds": round(engine.heartbeat_age(), 3),
                "windows_scored": engine.stats.scored,
                "windows_dropped": engine.stats.dropped_lag + engine.stats.dropped_overflow,
                "windows_failed": engine.stats.failed,
                "realtime_factor": round(engine.stats.realtime_factor, 4),
                "engine_utilization": round(engine.stats.utilization, 3),
                "device": str(self.detector.device) if self.detector else None,
            }
        return Health(
            status=status,
            model=self.detector.info.name if self.detector else "",
            uptime_seconds=time.monotonic() - self.started_at,
            open_calls=len(self.registry.sessions) if self.registry else 0,
            engine_queue_depth=engine.depth if engine else 0,
            extra=extra,
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
        while True:
            await asyncio.sleep(interval)
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
            self.settings, ignored = apply_reload(self.settings, new)
            configure_logging(self.settings.logging.level, self.settings.logging.format)
            assert self.registry is not None
            self.registry.reconfigure(policy_from(self.settings))
            log.info("reloaded", needs_restart=ignored or None)
        self.notifier.ready(self._status_line())

    def request_stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        """A stop was requested (signal or request_stop) or is under way."""
        return self._stop.is_set()

    async def stop(self) -> None:
        """Drain and stop (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        # A start-up that failed (bad model, port taken) never served: no drain to announce,
        # so the CLI's one error line is all the operator sees.
        served = self.ready
        self.notifier.stopping()
        if served:
            log.info("draining", open_calls=len(self.registry.sessions) if self.registry else 0)
        self._stop.set()
        if self.server is not None:
            self.server.server.close()  # stop listening; open feeds keep going until drained
        if self.rtp is not None:
            self.rtp.close()
        if self.microphone is not None and self._mic_task is not None:
            self.microphone.stop("shutdown")
            await self._mic_task
        if self.registry is not None:
            await self.registry.drain("shutdown")
        if self.engine is not None:
            await self.engine.stop()
        if self.bus is not None:
            await self._flush_subscribers()
        if self.server is not None:
            self.server.close(close_connections=True)
            await self.server.wait_closed()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._switch_interval is not None:
            sys.setswitchinterval(self._switch_interval)
        if served:
            log.info("stopped")

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
