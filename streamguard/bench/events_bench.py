"""``streamguard bench events``: what the event log costs the daemon.

For each backend (``memory`` as the baseline, ``sqlite``, ``redis``), a real bus and backend
on one event loop, fed the daemon's real event mix (:func:`event_mix`: per call one
``call_started``, one ``score`` per track per hop, an ``alert`` pair now and then, one
``call_ended`` with its summary), and one subscriber that receives every event:

- **sustained events/s**: publish a burst as fast as the loop allows (yielding every 50
  events, as a busy daemon does), until the subscriber has every event; events / wall time.
- **latency at a paced rate** (default: 10x the event rate of 120 concurrent calls): events
  published on a 10 ms tick for ``seconds``; for each, the time the ``publish()`` call itself
  took on the loop, and the time from publish to the subscriber receiving it (the group
  commit, the writer thread, the hop back to the loop; for Redis the Lua append and the
  XREAD back). p50 and p99 of both.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from streamguard.alerts.events import (
    Alert,
    CallEnded,
    CallStarted,
    CallSummary,
    EventBase,
    Score,
)
from streamguard.bench.stats import percentile

#: Events per second of one Twilio call (two tracks, hop 1 s) at steady state, plus its share
#: of call_started / call_ended for calls of ``CALL_SECONDS`` and an alert pair per minute.
CALL_SECONDS = 180.0
TRACKS = 2


def events_per_call_second(hop: float = 1.0) -> float:
    return TRACKS / hop + 2 / CALL_SECONDS + 2 / 60


def event_mix(calls: int, seconds: float, hop: float = 1.0) -> list[EventBase]:
    """The events ``calls`` concurrent calls publish over ``seconds`` (in publish order)."""
    summary = CallSummary(
        duration=CALL_SECONDS,
        speech_seconds=120.5,
        windows_scored=176,
        windows_skipped=4,
        max_smoothed=0.91,
        mean_smoothed=0.42,
        verdict="real",
    )
    out: list[EventBase] = []
    ticks = int(seconds / hop)
    for tick in range(ticks):
        for c in range(calls):
            call = f"CA{c:032x}"
            t = tick * hop
            age = (tick + c * 7) % int(CALL_SECONDS / hop)
            if age == 0:
                out.append(
                    CallStarted(
                        call_id=call,
                        track=None,
                        source="twilio",
                        sample_rate=8000,
                        metadata={
                            "streamSid": f"MZ{c:032x}",
                            "callSid": call,
                            "tracks": ["inbound", "outbound"],
                            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                        },
                    )
                )
            for track in ("inbound", "outbound"):
                out.append(
                    Score(
                        call_id=call,
                        track=track,
                        source="twilio",
                        start=t,
                        end=t + 4,
                        p_fake=0.1234 + (c % 7) / 10,
                        smoothed=0.2345 + (tick % 5) / 10,
                    )
                )
            if (tick + c) % int(60 / hop) == 0:
                out.append(
                    Alert(
                        call_id=call,
                        track="inbound",
                        source="twilio",
                        state="raised" if tick % 2 else "cleared",
                        smoothed=0.81,
                        threshold=0.5,
                        start=t,
                        end=t + 5,
                    )
                )
            if age == int(CALL_SECONDS / hop) - 1:
                out.append(
                    CallEnded(
                        call_id=call,
                        track=None,
                        source="twilio",
                        summary=summary,
                        tracks={"inbound": summary, "outbound": summary},
                        reason="stop",
                    )
                )
    return out


@dataclass
class BackendResult:
    backend: str
    events: int
    sustained_events_per_s: float
    paced_rate: float
    paced_events: int
    paced_delivered: int
    publish_us_p50: float
    publish_us_p99: float
    delivery_ms_p50: float
    delivery_ms_p99: float
    delivery_ms_max: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Rig:
    """A bus, a backend behind it, and one subscriber timing each arrival."""

    def __init__(self, backend_name: str, workdir: Path, redis_url: str | None):
        from streamguard.alerts.backends import make_backend
        from streamguard.alerts.bus import AlertBus
        from streamguard.config import EventsSettings

        self.bus = AlertBus("bench", max_queue=1_000_000)
        settings = EventsSettings(
            backend=backend_name,  # type: ignore[arg-type]
            path=str(workdir / f"{backend_name}.db"),
            redis_url=redis_url or "redis://127.0.0.1:6379/0",
            redis_stream=f"streamguard:bench:{time.time_ns()}",
        )
        self.backend = make_backend(settings)
        self.arrivals: list[float] = []
        self.sub = self.bus.subscribe(max_queue=1_000_000, on_ready=self._arrived)
        self.done = asyncio.Event()
        self.expect = 0

    def _arrived(self) -> None:
        now = time.perf_counter()
        for _ in self.sub.drain():
            self.arrivals.append(now)
        if len(self.arrivals) >= self.expect:
            self.done.set()

    async def start(self) -> None:
        await self.backend.start(self.bus)

    async def close(self) -> None:
        await self.backend.close()
        if self.backend.name == "redis":
            with contextlib.suppress(Exception):
                await self.backend.redis.delete(  # type: ignore[attr-defined]
                    self.backend.stream,  # type: ignore[attr-defined]
                    self.backend.counter_key,  # type: ignore[attr-defined]
                )


async def _burst(rig: _Rig, events: list[EventBase]) -> float:
    rig.arrivals.clear()
    rig.done.clear()
    rig.expect = len(events)
    t0 = time.perf_counter()
    for i, event in enumerate(events):
        rig.bus.publish(event)
        if i % 50 == 49:
            await asyncio.sleep(0)
    await asyncio.wait_for(rig.done.wait(), 300)
    return len(events) / (time.perf_counter() - t0)


async def _paced(
    rig: _Rig, events: list[EventBase], rate: float
) -> tuple[list[float], list[float], int]:
    rig.arrivals.clear()
    rig.done.clear()
    rig.expect = len(events)
    published: list[float] = []
    call_us: list[float] = []
    tick = 0.01
    per_tick = rate * tick
    t0 = time.perf_counter()
    sent = 0
    while sent < len(events):
        due = min(len(events), int((time.perf_counter() - t0) / tick * per_tick) + 1)
        while sent < due:
            a = time.perf_counter()
            rig.bus.publish(events[sent])
            b = time.perf_counter()
            published.append(a)
            call_us.append((b - a) * 1e6)
            sent += 1
        await asyncio.sleep(tick)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(rig.done.wait(), 60)
    delivered = len(rig.arrivals)
    latencies = [
        (arrived - sent_at) * 1000
        for sent_at, arrived in zip(published, rig.arrivals, strict=False)
    ]
    return call_us, latencies, delivered


async def run_backend(
    backend: str,
    *,
    burst_events: int,
    paced_rate: float,
    paced_seconds: float,
    workdir: Path,
    redis_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> BackendResult:
    mix_calls = 120
    burst = event_mix(mix_calls, burst_events / (mix_calls * events_per_call_second()) + 1)
    burst = burst[:burst_events]
    paced_n = int(paced_rate * paced_seconds)
    paced = event_mix(mix_calls, paced_n / (mix_calls * events_per_call_second()) + 1)[:paced_n]
    rig = _Rig(backend, workdir, redis_url)
    await rig.start()
    try:
        await _burst(rig, burst[: min(500, len(burst))])  # warm-up (JIT-free, but caches)
        if progress:
            progress(f"{backend}: burst")
        rate = await _burst(rig, burst)
        if progress:
            progress(f"{backend}: paced")
        call_us, latencies, delivered = await _paced(rig, paced, paced_rate)
    finally:
        await rig.close()
    return BackendResult(
        backend=backend,
        events=len(burst),
        sustained_events_per_s=round(rate, 1),
        paced_rate=paced_rate,
        paced_events=len(paced),
        paced_delivered=delivered,
        publish_us_p50=round(percentile(call_us, 50), 1),
        publish_us_p99=round(percentile(call_us, 99), 1),
        delivery_ms_p50=round(percentile(latencies, 50), 3),
        delivery_ms_p99=round(percentile(latencies, 99), 3),
        delivery_ms_max=round(max(latencies, default=0.0), 3),
    )


def run_events_bench(
    backends: list[str],
    *,
    burst_events: int = 20_000,
    paced_rate: float | None = None,
    paced_seconds: float = 10.0,
    redis_url: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run each backend; start a throwaway redis-server if ``redis`` is asked without a URL."""
    target = 10 * 120 * events_per_call_second()
    rate = paced_rate or target
    results = []
    with tempfile.TemporaryDirectory(prefix="sg-bench-events-") as tmp:
        workdir = Path(tmp)
        server = None
        try:
            if "redis" in backends and redis_url is None:
                server = _start_redis(workdir / "redis")
                redis_url = f"redis://127.0.0.1:{server[1]}/0"
            for backend in backends:
                results.append(
                    asyncio.run(
                        run_backend(
                            backend,
                            burst_events=burst_events,
                            paced_rate=rate,
                            paced_seconds=paced_seconds,
                            workdir=workdir,
                            redis_url=redis_url,
                            progress=progress,
                        )
                    ).to_dict()
                )
        finally:
            if server is not None:
                server[0].terminate()
                server[0].wait(10)
    return {
        "event_rate_120_calls": round(120 * events_per_call_second(), 1),
        "target_events_per_s": round(target, 1),
        "paced_rate": round(rate, 1),
        "results": results,
    }


