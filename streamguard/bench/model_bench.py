"""Detector throughput per batch size: the ceiling on what the scoring engine can deliver.

Each batch size gets warm-up calls (allocator, oneDNN/cuDNN algorithm choice, lazy init), then
timed calls, interleaved across sizes (see :func:`run_model_bench`). Timings go through the full
:class:`~streamguard.model.Detector` call (numpy in, numpy out, device copies included) because
that is what the engine pays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamguard.bench.stats import percentile


@dataclass(frozen=True)
class BatchTiming:
    batch: int
    runs: int
    median_ms: float
    p95_ms: float
    windows_per_second: float  # batch / median time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ModelBenchResult:
    model: str
    threads: int
    window_seconds: float
    hop_seconds: float
    timings: list[BatchTiming]

    @property
    def best(self) -> BatchTiming | None:
        return max(self.timings, key=lambda t: t.windows_per_second, default=None)

    @property
    def realtime_tracks(self) -> float:
        """Tracks one process keeps up with: each needs one window per hop."""
        best = self.best
        return 0.0 if best is None else best.windows_per_second * self.hop_seconds

    def to_dict(self) -> dict[str, Any]:
        best = self.best
        return {
            "model": self.model,
            "threads": self.threads,
            "window_seconds": self.window_seconds,
            "hop_seconds": self.hop_seconds,
            "timings": [t.to_dict() for t in self.timings],
            "best_batch": best.batch if best else None,
            "best_windows_per_second": best.windows_per_second if best else None,
            "realtime_tracks": self.realtime_tracks,
        }


def _sync(detector: Any) -> None:
    # Detector returns numpy (a host copy), so CUDA work is finished when the call returns;
    # this is belt and braces for detectors that might not copy back.
    device = getattr(detector, "device", None)
    if getattr(device, "type", "cpu") == "cuda":
        import torch

        torch.cuda.synchronize(device)


def _noise(batch: int, samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.1 * rng.standard_normal((batch, samples))).astype(np.float32)


def _timed(detector: Any, waves: np.ndarray) -> float:
    started = time.perf_counter()
    detector(waves)
    _sync(detector)
    return time.perf_counter() - started


def run_model_bench(
    detector: Any,
    description: str,
    batch_sizes: Sequence[int],
    *,
    hop_seconds: float = 1.0,
    warmup: int = 2,
    repeats: int = 20,
    min_repeats: int = 3,
    budget_seconds: float = 5.0,
    progress: Callable[[int], None] | None = None,
) -> ModelBenchResult:
    """Time every batch size on noise (speed does not depend on content).

    Timed calls go round-robin over the batch sizes (one call of each per round) until every
    size has ``repeats`` runs or ``budget_seconds`` per size is spent (``min_repeats`` at
    least). On a shared machine the load comes and goes; interleaving spreads it over all
    sizes instead of ruining whichever size happened to run during a burst.
    ``progress(round)`` is called after each round.
    """
    import torch

    sizes = list(dict.fromkeys(batch_sizes))
    waves = {b: _noise(b, detector.window_samples) for b in sizes}
    for b in sizes:
        for _ in range(warmup):
            detector(waves[b])
    _sync(detector)
    times: dict[int, list[float]] = {b: [] for b in sizes}
    deadline = time.perf_counter() + budget_seconds * len(sizes)
    rounds = 0
    while rounds < repeats and (rounds < min_repeats or time.perf_counter() < deadline):
        for b in sizes:
            times[b].append(_timed(detector, waves[b]))
        rounds += 1
        if progress is not None:
            progress(rounds)
    timings = []
    for b in sizes:
        median = percentile(times[b], 50)
        timings.append(
            BatchTiming(
                batch=b,
                runs=len(times[b]),
                median_ms=median * 1000.0,
                p95_ms=percentile(times[b], 95) * 1000.0,
                windows_per_second=b / median,
            )
        )
    return ModelBenchResult(
        model=description,
        threads=torch.get_num_threads(),
        window_seconds=detector.info.window_seconds,
        hop_seconds=hop_seconds,
        timings=timings,
    )


def run_serving_bench(
    runners: Sequence[Any],
    batch_sizes: Sequence[int],
    *,
    budget_seconds: float = 3.0,
    warmup: int = 1,
) -> list[BatchTiming]:
    """Windows/s of the engine's runners working together, one batch each at a time.

    What the daemon's engine can deliver at best: every worker (thread or process) keeps
    scoring batches of ``batch`` windows back to back for ``budget_seconds``. ``median_ms`` is
    the median time of one batch on one worker.
    """

    distinct = list({id(r): r for r in runners}.values())
    workers = list(runners)  # the same runner twice = two threads sharing it (thread workers)
    timings = []
    for b in dict.fromkeys(batch_sizes):
        waves = _noise(b, workers[0].window_samples)
        for runner in distinct:
            for _ in range(warmup):
                runner(waves)
        per_call, counts, wall = _saturate(workers, waves, budget_seconds)
        timings.append(
            BatchTiming(
                batch=b,
                runs=len(per_call),
                median_ms=percentile(per_call, 50) * 1000.0,
                p95_ms=percentile(per_call, 95) * 1000.0,
                windows_per_second=b * sum(counts) / wall,
            )
        )
    return timings


def _saturate(
    workers: Sequence[Any], waves: np.ndarray, budget_seconds: float
) -> tuple[list[float], list[int], float]:
    """Every worker scores ``waves`` back to back (at least once) for ``budget_seconds``."""
    import threading

    per_call: list[float] = []
    counts = [0] * len(workers)
    lock = threading.Lock()
    stop_at = time.perf_counter() + budget_seconds

    def work(i: int, runner: Any) -> None:
        while time.perf_counter() < stop_at or counts[i] == 0:
            elapsed = _timed(runner, waves)
            with lock:
                per_call.append(elapsed)
                counts[i] += 1

    threads = [threading.Thread(target=work, args=(i, r)) for i, r in enumerate(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return per_call, counts, time.perf_counter() - started


#: The paths the backend matrix compares: (label, serving backend, front end in the graph).
PATHS = (
    ("eager fp32", "eager", None),
    ("onnx fp32, front end in torch", "onnxruntime", False),
    ("onnx fp32, front end in graph", "onnxruntime", True),
    ("onnx int8, front end in torch", "onnxruntime-int8", False),
    ("onnx int8, front end in graph", "onnxruntime-int8", True),
)


def run_backend_matrix(
    module: Any,
    window_samples: int,
    *,
    batch: int = 16,
    threads: int = 1,
    rounds: int = 10,
    paths: Sequence[tuple[str, str, bool | None]] = PATHS,
) -> list[dict[str, Any]]:
    """Eager vs ONNX Runtime fp32 vs int8, each with the log-mel in torch or in the graph.

    Every path is built (ONNX builds come from the cache after the first run), checked for
    score parity against eager fp32 on the serving check windows (real speech from the demo
    call, noise, silence), then all are timed on the same ``batch`` of those real windows in
    interleaved rounds (one call of each per round: a burst of load on a shared host hits
    every path, not one) with ``threads`` CPU threads each. Paths that cannot be built here are
    reported with their reason.
    """
    import torch

    from streamguard.model.probe import time_candidates
    from streamguard.model.serving import (
        BackendUnavailable,
        build_onnx_runner,
        check_windows,
        parity,
        reference_probabilities,
    )

    waves = torch.from_numpy(check_windows(window_samples))
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        expected = reference_probabilities(module, waves)
        runners: dict[str, Any] = {}
        rows: dict[str, dict[str, Any]] = {}
        for label, backend, in_graph in paths:
            row: dict[str, Any] = {"path": label, "backend": backend, "front_in_graph": in_graph}
            rows[label] = row
            if backend == "eager":
                runners[label] = module
                row["parity_max_abs_diff"] = 0.0
                continue
            try:
                runner = build_onnx_runner(
                    module,
                    window_samples,
                    int8=backend.endswith("int8"),
                    threads=threads,
                    in_graph_front=bool(in_graph),
                )
            except BackendUnavailable as exc:
                row["error"] = str(exc)
                continue
            row["parity_max_abs_diff"] = parity(expected, runner, waves).max_abs_diff
            runners[label] = runner
        rows_idx = np.arange(batch) % waves.shape[0]
        x = waves[rows_idx].contiguous()
        with torch.inference_mode():
            seconds = time_candidates(runners, x, rounds=rounds)
    finally:
        torch.set_num_threads(saved)
    eager = percentile(seconds.get("eager fp32", ()), 50)
    out = []
    for label, row in rows.items():
        if label in seconds:
            per_window = percentile(seconds[label], 50)
            row["median_ms"] = per_window * batch * 1000.0
            row["windows_per_second"] = 1.0 / per_window
            row["vs_eager"] = eager / per_window
        row["batch"], row["threads"] = batch, threads
        out.append(row)
    return out
