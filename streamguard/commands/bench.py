"""``streamguard bench``: detector throughput, ingest cost and live-call capacity.

Suites: ``model`` (the plain fp32 detector and the serving runners, windows/s per batch),
``ingest`` (CPU per track of the protocol cores + track chain, no model), ``daemon`` (a real
daemon at fixed ``--calls`` levels) and ``capacity`` (the largest real-time level, searched, for
continuous speech and for the demo call, plus first-score latency and memory). ``all`` (the
default) runs model, ingest and capacity and prints the issue's targets in one summary.

Figures are printed (a table, or ``--json``), never asserted: they belong to the machine they
were measured on, which is printed with them. Progress goes to stderr so ``--json`` stays
clean on stdout. See benchmarks/README.md for recorded figures and how to read them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streamguard.backends import BACKENDS

HELP = "measure detector throughput, ingest cost and live-call capacity of a daemon"

SUITES = ("model", "ingest", "daemon", "capacity", "soak", "events", "all")
BACKEND_CHOICES = BACKENDS


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "suite",
        nargs="?",
        choices=SUITES,
        default="all",
        help="model = detector windows/s per batch size; ingest = CPU per track without the "
        "model; daemon = a real daemon under --calls concurrent real-time calls; capacity = the "
        "largest real-time level, searched; all = model + ingest + capacity (default); soak = "
        "a daemon under --calls churning calls for --minutes, watching memory, file "
        "descriptors, drops and lag; events = what the event log backends sustain and the "
        "latency they add (no model)",
    )
    _model_choice_arguments(parser)
    _model_suite_arguments(parser)
    _daemon_suite_arguments(parser)
    _soak_suite_arguments(parser)
    _events_suite_arguments(parser)
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars on stderr")


def _model_choice_arguments(parser: argparse.ArgumentParser) -> None:
    """Which detector and how it is served (every suite that scores)."""
    m = parser.add_argument_group("model choice (both suites)")
    m.add_argument(
        "--model",
        metavar="SPEC",
        help="model dir, .pth, hub id or bundled tier (default: the bundled default tier, "
        "accurate or starter, if present, else --arch with random weights)",
    )
    m.add_argument(
        "--arch",
        default="koyelog-resnet",
        help="architecture built with random weights when no model is given (default: %(default)s)",
    )
    m.add_argument("--params", help="JSON object of architecture params (implies a random build)")
    m.add_argument(
        "--tiny", action="store_true", help="the test-suite's tiny koyelog-resnet (random weights)"
    )
    m.add_argument("--device", default="auto", help="auto | cpu | cuda[:N] (default: %(default)s)")
    m.add_argument(
        "--half",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fp16 weights and inputs (CUDA only; default: on for CUDA, as the daemon does)",
    )
    m.add_argument(
        "--precision",
        choices=("fp32", "fp16", "bf16"),
        help="CUDA weights and inputs (overrides --half; the CPU always runs fp32)",
    )
    m.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the network first (slow to compile; mostly useful on CUDA)",
    )
    m.add_argument(
        "--threads",
        type=int,
        help="CPU threads per inference worker (default: cores / workers; torch's own choice "
        "with one worker)",
    )
    m.add_argument(
        "--backend",
        choices=BACKEND_CHOICES,
        default="auto",
        help="serving backend, as [model] backend (default: %(default)s)",
    )
    m.add_argument(
        "--onnx-front",
        choices=("graph", "torch"),
        default="graph",
        help="ONNX backends: the log-mel inside the exported graph (as served) or in torch "
        "before it (as before issue #20), to compare the two (thread workers; default: "
        "%(default)s)",
    )
    m.add_argument(
        "--worker",
        choices=("thread", "process"),
        default="thread",
        help="inference beside the event loop or in worker processes, as [model] worker "
        "(default: %(default)s)",
    )
    m.add_argument(
        "--workers", type=int, default=2, help="inference workers, as [model] workers (default: 2)"
    )


def _model_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The model suite: batch sizes, repeats, the runners compared."""
    b = parser.add_argument_group("model suite")
    b.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=[1, 8, 16, 32],
        help="comma-separated batch sizes (default: 1,8,16,32)",
    )
    b.add_argument(
        "--warmup", type=int, default=2, help="untimed calls per batch size (default: 2)"
    )
    b.add_argument(
        "--repeats",
        type=int,
        default=20,
        help="timed rounds (one call per batch size each; max; default: 20)",
    )
    b.add_argument(
        "--budget",
        type=float,
        default=3.0,
        help="seconds per batch size, on average (at least 3 rounds; default: 3)",
    )


