"""Score labelled clips with a detector and report metrics per subset and pooled.

Scoring uses the :class:`streamguard.model.Detector` the daemon and scanner use (same module,
same window), one fixed crop per clip (``start`` by default, like the card's truncation; or
``center``), short clips zero-padded at the end.

Groups: every example attribute with at least two distinct values (``source``, ``subset``,
``condition``) gets a table; ``attack`` follows the ASVspoof convention, i.e. each attack's
fakes are scored against *all* real clips of the evaluated set. Metric definitions are in
:mod:`streamguard.training.metrics`.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.errors import StreamguardError
from streamguard.training import metrics
from streamguard.training.data import ClipStore, Example, Problem, crop

GROUP_KEYS = ("source", "subset", "condition", "attack")
REAL_ATTACKS = (None, "", "-", "bonafide")


def score_examples(
    detector,
    examples: Sequence[Example],
    *,
    store: ClipStore | None = None,
    crop_mode: str = "start",
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[np.ndarray, list[Example], list[Problem]]:
    """``(P(fake) per scored clip, the scored examples, clips that failed to decode)``."""
    from tqdm.auto import tqdm

    store = store or ClipStore(detector.info.sample_rate, "none")
    window = detector.window_samples
    scores: list[np.ndarray] = []
    kept: list[Example] = []
    problems: list[Problem] = []
    pending: list[np.ndarray] = []

    def flush() -> None:
        if pending:
            scores.append(np.asarray(detector(np.stack(pending)), dtype=np.float32))
            pending.clear()

    for example in tqdm(examples, desc="scoring", disable=not progress, unit="clip"):
        try:
            clip = store.get(example.path)
        except StreamguardError as exc:
            problems.append(Problem(example.origin or str(example.path), str(exc)))
            continue
        pending.append(crop(clip, window, crop_mode))
        kept.append(example)
        if len(pending) >= batch_size:
            flush()
    flush()
    out = np.concatenate(scores) if scores else np.zeros(0, np.float32)
    return out, kept, problems


def _group_members(examples: Sequence[Example], key: str) -> dict[str, np.ndarray]:
    """Value -> boolean mask of the examples in that group (attack: its fakes + all reals)."""
    values = [getattr(e, key) for e in examples]
    if key == "attack":
        reals = np.array([e.label == 0 for e in examples])
        attacks = sorted(
            {
                v
                for v, e in zip(values, examples, strict=True)
                if e.label == 1 and v not in REAL_ATTACKS
            }
        )
        return {
            a: reals
            | np.array([v == a and e.label == 1 for v, e in zip(values, examples, strict=True)])
            for a in attacks
        }
    distinct = sorted({v for v in values if v not in (None, "")})
    if len(distinct) < 2:
        return {}
    return {d: np.array([v == d for v in values]) for d in distinct}


def evaluate_scores(
    examples: Sequence[Example], scores: np.ndarray, threshold: float
) -> dict[str, Any]:
    """The report dict: ``threshold``, ``pooled`` summary and ``groups[key][value]`` summaries."""
    labels = np.array([e.label for e in examples], dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    report: dict[str, Any] = {
        "threshold": float(threshold),
        "pooled": metrics.summary(labels, scores, threshold) if len(labels) else {"n": 0},
        "groups": {},
    }
    for key in GROUP_KEYS:
        groups = _group_members(examples, key)
        if groups:
            report["groups"][key] = {
                value: metrics.summary(labels[mask], scores[mask], threshold)
                for value, mask in groups.items()
                if mask.any()
            }
    return report


def _cell(value: Any, percent: bool = False) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{100 * value:.2f}%" if percent else f"{value:.4f}"
    return str(value)


TABLE_COLUMNS = (
    ("n", "n", False),
    ("real", "n_real", False),
    ("fake", "n_fake", False),
    ("EER", "eer", True),
    ("EER thr", "eer_threshold", False),
    ("AUC", "auc", False),
    ("acc", "accuracy", True),
    ("prec", "precision", False),
    ("recall", "recall", False),
    ("F1", "f1", False),
    ("FAR", "far", True),
    ("FRR", "frr", True),
)


def format_table(report: dict[str, Any]) -> str:
    """A plain-text table: the pooled row, then one block per group."""
    rows: list[list[str]] = []

    def add(name: str, summary: dict[str, Any]) -> None:
        rows.append([name] + [_cell(summary.get(k), pct) for _, k, pct in TABLE_COLUMNS])

    add("pooled", report["pooled"])
    for key, groups in report["groups"].items():
        for value, summary in groups.items():
            add(f"{key}={value}", summary)
    header = ["subset"] + [title for title, _, _ in TABLE_COLUMNS]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        f"threshold {report['threshold']:.4f} (P(fake) >= threshold is called fake)",
        "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)),
    ]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def plot_curves(labels: np.ndarray, scores: np.ndarray, path: Path, title: str = "") -> None:
    """ROC (TPR vs FPR) and DET (FNR vs FPR on normal-deviate axes) side by side, EER marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.stats import norm

    fpr, fnr, _ = metrics.roc_points(labels, scores)
    rate, _ = metrics.eer(labels, scores)
    fig, (roc_ax, det_ax) = plt.subplots(1, 2, figsize=(10, 4.5))
    roc_ax.plot(fpr, 1 - fnr, lw=1.5)
    roc_ax.plot([0, 1], [0, 1], ls=":", c="grey")
    roc_ax.plot([rate], [1 - rate], "o", c="tab:red", label=f"EER {100 * rate:.2f}%")
    roc_ax.set(xlabel="false-alarm rate (real called fake)", ylabel="detection rate (TPR)")
    roc_ax.set_title(f"ROC, AUC {metrics.roc_auc(labels, scores):.4f}")
    roc_ax.legend(loc="lower right")
    clip = 1e-4
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    det_ax.plot(norm.ppf(np.clip(fpr, clip, 1 - clip)), norm.ppf(np.clip(fnr, clip, 1 - clip)))
    det_ax.plot(norm.ppf([clip, 1 - clip]), norm.ppf([clip, 1 - clip]), ls=":", c="grey")
    det_ax.plot(norm.ppf([rate]), norm.ppf([rate]), "o", c="tab:red")
    det_ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks])
    det_ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}%" for t in ticks])
    det_ax.set(xlabel="false-alarm rate", ylabel="miss rate (fake called real)", title="DET")
    det_ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_histogram(labels: np.ndarray, scores: np.ndarray, threshold: float, path: Path) -> None:
    """Score histograms of real and fake clips with the decision threshold."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0.0, 1.0, 41)
    for label, name, colour in ((0, "real", "tab:blue"), (1, "fake", "tab:red")):
        chosen = scores[labels == label]
        if chosen.size:
            ax.hist(chosen, bins=bins, alpha=0.55, color=colour, label=f"{name} (n={chosen.size})")
    ax.axvline(threshold, c="k", ls="--", label=f"threshold {threshold:.3f}")
    ax.set(xlabel="P(fake)", ylabel="clips", title="score distribution")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(
    out_dir: str | Path,
    report: dict[str, Any],
    examples: Sequence[Example],
    scores: np.ndarray,
    *,
    problems: Sequence[Problem] = (),
    title: str = "",
) -> Path:
    """metrics.json, metrics.txt, scores.csv and (when both classes are present) roc_det.png and
    scores.png in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = dict(report, skipped=[str(p) for p in problems])
    (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "metrics.txt").write_text(format_table(report) + "\n")
    with (out / "scores.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["path", "label", "score", "source", "subset", "speaker", "attack", "condition"]
        )
        for e, s in zip(examples, scores, strict=True):
            writer.writerow(
                [
                    e.path,
                    e.label,
                    f"{float(s):.6f}",
                    e.source,
                    e.subset or "",
                    e.speaker or "",
                    e.attack or "",
                    e.condition or "",
                ]
            )
    labels = np.array([e.label for e in examples], dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if labels.size:
        plot_histogram(labels, scores, report["threshold"], out / "scores.png")
    if metrics.has_both_classes(labels):
        plot_curves(labels, scores, out / "roc_det.png", title)
    return out


def evaluate_detector(
    detector,
    examples: Sequence[Example],
    *,
    threshold: float | None = None,
    out_dir: str | Path | None = None,
    store: ClipStore | None = None,
    crop_mode: str = "start",
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[dict[str, Any], list[Problem]]:
    """Score, report (at the model's own threshold unless given) and optionally write files."""
    scores, kept, problems = score_examples(
        detector,
        examples,
        store=store,
        crop_mode=crop_mode,
        batch_size=batch_size,
        progress=progress,
    )
    thr = detector.info.threshold if threshold is None else float(threshold)
    report = evaluate_scores(kept, scores, thr)
    report["model"] = detector.info.name
    if out_dir is not None:
        write_report(out_dir, report, kept, scores, problems=problems, title=detector.info.name)
    return report, problems
