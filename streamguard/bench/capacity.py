"""Capacity: how many real-time tracks one daemon carries, searched level by level.

A level passes when every window of every call is scored (none dropped, none failed) and the
99th percentile of lag (window end -> ``score`` event at the subscriber) stays under one hop:
the issue's definition of a real-time track. The search starts near what the serving backend
alone could carry, walks up or down by ~15 % per level, and reports the largest passing level.

The figures reported next to it (each a ratio within one run, see benchmarks/README.md):

- **capacity ratio** = passing continuous-speech calls / windows per second of the plain fp32
  eager detector at batch 16 (``reference``), measured in the same run;
- **daemon efficiency** = passing tracks x hop / the serving runners' best windows/s;
- **first score** = lag of a call's first score on an idle daemon (one call), and the **first
  verdict**: its first score after the caller started speaking (call time; issue #20: <= 5 s);
  the first verdict at the largest passing level is in that level's figures;
- **memory** = base RSS of the daemon (workers included) and RSS per additional track at the
  largest passing level.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from streamguard.bench.daemon_bench import DaemonBenchOptions, keeps_up, run_level


@dataclass(frozen=True)
class Workload:
    """A kind of call the search streams: continuous speech, or the turn-taking demo call."""

    name: str
    file: str
    protocol: str
    chunk_ms: int
    mix: bool  # mono mix of the file's channels

    def describe(self) -> str:
        mono = "mono mix of " if self.mix else ""
        return f"{self.name}: {mono}{self.file.rsplit('/', 1)[-1]} over {self.protocol}, " + (
            f"{self.chunk_ms} ms frames"
        )

    def options(self, base: DaemonBenchOptions, **changes: Any) -> DaemonBenchOptions:
        """``base`` streaming this workload's calls."""
        return replace(
            base,
            file=self.file,
            protocol=self.protocol,
            chunk_ms=self.chunk_ms,
            mix=self.mix,
            **changes,
        )


def search(
    detector: Any,
    workload: Workload,
    base: DaemonBenchOptions,
    *,
    estimate_tracks: float,
    tracks_per_call: int,
    max_levels: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Find the largest passing level for ``workload``; every level's figures are kept."""
    options = workload.options(base)
    hop = options.hop_seconds
    calls = max(1, math.floor(0.85 * estimate_tracks / tracks_per_call))
    tried: dict[int, dict[str, Any]] = {}
    best: int | None = None
    worst_fail: int | None = None
    for _ in range(max_levels):
        if progress is not None:
            progress(f"{workload.name}: {calls} calls")
        level = asyncio.run(run_level(detector, calls, options))
        level["keeps_up"] = keeps_up(level, hop)
        tried[calls] = level
        if level["keeps_up"]:
            best = max(best or 0, calls)
        else:
            worst_fail = calls if worst_fail is None else min(worst_fail, calls)
        # next level: up 15 % from the best pass, down from the lowest fail (15 %, or 40 %
        # when lag ran away to several hops: far above capacity), or halfway between
        p99 = level["client"]["lag_seconds"]["p99"]
        if best is not None and worst_fail is not None:
            nxt = (best + worst_fail) // 2
        elif best is not None:
            nxt = max(best + 1, math.ceil(best * 1.15))
        else:
            factor = 0.6 if not p99 <= 3 * hop else 0.85  # NaN (no scores) counts as far
            nxt = max(1, math.floor(worst_fail * factor))  # type: ignore[operator]
        if nxt in tried or (best is not None and worst_fail is not None and nxt <= best):
            break
        calls = nxt
    levels = [tried[c] for c in sorted(tried)]
    best_level = tried.get(best) if best is not None else None
    return {
        "workload": workload.describe(),
        "levels": levels,
        "max_calls": best or 0,
        "max_tracks": (best or 0) * tracks_per_call,
        "lowest_failing_calls": worst_fail,
        "best_level": best_level,
    }


def first_score(detector: Any, workload: Workload, base: DaemonBenchOptions) -> dict[str, Any]:
    """One call on an idle daemon: how long after its first full window the first score comes,
    and how long after the caller started speaking (the first verdict, in call time)."""
    options = workload.options(base, call_seconds=min(base.call_seconds, 8.0))
    level = asyncio.run(run_level(detector, 1, options))
    return {
        "first_score_lag_seconds": level["client"]["first_score_lag_seconds"]["p50"],
        "first_verdict_seconds": level["client"]["first_verdict_seconds"]["max"],
        "lag_p50_seconds": level["client"]["lag_seconds"]["p50"],
        "level": level,
    }
