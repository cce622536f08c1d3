"""The soak: a real daemon under churning calls for minutes, watched for leaks and drift.

``streamguard bench soak --calls 50 --minutes 30`` starts a :class:`~streamguard.daemon.Daemon`
in this process (127.0.0.1, ephemeral port, RTP and mic off) and the churn load generator
(:mod:`streamguard.bench.churn`) in another: ``calls`` slots, each starting a new real-time call
as soon as its previous one ended. Every ``sample_seconds`` it records, in the daemon's process:
resident memory (``/proc/self/statm``, the current RSS, not the peak), open file descriptors
(``/proc/self/fd``), open calls, windows scored / dropped / failed and the engine lag over the
interval. Growth is measured from the end of the warm-up (allocator pools, caches and the first
calls settle there) to the end: a leak shows as a steady climb, noise as a plateau.

Bounded: the load generator stops at ``minutes``; a watchdog kills it a minute later.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any

from streamguard.errors import StreamguardError

PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass(frozen=True)
class SoakOptions:
    file: str
    calls: int = 50
    minutes: float = 30.0
    protocol: str = "twilio"
    min_call_seconds: float = 20.0
    max_call_seconds: float = 60.0
    sample_seconds: float = 10.0
    warmup_minutes: float = 2.0
    max_batch: int = 16
    max_wait_ms: float = 20.0


@dataclass(frozen=True)
class Sample:
    t: float  # seconds since the load started
    rss_mib: float
    fds: int
    calls_open: int
    scored: int
    dropped: int
    failed: int
    lag_mean_ms: float  # engine lag (window ready -> score published) over the interval


def _histogram(histogram: Any) -> tuple[float, float]:
    values = {s.name.rsplit("_", 1)[-1]: s.value for m in histogram.collect() for s in m.samples}
    return values.get("sum", 0.0), values.get("count", 0.0)


async def run_soak(detector: Any, options: SoakOptions, progress=None) -> dict[str, Any]:
    """Run one soak; the figures as a dict (see :func:`summarize`)."""
    with tempfile.TemporaryDirectory(prefix="streamguard-soak-") as state:
        return await _run_soak(detector, options, progress, state)


async def _run_soak(detector: Any, options: SoakOptions, progress, state: str) -> dict[str, Any]:
    from streamguard.bench.daemon_bench import bench_settings
    from streamguard.daemon import Daemon

    settings = bench_settings(
        state,
        model={"max_batch": options.max_batch, "max_wait_ms": options.max_wait_ms},
        limits={"max_calls": max(options.calls * 2, 1)},
    )
    daemon = Daemon(settings, detector=detector)
    await daemon.start()
    job = {
        "base_url": f"ws://127.0.0.1:{daemon.port}",
        "feed_path": "/twilio" if options.protocol == "twilio" else "/ingest",
        "alerts_path": settings.alerts.path,
        "protocol": options.protocol,
        "file": options.file,
        "calls": options.calls,
        "minutes": options.minutes,
        "min_call_seconds": options.min_call_seconds,
        "max_call_seconds": options.max_call_seconds,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamguard.bench.churn",
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(job).encode())
    proc.stdin.close()
    samples: list[Sample] = []
    started = time.monotonic()
    lag_mark = _histogram(daemon.metrics.engine_lag_seconds)
    # The generator stops at ``minutes``; its last calls may need up to a call length (and a
    # starved machine longer) to wind down. Past this it is killed, and the report says so.
    limit = options.minutes * 60.0 + options.max_call_seconds + 120.0
    client: dict[str, Any] = {}
    try:
        waiter = asyncio.create_task(proc.wait())
        while not waiter.done():
            await asyncio.wait({waiter}, timeout=options.sample_seconds)
            total, count = _histogram(daemon.metrics.engine_lag_seconds)
            d_sum, d_count = total - lag_mark[0], count - lag_mark[1]
            lag_mark = (total, count)
            stats = daemon.engine.stats
            samples.append(
                Sample(
                    t=round(time.monotonic() - started, 1),
                    rss_mib=round(rss_bytes() / 2**20, 2),
                    fds=open_fds(),
                    calls_open=len(daemon.registry.sessions),
                    scored=stats.scored,
                    dropped=stats.dropped_lag + stats.dropped_overflow,
                    failed=stats.failed,
                    lag_mean_ms=round(1000.0 * d_sum / d_count, 1) if d_count else float("nan"),
                )
            )
            if progress is not None:
                progress(samples[-1])
            if not waiter.done() and time.monotonic() - started > limit:
                proc.kill()
                client = {"error": "the load generator overran its time and was killed"}
                await waiter
        if not client:
            assert proc.stdout is not None
            out = (await proc.stdout.read()).decode().strip().splitlines()
            if proc.returncode != 0 or not out:
                raise StreamguardError(f"soak load generator failed (exit {proc.returncode})")
            client = json.loads(out[-1])
    finally:
        if proc.returncode is None:
            proc.kill()
            with contextlib.suppress(Exception):
                await proc.wait()
        await asyncio.wait_for(daemon.stop(), 60)
    return summarize(samples, client, options)


def summarize(samples: list[Sample], client: dict[str, Any], options: SoakOptions) -> dict:
    """Growth from the end of the warm-up to the end, plus totals."""
    if not samples:
        raise StreamguardError("the soak took no sample (is --minutes shorter than a sample?)")
    warm_t = min(options.warmup_minutes * 60.0, samples[-1].t / 5.0)
    base = next((s for s in samples if s.t >= warm_t), samples[0])
    last = samples[-1]
    lags = [s.lag_mean_ms for s in samples if s.lag_mean_ms == s.lag_mean_ms]
    # A leak climbs; allocator pools jump when many calls end together and then stay flat.
    # Medians of the first and last fifth after warm-up tell the two apart; end - start does not.
    after = [s.rss_mib for s in samples if s.t >= base.t]
    fifth = max(1, len(after) // 5)
    early, late = statistics.median(after[:fifth]), statistics.median(after[-fifth:])
    return {
        "options": asdict(options),
        "client": client,
        "warmup_seconds": base.t,
        "rss_start_mib": base.rss_mib,
        "rss_end_mib": last.rss_mib,
        "rss_max_mib": max(s.rss_mib for s in samples),
        "rss_growth_percent": round(100.0 * (last.rss_mib - base.rss_mib) / base.rss_mib, 2),
        "rss_early_median_mib": early,
        "rss_late_median_mib": late,
        "rss_median_growth_percent": round(100.0 * (late - early) / early, 2),
        "fds_start": base.fds,
        "fds_end": last.fds,
        "fds_max": max(s.fds for s in samples),
        "windows_scored": last.scored,
        "windows_dropped": last.dropped,
        "windows_failed": last.failed,
        "engine_lag_ms_worst_interval": max(lags) if lags else None,
        "engine_lag_ms_mean_of_intervals": round(sum(lags) / len(lags), 1) if lags else None,
        "samples": [asdict(s) for s in samples],
    }


def format_soak(result: dict[str, Any], every_seconds: float = 60.0) -> str:
    from streamguard.bench.report import table

    o, c = result["options"], result["client"]
    if "error" in c:
        c = {
            **dict.fromkeys(["calls_started", "calls_completed", "calls_cut", "error_count"], "?"),
            **dict.fromkeys(["call_ended_events", "dropped_events"], "?"),
            **c,
        }
    rows, next_t = [], 0.0
    samples = result["samples"]
    for s in samples:
        if s["t"] >= next_t or s is samples[-1]:
            rows.append(
                [
                    f"{s['t'] / 60:.1f}",
                    s["rss_mib"],
                    s["fds"],
                    s["calls_open"],
                    s["scored"],
                    s["dropped"],
                    s["lag_mean_ms"],
                ]
            )
            next_t = s["t"] + every_seconds
    head = (
        f"{o['calls']} churning {o['protocol']} calls ({o['min_call_seconds']:g}-"
        f"{o['max_call_seconds']:g} s each) for {o['minutes']:g} min: {c['calls_started']} calls "
        f"started, {c['calls_completed']} completed, {c['calls_cut']} cut at the end, "
        f"{c['error_count']} errors; {c['call_ended_events']} call_ended and "
        f"{c['dropped_events']} dropped events seen by a subscriber"
    )
    table_text = table(["min", "rss MiB", "fds", "calls", "scored", "dropped", "lag ms"], rows)
    tail = (
        f"RSS {result['rss_start_mib']:.1f} MiB after {result['warmup_seconds']:.0f} s warm-up "
        f"-> {result['rss_end_mib']:.1f} MiB at the end ({result['rss_growth_percent']:+.2f} %; "
        f"max {result['rss_max_mib']:.1f}); median of the first fifth after warm-up "
        f"{result['rss_early_median_mib']:.1f} MiB, of the last fifth "
        f"{result['rss_late_median_mib']:.1f} MiB ({result['rss_median_growth_percent']:+.2f} %); "
        f"fds {result['fds_start']} -> {result['fds_end']} "
        f"(max {result['fds_max']}); windows scored {result['windows_scored']}, dropped "
        f"{result['windows_dropped']}, failed {result['windows_failed']}; engine lag "
        f"{result['engine_lag_ms_mean_of_intervals']} ms mean of intervals, worst interval "
        f"{result['engine_lag_ms_worst_interval']} ms"
    )
    warning = f"\nWARNING: {c['error']}" if "error" in c else ""
    return f"{head}\n{table_text}\n{tail}{warning}"
