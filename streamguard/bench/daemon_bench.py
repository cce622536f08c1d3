"""End-to-end capacity: a real daemon on loopback under N concurrent real-time calls.

One *level* = a fresh :class:`~streamguard.daemon.Daemon` (127.0.0.1, ephemeral port, RTP and
microphone off) sharing one already-loaded detector, fed by the load-generator process
(:mod:`streamguard.bench.loadgen`). Several levels (``--calls 1,4,16,32``) find the knee: the
load where windows start to be dropped or lag exceeds one hop.

Measured here, in the daemon's process: windows scored and dropped (engine counters), the
batch sizes the engine actually formed (a thin recording wrapper around the real detector),
the engine's real-time factor, CPU seconds (``getrusage``), peak RSS, and how late the event
loop wakes up (a 10 ms ticker: the cost of per-frame work on the loop shows up here first).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import math
import resource
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from streamguard.bench.stats import summary
from streamguard.errors import StreamguardError

FEED_PATHS = {"twilio": "/twilio", "native": "/ingest", "l16": "/ingest"}


class RecordingDetector:
    """The real detector, plus a record of every batch the engine hands it.

    Instrumentation only: each call goes straight to the wrapped detector.
    """

    def __init__(self, detector: Any) -> None:
        self.inner = detector
        self.info = detector.info
        self.device = detector.device
        self.window_samples = detector.window_samples
        self.batch_sizes: collections.Counter[int] = collections.Counter()
        self.call_seconds: list[float] = []
        self._lock = threading.Lock()

    @property
    def torchscript(self) -> bool:
        return self.inner.torchscript

    def use_torchscript(self) -> bool:
        return self.inner.use_torchscript()

    def __call__(self, waveforms):
        started = time.perf_counter()
        out = self.inner(waveforms)
        elapsed = time.perf_counter() - started
        with self._lock:
            self.batch_sizes[len(waveforms)] += 1
            self.call_seconds.append(elapsed)
        return out

    def take(self) -> tuple[dict[int, int], list[float]]:
        """Batch-size counts and per-call seconds since the last ``take``."""
        with self._lock:
            sizes, self.batch_sizes = dict(self.batch_sizes), collections.Counter()
            seconds, self.call_seconds = self.call_seconds, []
        return dict(sorted(sizes.items())), seconds


@dataclass(frozen=True)
class DaemonBenchOptions:
    file: str
    protocol: str = "twilio"
    call_seconds: float = 20.0
    speed: float = 1.0
    stagger_seconds: float = 1.0
    max_batch: int = 16
    max_wait_ms: float = 20.0
    queue_size: int = 256
    hop_seconds: float = 1.0
    deadline_seconds: float = 120.0


async def _loop_lag(samples: list[float], period: float = 0.01) -> None:
    """How late a 10 ms timer fires: a busy loop (per-frame parsing, VAD...) delays it."""
    while True:
        expected = time.monotonic() + period
        await asyncio.sleep(period)
        samples.append(max(0.0, time.monotonic() - expected))


def _cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


async def _run_loadgen(job: dict[str, Any], timeout: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamguard.bench.loadgen",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout):
            out, _ = await proc.communicate(json.dumps(job).encode())
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise StreamguardError(f"load generator did not finish within {timeout:.0f} s") from None
    if proc.returncode != 0:
        raise StreamguardError(f"load generator failed (exit {proc.returncode}); see stderr")
    return json.loads(out.decode().strip().splitlines()[-1])


async def run_level(
    detector: RecordingDetector,
    calls: int,
    options: DaemonBenchOptions,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Start a daemon, push ``calls`` concurrent calls through it, stop it; the figures."""
    from streamguard.config import load_config
    from streamguard.daemon import Daemon

    settings = load_config(
        None,
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "sources": {
                "rtp": {"enabled": False, "host": "127.0.0.1", "port": 0},
                "mic": {"enabled": False},
            },
            "model": {
                "max_batch": options.max_batch,
                "max_wait_ms": options.max_wait_ms,
                "queue_size": options.queue_size,
            },
            "track": {"hop_seconds": options.hop_seconds},
            "limits": {"max_calls": max(calls, 1)},
            "logging": {"level": "warning"},
        },
    )
    daemon = Daemon(settings, detector=detector)
    await daemon.start()
    detector.take()  # forget the start-up calls (the probe): only the calls' batches count
    lag_samples: list[float] = []
    ticker = asyncio.create_task(_loop_lag(lag_samples))
    cpu0, children0, wall0 = (
        _cpu_seconds(resource.RUSAGE_SELF),
        _cpu_seconds(resource.RUSAGE_CHILDREN),
        time.monotonic(),
    )
    job = {
        "base_url": f"ws://127.0.0.1:{daemon.port}",
        "feed_path": FEED_PATHS[options.protocol],
        "alerts_path": settings.alerts.path,
        "protocol": options.protocol,
        "file": options.file,
        "calls": calls,
        "call_seconds": options.call_seconds,
        "speed": options.speed,
        "stagger_seconds": options.stagger_seconds,
        "deadline_seconds": options.deadline_seconds,
    }
    loadgen = asyncio.create_task(_run_loadgen(job, options.deadline_seconds + 30))
    try:
        while not loadgen.done():
            await asyncio.wait({loadgen}, timeout=0.5)
            if progress is not None:
                progress(daemon.engine.stats.scored)
        client = loadgen.result()
    finally:
        if not loadgen.done():
            loadgen.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await loadgen
        wall = time.monotonic() - wall0
        cpu = _cpu_seconds(resource.RUSAGE_SELF) - cpu0
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker
        stats = daemon.engine.stats
        engine_lag = _histogram_mean(daemon.metrics.engine_lag_seconds)
        await asyncio.wait_for(daemon.stop(), 60)
    sizes, call_seconds = detector.take()
    n_batches = sum(sizes.values())
    tracks = _tracks_per_call(options.file, options.protocol)
    return {
        "calls": calls,
        "tracks": calls * tracks,
        "offered_windows_per_second": calls * tracks * options.speed / options.hop_seconds,
        "wall_seconds": wall,
        "windows_submitted": stats.submitted,
        "windows_scored": stats.scored,
        "windows_dropped": stats.dropped_lag + stats.dropped_overflow,
        "dropped_lag": stats.dropped_lag,
        "dropped_overflow": stats.dropped_overflow,
        "windows_per_second": client["score_events_per_second"],
        "batch_sizes": sizes,
        "mean_batch": (sum(b * n for b, n in sizes.items()) / n_batches) if n_batches else 0.0,
        "inference_ms_per_batch": summary([1000.0 * x for x in call_seconds]),
        "engine_lag_mean_seconds": engine_lag,
        "realtime_factor": stats.realtime_factor,
        "inference_seconds": stats.inference_seconds,
        "cpu_seconds": cpu,
        "cpu_percent": 100.0 * cpu / wall if wall else math.nan,
        "loadgen_cpu_seconds": _cpu_seconds(resource.RUSAGE_CHILDREN) - children0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "loop_lag_seconds": summary(lag_samples),
        "client": client,
    }


def _histogram_mean(histogram: Any) -> float:
    """Mean of a prometheus Histogram (``_sum / _count``); NaN when empty."""
    values = {s.name.rsplit("_", 1)[-1]: s.value for m in histogram.collect() for s in m.samples}
    count = values.get("count", 0.0)
    return values.get("sum", 0.0) / count if count else math.nan


def _tracks_per_call(path: str, protocol: str) -> int:
    import soundfile

    try:
        channels = soundfile.info(path).channels
    except Exception:  # mp3 on an old libsndfile, etc.: the load generator reads it anyway
        channels = 1
    return min(channels, 2) if protocol == "twilio" else channels


def keeps_up(level: dict[str, Any], hop_seconds: float) -> bool:
    """Nothing dropped and 95 % of scores within one hop of their window's end."""
    p95 = level["client"]["lag_seconds"]["p95"]
    return level["windows_dropped"] == 0 and not math.isnan(p95) and p95 <= hop_seconds
