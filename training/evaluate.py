"""Score labelled audio the way the daemon does, and report window-, clip- and call-level metrics.

**How clips are scored** (:func:`score_through_chain`): every clip is decoded by the one file
reader (:func:`streamguard.audio.file.decode_mono`, soxr stream resampling to 16 kHz), pushed
whole through a :class:`~streamguard.audio.track.TrackPipeline` (ring buffer, webrtcvad gate,
windower: the daemon's per-track chain, with the daemon's ``[track]`` settings), and the windows
of all clips are scored in the engine's batches, by
:class:`streamguard.scoring.offline.OfflineScorer`: the path ``scan`` and the serving checks
take too. Nothing is cropped by hand: a 10 s clip gives the
windows a 10 s call would (0-4, 1-5, ... s with a 1 s hop, where there is enough speech).

**Three levels** of the report:

* ``windows``: every scored window is one example with its clip's label (the detector's own
  accuracy on what the daemon feeds it); the shipped threshold's false-alarm rate here is "real
  windows flagged".
* ``clips``: one score per clip, the mean of its window scores (clips without a scored window
  are counted in ``no_windows``).
* ``calls``: each clip replayed through the daemon's alert policy
  (:class:`streamguard.policy.smoothing.Smoother`: smoothing, on/off thresholds, ``raise_after``):
  the share of real clips that raise an alert (the call-level false-alarm rate), the share of
  fakes that do, the detection delay (call seconds until the alert), and the verdict.

Groups: every example attribute with at least two distinct values (``source``, ``subset``,
``condition``) gets a table; ``attack`` and ``family`` follow the ASVspoof convention, i.e. each
attack's (family's) fakes are scored against *all* real clips of the evaluated set, which is the
leave-one-family-out figure when the model was trained without that family. Metric definitions
are in :mod:`streamguard.training.metrics`.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.errors import StreamguardError
from streamguard.policy import AlertPolicy, replay
from streamguard.policy.smoothing import SmoothingSettings
from streamguard.policy.verdict import DEFAULT_MIN_SPEECH_SECONDS, format_threshold
from streamguard.training import metrics
from streamguard.training.data import ClipStore, Example, Problem, crop

__all__ = [
    "ClipResult",
    "chain_report",
    "evaluate_detector",
    "evaluate_scores",
    "score_examples",
    "score_through_chain",
]

GROUP_KEYS = ("source", "subset", "condition", "attack", "family")
CLASS_KEYS = ("attack", "family")  # fakes of one value against every real example
REAL_ATTACKS = (None, "", "-", "bonafide")


def decoded(
    examples: Sequence[Example], store: ClipStore, problems: list[Problem], *, progress: bool
) -> Iterator[tuple[Example, np.ndarray]]:
    """Each example with its decoded clip; one that cannot be decoded goes to ``problems``
    (the report lists it) and the rest go on."""
    from tqdm.auto import tqdm

    for example in tqdm(examples, desc="scoring", disable=not progress, unit="clip"):
        try:
            clip = store.get(example.path)
        except StreamguardError as exc:
            problems.append(Problem(example.origin or str(example.path), str(exc)))
            continue
        yield example, clip


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

    for example, clip in decoded(examples, store, problems, progress=progress):
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
    if key in CLASS_KEYS:
        reals = np.array([e.label == 0 for e in examples])
        attacks = sorted(
            {
                v
                for v, e in zip(values, examples, strict=True)
                if e.label == 1 and v not in REAL_ATTACKS and v != "bonafide"
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
        f"threshold {format_threshold(report['threshold'])} (P(fake) >= threshold is called fake)",
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
    ax.axvline(threshold, c="k", ls="--", label=f"threshold {format_threshold(threshold)}")
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


# --------------------------------------------------------------------------- the daemon's chain


@dataclass
class ClipResult:
    """One clip after the chain: its scored windows and what the alert policy made of them."""

    example: Example
    starts: np.ndarray  # window start, call seconds
    ends: np.ndarray  # end of the window's real audio, call seconds
    scores: np.ndarray  # P(fake) per window
    duration: float = 0.0
    speech_seconds: float = 0.0
    windows_skipped: int = 0
    alerts: list[tuple[str, float]] = field(default_factory=list)  # (raised|cleared, call s)
    verdict: str = "inconclusive"

    @property
    def first_alert(self) -> float | None:
        """Call seconds at which the first alert was raised (None: never)."""
        return next((t for state, t in self.alerts if state == "raised"), None)

    @property
    def mean_score(self) -> float:
        return float(np.mean(self.scores)) if self.scores.size else float("nan")


def score_through_chain(
    detector,
    examples: Sequence[Example],
    *,
    track=None,
    store: ClipStore | None = None,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[list[ClipResult], list[Problem]]:
    """Every clip through the daemon's per-track chain; windows scored in shared batches.

    ``track`` is a :class:`streamguard.audio.track.TrackSettings` (default: the daemon's
    defaults); the detector's own window length always wins, as in the daemon.
    """
    from streamguard.scoring.offline import OfflineScorer

    rate = detector.info.sample_rate
    store = store or ClipStore(rate, "none")
    scorer = OfflineScorer(detector, track, max_batch=batch_size)
    kept: list[Example] = []
    problems: list[Problem] = []
    for example, clip in decoded(examples, store, problems, progress=progress):
        index = scorer.track(rate)
        scorer.push(index, clip)
        scorer.finish(index)
        kept.append(example)
    results = [
        ClipResult(
            example,
            np.asarray(t.starts, dtype=np.float64),
            np.asarray(t.ends, dtype=np.float64),
            np.asarray(t.scores, dtype=np.float32),
            duration=t.duration,
            speech_seconds=t.speech_seconds,
            windows_skipped=t.windows_skipped,
        )
        for example, t in zip(kept, scorer.close(), strict=True)
    ]
    return results, problems


def apply_policy(results: Sequence[ClipResult], policy: AlertPolicy) -> None:
    """Replay every clip's windows through the daemon's alert policy (in place): alerts and the
    verdict, exactly as a call of that audio would end (:func:`streamguard.policy.replay`)."""
    for r in results:
        spans = list(zip(r.starts.tolist(), r.ends.tolist(), strict=True))
        alerts, r.verdict = replay(r.scores, policy, speech_seconds=r.speech_seconds, spans=spans)
        r.alerts = [(a.state, a.end) for a in alerts]


def policy_summary(results: Sequence[ClipResult]) -> dict[str, Any]:
    """Call-level figures of a set of clips: alert rates per class, delays, verdicts."""
    real = [r for r in results if r.example.label == 0]
    fake = [r for r in results if r.example.label == 1]
    delays = np.array([r.first_alert for r in fake if r.first_alert is not None])

    def share(rows, pred) -> float | None:
        return sum(1 for r in rows if pred(r)) / len(rows) if rows else None

    return {
        "n_real": len(real),
        "n_fake": len(fake),
        "real_alerted": share(real, lambda r: r.first_alert is not None),
        "fake_alerted": share(fake, lambda r: r.first_alert is not None),
        "real_verdict_fake": share(real, lambda r: r.verdict == "fake"),
        "fake_verdict_fake": share(fake, lambda r: r.verdict == "fake"),
        "inconclusive": share(list(results), lambda r: r.verdict == "inconclusive"),
        "alerts_per_real_call": (
            sum(sum(s == "raised" for s, _ in r.alerts) for r in real) / len(real) if real else None
        ),
        "delay_median_s": float(np.median(delays)) if delays.size else None,
        "delay_p90_s": float(np.percentile(delays, 90)) if delays.size else None,
        "delay_max_s": float(delays.max()) if delays.size else None,
    }


def policy_report(results: Sequence[ClipResult]) -> dict[str, Any]:
    """``pooled`` and per-group :func:`policy_summary` (attack/family: fakes + all reals)."""
    examples = [r.example for r in results]
    report: dict[str, Any] = {"pooled": policy_summary(results), "groups": {}}
    for key in GROUP_KEYS:
        groups = _group_members(examples, key)
        if groups:
            report["groups"][key] = {
                value: policy_summary([r for r, m in zip(results, mask, strict=True) if m])
                for value, mask in groups.items()
                if mask.any()
            }
    return report


def format_policy_table(report: dict[str, Any]) -> str:
    columns = (
        ("real", "n_real", False),
        ("fake", "n_fake", False),
        ("real alerted", "real_alerted", True),
        ("fake alerted", "fake_alerted", True),
        ("real->fake verdict", "real_verdict_fake", True),
        ("fake->fake verdict", "fake_verdict_fake", True),
        ("delay med", "delay_median_s", False),
        ("delay p90", "delay_p90_s", False),
    )
    rows = [["pooled"] + [_cell(report["pooled"].get(k), pct) for _, k, pct in columns]]
    for key, groups in report["groups"].items():
        for value, summary in groups.items():
            rows.append([f"{key}={value}"] + [_cell(summary.get(k), pct) for _, k, pct in columns])
    header = ["calls"] + [title for title, _, _ in columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)


def window_examples(results: Sequence[ClipResult]) -> tuple[list[Example], np.ndarray]:
    """One example per scored window (its clip's attributes) and the window scores."""
    examples = [r.example for r in results for _ in range(r.scores.size)]
    scores = (
        np.concatenate([r.scores for r in results]) if results else np.zeros(0, np.float32)
    ).astype(np.float64)
    return examples, scores


def chain_report(
    results: Sequence[ClipResult],
    threshold: float,
    smoothing: SmoothingSettings | None = None,
    *,
    min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS,
) -> dict[str, Any]:
    """The full report: ``windows``, ``clips`` and ``calls`` (the alert policy: ``smoothing``,
    default the daemon's, and ``[verdict] min_speech_seconds``)."""
    smoothing = smoothing or SmoothingSettings()
    win_examples, win_scores = window_examples(results)
    scored = [r for r in results if r.scores.size]
    report: dict[str, Any] = {
        "threshold": float(threshold),
        "windows": evaluate_scores(win_examples, win_scores, threshold),
        "clips": evaluate_scores(
            [r.example for r in scored], np.array([r.mean_score for r in scored]), threshold
        ),
        "no_windows": len(results) - len(scored),
    }
    apply_policy(results, AlertPolicy(threshold, smoothing, min_speech_seconds))
    report["calls"] = policy_report(results)
    from streamguard.training.switch import switch_report

    if (switch := switch_report(results)) is not None:  # calls with a switch_at column
        report["switch"] = switch
    on, off = smoothing.thresholds(threshold)
    report["policy"] = dict(smoothing.model_dump(), on=on, off=off)
    # Back-compatible top level: the window-level pooled/groups.
    report["pooled"], report["groups"] = report["windows"]["pooled"], report["windows"]["groups"]
    return report


def format_chain_report(report: dict[str, Any]) -> str:
    pol = report["policy"]
    return "\n".join(
        [
            "WINDOWS (every 4 s window the daemon would score; label = its clip's)",
            format_table(report["windows"]),
            "",
            "CLIPS (mean window score per clip"
            + (f"; {report['no_windows']} clips had no window with enough speech)"
               if report["no_windows"] else ")"),
            format_table(report["clips"]),
            "",
            f"CALLS (each clip replayed through the alert policy: {pol['mode']} "
            f"alpha {pol['ema_alpha']:g}, on {pol['on']:.3f} / off {pol['off']:.3f}, "
            f"raise after {pol['raise_after']} windows; delays in call seconds)",
            format_policy_table(report["calls"]),
            *_switch_lines(report),
        ]
    )  # fmt: skip


def _switch_lines(report: dict[str, Any]) -> list[str]:
    if "switch" not in report:
        return []
    from streamguard.training.switch import format_switch_table

    return [
        "",
        "VOICE SWITCH (real voice, then synthetic from switch_at: delay after the switch; "
        "an alert before it is an early alarm)",
        format_switch_table(report["switch"]),
    ]


def write_chain_report(
    out_dir: str | Path,
    report: dict[str, Any],
    results: Sequence[ClipResult],
    *,
    problems: Sequence[Problem] = (),
    title: str = "",
) -> Path:
    """metrics.json, metrics.txt, clips.csv, windows.csv, and PNGs: roc_det.png / scores.png
    (windows), roc_det_clips.png, delays.png (calls)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = dict(report, skipped=[str(p) for p in problems])
    (out / "metrics.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "metrics.txt").write_text(format_chain_report(report) + "\n")
    attrs = ("source", "subset", "speaker", "attack", "family", "condition")
    with (out / "clips.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(
            ["path", "label", *attrs, "windows", "mean", "max", "first_alert", "alerts", "verdict",
             "speech_seconds", "duration", "switch_at"]
        )  # fmt: skip
        for r in results:
            e = r.example
            writer.writerow(
                [e.path, e.label, *(getattr(e, a) or "" for a in attrs), r.scores.size,
                 _num(r.mean_score), _num(float(r.scores.max()) if r.scores.size else None),
                 _num(r.first_alert), sum(s == "raised" for s, _ in r.alerts), r.verdict,
                 f"{r.speech_seconds:.2f}", f"{r.duration:.2f}", _num(e.switch_at)]
            )  # fmt: skip
    with (out / "windows.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "label", "start", "end", "score"])
        for r in results:
            for s, e, p in zip(r.starts, r.ends, r.scores, strict=True):
                writer.writerow([r.example.path, r.example.label, f"{s:.3f}", f"{e:.3f}", _num(p)])
    win_examples, win_scores = window_examples(results)
    labels = np.array([e.label for e in win_examples], dtype=np.int64)
    if labels.size:
        plot_histogram(labels, win_scores, report["threshold"], out / "scores.png")
    if metrics.has_both_classes(labels):
        plot_curves(labels, win_scores, out / "roc_det.png", f"{title} (windows)")
    scored = [r for r in results if r.scores.size]
    clip_labels = np.array([r.example.label for r in scored], dtype=np.int64)
    if metrics.has_both_classes(clip_labels):
        clip_scores = np.array([r.mean_score for r in scored])
        plot_curves(clip_labels, clip_scores, out / "roc_det_clips.png", f"{title} (clips)")
    delays = [r.first_alert for r in results if r.example.label == 1 and r.first_alert is not None]
    if delays:
        plot_delays(
            np.array(delays), sum(r.example.label == 1 for r in results), out / "delays.png"
        )
    return out


def _num(value) -> str:
    return (
        "" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.6f}"
    )


def plot_delays(delays: np.ndarray, n_fake: int, path: Path) -> None:
    """Share of synthetic calls alerted by call time t (a cumulative curve)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    xs = np.sort(delays)
    ax.step(xs, np.arange(1, xs.size + 1) / max(1, n_fake), where="post")
    ax.set(xlabel="call seconds until the alert", ylabel="share of synthetic calls alerted",
           ylim=(0, 1), title="detection delay")  # fmt: skip
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate_detector(
    detector,
    examples: Sequence[Example],
    *,
    threshold: float | None = None,
    out_dir: str | Path | None = None,
    store: ClipStore | None = None,
    track=None,
    smoothing=None,
    min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS,
    batch_size: int = 32,
    progress: bool = False,
) -> tuple[dict[str, Any], list[Problem]]:
    """Score through the daemon's chain, report (at the model's own threshold unless given) and
    optionally write files. ``track`` / ``smoothing`` / ``min_speech_seconds``: the daemon's
    ``[track]`` / ``[smoothing]`` / ``[verdict]`` settings (default: the daemon's defaults)."""
    results, problems = score_through_chain(
        detector, examples, track=track, store=store, batch_size=batch_size, progress=progress
    )
    thr = detector.info.threshold if threshold is None else float(threshold)
    report = chain_report(results, thr, smoothing, min_speech_seconds=min_speech_seconds)
    report["model"] = detector.info.name
    if out_dir is not None:
        write_chain_report(out_dir, report, results, problems=problems, title=detector.info.name)
    return report, problems