def _daemon_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The daemon and capacity suites: calls, audio, protocol and engine settings."""
    d = parser.add_argument_group("daemon suite")
    d.add_argument(
        "--calls",
        type=_int_list,
        default=[8],
        help="concurrent calls; a list (1,4,16,32) runs each level to find the knee",
    )
    d.add_argument(
        "--seconds",
        type=float,
        default=16.0,
        help="wall-clock length of each level's calls (default: %(default)s)",
    )
    d.add_argument(
        "--speed", type=float, default=1.0, help="playback speed of each call (1 = real time)"
    )
    d.add_argument(
        "--file",
        type=Path,
        help="speech to stream, looped to length (default: the bundled demo call, else "
        "tests/fixtures/speech_10s_8k.wav)",
    )
    d.add_argument(
        "--protocol",
        choices=("twilio", "native", "l16"),
        default="native",
        help="feed protocol of the simulated calls (default: native; the capacity suite's demo "
        "workload always uses twilio, as `streamguard demo` does)",
    )
    d.add_argument(
        "--chunk-ms",
        type=int,
        default=100,
        help="audio per frame for native/l16 (Twilio always sends 20 ms; default: 100)",
    )
    d.add_argument(
        "--mix",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="mix the file's channels into one track: the demo call's turns become one "
        "track of continuous speech (default: on; --no-mix streams each channel as a track)",
    )
    d.add_argument(
        "--coalesce-ms",
        type=int,
        default=100,
        help="the daemon's [track] coalesce_ms (default: %(default)s)",
    )
    d.add_argument(
        "--adaptive-stride",
        type=int,
        default=1,
        help="the daemon's [track] adaptive_stride (default: %(default)s: every window scored)",
    )
    d.add_argument(
        "--workloads",
        default="continuous,demo",
        help="capacity suite: continuous (one track of continuous speech per call) and/or demo "
        "(the stereo demo call over Twilio: two turn-taking tracks) (default: %(default)s)",
    )
    d.add_argument(
        "--levels",
        type=int,
        default=5,
        help="capacity suite: most levels tried per workload (default: 5)",
    )
    d.add_argument("--max-batch", type=int, default=16, help="engine max batch (daemon default)")
    d.add_argument(
        "--max-wait-ms", type=float, default=20.0, help="engine batch wait (daemon default)"
    )
    d.add_argument(
        "--queue-size", type=int, default=256, help="engine queue bound (daemon default)"
    )
    d.add_argument("--hop", type=float, default=1.0, help="window hop in seconds")


def _soak_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The soak suite."""
    k = parser.add_argument_group("soak suite (--calls: the first value, --file, --protocol)")
    k.add_argument("--minutes", type=float, default=30.0, help="soak length (default: %(default)s)")
    k.add_argument(
        "--call-seconds",
        default="20,60",
        help="MIN,MAX length of each churning call, drawn uniformly (default: %(default)s)",
    )
    k.add_argument(
        "--sample-seconds",
        type=float,
        default=10.0,
        help="seconds between memory/fd samples (default: %(default)s)",
    )
    k.add_argument(
        "--warmup-minutes",
        type=float,
        default=2.0,
        help="growth is measured from here (at most a fifth of the soak; default: %(default)s)",
    )


