"""``streamguard evaluate``: score labelled audio the way the daemon does and report EER, AUC and
friends per window, per clip and per call (the alert policy), per subset (source, attack, family,
condition) and pooled, at the model's own threshold (or --threshold).

Every clip runs whole through the daemon's per-track chain (resampler, VAD, windower; the
``[track]`` settings of ``--config``, or the defaults) and the same batching as the live engine;
the call-level figures replay each clip's windows through the ``[smoothing]`` alert policy.

``--data`` takes a manifest CSV, an ASVspoof 2019/2021 protocol, an In-the-Wild meta.csv or a
folder labelled by path keywords; the format is detected unless ``--format`` says it.
"""

from __future__ import annotations

import argparse

HELP = "evaluate a model on labelled audio (EER, AUC, per-subset table, plots)"

FORMATS = ("manifest", "asvspoof2019", "asvspoof2021", "itw", "folder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model spec (default: the bundled model)")
    parser.add_argument(
        "--data",
        required=True,
        action="append",
        metavar="PATH",
        help="labelled data (repeatable): manifest CSV, protocol, meta.csv or folder",
    )
    parser.add_argument("--format", choices=FORMATS, help="data format (default: detect)")
    parser.add_argument("--audio-root", help="folder holding flac/ for ASVspoof protocols")
    parser.add_argument(
        "--threshold", type=float, help="decision threshold (default: the model's own)"
    )
    parser.add_argument(
        "--out",
        metavar="DIR",
        help="write metrics.json, metrics.txt, clips.csv, windows.csv and PNGs (scores.png, "
        "roc_det.png, roc_det_clips.png, delays.png) here",
    )
    parser.add_argument(
        "--config",
        metavar="PATH",
        help="daemon config whose [track], [smoothing] and [verdict] tables to use (default: "
        "the defaults)",
    )
    parser.add_argument(
        "--hop", type=float, metavar="S", help="seconds between windows (default: [track])"
    )
    parser.add_argument(
        "--min-speech",
        type=float,
        metavar="S",
        help="VAD speech a window needs to be scored (default: [track])",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="clips per model call (default: %(default)s)"
    )
    parser.add_argument("--device", default="auto", help="cpu, cuda or auto (default)")
    parser.add_argument("--limit", type=int, help="score only the first N clips of each source")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import json

    from streamguard.errors import ConfigError
    from streamguard.model import load_detector
    from streamguard.training.data import ReadResult, read_data, summarise_problems
    from streamguard.training.evaluate import evaluate_detector, format_chain_report

    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise ConfigError(f"--threshold must be in [0, 1], got {args.threshold}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.limit is not None and args.limit < 1:  # 0 meant "all", -1 "all but the last"
        raise ConfigError(f"--limit must be at least 1, got {args.limit}")
    if args.out is not None:  # fail now, not after scoring everything
        from pathlib import Path

        try:
            Path(args.out).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {args.out}: {exc.strerror or exc}") from None
    data = ReadResult()
    for path in args.data:
        got = read_data(path, args.format, audio_root=args.audio_root)
        if args.limit:
            got.examples = got.examples[: args.limit]
        data.extend(got)
    if not data.examples:
        raise ConfigError(
            "no usable clips in --data"
            + (f" ({len(data.problems)} rows skipped: {data.problems[0]})" if data.problems else "")
        )
    track, smoothing, verdict = _policy(args)
    detector = load_detector(args.model, device=args.device)
    report, failed = evaluate_detector(
        detector,
        data.examples,
        threshold=args.threshold,
        out_dir=args.out,
        track=track,
        smoothing=smoothing,
        min_speech_seconds=verdict.min_speech_seconds,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    problems = data.problems + failed
    if args.json:
        print(json.dumps(dict(report, skipped=[str(p) for p in problems]), indent=2))
    else:
        print(f"model {detector.info.name} ({detector.info.architecture})")
        print(format_chain_report(report))
        if problems:
            print(summarise_problems(problems))
        if args.out:
            print(f"wrote {args.out}/metrics.json, metrics.txt, clips.csv, windows.csv and plots")
    return 0


def _policy(args: argparse.Namespace):
    """The daemon's ``[track]``, ``[smoothing]`` and ``[verdict]`` (``--config`` or defaults),
    with the flags."""
    from pydantic import ValidationError

    from streamguard.config import load_config
    from streamguard.errors import ConfigError

    settings = load_config(args.config) if args.config else load_config(None)
    changes = {}
    if args.hop is not None:
        changes["hop_seconds"] = args.hop
    if args.min_speech is not None:
        changes["min_speech_seconds"] = args.min_speech
    try:
        track = type(settings.track).model_validate({**settings.track.model_dump(), **changes})
    except ValidationError as exc:
        raise ConfigError(f"--hop/--min-speech: {exc.errors()[0]['msg']}") from None
    return track, settings.smoothing, settings.verdict
