"""``streamguard calibrate``: choose the alert policy on the operator's own labelled calls.

Input: the labelled calls in the event log (``streamguard label``, ``POST /api/labels``: their
``score`` events as the daemon logged them), and/or recordings (``--recordings``: a folder
with ``fake/`` and ``real/`` subfolders, or a CSV of ``path,label`` rows; a stereo file is two
tracks, as a two-channel call is), scored through the daemon's per-track chain
(``TrackPipeline``, then ``score_windows``: the chain ``evaluate`` runs). Every track is then
replayed through the alert policy by ONE function, :func:`streamguard.calibration.
smoother_replay`, and :func:`streamguard.calibration.calibrate` searches ``on_threshold`` and
``raise_after`` for ``--max-false-alarms`` (module docstring there).

Output: call-level false-alarm and catch rates with 95% intervals, the detection delay, now
and with the chosen setting, what it costs in catches; ``--write FILE`` writes the
``[smoothing]`` TOML snippet. Too few real calls for the rate asked: says how many are needed
and does not promise it (the snippet says so too).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

HELP = "choose the alert threshold on your own labelled calls (--max-false-alarms, --write)"

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".opus")


def _rate(text: str) -> float:
    try:
        value = float(text.rstrip("%")) / (100 if text.endswith("%") else 1)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a rate like 0.01 or 1%, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError("must be at least 0 and below 1 (100%)")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="the daemon's config ([events], [smoothing])")
    parser.add_argument(
        "--max-false-alarms",
        type=_rate,
        default=0.01,
        metavar="RATE",
        help="the highest share of real calls that may alert, e.g. 0.01 or 1%% (default: 1%%)",
    )
    parser.add_argument(
        "--recordings",
        action="append",
        type=Path,
        metavar="PATH",
        help="labelled recordings (repeatable): a folder with fake/ and real/, or a CSV of "
        "path,label (fake|real|unsure); needs a model (--model or [model] spec)",
    )
    parser.add_argument(
        "--no-log", action="store_true", help="ignore the event log's labelled calls"
    )
    parser.add_argument("--model", help="model spec (default: [model] spec, else bundled)")
    parser.add_argument("--write", type=Path, metavar="FILE", help="write the TOML snippet here")
    parser.add_argument("--json", action="store_true", help="the figures as JSON")


def read_recordings(path: Path) -> list[tuple[Path, str]]:
    """``(file, label)`` pairs from a folder (``fake/``, ``real/``, ``unsure/``) or a CSV."""
    from streamguard.errors import ConfigError

    if path.is_dir():
        found = [
            (f, kind)
            for kind in ("fake", "real", "unsure")
            for f in sorted((path / kind).rglob("*"))
            if f.suffix.lower() in AUDIO_SUFFIXES
        ]
        if not found:
            raise ConfigError(f"--recordings {path}: no audio under fake/, real/ or unsure/")
        return found
    try:
        rows = list(csv.reader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"--recordings {path}: cannot read it: {exc}") from None
    out = []
    for number, row in enumerate(rows, 1):
        if not row or row[0].startswith("#") or (number == 1 and row[0].strip() == "path"):
            continue
        if len(row) < 2 or row[1].strip() not in ("fake", "real", "unsure"):
            raise ConfigError(f"{path}:{number}: expected path,fake|real|unsure")
        file = Path(row[0].strip())
        out.append((file if file.is_absolute() else path.parent / file, row[1].strip()))
    return out


def score_recording(detector, path: Path, track_settings, *, batch_size: int = 16):
    """One recording as a call: each channel a track, through the daemon's per-track chain at
    the file's own rate; returns ``{track name: TrackScores}`` (channel index as the name)."""
    from streamguard.audio.file import read_audio
    from streamguard.audio.track import TrackPipeline
    from streamguard.calibration import TrackScores
    from streamguard.scoring.batching import score_windows

    rate, data = read_audio(path)
    tracks = {}
    for channel in range(data.shape[0]):
        pipe = TrackPipeline(rate, track_settings, window_seconds=detector.info.window_seconds)
        windows = pipe.push(data[channel]) + pipe.finish()
        scores = score_windows(detector, windows, max_batch=batch_size) if windows else []
        tracks[str(channel)] = TrackScores.of(
            [(w.start, w.end, float(p)) for w, p in zip(windows, scores, strict=True)],
            speech_seconds=pipe.speech_seconds,
        )
    return tracks


