"""Which Whisper encoder layer carries the cues that generalise to unseen generators?

Why: whisper-asp's head learns its own weights over all encoder layers, trained on the seen
families. The anti-spoofing literature finds that the layers of a pretrained speech encoder
differ a lot in how well a detector built on them transfers to unseen attacks, and that a
low-capacity back end over the right layer can transfer better than a richer head. Training a
head per layer per fold would take hours here; a linear probe (standardised mean + standard
deviation over time of one layer's states, logistic regression) takes seconds once the states
are pooled, so every layer and a few combinations can be compared on the *held-out-group*
protocol of :mod:`streamguard.training.lofo` (same groups, same held-out windows through the
daemon's chain) before any head is trained for real.

Inputs are the feature cache that whisper-asp training already filled: the train/val clips'
crops (``clips/``) and the held-out test windows (``windows/``; a window missing there is
computed and stored, as :class:`CachedWindowsDetector` does). Pooled statistics are kept in
``--out`` (``train-stats.npz``, ``heldout-stats.npz``) so later runs skip the 20 GB read.

For each fold (a group of families left out of train and val) and each probe, the table holds
the left-out families' window EER (all / phone), the share caught and real windows flagged at
the threshold that flags <= ``--target-far`` of the fold's real *validation* crops, and the
mean/worst rows. Choices are made on these held-out figures only.

    python -m streamguard.training.layer_probe --config configs/train-whisper-asp.toml \\
        --features /work/data/features --heldout DIR --daemon-config configs/streamguard.toml \\
        --groups a+b,c+d --out runs/layer-probe
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.errors import StreamguardError
from streamguard.training.data import Example

#: Probes: name -> the encoder states (0 = the conv front end, k = block k) whose statistics
#: feed the logistic regression. Filled per run from the cache's layer count.
ALL = "all"


def pooled_stats(states: np.ndarray) -> np.ndarray:
    """``[..., L + 1, T', d]`` states -> ``[..., L + 1, 2 d]`` float32 (mean, std over time)."""
    x = states.astype(np.float32)
    return np.concatenate([x.mean(axis=-2), x.std(axis=-2)], axis=-1)


def probes(n_states: int) -> dict[str, list[int]]:
    named = {f"L{k}": [k] for k in range(n_states)}
    named["L1-3"] = [1, 2, 3]
    named["L4-6"] = [4, 5, 6][: max(0, n_states - 4)]
    named[ALL] = list(range(n_states))
    return {k: v for k, v in named.items() if v and max(v) < n_states}


def _train_stats(config, out: Path, echo) -> dict[str, Any]:
    """Pooled statistics of every train/val clip's cached crops (computed once)."""
    from streamguard.training.data import load_sources
    from streamguard.training.features import CropPolicy, FeatureCache, build_frozen_module

    path = out / "train-stats.npz"
    splits = load_sources(config.data)
    examples = [*splits.train, *splits.val]
    if path.is_file():
        got = np.load(path, allow_pickle=False)
        return {k: got[k] for k in got.files}
    module = build_frozen_module({**config.model.params, "layers": None})
    seg, feat = config.segment, config.features
    policy = CropPolicy(seconds=seg.seconds, mode=feat.crop, crops=feat.crops,
                        sample_rate=seg.sample_rate)  # fmt: skip
    cache = FeatureCache(config.features.dir, module, policy)
    examples, problems = cache.fill(examples, progress=config.run.progress, echo=echo)
    for problem in problems:
        echo(f"skipped {problem}")
    rows, labels, families, subsets, conditions = [], [], [], [], []
    from tqdm import tqdm

    bar = tqdm(examples, desc="train/val stats", unit="clip", file=sys.stderr, disable=None)
    for e in bar:
        try:
            crops = pooled_stats(cache.load(e.path))
        except StreamguardError as exc:
            echo(f"skipped {e.path}: {exc}")
            continue
        for c in crops:
            rows.append(c)
            labels.append(e.label)
            families.append(e.family or "")
            subsets.append(e.subset or "")
            conditions.append(e.condition or "")
    stats = {"x": np.stack(rows).astype(np.float16), "label": np.array(labels),
             "family": np.array(families), "subset": np.array(subsets),
             "condition": np.array(conditions)}  # fmt: skip
    np.savez(path, **stats)
    return stats


class _StatsCollector:
    """A detector for the daemon's chain that records each window's pooled states and returns
    the window's index as its "score", so every statistic maps back to its clip."""

    def __init__(self, cached):
        self.cached = cached
        self.info = cached.info
        self.window_samples = cached.window_samples
        self.rows: list[np.ndarray] = []

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        first = len(self.rows)
        self.rows.extend(pooled_stats(self.cached.states(waveforms)))
        return np.arange(first, len(self.rows), dtype=np.float32)


def _heldout_stats(config, heldout: Path, track, out: Path, families: Sequence[str]) -> dict:
    """Pooled statistics of the held-out windows (the daemon's chain over heldout/<F>.csv)."""
    from streamguard.model.base import ModelInfo
    from streamguard.training.evaluate import score_through_chain
    from streamguard.training.features import (
        CachedWindowsDetector,
        CropPolicy,
        FeatureCache,
        build_frozen_module,
    )
    from streamguard.training.lofo import _heldout_examples

    path = out / "heldout-stats.npz"
    if path.is_file():
        got = np.load(path, allow_pickle=False)
        return {k: got[k] for k in got.files}
    seg, feat = config.segment, config.features
    module = build_frozen_module({**config.model.params, "layers": None})
    policy = CropPolicy(seconds=seg.seconds, mode=feat.crop, crops=feat.crops,
                        sample_rate=seg.sample_rate)  # fmt: skip
    cache = FeatureCache(config.features.dir, module, policy)
    info = ModelInfo(name="layer-probe", architecture="whisper-asp",
                     sample_rate=seg.sample_rate, window_seconds=seg.seconds)  # fmt: skip
    collector = _StatsCollector(CachedWindowsDetector(module, info, cache))
    held: list[Example] = _heldout_examples(list(families), [], heldout)
    results, _ = score_through_chain(collector, held, track=track, progress=config.run.progress)
    index, labels, fams, conditions = [], [], [], []
    for r in results:
        for i in r.scores.astype(np.int64):
            index.append(i)
            labels.append(r.example.label)
            fams.append(r.example.family if r.example.label else "")
            conditions.append(r.example.condition or "")
    x = np.stack([collector.rows[i] for i in index])
    stats = {"x": x.astype(np.float16), "label": np.array(labels), "family": np.array(fams),
             "condition": np.array(conditions)}  # fmt: skip
    np.savez(path, **stats)
    return stats


def _fit(x: np.ndarray, y: np.ndarray, c: float):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classifier = LogisticRegression(C=c, max_iter=2000, class_weight="balanced")
    model = make_pipeline(StandardScaler(), classifier)
    return model.fit(x, y)


def _family_row(scores, labels, families, conditions, family, threshold) -> dict[str, Any]:
    from streamguard.training.metrics import eer

    real = labels == 0
    mine = families == family
    keep = real | mine
    row: dict[str, Any] = {"family": family, "n_fake": int(mine.sum())}
    row["eer"] = eer(labels[keep], scores[keep])[0]
    phone = keep & (conditions == "phone")
    both = (phone & mine).any() and (phone & real).any()
    row["eer_phone"] = eer(labels[phone], scores[phone])[0] if both else None
    row["caught"] = float((scores[mine] >= threshold).mean())
    row["real_flagged"] = float((scores[real] >= threshold).mean())
    return row


def run_probe(config, *, heldout: Path, groups: list[list[str]], out: Path, track,
              c: float, target_far: float, echo=print) -> list[dict[str, Any]]:  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    train = _train_stats(config, out, echo)
    held = _heldout_stats(config, heldout, track, out, [f for g in groups for f in g])
    n_states = train["x"].shape[1]
    rows: list[dict[str, Any]] = []
    for name, layers in probes(n_states).items():
        xt = train["x"][:, layers].reshape(len(train["x"]), -1).astype(np.float32)
        xh = held["x"][:, layers].reshape(len(held["x"]), -1).astype(np.float32)
        for group in groups:
            out_group = np.isin(train["family"], group)
            fit_rows = ~out_group & (train["subset"] == "train")
            val_real = (train["subset"] == "val") & (train["label"] == 0)
            model = _fit(xt[fit_rows], train["label"][fit_rows], c)
            val_scores = model.predict_proba(xt[val_real])[:, 1]
            threshold = float(np.quantile(val_scores, 1.0 - target_far))
            scores = model.predict_proba(xh)[:, 1]
            for family in group:
                if not (held["family"] == family).any():
                    continue
                row = _family_row(scores, held["label"], held["family"], held["condition"],
                                  family, threshold)  # fmt: skip
                rows.append({"probe": name, "fold": "+".join(group), **row})
        mean = {k: float(np.mean([r[k] for r in rows if r["probe"] == name and r[k] is not None]))
                for k in ("eer", "eer_phone", "caught", "real_flagged")}  # fmt: skip
        worst = max(r["eer"] for r in rows if r["probe"] == name)
        echo(f"{name:6s} mean EER {mean['eer']:.1%} phone {mean['eer_phone']:.1%} "
             f"caught {mean['caught']:.1%} real flagged {mean['real_flagged']:.1%} "
             f"worst EER {worst:.1%}")  # fmt: skip
    write_table(out, rows, {"c": c, "target_far": target_far, "groups": groups})
    return rows


def write_table(out: Path, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    (out / "probe.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    names = list(dict.fromkeys(r["probe"] for r in rows))
    families = list(dict.fromkeys(r["family"] for r in rows))
    lines = ["| probe | " + " | ".join(families) + " | mean EER | worst EER | mean EER phone "
             "| mean caught | mean real flagged |",
             "|---" * (len(families) + 6) + "|"]  # fmt: skip
    for name in names:
        mine = {r["family"]: r for r in rows if r["probe"] == name}
        eers = [mine[f]["eer"] for f in families if f in mine]
        phones = [m["eer_phone"] for m in mine.values() if m["eer_phone"] is not None]
        cells = [f"{mine[f]['eer']:.1%}" if f in mine else "n/a" for f in families]
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | {np.mean(eers):.1%} | {max(eers):.1%} | {np.mean(phones):.1%}"
            + f" | {np.mean([m['caught'] for m in mine.values()]):.1%}"
            + f" | {np.mean([m['real_flagged'] for m in mine.values()]):.1%} |"
        )  # fmt: skip
    (out / "probe.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.training.layer_probe",
        description="linear probes per Whisper encoder layer, judged on held-out families",
    )
    parser.add_argument("--config", required=True, help="a whisper-asp training config")
    parser.add_argument("--features", required=True, help="feature cache root")
    parser.add_argument("--heldout", required=True, type=Path, help="folder of <family>.csv")
    parser.add_argument("--groups", required=True, help="families left out together: a+b,c+d")
    parser.add_argument("--daemon-config", type=Path, help="[track] settings of the chain")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--c", type=float, default=0.1, help="inverse L2 strength")
    parser.add_argument("--target-far", type=float, default=0.01)
    args = parser.parse_args(argv)
    from streamguard.training.config import load_config
    from streamguard.training.lofo import _daemon_tables

    try:
        config = load_config(args.config, {"features.dir": str(Path(args.features).resolve())})
        groups = [[f for f in g.split("+") if f] for g in args.groups.split(",") if g]
        track = _daemon_tables(args.daemon_config).get("track")
        run_probe(config, heldout=args.heldout, groups=groups, out=args.out, track=track,
                  c=args.c, target_far=args.target_far)  # fmt: skip
    except StreamguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print((args.out / "probe.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
