"""Would fusing two candidates beat the better one on held-out families? (issue #17, item 4)

Why: serving two detectors costs the sum of both, so a fusion has to earn its place on the
families neither model heard. Two leave-one-group-out runs (:mod:`streamguard.training.lofo`)
over the same groups already hold, per fold, every window's score on the fold's validation set
(``<fold>/eval/val/windows.csv``) and on each held-out family
(``<fold>/eval-heldout-<family>/windows.csv``), all through the daemon's chain, so windows line
up by (clip, start). The fusion is a logistic regression on the two logits, fitted on the
fold's *validation* windows (seen families only) and judged on the held-out ones; nothing here
trains or scores audio again.

    python -m streamguard.training.fusion RUN_A RUN_B      # two lofo --out folders
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from streamguard.errors import StreamguardError

Key = tuple[str, str]


def read_windows(path: Path) -> dict[Key, tuple[int, float]]:
    """``(clip path, start) -> (label, score)`` from a report's ``windows.csv``."""
    try:
        with path.open(newline="") as fh:
            return {
                (str(Path(r["path"]).resolve()), r["start"]): (int(r["label"]), float(r["score"]))
                for r in csv.DictReader(fh)
            }
    except (OSError, KeyError, ValueError) as exc:
        raise StreamguardError(f"{path}: not a windows.csv of an evaluation ({exc})") from None


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return np.log(p / (1 - p))


def _paired(a: dict, b: dict) -> tuple[np.ndarray, np.ndarray]:
    """Labels and ``[n, 2]`` logits of the windows both runs scored."""
    keys = sorted(set(a) & set(b))
    labels = np.array([a[k][0] for k in keys], dtype=np.int64)
    x = np.c_[_logit(np.array([a[k][1] for k in keys])), _logit(np.array([b[k][1] for k in keys]))]
    return labels, x


def fuse(run_a: Path, run_b: Path) -> list[dict]:
    """One row per held-out family both runs judged: EER of A, of B, and of the fusion."""
    from sklearn.linear_model import LogisticRegression

    from streamguard.training.metrics import eer

    rows = []
    for fold in sorted(p.name for p in run_a.iterdir() if (p / "eval" / "val").is_dir()):
        if not (run_b / fold / "eval" / "val").is_dir():
            continue
        labels, x = _paired(
            *(read_windows(r / fold / "eval/val/windows.csv") for r in (run_a, run_b))
        )
        fit = LogisticRegression(class_weight="balanced").fit(x, labels)
        for held in sorted((run_a / fold).glob("eval-heldout*/windows.csv")):
            other = run_b / fold / held.parent.name / "windows.csv"
            if not other.is_file():
                continue
            y, z = _paired(read_windows(held), read_windows(other))
            family = held.parent.name.removeprefix("eval-heldout").lstrip("-") or fold
            rows.append({"fold": fold, "family": family, "windows": len(y),
                         "eer_a": eer(y, z[:, 0])[0], "eer_b": eer(y, z[:, 1])[0],
                         "eer_fused": eer(y, fit.decision_function(z))[0],
                         "weights": [float(w) for w in fit.coef_[0]]})  # fmt: skip
    return rows


def format_rows(rows: list[dict], names: tuple[str, str]) -> str:
    lines = [f"| family | windows | {names[0]} | {names[1]} | fused | fold weights (a, b) |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        w = ", ".join(f"{v:.2f}" for v in r["weights"])
        lines.append(f"| {r['family']} | {r['windows']} | {r['eer_a']:.1%} | {r['eer_b']:.1%} "
                     f"| {r['eer_fused']:.1%} | {w} |")  # fmt: skip
    if rows:
        mean = [np.mean([r[k] for r in rows]) for k in ("eer_a", "eer_b", "eer_fused")]
        lines.append(f"| mean | | {mean[0]:.1%} | {mean[1]:.1%} | {mean[2]:.1%} | |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.training.fusion",
        description="held-out EER of two leave-one-group-out runs and of their logit fusion",
    )
    parser.add_argument("run_a", type=Path, help="a lofo --out folder")
    parser.add_argument("run_b", type=Path, help="another, over the same groups")
    args = parser.parse_args(argv)
    try:
        rows = fuse(args.run_a, args.run_b)
    except StreamguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not rows:
        print("error: the two runs share no fold with held-out windows", file=sys.stderr)
        return 2
    print(format_rows(rows, (args.run_a.name, args.run_b.name)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
