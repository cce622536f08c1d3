"""Leave-one-family-out: one model per generator family, each judged on the family it never saw.

Why: a detector is only worth its alerts on generators nobody trained on (issue #17). For every
fake family of the training data this trains the recipe with that family left out of train and
val (``data.leave_out``), calibrates the threshold on the fold's *own* validation windows
(at most ``target_far`` of real windows flagged, default 1%), then scores, through the daemon's
chain (:func:`streamguard.training.evaluate.evaluate_detector`, nothing re-implemented):

* the held-out family's test clips + every real test clip: window EER, the share of the
  family's windows caught at the threshold, real windows flagged, per condition
  (clean / phone);
* with ``--calls``: the family's pseudo-calls + the real calls replayed through the alert
  policy (the daemon's ``[smoothing]`` defaults or ``--daemon-config``): share of the family's
  calls that alert, real calls that alert, detection delay.

One table (``lofo.md``, ``lofo.csv``, ``lofo.json`` in ``--out``) with a row per family, the
mean and the worst family. Each fold's run folder is ``<out>/<family>/``; a fold whose model is
already exported is evaluated again, not retrained (delete the folder to retrain it).

    python -m streamguard.training.lofo --config configs/train-whisper-asp.toml \\
        --data training/corpus/v2/manifest.csv --calls training/corpus/v2/test-calls.csv \\
        --out runs/lofo-whisper
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from streamguard.errors import ConfigError, StreamguardError
from streamguard.training.config import TrainConfig
from streamguard.training.data import Example, load_sources, read_data

COLUMNS = (
    ("family", "family", "s"),
    ("fake win", "n_fake_windows", "d"),
    ("real win", "n_real_windows", "d"),
    ("EER", "eer", "%"),
    ("caught", "caught", "%"),
    ("real flagged", "real_flagged", "%"),
    ("EER clean", "eer_clean", "%"),
    ("caught clean", "caught_clean", "%"),
    ("EER phone", "eer_phone", "%"),
    ("caught phone", "caught_phone", "%"),
    ("flagged phone", "real_flagged_phone", "%"),
    ("calls", "n_fake_calls", "d"),
    ("calls alerted", "calls_alerted", "%"),
    ("real calls alerted", "real_calls_alerted", "%"),
    ("delay med s", "delay_median_s", "f"),
    ("threshold", "threshold", "f"),
    ("train min", "train_minutes", "f"),
)
#: For the "worst" row: which direction is bad.
WORSE_HIGH = {"eer", "real_flagged", "eer_clean", "eer_phone", "real_flagged_phone",
              "real_calls_alerted", "delay_median_s"}  # fmt: skip
WORSE_LOW = {"caught", "caught_clean", "caught_phone", "calls_alerted"}


def families_of(config: TrainConfig) -> list[str]:
    """Fake families that reach train or val (the ones a fold can leave out)."""
    splits = load_sources(config.data)
    return sorted({e.family for e in splits.train + splits.val if e.label == 1 and e.family})


def fold_config(config: TrainConfig, family: str, out: Path, target_far: float) -> TrainConfig:
    cfg = config.model_copy(deep=True)
    cfg.data.leave_out = sorted(set(cfg.data.leave_out) | {family})
    cfg.run.out_dir = out / family
    cfg.export.dir = None
    cfg.export.evaluate_test = False  # the fold is judged below, on its held-out family
    if cfg.export.target_far is None:
        cfg.export.target_far = target_far
    return cfg


def _group(report: dict[str, Any], key: str, value: str) -> dict[str, Any]:
    return report.get("groups", {}).get(key, {}).get(value, {})


def fold_row(family: str, windows: dict[str, Any], calls: dict[str, Any] | None) -> dict:
    """One table row from the window report and the calls report of a fold."""
    pooled = windows["pooled"]
    clean = _group(windows, "condition", "clean")
    phone = _group(windows, "condition", "phone")
    row = {
        "family": family,
        "n_fake_windows": pooled.get("n_fake"),
        "n_real_windows": pooled.get("n_real"),
        "eer": pooled.get("eer"),
        "caught": pooled.get("recall"),
        "real_flagged": pooled.get("far"),
        "eer_clean": clean.get("eer"),
        "caught_clean": clean.get("recall"),
        "eer_phone": phone.get("eer"),
        "caught_phone": phone.get("recall"),
        "real_flagged_phone": phone.get("far"),
        "threshold": windows.get("threshold"),
    }
    if calls is not None:
        c = calls["pooled"]
        row.update(
            n_fake_calls=c.get("n_fake"),
            calls_alerted=c.get("fake_alerted"),
            real_calls_alerted=c.get("real_alerted"),
            delay_median_s=c.get("delay_median_s"),
        )
    return row


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The mean and the worst family over the fold rows (numbers only)."""
    if not rows:
        return []
    mean: dict[str, Any] = {"family": "mean"}
    worst: dict[str, Any] = {"family": "worst"}
    for _, key, _ in COLUMNS[1:]:
        values = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        if not values:
            continue
        mean[key] = sum(values) / len(values)
        if key in WORSE_HIGH:
            worst[key] = max(values)
        elif key in WORSE_LOW:
            worst[key] = min(values)
    return [mean, worst]


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "n/a"
    if kind == "%":
        return f"{100 * value:.1f}%"
    if kind == "f":
        return f"{value:.3f}" if isinstance(value, float) else str(value)
    if kind == "d" and isinstance(value, float):
        return f"{value:.0f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = "| " + " | ".join(t for t, _, _ in COLUMNS) + " |"
    rule = "|" + "---|" * len(COLUMNS)
    body = ["| " + " | ".join(_cell(r.get(k), kind) for _, k, kind in COLUMNS) + " |"
            for r in rows]  # fmt: skip
    return "\n".join([head, rule, *body]) + "\n"


