"""The soak's load generator: N call slots, each starting a new call as soon as its last ended.

Runs as its own process (``python -m streamguard.bench.churn``, a JSON job on stdin, one JSON
report on stdout) for the reasons :mod:`streamguard.bench.loadgen` gives. Call lengths are drawn
(fixed seed, so two soaks offer the same load) from ``LENGTHS`` values spread evenly over
``[min_call_seconds, max_call_seconds]``, whose frames are built once up front: building a
minute of frames takes long enough to starve the other slots' handshakes if done per call.
One /alerts subscriber counts ``call_ended`` and ``dropped`` events. Everything
stops at ``minutes``; calls still open then are closed without ``stop`` (the daemon ends them
``closed``), so the last minute churns too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from dataclasses import dataclass, field
from typing import Any

LENGTHS = 6
_PLACEHOLDER = "SOAK-CALL-ID-PLACEHOLDER"


@dataclass
class ChurnJob:
    base_url: str
    feed_path: str
    alerts_path: str
    protocol: str
    file: str
    calls: int
    minutes: float
    min_call_seconds: float = 20.0
    max_call_seconds: float = 60.0
    seed: int = 0


@dataclass
class ChurnStats:
    started: int = 0
    completed: int = 0  # the daemon closed the call after our stop (1000)
    cut: int = 0  # still open at the end: closed by us
    errors: list[str] = field(default_factory=list)
    ended_events: int = 0
    dropped_events: int = 0


async def run_churn(job: ChurnJob) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    from streamguard.bench.loadgen import call_audio
    from streamguard.client import send_frames
    from streamguard.sources.senders import frames_for

    rng = random.Random(job.seed)
    rate, audio = call_audio(job.file, job.max_call_seconds)
    stats = ChurnStats()
    step = (job.max_call_seconds - job.min_call_seconds) / max(LENGTHS - 1, 1)
    templates = [
        list(
            frames_for(
                job.protocol,
                audio[:, : int((job.min_call_seconds + k * step) * rate)],
                rate,
                call_id=_PLACEHOLDER,
            )
        )
        for k in range(LENGTHS)
    ]
    deadline = time.monotonic() + job.minutes * 60.0

    async def subscribe(ready: asyncio.Event) -> None:
        async with connect(job.base_url + job.alerts_path, max_size=None) as ws:
            ready.set()
            async for message in ws:
                kind = json.loads(message)["type"]
                stats.ended_events += kind == "call_ended"
                stats.dropped_events += kind == "dropped"

    async def slot(i: int) -> None:
        await asyncio.sleep(i * min(1.0, job.min_call_seconds) / max(job.calls, 1))
        n = 0
        while (left := deadline - time.monotonic()) > 1.0:
            template = rng.choice(templates)
            frames = _with_call_id(template, f"soak-{i}-{n}")
            cut = template[-1][0] > left
            if cut:  # past the end: hang up without stop; the daemon ends the call "closed"
                frames = [f for f in frames[:-1] if f[0] <= left]
            n += 1
            stats.started += 1
            try:
                result = await send_frames(
                    job.base_url + job.feed_path, frames, realtime=True, close_timeout=10.0
                )
            except Exception as exc:  # one failed call must not stop the soak
                stats.errors.append(f"slot {i}: {exc}"[:200])
                await asyncio.sleep(1.0)
                continue
            if result.close_code == 1000:
                stats.completed += 1
            else:
                stats.cut += 1

    ready = asyncio.Event()
    subscriber = asyncio.create_task(subscribe(ready))
    await asyncio.wait_for(ready.wait(), 10)
    await asyncio.gather(*(slot(i) for i in range(job.calls)))
    await asyncio.sleep(2.0)  # the last call_ended events
    subscriber.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await subscriber
    return {
        "calls_started": stats.started,
        "calls_completed": stats.completed,
        "calls_cut": stats.cut,
        "call_ended_events": stats.ended_events,
        "dropped_events": stats.dropped_events,
        "errors": stats.errors[:20],
        "error_count": len(stats.errors),
    }


def _with_call_id(template: list, call_id: str) -> list:
    """The template's frames with the call id in its text frames that name it (start, stop:
    a few at each end, so this stays cheap)."""
    frames = list(template)
    for i in [*range(min(3, len(frames))), *range(max(0, len(frames) - 2), len(frames))]:
        t, frame = frames[i]
        if isinstance(frame, str) and _PLACEHOLDER in frame:
            frames[i] = (t, frame.replace(_PLACEHOLDER, call_id))
    return frames


def main() -> int:
    job = ChurnJob(**json.loads(sys.stdin.read()))
    sys.stdout.write(json.dumps(asyncio.run(run_churn(job))) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
