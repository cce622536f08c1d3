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


def run(args: argparse.Namespace) -> int:
    import logging

    from streamguard.training.config import load_config
    from streamguard.training.train import train

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    overrides = build_overrides(args)
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