def _events_suite_arguments(parser: argparse.ArgumentParser) -> None:
    """The events suite: backends, rates, Redis."""
    e = parser.add_argument_group("events suite")
    e.add_argument(
        "--backends",
        default="memory,sqlite,redis",
        help="comma-separated event backends to measure (default: %(default)s; redis starts "
        "a throwaway redis-server unless --redis-url is given)",
    )
    e.add_argument("--redis-url", help="an existing Redis to measure against")
    e.add_argument(
        "--events", type=int, default=20000, help="events in the sustained burst (default: 20000)"
    )
    e.add_argument(
        "--rate",
        type=float,
        help="paced publish rate, events/s (default: 10x the rate of 120 concurrent calls)",
    )


def default_call_file() -> Path | None:
    from importlib import resources

    candidates = [
        Path(str(resources.files("streamguard") / "demo" / "demo_call.wav")),
        Path(__file__).resolve().parents[2] / "tests" / "fixtures" / "speech_10s_8k.wav",
    ]
    return next((p for p in candidates if p.is_file()), None)


def run(args: argparse.Namespace) -> int:
    import json

    from streamguard.bench.models import ModelChoice, load_bench_detector
    from streamguard.bench.report import format_machine, format_targets, machine
    from streamguard.errors import ConfigError

    if args.suite == "events":
        return _events_suite(args)
    from streamguard.model import serving

    serving.FRONT_IN_GRAPH = args.onnx_front == "graph"
    if args.speed <= 0 or args.seconds <= 0 or args.hop <= 0:
        raise ConfigError("--speed, --seconds and --hop must be > 0")
    if args.repeats < 1 or args.warmup < 0 or args.budget <= 0:
        raise ConfigError("--repeats must be >= 1, --warmup >= 0 and --budget > 0")
    if args.workers < 1 or args.levels < 1 or args.chunk_ms < 1 or args.budget <= 0:
        raise ConfigError("--workers, --levels and --chunk-ms must be >= 1")
    if args.suite != "model":
        if args.file is not None and not args.file.is_file():
            raise ConfigError(f"--file {args.file}: no such file")
        args.file = args.file or default_call_file()
        if args.file is None:
            raise ConfigError("no speech file to stream; pass --file PATH")
    from streamguard.scoring.runners import threads_per_worker

    threads = threads_per_worker(args.threads, args.workers)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from streamguard.logs import configure_logging

    configure_logging("warning", "console")
    detector, description = load_bench_detector(ModelChoice.from_args(args))
    if args.compile:
        _compile(detector)
    host = machine()
    out: dict = {"machine": host}
    if not args.json:
        print(format_machine(host), flush=True)
    if args.suite in ("model", "all"):
        out["model"] = _model_suite(detector, description, args)
    if args.suite in ("ingest", "all"):
        out["ingest"] = _ingest_suite(args)
    if args.suite == "daemon":
        out["daemon"] = _daemon_suite(detector, description, args)
    if args.suite == "soak":
        out["soak"] = _soak_suite(detector, description, args)
    if args.suite in ("capacity", "all"):
        out["capacity"] = _capacity_suite(detector, description, args, out.get("model"))
    if args.suite == "all":
        out["adaptive"] = _adaptive_suite(detector, args)
    if args.suite == "all":
        out["targets"] = _targets(out)
        if out["targets"] and not args.json:
            text = format_targets(out["targets"])
            print("\n== targets (issues #10, #20) ==\n" + text, flush=True)
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


def _call_seconds(text: str) -> tuple[float, float]:
    from streamguard.errors import ConfigError

    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise ConfigError(f"--call-seconds: expected MIN,MAX seconds, got {text!r}") from None
    if not 1.0 <= low <= high:
        raise ConfigError("--call-seconds: need 1 <= MIN <= MAX")
    return low, high


