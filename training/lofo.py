"""Leave-one-family-out: one model per generator family, each judged on the family it never saw.

Why: a detector is only worth its alerts on generators nobody trained on (issue #17). For every
fake family of the training data this trains the recipe with that family left out of train and
val (``data.leave_out``), calibrates the threshold on the fold's *own* validation windows
(at most ``target_far`` of real windows flagged, default 1%), then scores, through the daemon's
chain (:mod:`streamguard.training.evaluate`: `score_through_chain` + `chain_report`, what
``streamguard evaluate`` runs; nothing re-implemented):

* the held-out family's test clips + every real test clip: window EER, the share of the
  family's windows caught at the threshold, real windows flagged, per condition
  (clean / phone);
* with ``--calls``: the family's pseudo-calls + the real calls replayed through the alert
  policy (the daemon's ``[smoothing]`` defaults or ``--daemon-config``): share of the family's
  calls that alert, real calls that alert, detection delay.

One table (``lofo.md``, ``lofo.csv``, ``lofo.json`` in ``--out``) with a row per family, the
mean and the worst family. Each fold's run folder is ``<out>/<family>/``; a fold whose model is
already exported is evaluated again, not retrained (delete the folder to retrain it).

**Leave one group out** (``--groups a+b,c+d``): where a fold costs an hour (waveform models on
a CPU), each fold leaves a *group* of families out together and every family of the group is
judged on the group's model: still a figure from a model that never heard the family, and
stricter than one family out (its relatives are gone too). A family that has no train/val rows
(a test-only family) is judged, not left out; a fold that leaves nothing out is the
all-families model. ``--heldout DIR`` judges family F on ``DIR/F.csv`` (corpus v3's
``lofo/<F>.csv``: every clip of F whatever its split + the real test clips) instead of the
test split's clips of F. The real clips and calls of a fold are scored once for all its
families.

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
    ("fold (left out)", "fold", "s"),
)
#: For the "worst" row: which direction is bad.
WORSE_HIGH = {"eer", "real_flagged", "eer_clean", "eer_phone", "real_flagged_phone",
              "real_calls_alerted", "delay_median_s"}  # fmt: skip
WORSE_LOW = {"caught", "caught_clean", "caught_phone", "calls_alerted"}


def families_of(config: TrainConfig) -> list[str]:
    """Fake families that reach train or val (the ones a fold can leave out)."""
    splits = load_sources(config.data)
    return sorted({e.family for e in splits.train + splits.val if e.label == 1 and e.family})


def fold_config(
    config: TrainConfig,
    family: str,
    out: Path,
    target_far: float,
    leave_out: set[str] | None = None,
) -> TrainConfig:
    """The fold's recipe: ``leave_out`` (default ``{family}``) kept out, run folder
    ``<out>/<family>`` (``family`` is the fold's name: ``a+b`` for a group)."""
    cfg = config.model_copy(deep=True)
    cfg.data.leave_out = sorted(set(cfg.data.leave_out) | (leave_out if leave_out is not None
                                                          else {family}))  # fmt: skip
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
    from streamguard.training.features import CachedWindowsDetector, CropPolicy, cache_for

    seg, feat = config.segment, config.features
    policy = CropPolicy(
        seconds=seg.seconds, mode=feat.crop, crops=feat.crops, sample_rate=seg.sample_rate
    )
    cache = cache_for(config.features.dir, detector.module, policy, config.model.params)
    return CachedWindowsDetector(detector.module, detector.info, cache)


def run_lofo(
    config: TrainConfig,
    *,
    out: Path,
    families: list[str] | None = None,
    groups: list[list[str]] | None = None,
    heldout: Path | None = None,
    calls: Path | None = None,
    daemon_config: Path | None = None,
    target_far: float = 0.01,
    command: str = "",
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Train and judge one fold per family (or per group of families); writes the table and
    returns its rows (one per judged family)."""
    from streamguard.training.train import train

    known = families_of(config)
    splits = load_sources(config.data)
    tested = {e.family for e in splits.test if e.label == 1 and e.family}
    folds = groups if groups else [[f] for f in (families or known)]
    chosen = [f for fold in folds for f in fold]
    unknown = sorted(set(chosen) - set(known) - tested - _heldout_families(heldout, chosen))
    if unknown:
        raise ConfigError(
            f"no fake rows of {', '.join(unknown)} in train/val/test (families: {', '.join(known)})"
        )
    if len(known) < 2:
        raise ConfigError("leave-one-family-out needs at least two fake families in train/val")
    call_rows: list[Example] = []
    if calls is not None:
        got = read_data(calls)
        call_rows = [e for e in got.examples if e.subset in (None, "test")]
    policy = _daemon_tables(daemon_config)
    rows: list[dict[str, Any]] = []
    meta = {"architecture": config.model.architecture, "command": command,
            "target_far": target_far, "families": chosen, "folds": folds,
            "heldout": str(heldout) if heldout else None}  # fmt: skip
    for fold in folds:
        name = "+".join(fold)
        cfg = fold_config(config, name, out, target_far, set(fold) & set(known))
        model_dir = Path(cfg.run.out_dir) / "model"
        started = time.monotonic()
        if not (model_dir / "config.json").is_file():
            echo(f"== fold {name}: training without {', '.join(cfg.data.leave_out) or 'nothing'}"
                 f" -> {cfg.run.out_dir}")  # fmt: skip
            result = train(cfg, resume=(Path(cfg.run.out_dir) / "checkpoints").exists(),
                           echo=echo)  # fmt: skip
            if result.export_dir is None:
                raise StreamguardError(f"fold {name} exported no model ({result.out_dir})")
        minutes = (time.monotonic() - started) / 60
        detector = _scorer(model_dir, cfg)
        held = _heldout_examples(fold, splits.test, heldout)
        fold_calls = [e for e in call_rows if e.label == 0 or e.family in fold]
        judged = _judge(detector, fold, held, fold_calls, Path(cfg.run.out_dir), cfg,
                        policy, echo)  # fmt: skip
        for row in judged:
            row["train_minutes"] = round(minutes, 2)
            row["fold"] = name
        rows += judged
        write_table(out, rows, meta)  # after every fold: a long run shows progress
        echo(markdown_table(judged))
    return rows


def _heldout_families(heldout: Path | None, families: list[str]) -> set[str]:
    return {f for f in families if heldout is not None and (heldout / f"{f}.csv").is_file()}


def _heldout_examples(fold: list[str], test: list[Example], heldout: Path | None) -> list[Example]:
    """Real test clips + the fold families' clips: ``heldout/<F>.csv`` where it exists (its real
    rows too), else the test split's clips of F."""
    rows = [e for e in test if e.label == 0]
    for family in fold:
        manifest = heldout / f"{family}.csv" if heldout is not None else None
        if manifest is not None and manifest.is_file():
            rows += [e for e in read_data(manifest).examples if e.label == 0 or e.family == family]
        else:
            rows += [e for e in test if e.label == 1 and e.family == family]
    seen: set[tuple[Path, int, str | None]] = set()
    held: list[Example] = []
    for e in rows:
        key = (e.path.resolve(), e.label, e.family if e.label else None)
        if key not in seen:
            seen.add(key)
            held.append(e)
    return held


def _judge(detector, fold, held, fold_calls, run_dir, cfg, policy, echo):
    """Score the fold's clips and calls once through the daemon's chain; one row per family."""
    from streamguard.training.evaluate import (
        chain_report,
        score_through_chain,
        write_chain_report,
    )

    def scored(examples):
        results, problems = score_through_chain(
            detector, examples, track=policy.get("track"), batch_size=cfg.run.eval_batch_size,
            progress=cfg.run.progress,
        )  # fmt: skip
        return results, problems

    echo(f"== fold {'+'.join(fold)}: scoring {sum(e.label for e in held)} held-out fake clips + "
         f"{sum(1 for e in held if e.label == 0)} real test clips")  # fmt: skip
    threshold = detector.info.threshold
    rules = {k: v for k, v in policy.items() if k != "track"}  # [smoothing], [verdict]
    clips, clip_problems = scored(held)
    calls, call_problems = scored(fold_calls) if any(e.label for e in fold_calls) else ([], [])
    rows = []
    for family in fold:
        suffix = "" if len(fold) == 1 else f"-{family}"
        mine = [r for r in clips if r.example.label == 0 or r.example.family == family]
        if not any(r.example.label for r in mine):
            echo(f"fold {'+'.join(fold)}: no held-out clips of {family}; no row")
            continue
        windows = chain_report(mine, threshold, **rules)
        write_chain_report(run_dir / f"eval-heldout{suffix}", windows, mine,
                           problems=clip_problems, title=family)  # fmt: skip
        call_report = None
        mine_calls = [r for r in calls if r.example.label == 0 or r.example.family == family]
        if any(r.example.label for r in mine_calls):
            call_report = chain_report(mine_calls, threshold, **rules)
            write_chain_report(run_dir / f"eval-calls{suffix}", call_report, mine_calls,
                               problems=call_problems, title=family)  # fmt: skip
        rows.append(fold_row(family, windows["windows"], call_report and call_report["calls"]))
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
    parser.add_argument(
        "--groups",
        help="leave groups out instead: comma-separated groups of +-joined families "
        "(a+b,c+d); each family is judged on its group's model",
    )
    parser.add_argument(
        "--heldout", type=Path, help="folder of per-family held-out manifests (<family>.csv)"
    )
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
    groups = None
    if args.groups:
        groups = [[f.strip() for f in g.split("+") if f.strip()] for g in args.groups.split(",")]
        groups = [g for g in groups if g]
    out = Path(args.out).expanduser().resolve()
    rows = run_lofo(config, out=out, families=families, groups=groups, heldout=args.heldout,
                    calls=args.calls,
                    daemon_config=args.daemon_config, target_far=args.target_far,
                    command=command)  # fmt: skip
    print((out / "lofo.md").read_text())
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