def write_table(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    """lofo.md / lofo.csv / lofo.json: the fold rows, then mean and worst."""
    full = rows + summary_rows(rows)
    out.mkdir(parents=True, exist_ok=True)
    (out / "lofo.json").write_text(json.dumps({**meta, "rows": full}, indent=2) + "\n")
    with (out / "lofo.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=[k for _, k, _ in COLUMNS], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(full)
    note = (
        f"Leave-one-family-out, {meta.get('architecture')} (`{meta.get('command')}`).\n"
        "Windows: the daemon's chain over the held-out family's test clips + all real test "
        "clips; threshold from each fold's own validation windows "
        f"(<= {100 * meta.get('target_far', 0.01):g}% real flagged). Calls: the family's "
        "pseudo-calls + real calls through the alert policy.\n\n"
    )
    (out / "lofo.md").write_text(note + markdown_table(full))


def _scorer(model_dir: Path, config: TrainConfig):
    """The fold's exported model, scoring from cached encoder states when it trained on them."""
    from streamguard.model import load_model

    loaded = load_model(model_dir, device="cpu")
    detector = loaded.detector
    if config.features.dir is None:
        return detector
    from streamguard.training.features import (
        CachedWindowsDetector,
        CropPolicy,
        FeatureCache,
    )

    seg, feat = config.segment, config.features
    policy = CropPolicy(
        seconds=seg.seconds, mode=feat.crop, crops=feat.crops, sample_rate=seg.sample_rate
    )
    cache = FeatureCache(config.features.dir, detector.module, policy)
    return CachedWindowsDetector(detector.module, detector.info, cache)


def run_lofo(
    config: TrainConfig,
    *,
    out: Path,
    families: list[str] | None = None,
    calls: Path | None = None,
    daemon_config: Path | None = None,
    target_far: float = 0.01,
    command: str = "",
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and judge one fold per family; writes the table and returns its fold rows."""
    from streamguard.training.evaluate import evaluate_detector
    from streamguard.training.train import train

    known = families_of(config)
    chosen = families or known
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise ConfigError(
            f"no fake rows of {', '.join(unknown)} in train/val (families: {', '.join(known)})"
        )
    if len(known) < 2:
        raise ConfigError("leave-one-family-out needs at least two fake families in train/val")
    splits = load_sources(config.data)
    call_rows: list[Example] = []
    if calls is not None:
        got = read_data(calls)
        call_rows = [e for e in got.examples if e.subset in (None, "test")]
    policy = _daemon_tables(daemon_config)
    rows: list[dict[str, Any]] = []
    meta = {"architecture": config.model.architecture, "command": command,
            "target_far": target_far, "families": chosen}  # fmt: skip
    for family in chosen:
        cfg = fold_config(config, family, out, target_far)
        model_dir = Path(cfg.run.out_dir) / "model"
        started = time.monotonic()
        if not (model_dir / "config.json").is_file():
            echo(f"== fold {family}: training without it -> {cfg.run.out_dir}")
            result = train(cfg, resume=(Path(cfg.run.out_dir) / "checkpoints").exists(),
                           echo=echo)  # fmt: skip
            if result.export_dir is None:
                raise StreamguardError(f"fold {family} exported no model ({result.out_dir})")
        minutes = (time.monotonic() - started) / 60
        detector = _scorer(model_dir, cfg)
        held = [e for e in splits.test if e.label == 0 or e.family == family]
        echo(f"== fold {family}: scoring {sum(e.label for e in held)} held-out fake clips + "
             f"{sum(1 for e in held if e.label == 0)} real test clips")  # fmt: skip
        windows, _ = evaluate_detector(
            detector, held, out_dir=Path(cfg.run.out_dir) / "eval-heldout", **policy,
            batch_size=cfg.run.eval_batch_size, progress=cfg.run.progress,
        )  # fmt: skip
        call_report = None
        fold_calls = [e for e in call_rows if e.label == 0 or e.family == family]
        if any(e.label == 1 for e in fold_calls):
            call_report, _ = evaluate_detector(
                detector, fold_calls, out_dir=Path(cfg.run.out_dir) / "eval-calls", **policy,
                batch_size=cfg.run.eval_batch_size, progress=cfg.run.progress,
            )  # fmt: skip
        row = fold_row(family, windows["windows"], call_report and call_report["calls"])
        row["train_minutes"] = round(minutes, 2)
        rows.append(row)
        write_table(out, rows, meta)  # after every fold: a long run shows progress
        echo(markdown_table([row]))
    return rows


def _daemon_tables(path: Path | None) -> dict[str, Any]:
    """``[track]``, ``[smoothing]`` and ``[verdict]`` of a daemon config as
    :func:`evaluate_detector` keywords (none: the daemon's defaults)."""
    if path is None:
        return {}
    from streamguard.policy.tables import read_policy_tables

    tables = read_policy_tables(path)
    return {
        "track": tables.track,
        "smoothing": tables.smoothing,
        "min_speech_seconds": tables.verdict.min_speech_seconds,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="training recipe (TOML)")
    parser.add_argument("--data", action="append", help="manifest(s) instead of the recipe's")
    parser.add_argument("--out", required=True, help="folder for the folds and the table")
    parser.add_argument("--families", help="comma-separated families (default: all in train/val)")
    parser.add_argument("--calls", type=Path, help="pseudo-call manifest (e.g. test-calls.csv)")
    parser.add_argument("--daemon-config", type=Path, help="daemon TOML: [track] + [smoothing]")
    parser.add_argument(
        "--target-far",
        type=float,
        default=0.01,
        help="threshold: at most this share of real validation windows flagged",
    )
    parser.add_argument("--features", help="feature cache root (whisper-asp, frozen encoder)")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--max-minutes", type=float, help="per fold")
    parser.add_argument("--num-threads", type=int)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-progress", action="store_true")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.training.lofo",
        description="leave-one-family-out: a model per fake family, judged on that family",
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run_from_args(args, " ".join(["python -m streamguard.training.lofo", *sys.argv[1:]]))
    except StreamguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run_from_args(args: argparse.Namespace, command: str) -> int:
    import logging

    from streamguard.training.config import load_config, parse_override
    from streamguard.training.data import detect_format

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = dict(parse_override(item) for item in args.set)
    for attr, key in (("epochs", "optim.epochs"), ("max_minutes", "run.max_minutes"),
                      ("num_threads", "run.num_threads")):  # fmt: skip
        if getattr(args, attr) is not None:
            overrides[key] = getattr(args, attr)
    if args.no_progress:
        overrides["run.progress"] = False
    if args.features:
        overrides["features.dir"] = str(Path(args.features).expanduser().resolve())
    if args.data:
        overrides["data.sources"] = [
            {"type": detect_format(p), "path": str(Path(p).expanduser().resolve())}
            for p in args.data
        ]
    config = load_config(args.config, overrides)
    families = [f.strip() for f in args.families.split(",") if f.strip()] if args.families else None
    out = Path(args.out).expanduser().resolve()
    rows = run_lofo(config, out=out, families=families, calls=args.calls,
                    daemon_config=args.daemon_config, target_far=args.target_far,
                    command=command)  # fmt: skip
    print((out / "lofo.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
