"""The leave-one-family-out table's columns for a model that was *not* retrained per fold.

Why: the bundled model (or any model) is compared with the candidates' leave-one-group-out
table on the families it never heard. This reads a finished ``streamguard evaluate --out DIR``
(``windows.csv`` + ``clips.csv``: the daemon's windows, nothing scored again) and writes one row
per fake family with the columns of :mod:`streamguard.training.lofo` (window EER, share caught
at the model's threshold, real windows flagged, per condition clean/phone), then the mean and
the worst family.

    python -m streamguard.training.family_table /work/data/runs/starter-unseen --threshold 0.895
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from streamguard.training.lofo import markdown_table, summary_rows
from streamguard.training.metrics import at_threshold, eer, has_both_classes


def _figures(labels: list[int], scores: list[float], threshold: float) -> dict[str, Any]:
    if not has_both_classes(labels):
        return {}
    at = at_threshold(labels, scores, threshold)
    return {"eer": eer(labels, scores)[0], "recall": at.recall, "far": at.far}


def family_rows(
    folder: Path, threshold: float, families: list[str] | None = None, subset: str | None = None
) -> list[dict]:
    """One row per fake family of the evaluation in ``folder`` (all its real windows beside);
    ``subset``: only the clips of that split (e.g. ``test``, to match the folds' sets)."""
    meta = {}
    with (folder / "clips.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if subset is None or row["subset"] == subset:
                meta[(row["path"], row["label"])] = (row["family"], row["condition"] or "")
    windows: dict[str, list[tuple[int, float, str]]] = defaultdict(list)
    real: list[tuple[int, float, str]] = []
    with (folder / "windows.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            if (row["path"], row["label"]) not in meta:
                continue
            family, condition = meta[(row["path"], row["label"])]
            item = (int(row["label"]), float(row["score"]), condition)
            (windows[family] if item[0] == 1 else real).append(item)
    rows = []
    for family in families or sorted(windows):
        both = real + windows.get(family, [])
        pooled = _figures([x[0] for x in both], [x[1] for x in both], threshold)
        row: dict[str, Any] = {
            "family": family,
            "n_fake_windows": len(windows.get(family, [])),
            "n_real_windows": len(real),
            "eer": pooled.get("eer"),
            "caught": pooled.get("recall"),
            "real_flagged": pooled.get("far"),
            "threshold": threshold,
        }
        for condition, suffix in (("clean", "clean"), ("phone", "phone")):
            part = [x for x in both if x[2] == condition]
            got = _figures([x[0] for x in part], [x[1] for x in part], threshold)
            row[f"eer_{suffix}"] = got.get("eer")
            row[f"caught_{suffix}"] = got.get("recall")
            if suffix == "phone":
                row["real_flagged_phone"] = got.get("far")
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a `streamguard evaluate --out` folder")
    parser.add_argument("--threshold", type=float, required=True, help="the model's threshold")
    parser.add_argument("--families", help="comma-separated (default: every fake family)")
    parser.add_argument("--subset", help="only clips of this split (e.g. test)")
    args = parser.parse_args(argv)
    families = args.families.split(",") if args.families else None
    rows = family_rows(args.folder, args.threshold, families, args.subset)
    print(markdown_table(rows + summary_rows(rows)), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
