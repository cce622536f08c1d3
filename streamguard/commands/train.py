"""``streamguard train``: train a detector from a TOML recipe (configs/train-*.toml).

The recipe names the data sources, segment, augmentation, optimiser, model and export; flags
override the common knobs for one run (``--epochs``, ``--max-minutes`` ...) and ``--set KEY=VALUE``
any other key. ``--data`` swaps the recipe's sources for the given files/folders (format
auto-detected), which is how a corpus manifest is trained with a stock recipe.
"""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "train a detector model from a training config (TOML)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        help="training config, e.g. configs/train-koyelog.toml (not needed with --resume: a "
        "resumed run uses its own saved config)",
    )
    parser.add_argument("--out", help="run folder (default: the config's run.out_dir)")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out with the config it was started with (only --epochs, "
        "--max-steps, --max-minutes, --device, --num-threads and --no-progress may change)",
    )
    parser.add_argument(
        "--leave-out",
        action="append",
        metavar="FAMILY",
        help="keep this generator family (manifest column family) out of train and val "
        "(repeatable; data.leave_out)",
    )
    parser.add_argument(
        "--lofo",
        action="store_true",
        help="leave-one-family-out: a model per fake family into --out/<family>/, judged on that "
        "family, and one table (python -m streamguard.training.lofo has every option)",
    )
    parser.add_argument("--calls", help="with --lofo: pseudo-call manifest (test-calls.csv)")
    parser.add_argument(
        "--features",
        metavar="DIR",
        help="train whisper-asp's back end from cached encoder features in DIR (features.dir)",
    )
    parser.add_argument(
        "--data",
        action="append",
        metavar="PATH",
        help="train on this manifest CSV / protocol / meta.csv / folder instead of the config's "
        "sources (repeatable; format auto-detected)",
    )
    parser.add_argument("--epochs", type=int, help="optim.epochs")
    parser.add_argument("--batch-size", type=int, help="optim.batch_size")
    parser.add_argument("--lr", type=float, help="optim.lr")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimiser steps")
    parser.add_argument("--max-minutes", type=float, help="stop after this many minutes")
    parser.add_argument("--device", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--num-threads", type=int, help="torch CPU threads")
    parser.add_argument("--seed", type=int, help="run.seed")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config key, e.g. --set augment.telephone_p=0.5 (repeatable)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    labels = parser.add_argument_group("fine-tuning on the operator's labelled calls (#18)")
    labels.add_argument(
        "--from-labels",
        action="store_true",
        help="fine-tune the serving model on labelled evidence audio plus a replay of --config's "
        "base corpus; reports the base held-out figures before and after",
    )
    labels.add_argument(
        "--daemon-config", type=Path, help="the daemon's config ([events], [evidence], [model])"
    )
    labels.add_argument(
        "--labels-weight",
        type=float,
        default=1.0,
        help="share of training draws of the evidence beside each base source (default: 1)",
    )
    labels.add_argument(
        "--max-false-alarms",
        type=float,
        default=0.01,
        help="the false-alarm rate calibration aims for on the labelled calls (default: 0.01)",
    )


_FLAG_KEYS = {
    "epochs": "optim.epochs",
    "batch_size": "optim.batch_size",
    "lr": "optim.lr",
    "max_steps": "run.max_steps",
    "max_minutes": "run.max_minutes",
    "device": "run.device",
    "num_threads": "run.num_threads",
    "seed": "run.seed",
}


def build_overrides(args: argparse.Namespace) -> dict:
    from streamguard.training.config import parse_override
    from streamguard.training.data import detect_format

    overrides = dict(parse_override(item) for item in args.set)
    for attr, key in _FLAG_KEYS.items():
        if getattr(args, attr) is not None:
            overrides[key] = getattr(args, attr)
    if args.out:
        overrides["run.out_dir"] = str(Path(args.out).expanduser().resolve())
    if args.no_progress:
        overrides["run.progress"] = False
    if args.leave_out:
        overrides["data.leave_out"] = list(args.leave_out)
    if args.features:
        overrides["features.dir"] = str(Path(args.features).expanduser().resolve())
    if args.data:
        overrides["data.sources"] = [
            {"type": detect_format(p), "path": str(Path(p).expanduser().resolve())}
            for p in args.data
        ]
    return overrides


#: What a resumed run may change: how long and where it runs, never what it trains.
RESUME_KEYS = {"optim.epochs", "run.max_steps", "run.max_minutes", "run.device",
               "run.num_threads", "run.progress", "run.out_dir"}  # fmt: skip


def resume_config(args: argparse.Namespace, overrides: dict):
    """The run's own saved config (``<out>/config.json``) with the allowed overrides.

    Why: resuming from ``--config`` re-read the recipe's data and model, so a recipe edited since
    (or another recipe) silently trained other data, or died in a size-mismatch traceback.
    """
    import json

    from streamguard.errors import ConfigError
    from streamguard.training.config import apply_overrides, parse_config

    if not args.out:
        raise ConfigError("--resume needs --out RUN_FOLDER (the run to continue)")
    out = Path(args.out).expanduser().resolve()
    saved = out / "config.json"
    if not saved.is_file():
        raise ConfigError(f"{out} holds no run to resume (no config.json); start it without "
                          "--resume")  # fmt: skip
    changed = sorted(k for k in overrides if k not in RESUME_KEYS)
    if changed:
        raise ConfigError(
            f"a resumed run keeps its own config ({saved}); it cannot change "
            f"{', '.join(changed)} (only --epochs, --max-steps, --max-minutes, --device, "
            "--num-threads, --no-progress); start a new run with --out for that"
        )
    try:
        data = json.loads(saved.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {saved}: {exc}") from None
    if args.config:
        _check_same_model(args.config, data, saved)
    return parse_config(apply_overrides(data, overrides), base_dir=out, where=str(saved))


def _check_same_model(config_path: str, saved: dict, where: Path) -> None:
    """A ``--config`` given with ``--resume`` must describe the run's model: one line if not."""
    from streamguard.errors import ConfigError
    from streamguard.model.registry import resolve_params
    from streamguard.training.config import load_config

    given = load_config(config_path).model
    run = saved.get("model", {})
    if given.architecture != run.get("architecture"):
        raise ConfigError(
            f"{config_path} trains {given.architecture}, the run in {where.parent} "
            f"{run.get('architecture')}; resume without --config (the run's own is used)"
        )
    ours = resolve_params(given.architecture, given.params)
    theirs = resolve_params(given.architecture, run.get("params") or {})
    diff = sorted(k for k in ours if ours[k] != theirs.get(k))
    if diff:
        shown = ", ".join(f"{k}: {theirs.get(k)!r} in the run, {ours[k]!r} in {config_path}"
                          for k in diff[:3])  # fmt: skip
        raise ConfigError(
            f"cannot resume {where.parent} with other model params ({shown}); resume without "
            "--config, or start a new run with --out"
        )


def _lofo(args: argparse.Namespace, overrides: dict) -> int:
    from streamguard.errors import ConfigError
    from streamguard.training.config import load_config
    from streamguard.training.lofo import run_lofo

    if args.config is None or args.out is None or args.resume or args.leave_out:
        raise ConfigError("--lofo needs --config and --out (and no --resume / --leave-out)")
    overrides.pop("run.out_dir", None)
    out = Path(args.out).expanduser().resolve()
    config = load_config(args.config, overrides)
    calls = Path(args.calls).expanduser() if args.calls else None
    import sys

    run_lofo(config, out=out, calls=calls, command=" ".join(["streamguard", *sys.argv[1:]]))
    print((out / "lofo.md").read_text())
    return 0


def _from_labels(args: argparse.Namespace, overrides: dict) -> int:
    """``--from-labels`` (streamguard/finetune.py says what and why)."""
    from streamguard import finetune
    from streamguard.config import load_config as load_daemon_config
    from streamguard.errors import ConfigError
    from streamguard.model import load_detector
    from streamguard.model.loading import STARTER_DIR
    from streamguard.training.config import load_config
    from streamguard.training.train import train

    if args.config is None or args.out is None or args.resume or args.lofo:
        raise ConfigError("--from-labels needs --config (the base recipe) and --out")
    if args.labels_weight <= 0:
        raise ConfigError("--labels-weight must be above 0")
    daemon = load_daemon_config(args.daemon_config)
    rows = finetune.labelled_evidence(daemon)
    kinds = {r["label"] for r in rows}
    if kinds != {"fake", "real"}:
        raise ConfigError(
            f"{len(rows)} labelled evidence clips ({', '.join(sorted(kinds)) or 'none'}): "
            "fine-tuning needs clips of calls labelled fake and of calls labelled real"
        )
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    manifest = out / "labelled-evidence.csv"
    finetune.write_manifest(rows, manifest)
    base = load_config(args.config, overrides)
    init = base.model.init_from or daemon.model.spec or str(STARTER_DIR)
    if not (base.model.init_from or daemon.model.spec):
        print("note: the daemon has no [model] spec (it serves the default tier); fine-tuning "
              "starts from the starter tier (docs/training.md, --from-labels)")  # fmt: skip
    serving = load_detector(init, device="cpu")
    sources = [s.model_dump(mode="json", exclude_none=True) for s in base.data.sources]
    sources.append(
        {"type": "manifest", "path": str(manifest), "weight": args.labels_weight,
         "name": "labelled-evidence"}
    )  # fmt: skip
    config = load_config(
        args.config,
        {
            **overrides,
            "data.sources": sources,
            "model.init_from": init,
            "model.params": {},
            "model.architecture": serving.info.architecture,
        },
    )
    heldout = finetune.base_heldout(base)
    before = finetune.score_report(serving, heldout)
    print(finetune.format_figures("base held-out, serving model", before))
    result = train(config)
    if result.export_dir is None:
        print(f"no epoch was completed; nothing exported ({result.out_dir})")
        return 1
    tuned = load_detector(str(result.export_dir), device="cpu")
    after = finetune.score_report(tuned, heldout)
    print(finetune.format_figures("base held-out, fine-tuned model", after))
    outcome = {
        "init_from": init,
        "labelled_clips": len(rows),
        "labelled_calls": len({r["call_id"] for r in rows}),
        "base_heldout_before": before,
        "base_heldout_after": after,
        "calibration": _calibrate_tuned(tuned, rows, daemon, result.export_dir, args),
    }
    finetune.write_outcome(result.out_dir, result.export_dir, outcome)
    print(f"model {result.export_dir} (MODEL_CARD.md, calibration.toml, from-labels.json)")
    return 0


def _calibrate_tuned(detector, rows, daemon, export_dir: Path, args) -> dict | None:
    """The policy for the new model, chosen on the labelled calls (their evidence, scored by
    it through the daemon's chain), written beside its card."""
    from streamguard.calibration import CalibrationError, LabelledCall, calibrate, toml_snippet
    from streamguard.commands.calibrate import score_recording

    calls: dict[str, dict] = {}
    for r in rows:
        call = calls.setdefault(r["call_id"], {"tracks": {}, "labels": {}})
        for i, (name, scores) in enumerate(
            score_recording(detector, Path(r["path"]), daemon.track).items()
        ):
            key = f"{r['track']}:{Path(r['path']).stem}:{i or name}"
            call["tracks"][key] = scores
            call["labels"][key] = r["label"]
    labelled = [LabelledCall(c, v["tracks"], v["labels"]) for c, v in calls.items()]
    try:
        result = calibrate(
            labelled,
            base=daemon.smoothing,
            model_threshold=detector.info.threshold,
            max_false_alarms=args.max_false_alarms,
        )
    except CalibrationError as exc:
        (export_dir / "calibration.toml").write_text(f"# calibration not possible: {exc}\n")
        return {"error": str(exc)}
    (export_dir / "calibration.toml").write_text(
        toml_snippet(result, source="train --from-labels, the labelled evidence")
    )
    return result.to_dict()


def run(args: argparse.Namespace) -> int:
    import logging

    from streamguard.training.config import load_config
    from streamguard.training.train import train

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = build_overrides(args)
    if args.from_labels:
        return _from_labels(args, overrides)
    if args.lofo:
        return _lofo(args, overrides)
    if args.resume:
        config = resume_config(args, overrides)
    elif args.config is None:
        from streamguard.errors import ConfigError

        raise ConfigError("--config is required (except with --resume)")
    else:
        config = load_config(args.config, overrides)
    result = train(config, resume=args.resume)
    if result.best_epoch is None:
        print(f"no epoch was completed; nothing exported ({result.out_dir})")
        return 1
    eer = result.best_val_eer
    shown = "n/a" if eer is None else f"{100 * eer:.2f}%"
    print(
        f"done ({result.stopped}): best epoch {result.best_epoch}, validation EER {shown}; "
        f"run folder {result.out_dir}"
        + (f"; model {result.export_dir}" if result.export_dir else "")
    )
    return 0
