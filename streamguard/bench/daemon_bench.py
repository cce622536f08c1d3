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
import contextlib
import json
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamguard.bench.stats import summary
from streamguard.errors import StreamguardError

FEED_PATHS = {"twilio": "/twilio", "native": "/ingest", "l16": "/ingest"}


def rss_mib(pids: list[int] | None = None) -> float:
    """Resident memory now (not the peak) of this process plus ``pids``, in MiB."""
    total = 0
    for pid in ["self", *(pids or [])]:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * resource.getpagesize()
        except (OSError, ValueError, IndexError):
            pass
    return total / 2**20


def _worker_pids(daemon: Any) -> list[int]:
    return [r._proc.pid for r in daemon.runners if getattr(r, "_proc", None) is not None]


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
    chunk_ms: int = 20
    mix: bool = False  # mono mix of the file's channels (continuous speech)
    backend: str = "auto"
    worker: str = "thread"
    workers: int = 1
    threads: int | None = None
    coalesce_ms: int = 100
    adaptive_stride: int = 1


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


def bench_settings(directory: str, **sections: Any) -> Any:
    """The config of a bench daemon: loopback on a free port, no RTP or microphone, quiet logs,
    and the default SQLite event log (its cost is part of what is measured) but in
    ``directory``, never the operator's log (a bench must not add its calls to it, nor contend
    with a running daemon for its writer lock). ``sections`` add the suite's own settings."""
    from streamguard.config import load_config

    return load_config(
        None,
        {
            "server": {"host": "127.0.0.1", "port": 0},
            "sources": {
                "rtp": {"enabled": False, "host": "127.0.0.1", "port": 0},
                "mic": {"enabled": False},
            },
            "events": {"backend": "sqlite", "path": str(Path(directory) / "events.db")},
            "logging": {"level": "warning"},
            **sections,
        },
    )


def calls_ended_in_log(directory: str, prefix: str = "bench-") -> int:
    """How many ``call_ended`` events for the bench's calls the log holds (the daemon stopped)."""
    from streamguard.alerts.bus import SubscriptionFilter
    from streamguard.alerts.store import EventStore

    store = EventStore(Path(directory) / "events.db", readonly=True)
    try:
        wanted = SubscriptionFilter(types=frozenset({"call_ended"}))
        ended: set[str] = set()
        after = 0
        while True:
            page = store.read(after, wanted)
            ended |= {e.call_id for e in page.events if (e.call_id or "").startswith(prefix)}
            if page.scanned_to <= after:
                return len(ended)
            after = page.scanned_to
    finally:
        store.close()


async def run_level(
    detector: Any,
    calls: int,
    options: DaemonBenchOptions,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Start a daemon, push ``calls`` concurrent calls through it, stop it; the figures."""
    with tempfile.TemporaryDirectory(prefix="streamguard-bench-") as state:
        level = await _run_level(detector, calls, options, state, progress)
        level["calls_ended_in_log"] = calls_ended_in_log(state)
        return level


async def _run_level(
    detector: Any,
    calls: int,
    options: DaemonBenchOptions,
    state: str,
    progress: Callable[[int], None] | None,
) -> dict[str, Any]:
    from streamguard.daemon import Daemon

    settings = bench_settings(
        state,
        model={
            "max_batch": options.max_batch,
            "max_wait_ms": options.max_wait_ms,
            "queue_size": options.queue_size,
            "backend": options.backend,
            "worker": options.worker,
            "workers": options.workers,
            "threads": options.threads,
        },
        track={
            "hop_seconds": options.hop_seconds,
            "coalesce_ms": options.coalesce_ms,
            "adaptive_stride": options.adaptive_stride,
        },
        limits={"max_calls": max(calls, 1)},
    )
    daemon = Daemon(settings, detector=detector)
    await daemon.start()
    await asyncio.sleep(0.5)  # let start-up garbage settle before the base figure
    base_rss = rss_mib(_worker_pids(daemon))
    peak_rss = base_rss
    start_stats = daemon.engine.stats
    start_sizes = dict(start_stats.batch_sizes)  # the probe's batches are not the calls'
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
        "chunk_ms": options.chunk_ms,
        "mix": options.mix,
    }
    loadgen = asyncio.create_task(_run_loadgen(job, options.deadline_seconds + 30))
    try:
        while not loadgen.done():
            await asyncio.wait({loadgen}, timeout=0.5)
            peak_rss = max(peak_rss, rss_mib(_worker_pids(daemon)))
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
        backend = daemon.runners[0].backend if daemon.runners else "?"
        await asyncio.wait_for(daemon.stop(), 60)
    sizes = {
        b: n - start_sizes.get(b, 0)
        for b, n in sorted(stats.batch_sizes.items())
        if n - start_sizes.get(b, 0) > 0
    }
    call_seconds = list(stats.batch_seconds)[-sum(sizes.values()) :] if sizes else []
    n_batches = sum(sizes.values())
    tracks = 1 if options.mix else _tracks_per_call(options.file, options.protocol)
    return {
        "calls": calls,
        "tracks": calls * tracks,
        "backend": backend,
        "worker": options.worker,
        "workers": options.workers,
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
        "peak_rss_mib": peak_rss,
        "base_rss_mib": base_rss,
        "rss_per_track_mib": (peak_rss - base_rss) / (calls * tracks),
        "windows_failed": stats.failed,
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
    """Every window scored (none dropped or failed) and 99 % of scores within one hop of
    their window's end: the issue's definition of a real-time track."""
    p99 = level["client"]["lag_seconds"]["p99"]
    return (
        level["windows_dropped"] == 0
        and level["windows_failed"] == 0
        and not level["client"]["errors"]
        and not math.isnan(p99)
        and p99 < hop_seconds
    )