def _soak_suite(detector, description: str, args: argparse.Namespace) -> dict:
    import asyncio

    from streamguard.bench.soak import SoakOptions, format_soak, run_soak
    from streamguard.errors import ConfigError

    if args.minutes <= 0 or args.sample_seconds <= 0 or args.warmup_minutes < 0:
        raise ConfigError("--minutes and --sample-seconds must be > 0, --warmup-minutes >= 0")
    low, high = _call_seconds(args.call_seconds)
    options = SoakOptions(
        file=str(args.file),
        calls=args.calls[0],
        minutes=args.minutes,
        protocol=args.protocol,
        min_call_seconds=low,
        max_call_seconds=high,
        sample_seconds=args.sample_seconds,
        warmup_minutes=args.warmup_minutes,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
    )
    total = max(1, int(args.minutes * 60 / args.sample_seconds))
    with _progress(total, "soak samples", args.quiet) as bar:

        def update(sample) -> None:
            bar.update(1)
            bar.set_postfix(rss=f"{sample.rss_mib:.0f}MiB", fds=sample.fds, calls=sample.calls_open)

        result = asyncio.run(run_soak(detector, options, progress=update))
    result["model"] = description
    if not args.json:
        print(f"\n== soak ==\nmodel: {description}\n" + format_soak(result), flush=True)
    return result


def _compile(detector) -> None:
    import torch

    # On CUDA "reduce-overhead" captures CUDA graphs (one replay per batch shape), which is
    # where compile pays off; on CPU the default mode is the only sensible one.
    mode = "reduce-overhead" if detector.device.type == "cuda" else None
    detector.module = torch.compile(detector.module, mode=mode, dynamic=False)


def _progress(total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, file=sys.stderr, disable=quiet, leave=False)


def _model_suite(detector, description: str, args: argparse.Namespace) -> dict:
    """The plain fp32 eager detector (the capacity ratio's denominator, batch 16 always), then
    the serving runners the daemon would build, working together."""
    from streamguard.bench.model_bench import run_serving_bench
    from streamguard.bench.report import format_model
    from streamguard.scoring.runners import build_runners, close_runners

    result = _reference(detector, description, args, sorted(set(args.batch_sizes) | {16}))
    if detector.device.type == "cpu" and not detector.half:
        result["paths"] = _paths(detector, args)
    if not args.quiet:
        print("building the serving runners ...", file=sys.stderr, flush=True)
    runners = build_runners(
        detector,
        backend=args.backend,
        worker=args.worker,
        workers=args.workers,
        threads=args.threads,
        max_batch=max(args.max_batch, *args.batch_sizes),
    )
    try:
        serving = run_serving_bench(runners, args.batch_sizes, budget_seconds=args.budget)
    finally:
        close_runners(runners)
    best = max(serving, key=lambda t: t.windows_per_second)
    result["serving"] = {
        "backend": runners[0].backend,
        "parity_max_abs_diff": getattr(runners[0], "backend_parity", None),
        "probe": getattr(runners[0], "backend_probe", None),
        "worker": args.worker,
        "workers": args.workers,
        "threads_per_worker": _threads(args),
        "timings": [t.to_dict() for t in serving],
        "best_batch": best.batch,
        "best_windows_per_second": best.windows_per_second,
    }
    if not args.json:
        print("\n== model ==\n" + format_model(result), flush=True)
    return result


def _paths(detector, args: argparse.Namespace) -> list[dict]:
    """Eager vs ONNX Runtime fp32 vs int8, log-mel in torch or in the graph (issue #20): one
    thread each, batch 16, interleaved rounds."""
    from streamguard.bench.model_bench import run_backend_matrix
    from streamguard.model.serving import onnxruntime_available

    if not onnxruntime_available():
        return []
    if not args.quiet:
        print("precision paths (eager / ONNX fp32 / int8) ...", file=sys.stderr, flush=True)
    return run_backend_matrix(
        detector.module, detector.window_samples, batch=16, threads=1, rounds=max(5, args.repeats)
    )


