"""``streamguard bench``: detector throughput (``model``) and live-call capacity (``daemon``).

Figures are printed (a table, or ``--json``), never asserted: they belong to the machine they
were measured on, which is printed with them. Progress goes to stderr so ``--json`` stays
clean on stdout. See benchmarks/README.md for recorded figures and how to read them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "measure detector throughput (model) and live-call capacity of a daemon (daemon)"

SUITES = ("model", "daemon", "all", "soak", "events")


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
        help="model = detector windows/s per batch size; daemon = a real daemon under N "
        "concurrent real-time calls; all = both (default); soak = a daemon under --calls "
        "churning calls for --minutes, watching memory, file descriptors, drops and lag; "
        "events = what the event log backends sustain and the latency they add (no model)",
    )
    m = parser.add_argument_group("model choice (both suites)")
    m.add_argument(
        "--model",
        metavar="SPEC",
        help="model dir, .pth or hub id (default: the bundled starter model if present, else "
        "--arch with random weights)",
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
        "--compile",
        action="store_true",
        help="torch.compile the network first (slow to compile; mostly useful on CUDA)",
    )
    m.add_argument(
        "--threads", type=int, help="torch intra-op threads (default: torch's own choice)"
    )
    b = parser.add_argument_group("model suite")
    b.add_argument(
        "--batch-sizes",
        type=_int_list,
        default=[1, 2, 4, 8, 16, 32],
        help="comma-separated batch sizes (default: 1,2,4,8,16,32)",
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
        default=5.0,
        help="seconds per batch size, on average (at least 3 rounds; default: 5)",
    )
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
        default=20.0,
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
        default="twilio",
        help="feed protocol of the simulated calls (default: twilio)",
    )
    d.add_argument("--max-batch", type=int, default=16, help="engine max batch (daemon default)")
    d.add_argument(
        "--max-wait-ms", type=float, default=20.0, help="engine batch wait (daemon default)"
    )
    d.add_argument(
        "--queue-size", type=int, default=256, help="engine queue bound (daemon default)"
    )
    d.add_argument("--hop", type=float, default=1.0, help="window hop in seconds")
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
    parser.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    parser.add_argument("--quiet", action="store_true", help="no progress bars on stderr")


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
    from streamguard.bench.report import format_machine, machine
    from streamguard.errors import ConfigError

    if args.suite == "events":
        return _events_suite(args)
    if args.speed <= 0 or args.seconds <= 0 or args.hop <= 0:
        raise ConfigError("--speed, --seconds and --hop must be > 0")
    if args.repeats < 1 or args.warmup < 0 or args.budget <= 0:
        raise ConfigError("--repeats must be >= 1, --warmup >= 0 and --budget > 0")
    if args.suite in ("daemon", "all", "soak"):
        if args.file is not None and not args.file.is_file():
            raise ConfigError(f"--file {args.file}: no such file")
        args.file = args.file or default_call_file()
        if args.file is None:
            raise ConfigError("no speech file to stream; pass --file PATH")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
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
    if args.suite in ("daemon", "all"):
        out["daemon"] = _daemon_suite(detector, description, args)
    if args.suite == "soak":
        out["soak"] = _soak_suite(detector, description, args)
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
    from streamguard.bench.model_bench import run_model_bench
    from streamguard.bench.report import format_model

    with _progress(args.repeats, "rounds", args.quiet) as bar:
        result = run_model_bench(
            detector,
            description,
            args.batch_sizes,
            hop_seconds=args.hop,
            warmup=args.warmup,
            repeats=args.repeats,
            budget_seconds=args.budget,
            progress=lambda _round: bar.update(1),
        ).to_dict()
    if not args.json:
        print("\n== model ==\n" + format_model(result), flush=True)
    return result


def _daemon_suite(detector, description: str, args: argparse.Namespace) -> dict:
    import asyncio

    from streamguard.bench.daemon_bench import (
        DaemonBenchOptions,
        RecordingDetector,
        keeps_up,
        run_level,
    )
    from streamguard.bench.report import format_daemon

    options = DaemonBenchOptions(
        file=str(args.file),
        protocol=args.protocol,
        call_seconds=args.seconds * args.speed,
        speed=args.speed,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue_size,
        hop_seconds=args.hop,
        deadline_seconds=args.seconds + 60.0,
    )
    recording = RecordingDetector(detector)
    levels = []
    for calls in args.calls:
        expected = int(calls * (args.seconds * args.speed - 3.0) / args.hop)
        with _progress(max(expected, 1), f"{calls} calls: windows", args.quiet) as bar:

            def update(scored: int, bar=bar) -> None:
                bar.update(scored - bar.n)

            levels.append(asyncio.run(run_level(recording, calls, options, progress=update)))
    ok = [keeps_up(level, args.hop) for level in levels]
    result = {
        "model": description,
        "file": str(args.file),
        "protocol": args.protocol,
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
            f"{args.file.name} looped, {args.seconds:g} s at {args.speed:g}x, engine max_batch "
            f"{args.max_batch}, max_wait {args.max_wait_ms:g} ms, hop {args.hop:g} s\n"
            + format_daemon(levels, ok, args.hop),
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