def run(args: argparse.Namespace) -> int:
    import json

    from streamguard.calibration import (
        CalibrationError,
        LabelledCall,
        calibrate,
        toml_snippet,
    )
    from streamguard.config import load_config
    from streamguard.errors import ConfigError

    settings = load_config(args.config)
    calls: list[LabelledCall] = []
    sources = []
    if not args.no_log:
        calls += _from_log(settings)
        sources.append(f"{len(calls)} labelled calls from the event log")
    detector = None
    if args.recordings or settings.smoothing.on_threshold is None:
        from streamguard.model import load_detector

        detector = load_detector(args.model or settings.model.spec)
    if args.recordings:
        before = len(calls)
        for path in args.recordings:
            for file, label in read_recordings(path):
                from streamguard.errors import AudioError

                try:
                    tracks = score_recording(detector, file, settings.track)
                except AudioError as exc:
                    raise ConfigError(str(exc)) from None
                calls.append(LabelledCall(str(file), tracks, dict.fromkeys(tracks, label)))
        sources.append(f"{len(calls) - before} recordings")
    threshold = detector.info.threshold if detector is not None else 0.5
    try:
        result = calibrate(
            calls,
            base=settings.smoothing,
            model_threshold=threshold,
            max_false_alarms=args.max_false_alarms,
        )
    except CalibrationError as exc:
        raise ConfigError(str(exc)) from None
    snippet = toml_snippet(result, source=", ".join(sources))
    if args.write is not None:
        try:
            args.write.write_text(snippet, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--write {args.write}: {exc.strerror or exc}") from None
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        print(format_result(result))
        if args.write is not None:
            print(f"wrote {args.write}")
    return 0


def _from_log(settings):
    from streamguard.alerts.store import EventLogError, EventStore
    from streamguard.errors import ConfigError
    from streamguard.labels import collect_labelled_calls

    if settings.events.backend != "sqlite":
        raise ConfigError(
            "calibrate reads labelled calls from the SQLite event log; with "
            f"[events] backend = {settings.events.backend!r} pass --no-log --recordings"
        )
    try:
        store = EventStore(settings.events.resolved_path(), readonly=True)
    except EventLogError as exc:
        raise ConfigError(str(exc)) from None
    try:
        return collect_labelled_calls(store.read)
    finally:
        store.close()


def format_result(result) -> str:
    """The report a person reads: now, chosen, the cost, and what may be promised."""

    def figures(name: str, o) -> list[str]:
        lo, hi = o.false_alarm_interval
        s = o.settings
        lines = [
            f"{name}: on_threshold={s.on_threshold} raise_after={s.raise_after}",
            f"  false alarms {o.false_alarms}/{o.n_real} real calls "
            f"(95% interval {lo:.1%}-{hi:.1%})",
        ]
        if o.n_fake:
            clo, chi = o.catch_interval
            delay = "n/a" if o.delay_median is None else f"{o.delay_median:.1f} s"
            lines.append(
                f"  caught {o.caught}/{o.n_fake} fake calls (95% interval {clo:.1%}-{chi:.1%}),"
                f" median detection delay {delay}"
            )
        return lines

    out = figures("now", result.current) + figures("chosen", result.chosen)
    lo, hi = result.threshold_range
    out.append(f"  (any on_threshold in {lo}-{hi} gives the same figures on these calls)")
    out.append(
        f"cost: {result.catches_lost} fake calls no longer caught; "
        f"{result.false_alarms_silenced} false alarms silenced"
    )
    if result.promise is not None:
        out.append(f"promise: false-alarm rate at most {result.promise:.2%} (95% confidence)")
    else:
        out.append(f"no promise: {result.warning}")
    return "\n".join(out)