def _reference(detector, description: str, args: argparse.Namespace, sizes: list[int]) -> dict:
    """The plain fp32 eager detector, windows/s per batch size: the capacity ratio's
    denominator (batch 16)."""
    from streamguard.bench.model_bench import run_model_bench
    from streamguard.model import Detector

    module = detector.module
    if detector.half:  # the reference is fp32: never convert the served module in place
        import copy

        module = copy.deepcopy(module).float()
    plain = Detector(module, detector.info, device=str(detector.device))
    # The reference is the plain detector at its best: torch's default threads (all cores) and
    # one thread (which holds up better on a busy shared host) both run; the faster one counts,
    # so the capacity ratio is never flattered by a collapsed reference.
    import os

    import torch

    serving_threads = torch.get_num_threads()
    results = []
    for threads in dict.fromkeys([os.cpu_count() or 1, 1]):
        torch.set_num_threads(threads)
        with _progress(args.repeats, f"eager fp32, {threads} thread(s)", args.quiet) as bar:
            results.append(
                run_model_bench(
                    plain,
                    description,
                    sizes,
                    hop_seconds=args.hop,
                    warmup=args.warmup,
                    repeats=args.repeats,
                    budget_seconds=args.budget,
                    progress=lambda _round, bar=bar: bar.update(1),
                ).to_dict()
            )
    torch.set_num_threads(serving_threads)

    def at16(res: dict) -> float:
        return next(t["windows_per_second"] for t in res["timings"] if t["batch"] == 16)

    result = max(results, key=at16)
    result["reference_batch16_windows_per_second"] = at16(result)
    result["reference_by_threads"] = {r["threads"]: at16(r) for r in results}
    return result


def _threads(args: argparse.Namespace) -> int | None:
    from streamguard.scoring.runners import threads_per_worker

    return threads_per_worker(args.threads, args.workers)


def _ingest_suite(args: argparse.Namespace) -> dict:
    from streamguard.bench.ingest_bench import DEFAULT_FORMATS, run_ingest_bench
    from streamguard.bench.report import format_ingest

    results = []
    for protocol, frame_ms in DEFAULT_FORMATS:
        for mix in (True, False):
            if not mix and protocol == "native" and frame_ms != 100:
                continue
            results.append(
                {
                    **run_ingest_bench(
                        str(args.file), protocol=protocol, frame_ms=frame_ms, mix=mix
                    ).to_dict(),
                    "workload": "continuous" if mix else "demo",
                }
            )
    if not args.json:
        print("\n== ingest (no model) ==\n" + format_ingest(results), flush=True)
    return {"file": str(args.file), "results": results}


def _options(args: argparse.Namespace):
    from streamguard.bench.daemon_bench import DaemonBenchOptions

    return DaemonBenchOptions(
        file=str(args.file),
        protocol=args.protocol,
        call_seconds=args.seconds * args.speed,
        speed=args.speed,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        hop_seconds=args.hop,
        deadline_seconds=args.seconds + 60.0,
        chunk_ms=args.chunk_ms,
        mix=args.mix,
        backend=args.backend,
        worker=args.worker,
        workers=args.workers,
        threads=args.threads,
        coalesce_ms=args.coalesce_ms,
        adaptive_stride=args.adaptive_stride,
    )


def _serve_once(detector, args: argparse.Namespace):
    """Thread workers share one served detector: build its backend once for every level."""
    if args.worker != "thread":
        return detector
    from streamguard.scoring.runners import build_runners

    return build_runners(detector, backend=args.backend, threads=_threads(args))[0]


