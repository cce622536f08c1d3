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
        "--config", required=True, help="training config, e.g. configs/train-koyelog.toml"
    )
    parser.add_argument("--out", help="run folder (default: the config's run.out_dir)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
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
    if args.data:
        overrides["data.sources"] = [
            {"type": detect_format(p), "path": str(Path(p).expanduser().resolve())}
            for p in args.data
        ]
    return overrides


def run(args: argparse.Namespace) -> int:
    import logging

    from streamguard.training.config import load_config
    from streamguard.training.train import train

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    config = load_config(args.config, build_overrides(args))
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
