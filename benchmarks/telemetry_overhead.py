"""What traces cost per window: off (the default) and on, through the daemon's real call path.

    .venv/bin/python benchmarks/telemetry_overhead.py [--calls 40] [--repeat 5]

A real ``CallRegistry`` opens ``--calls`` calls and pushes the speech fixture through each
(the real ``CallSession``: resample, VAD, windows); every window it submits is collected, then
its outcome is handed back the way the engine's loop side does (``stamp_timing`` for the batch,
then the callback: smoother, events, publish). Timed per window, best of ``--repeat``:

- ``off``: the default ``[telemetry]`` (the no-op tracer); the OpenTelemetry modules loaded
  are listed: there must be none (it runs first, in this fresh interpreter);
- ``on``: the SDK with a span processor that drops what it gets (the cost of making spans,
  not of exporting them, which happens on the SDK's thread).

No model runs: the outcomes are fixed numbers, so what differs between the rows is only the
tracing. Machine, load and command belong beside every figure (benchmarks/README.md, "Traces").
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

from streamguard.audio.file import read_audio
from streamguard.calls import CallPolicy, CallRegistry
from streamguard.config import TelemetrySettings
from streamguard.logs import configure_logging
from streamguard.model.base import ModelInfo
from streamguard.scoring.outcome import stamp_timing
from streamguard.sources.base import Audio, CallEnd, CallStart, TrackStart
from streamguard.telemetry import Tracer, from_settings

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "speech_10s_8k.wav"
BATCH = 16


class _Request:
    """What the engine keeps per window (``callback``, ``enqueued``), for ``stamp_timing``."""

    __slots__ = ("callback", "enqueued")

    def __init__(self, callback, enqueued: float) -> None:
        self.callback = callback
        self.enqueued = enqueued


def run(tracer: Tracer, calls: int, audio: np.ndarray, rate: int) -> tuple[int, float, float]:
    """(windows, seconds to open the calls and submit, seconds to deliver every outcome)."""
    submitted: list[_Request] = []
    registry = CallRegistry(
        info=ModelInfo(name="bench", architecture="koyelog-resnet"),
        policy=CallPolicy(),
        submit=lambda window, cb: submitted.append(_Request(cb, time.monotonic())),
        publish=lambda event: None,
        max_calls=calls,
        tracer=tracer,
    )
    started = time.perf_counter()
    sessions = []
    for i in range(calls):
        session = registry.open(CallStart(call_id=f"bench-{i}", source="native"))
        registry.handle(session, TrackStart(track="0", sample_rate=rate))
        for chunk in np.array_split(audio, len(audio) // (rate // 10)):  # 100 ms frames
            registry.handle(session, Audio(track="0", samples=chunk))
        registry.handle(session, CallEnd(reason="stop"))
        sessions.append(session)
    submit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for first in range(0, len(submitted), BATCH):
        batch = submitted[first : first + BATCH]
        stamp_timing(batch, time.monotonic(), 0.01)  # the engine's worker, once per batch
        for request in batch:  # the engine's loop side, in submission order
            request.callback(0.25)
    deliver_seconds = time.perf_counter() - started
    assert all(s.finished for s in sessions)
    return len(submitted), submit_seconds, deliver_seconds


def best(tracer: Tracer, args, audio, rate) -> tuple[int, float, float]:
    runs = [run(tracer, args.calls, audio, rate) for _ in range(args.repeat)]
    return runs[0][0], min(r[1] for r in runs), min(r[2] for r in runs)


def off_call_sites(n: int = 200_000) -> tuple[float, float]:
    """ns per window and per call of what the off path adds: the registry's ``enabled`` test
    and the engine's ``isinstance`` per window (``stamp_timing``); ``start_call`` and
    ``end_call`` per call. An upper bound: timeit's lambda call is included."""
    import timeit

    from streamguard.telemetry import NOOP

    batch = [_Request(lambda outcome: None, 0.0) for _ in range(BATCH)]
    per_batch = min(timeit.repeat(lambda: stamp_timing(batch, 1.0, 0.01), number=n, repeat=3))
    branch = min(timeit.repeat(lambda: NOOP.enabled, number=n, repeat=3))
    per_window = (per_batch / BATCH + branch) / n * 1e9
    per_call = min(
        timeit.repeat(lambda: NOOP.end_call(NOOP.start_call("c", "native"), None, ()), number=n)
    )
    return per_window, per_call / n * 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    configure_logging("warning", "console")
    rate, mono = read_audio(FIXTURE)
    audio = mono[0].astype(np.float32)
    window_ns, call_ns = off_call_sites()

    off = from_settings(TelemetrySettings())
    windows, off_submit, off_deliver = best(off, args, audio, rate)
    loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS

    on = from_settings(TelemetrySettings(), exporter=Drop(), model="bench")
    _, on_submit, on_deliver = best(on, args, audio, rate)
    on.shutdown()

    cpu = platform.processor() or platform.machine()
    print(f"# {platform.node()} {cpu}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(f"# {args.calls} calls x {FIXTURE.name}: {windows} windows, best of {args.repeat}")
    print(f"telemetry off: opentelemetry modules loaded: {len(loaded)} {loaded or ''}")
    print(
        f"telemetry off: its call sites cost {window_ns:.0f} ns per window, {call_ns:.0f} ns "
        "per call (timeit, best of 3)"
    )
    print("mode   submit us/window   deliver us/window   total us/window")
    for name, sub, dlv in (("off", off_submit, off_deliver), ("on", on_submit, on_deliver)):
        per = 1e6 / windows
        print(f"{name:<6} {sub * per:16.1f}   {dlv * per:17.1f}   {(sub + dlv) * per:15.1f}")
    extra = (on_deliver - off_deliver) * 1e6 / windows
    print(
        f"tracing on adds {extra:.1f} us per window when its outcome arrives (a score span made, "
        "not exported); submit includes the audio chain, so its difference is noise"
    )


if __name__ == "__main__":
    main()