def _capacity_suite(detector, description: str, args, model: dict | None) -> dict:
    from streamguard.bench import capacity
    from streamguard.bench.report import format_capacity
    from streamguard.errors import ConfigError

    # capacity alone: the plain fp32 reference in this run too (batch 16)
    reference = _reference(detector, description, args, [16]) if model is None else model
    ref = reference["reference_batch16_windows_per_second"]
    detector = _serve_once(detector, args)
    base = _options(args)
    if model is None:  # and a quick estimate of what the runners carry
        from streamguard.bench.model_bench import run_serving_bench
        from streamguard.scoring.runners import build_runners, close_runners

        runners = build_runners(
            detector,
            backend=args.backend,
            worker=args.worker,
            workers=args.workers,
            threads=args.threads,
            max_batch=args.max_batch,
        )
        try:
            (timing,) = run_serving_bench(runners, [args.max_batch], budget_seconds=args.budget)
        finally:
            close_runners(runners)
        serving = timing.windows_per_second
    else:
        serving = model["serving"]["best_windows_per_second"]
    estimate = serving * args.hop
    workloads = [
        capacity.Workload("continuous", str(args.file), args.protocol, args.chunk_ms, mix=True),
        capacity.Workload("demo", str(args.file), "twilio", 20, mix=False),
    ]
    wanted = {w.strip() for w in args.workloads.split(",") if w.strip()}
    if not wanted or wanted - {w.name for w in workloads}:
        raise ConfigError(f"--workloads: expected continuous and/or demo, got {args.workloads!r}")
    workloads = [w for w in workloads if w.name in wanted]
    out: dict = {
        "model": description,
        "backend": detector.backend,
        "backend_probe": getattr(detector, "backend_probe", None),
        "estimate_tracks": estimate,
        "reference_batch16_windows_per_second": ref,
        "serving_windows_per_second": serving,
        "workloads": {},
    }
    for workload in workloads:
        tracks = 1 if workload.mix else _channels(workload.file)
        if not args.quiet:
            print(f"capacity: {workload.describe()}", file=sys.stderr, flush=True)
        # The demo call's tracks are silent half the time: the VAD skips those windows, so a
        # track costs about half a window per hop.
        share = 1.0 if workload.mix else 0.5
        out["workloads"][workload.name] = capacity.search(
            detector,
            workload,
            base,
            estimate_tracks=estimate / share,
            tracks_per_call=tracks,
            max_levels=args.levels,
            progress=None if args.quiet else lambda m: print(m, file=sys.stderr, flush=True),
        )
    out["first_score"] = capacity.first_score(detector, workloads[0], base)
    if not args.json:
        print("\n== capacity ==\n" + format_capacity(out, args.hop), flush=True)
    return out


def _adaptive_suite(detector, args: argparse.Namespace) -> dict:
    from streamguard.bench.adaptive_bench import run_adaptive_bench
    from streamguard.bench.report import format_adaptive

    result = run_adaptive_bench(detector, str(args.file))
    if not args.json:
        print("\n== adaptive scoring ([track] adaptive_stride) ==\n" + format_adaptive(result))
    return result


def _channels(path: str) -> int:
    from streamguard.bench.daemon_bench import _tracks_per_call

    return _tracks_per_call(path, "twilio")