def _start_redis(workdir: Path):
    import shutil
    import socket
    import subprocess

    from streamguard.errors import StreamguardError

    exe = shutil.which("redis-server")
    if exe is None:
        raise StreamguardError("redis-server not found: install it or pass --redis-url")
    workdir.mkdir(parents=True, exist_ok=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", "",
         "--appendonly", "yes", "--appendfsync", "everysec"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.terminate()
    raise StreamguardError("redis-server did not start")


def format_events(report: dict[str, Any]) -> str:
    from streamguard.bench.report import table

    rows = [
        [
            r["backend"],
            r["sustained_events_per_s"],
            f"{r['sustained_events_per_s'] / report['event_rate_120_calls']:.0f}x",
            f"{r['paced_delivered']}/{r['paced_events']}",
            r["publish_us_p50"],
            r["publish_us_p99"],
            r["delivery_ms_p50"],
            r["delivery_ms_p99"],
            r["delivery_ms_max"],
        ]
        for r in report["results"]
    ]
    head = (
        f"event mix of 120 Twilio calls (2 tracks, hop 1 s): {report['event_rate_120_calls']} "
        f"events/s; target 10x = {report['target_events_per_s']} events/s; paced at "
        f"{report['paced_rate']} events/s\n"
    )
    return head + table(
        [
            "backend",
            "sustained ev/s",
            "x 120 calls",
            "paced delivered",
            "publish us p50",
            "p99",
            "to subscriber ms p50",
            "p99",
            "max",
        ],
        rows,
    )
