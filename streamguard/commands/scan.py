"""``streamguard scan FILE...``: score audio files offline with the same chain as live calls.

Each file goes through :func:`streamguard.scoring.offline.score_file`: block by block through one
:class:`~streamguard.audio.track.TrackPipeline` per channel (or one for the mix-down with
``--mix``) -- the very code the daemon runs per track -- and the engine's batching.
Output: a table and a verdict per file, or one JSON object per file per line (``--json``).

Exit status: 0 when every file was decoded and scored (whatever the verdict, including
``inconclusive`` for a file without speech, which gets a one-line warning on stderr); 1 when any
file could not be decoded (one line each on stderr; the other files are still reported);
2 for a usage/model problem (no file is scanned).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streamguard.audio.track import TrackSettings
    from streamguard.report.scan_report import FileReport

HELP = "scan audio files for synthetic voices: per-window scores and a verdict per file"

_DEFAULT_HOP = 1.0
_DEFAULT_MIN_SPEECH = 0.5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="wav/flac/ogg/mp3/... files")
    parser.add_argument(
        "--model",
        metavar="SPEC",
        default=None,
        help="model directory, .pth file or Hugging Face repo id (default: the bundled model)",
    )
    parser.add_argument(
        "--hop",
        type=float,
        default=_DEFAULT_HOP,
        metavar="S",
        help=f"seconds between window starts (default {_DEFAULT_HOP:g})",
    )
    parser.add_argument(
        "--min-speech",
        type=float,
        default=_DEFAULT_MIN_SPEECH,
        metavar="S",
        help=f"seconds of speech a window needs to be scored (default {_DEFAULT_MIN_SPEECH:g})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        metavar="P",
        help="P(fake) a window must reach to count (marked * in the table); a track is fake "
        "only when the alert policy raises: [smoothing] raise_after (default 3) windows in a "
        "row at or above P after smoothing, so two starred windows can still be REAL "
        "(default: the model's threshold)",
    )
    parser.add_argument(
        "--mix", action="store_true", help="mix all channels down to one track ('mix')"
    )
    parser.add_argument(
        "--json", action="store_true", help="one JSON object per file per line on stdout"
    )
    parser.add_argument(
        "--plot",
        metavar="PATH",
        default=None,
        help="write a PNG (spectrogram + score timeline); several files: PATH gets each file's "
        "stem inserted (report.png -> report-<stem>.png), or give a directory",
    )
    parser.add_argument(
        "--batch", type=int, default=16, metavar="N", help="windows per model call (default 16)"
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="where the model runs (default auto: cuda when available)",
    )


def _settings(args: argparse.Namespace, window_seconds: float) -> TrackSettings:
    from pydantic import ValidationError

    from streamguard.audio.track import TrackSettings
    from streamguard.errors import StreamguardError

    if args.min_speech is not None and args.min_speech > window_seconds:
        raise StreamguardError(
            f"--min-speech {args.min_speech:g} s is longer than the model's "
            f"{window_seconds:g} s window"
        )
    try:
        return TrackSettings(hop_seconds=args.hop, min_speech_seconds=args.min_speech)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err.get("loc", ()))
        flag = _FLAGS.get(field)
        if flag is None:
            raise StreamguardError(f"invalid option: {err['msg']}") from None
        raise StreamguardError(f"{flag}: {err['msg'].lower()} (got {err.get('input')})") from None


#: TrackSettings fields -> the scan flags that set them (for error messages).
_FLAGS = {"hop_seconds": "--hop", "min_speech_seconds": "--min-speech"}


def _check_plot_target(plot: str) -> None:
    """Fail before scanning, not after, when ``--plot`` cannot be written (nothing lost)."""
    import os

    from streamguard.errors import StreamguardError

    target = Path(plot)
    folder = target if plot.endswith((os.sep, "/")) or target.is_dir() else target.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StreamguardError(
            f"--plot {plot}: cannot create {folder}: {exc.strerror or exc}"
        ) from None
    if not os.access(folder, os.W_OK):
        raise StreamguardError(f"--plot {plot}: {folder} is not writable")


def scan_file(
    path: str,
    detector: Any,
    settings: TrackSettings,
    *,
    threshold: float,
    mix: bool = False,
    max_batch: int = 16,
    keep_audio: bool = False,
) -> tuple[FileReport, Any]:
    """Scan one file. Returns its report and, with ``keep_audio``, its mono mix (for plots).

    Raises :class:`~streamguard.errors.AudioError` when the file cannot be decoded.
    """
    from streamguard.policy import AlertPolicy, replay
    from streamguard.report.scan_report import FileReport, TrackReport, WindowScore
    from streamguard.scoring.offline import score_file

    policy = AlertPolicy(threshold)
    scored = score_file(
        path, detector, settings, mix=mix, max_batch=max_batch, keep_audio=keep_audio
    )
    tracks = []
    for t in scored.tracks:
        track = TrackReport(track=t.name)
        track.windows = [
            WindowScore(*row)
            for row in zip(t.starts, t.ends, t.speech_ratios, t.scores, strict=True)
        ]
        track.windows_skipped = t.windows_skipped
        track.speech_seconds = t.speech_seconds
        track.duration = t.duration
        # The daemon's alert policy replayed over the windows: scan's verdict is the one a
        # live call of this audio would end with (fake = the alert would have been raised).
        _, track.verdict = replay(t.scores, policy, speech_seconds=t.speech_seconds)
        tracks.append(track)
    report = FileReport(
        file=str(path),
        sample_rate=scored.sample_rate,
        channels=scored.channels,
        duration=scored.duration,
        model=detector.info.name,
        threshold=threshold,
        min_speech_seconds=policy.min_speech_seconds,
        tracks=tracks,
    )
    return report, scored.audio


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from streamguard.errors import AudioError, StreamguardError
    from streamguard.model import load_detector

    if args.batch < 1:
        raise StreamguardError("--batch must be at least 1")
    if args.threshold is not None and not 0.0 <= args.threshold <= 1.0:
        raise StreamguardError(f"--threshold must be in [0, 1], got {args.threshold:g}")
    if args.plot is not None:
        _check_plot_target(args.plot)
    detector = load_detector(args.model, device=args.device)
    if detector.info.sample_rate != 16_000:
        raise StreamguardError(
            f"model {detector.info.name} expects {detector.info.sample_rate} Hz audio; "
            "streamguard feeds models 16 kHz"
        )
    settings = _settings(args, detector.info.window_seconds)
    threshold = detector.info.threshold if args.threshold is None else args.threshold
    used_plots: set[Path] = set()
    failed = 0

    def out(text: str) -> None:
        tqdm.write(text, file=sys.stdout)

    def err(text: str) -> None:
        tqdm.write(f"streamguard: {text}", file=sys.stderr)

    files = list(args.files)
    bar = tqdm(files, unit="file", file=sys.stderr, disable=None if len(files) > 1 else True)
    for path in bar:
        try:
            report, audio = scan_file(
                path,
                detector,
                settings,
                threshold=threshold,
                mix=args.mix,
                max_batch=args.batch,
                keep_audio=args.plot is not None,
            )
        except AudioError as exc:
            failed += 1
            err(f"error: {exc}")
            if args.json:
                out(json.dumps({"file": str(path), "error": str(exc)}))
            continue
        warning = report.warning()
        if warning:
            err(f"warning: {warning}")
        out(json.dumps(report.to_dict()) if args.json else report.format_text())
        if args.plot is not None:
            from streamguard.report.plot import plot_path_for, plot_report

            target = plot_path_for(args.plot, path, len(files), used_plots)
            try:
                plot_report(report, audio, report.sample_rate, target)
            except OSError as exc:  # the report is out; say so and go on with the next file
                failed += 1
                err(f"error: cannot write plot {target}: {exc.strerror or exc}")
                continue
            if not args.json:
                out(f"plot: {target}")
    bar.close()
    return 1 if failed else 0