def _targets(out: dict) -> dict:
    """The issue's targets, each with its figure (ratios within this run)."""
    model, cap, ingest = out["model"], out["capacity"], out["ingest"]
    if "continuous" not in cap["workloads"] or "demo" not in cap["workloads"]:
        return {}
    ref = model["reference_batch16_windows_per_second"]
    serving = model["serving"]["best_windows_per_second"]
    cont = cap["workloads"]["continuous"]
    demo = cap["workloads"]["demo"]
    hop = model["hop_seconds"]
    ingest_8k = max(
        r["core_percent_per_track"] for r in ingest["results"] if r["workload"] == "continuous"
    )
    best = cont["best_level"] or {}
    return {
        "capacity_ratio": {"value": cont["max_calls"] / ref, "target": ">= 2.0"},
        "daemon_efficiency": {"value": cont["max_tracks"] * hop / serving, "target": ">= 0.8"},
        "ingest_core_percent_per_track": {"value": ingest_8k, "target": "<= 0.5"},
        "first_score_seconds": {
            "value": cap["first_score"]["first_score_lag_seconds"],
            "target": "<= 0.5",
        },
        "first_verdict_seconds": {
            "value": cap["first_score"].get("first_verdict_seconds"),
            "target": "<= 5",
        },
        "rss_mib_per_track": {"value": best.get("rss_per_track_mib"), "target": "<= 0.48"},
        "base_rss_mib": {"value": best.get("base_rss_mib"), "target": "report"},
        "continuous_calls": cont["max_calls"],
        "demo_calls": demo["max_calls"],
        "demo_tracks": demo["max_tracks"],
        "reference_windows_per_second": ref,
        "serving_windows_per_second": serving,
        "serving_backend": model["serving"]["backend"],
    }


def _daemon_suite(detector, description: str, args: argparse.Namespace) -> dict:
    import asyncio

    from streamguard.bench.daemon_bench import keeps_up, run_level
    from streamguard.bench.report import format_daemon

    detector = _serve_once(detector, args)
    options = _options(args)
    levels = []
    for calls in args.calls:
        expected = int(calls * (args.seconds * args.speed - 3.0) / args.hop)
        with _progress(max(expected, 1), f"{calls} calls: windows", args.quiet) as bar:

            def update(scored: int, bar=bar) -> None:
                bar.update(scored - bar.n)

            levels.append(asyncio.run(run_level(detector, calls, options, progress=update)))
    ok = [keeps_up(level, args.hop) for level in levels]
    result = {
        "model": description,
        "file": str(args.file),
        "protocol": args.protocol,
        "chunk_ms": args.chunk_ms,
        "mix": args.mix,
        "seconds": args.seconds,
        "speed": args.speed,
        "max_batch": args.max_batch,
        "max_wait_ms": args.max_wait_ms,
        "hop_seconds": args.hop,
        "levels": [{**level, "keeps_up": good} for level, good in zip(levels, ok, strict=True)],
    }
    if not args.json:
        print(
            f"\n== daemon ==\nmodel: {description}\n{args.protocol} calls of "
            f"{'a mono mix of ' if args.mix else ''}{args.file.name} looped, {args.seconds:g} s "
            f"at {args.speed:g}x, engine max_batch {args.max_batch}, max_wait "
            f"{args.max_wait_ms:g} ms, hop {args.hop:g} s\n" + format_daemon(levels, ok, args.hop),
            flush=True,
        )
    return result


def _events_suite(args: argparse.Namespace) -> int:
    import json

    from streamguard.bench.events_bench import format_events, run_events_bench
    from streamguard.bench.report import format_machine, machine
    from streamguard.errors import ConfigError
    from streamguard.logs import configure_logging

    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - {"memory", "sqlite", "redis"})
    if unknown or not backends:
        raise ConfigError(f"--backends: unknown backend(s) {', '.join(unknown) or '(none)'}")
    if args.events < 1000 or (args.rate is not None and args.rate <= 0):
        raise ConfigError("--events must be >= 1000 and --rate > 0")
    configure_logging("warning", "console")
    host = machine()
    if not args.json:
        print(format_machine(host), flush=True)

    def progress(what: str) -> None:
        if not args.quiet and not args.json:
            print(f"  {what}...", file=sys.stderr, flush=True)

    report = run_events_bench(
        backends,
        burst_events=args.events,
        paced_rate=args.rate,
        paced_seconds=args.seconds if args.seconds != 20.0 else 10.0,
        redis_url=args.redis_url,
        progress=progress,
    )
    if args.json:
        json.dump({"machine": host, "events": report}, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print("\n== events ==\n" + format_events(report), flush=True)
    return 0
