"""Calibrate a decision threshold and export a trained module as a streamguard model directory.

The threshold travels in the model's ``config.json`` (``ModelInfo.threshold``), so ``scan``,
``serve`` and ``evaluate`` all use the same operating point without flags. By default it is the
validation EER threshold (false alarms and misses balanced); with ``target_far`` it is the lowest
threshold whose validation false-alarm rate (real speech called fake) is at most the target,
which is what a call centre that must not accuse real callers usually wants.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.errors import StreamguardError
from streamguard.policy.verdict import format_threshold
from streamguard.training import metrics
from streamguard.training.data import ClipStore, Example


def calibrate(labels, scores, *, target_far: float | None = None) -> dict[str, Any]:
    """The operating point: ``{"method", "threshold", "far", "frr", "eer", ...}`` on these
    (validation) scores. Falls back to 0.5 when a class is missing."""
    labels = np.asarray(labels, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    if not metrics.has_both_classes(labels):
        return {"method": "default", "threshold": 0.5, "reason": "validation lacks a class"}
    rate, eer_thr = metrics.eer(labels, scores)
    if target_far is None:
        threshold, method = eer_thr, "eer"
    else:
        threshold, _, _ = metrics.threshold_for_far(labels, scores, target_far)
        method = f"far<={target_far:g}"
    at = metrics.at_threshold(labels, scores, threshold)
    return {
        "method": method,
        "threshold": float(threshold),
        "target_far": target_far,
        "eer": rate,
        "eer_threshold": eer_thr,
        "far": at.far,
        "frr": at.frr,
        "n_real": int((labels == 0).sum()),
        "n_fake": int((labels == 1).sum()),
    }


def fit_score_map(labels, logits) -> tuple[float, float]:
    """Platt scaling: ``(a, b)`` of P(fake) = sigmoid(a * logit + b) on validation windows.

    Why: a network trained to separate seen families pushes their logits far out, so the raw
    sigmoid saturates and the threshold that flags 1% of real windows lands at 0.999 or more,
    a number nobody can read or tune. Both classes weigh the same, so the map does not depend
    on the validation set's real/fake mix. ``(1, 0)`` (the raw sigmoid) when it cannot be
    fitted: one class only, or a map that would not increase with the logit.
    """
    from sklearn.linear_model import LogisticRegression

    y = np.asarray(labels, dtype=np.int64)
    x = np.asarray(logits, dtype=np.float64).reshape(-1, 1)
    if not metrics.has_both_classes(y) or not np.isfinite(x).all():
        return 1.0, 0.0
    fit = LogisticRegression(C=1e6, class_weight="balanced", max_iter=1000).fit(x, y)
    scale, bias = float(fit.coef_[0, 0]), float(fit.intercept_[0])
    if not (scale > 0 and np.isfinite(scale) and np.isfinite(bias)):
        return 1.0, 0.0
    return scale, bias


class _LogitScorer:
    """The export's detector returning raw logits: the score map is fitted on unsaturated
    numbers, then applied to the same windows."""

    def __init__(self, detector):
        self.detector = detector
        self.info = detector.info
        self.window_samples = detector.info.window_samples

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        return np.asarray(self.detector.logits(waveforms), dtype=np.float32)


def _score_map_line(calibration: dict[str, Any]) -> str:
    scale = calibration.get("logit_scale", 1.0)
    bias = calibration.get("logit_bias", 0.0)
    if (scale, bias) == (1.0, 0.0):
        return "scores: the raw logit's sigmoid (no score map)"
    sign = "-" if bias < 0 else "+"
    return (
        f"scores: P(fake) = sigmoid({scale:.4g} * logit {sign} {abs(bias):.4g}), fitted on the"
        " validation windows (Platt scaling; `logit_scale`, `logit_bias` in config.json)"
    )


def _table_md(report: dict[str, Any] | None) -> str:
    if not report:
        return "_none_\n"
    from streamguard.training.evaluate import TABLE_COLUMNS, _cell

    header = "| subset | " + " | ".join(t for t, _, _ in TABLE_COLUMNS) + " |"
    rule = "|" + "---|" * (len(TABLE_COLUMNS) + 1)
    rows = [("pooled", report["pooled"])]
    for key, groups in report["groups"].items():
        rows += [(f"{key}={value}", summary) for value, summary in groups.items()]
    body = [
        f"| {name} | " + " | ".join(_cell(s.get(k), pct) for _, k, pct in TABLE_COLUMNS) + " |"
        for name, s in rows
    ]
    return "\n".join([header, rule, *body]) + "\n"


def model_card(
    *,
    name: str,
    architecture: str,
    n_params: int,
    calibration: dict[str, Any],
    data: dict[str, Any],
    recipe: dict[str, Any],
    val_report: dict[str, Any] | None,
    test_report: dict[str, Any] | None,
    limits: str | None = None,
    window_seconds: float = 4.0,
    sample_rate: int = 16_000,
) -> str:
    """MODEL_CARD.md: what it is, what it was trained on and how, how well, and its limits."""
    sources = "\n".join(
        f"- `{src}`: {c['real']} real, {c['fake']} fake" for src, c in data["train_sources"].items()
    )
    recipe_lines = "\n".join(f"- {k}: `{v}`" for k, v in recipe.items())
    far = calibration.get("far")
    frr = calibration.get("frr")
    small = data["train_total"] < 5_000
    extra = f"\n{limits.strip()}\n" if limits else ""
    small_note = (
        "- Trained on a small corpus: treat it as a demonstration model, not a production "
        "detector.\n"
        if small
        else ""
    )
    threshold = format_threshold(calibration["threshold"])
    return f"""# {name}

A streamguard deepfake-voice detector (`{architecture}`, {n_params:,} parameters), trained with
`streamguard train`. Input: {window_seconds:g} s of {sample_rate} Hz mono audio; output: P(fake).
A window is called fake when P(fake) >= **{threshold}** (stored in config.json with all its
digits as `threshold`).

## Decision threshold
- method: {calibration["method"]} on the validation split
- validation EER: {_pct(calibration.get("eer"))}; at the threshold: false-alarm rate
  {_pct(far)}, miss rate {_pct(frr)}
- {_score_map_line(calibration)}

## Training data
{data["train_total"]} training clips ({data["train_counts"]["real"]} real, \
{data["train_counts"]["fake"]} fake); {data["val_total"]} validation clips; \
{data["skipped"]} rows skipped.
{sources}

## Recipe
{recipe_lines}

## Validation metrics (best epoch, at the threshold)
{_table_md(val_report)}
## Test metrics
{_table_md(test_report)}
## Limits
- Scores are calibrated on the validation split above; other languages, channels, codecs and
  generators (especially ones absent from training) can shift the score distribution. Re-check
  the threshold with `streamguard evaluate` on data like yours.
- A score is evidence, not proof: keep a human in the loop before acting on an alert.
{small_note}{extra}
_Exported {dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}._
"""


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.2f}%"


def export_model(
    directory: str | Path,
    module,
    params: dict[str, Any],
    *,
    name: str,
    architecture: str,
    threshold: float,
    sample_rate: int = 16_000,
    window_seconds: float = 4.0,
    provenance: dict[str, Any] | None = None,
    half: bool = False,
    card: str | None = None,
    score_map: tuple[float, float] = (1.0, 0.0),
) -> Path:
    """Write a loadable model directory (the model package's format) carrying ``threshold``
    and the score map ``(logit_scale, logit_bias)`` it applies to."""
    from streamguard.model import ModelInfo, save_model_dir

    info = ModelInfo(
        name=name,
        architecture=architecture,
        sample_rate=sample_rate,
        window_seconds=window_seconds,
        threshold=float(threshold),
        provenance=dict(provenance or {}),
        logit_scale=float(score_map[0]),
        logit_bias=float(score_map[1]),
    )
    return save_model_dir(directory, module, info, params, half=half, model_card=card)


def export_trained(
    config,
    module,
    params: dict[str, Any],
    *,
    val: Sequence[Example],
    test: Sequence[Example],
    store: ClipStore,
    history: list[dict[str, Any]],
    best: dict[str, Any],
    train_counts: dict[str, int],
    echo: Callable[[str], None] = print,
    train_sources: dict[str, Any] | None = None,
    scorer: Callable[[Any, Any], Any] | None = None,
) -> Path:
    """Calibrate on validation, evaluate val/test, and write model dir + eval reports.

    ``scorer(module, info)`` makes what scores the windows (default: a plain Detector); the
    feature-cache path passes one that reuses cached encoder features (training/features.py).
    """
    from streamguard.model import Detector, ModelInfo, count_parameters
    from streamguard.training.evaluate import (
        chain_report,
        format_table,
        score_through_chain,
        window_examples,
        write_chain_report,
    )

    out_dir = Path(config.run.out_dir)
    export_dir = Path(config.export.dir or out_dir / "model")
    seg = config.segment
    info = ModelInfo(
        name=config.model.name,
        architecture=config.model.architecture,
        sample_rate=seg.sample_rate,
        window_seconds=seg.seconds,
    )
    detector = scorer(module, info) if scorer else Detector(module, info, device="cpu")
    calibration: dict[str, Any] = {"method": "default", "threshold": 0.5}
    skipped: list = []

    def score(examples: Sequence[Example], scorer=None):
        # The daemon's chain (VAD, windows every hop, shared batching): the threshold is
        # calibrated on the windows the daemon will really score, not on hand-made crops.
        results, problems = score_through_chain(
            scorer or detector,
            examples,
            store=store,
            batch_size=config.run.eval_batch_size,
            progress=config.run.progress,
        )
        skipped.extend(problems)
        return results, problems

    def report(split: str, title: str, results, problems):
        result = chain_report(results, calibration["threshold"])
        write_chain_report(
            out_dir / "eval" / split,
            result,
            results,
            problems=problems,
            title=f"{info.name} ({title})",
        )
        echo(f"{title} at the exported threshold:\n" + format_table(result["windows"]))
        return result["windows"]

    val_report = test_report = None
    score_map = (1.0, 0.0)
    if val:
        fit = config.export.calibrate_scores
        results, problems = score(val, _LogitScorer(detector) if fit else None)
        kept, scores = window_examples(results)
        labels = np.array([e.label for e in kept])
        if fit:  # the same windows, now as calibrated P(fake)
            score_map = fit_score_map(labels, scores)
            info = info.replace(logit_scale=score_map[0], logit_bias=score_map[1])
            detector.info = info
            for r in results:
                r.scores = info.p_fake(r.scores)
            kept, scores = window_examples(results)
        calibration = calibrate(labels, scores, target_far=config.export.target_far)
        calibration["unit"] = "windows"
        calibration["logit_scale"], calibration["logit_bias"] = score_map
        val_report = report("val", "validation", results, problems)
    if test and config.export.evaluate_test:
        test_report = report("test", "test", *score(test))
    recipe = {
        "optimizer": f"AdamW lr {config.optim.lr:g}, weight decay {config.optim.weight_decay:g}",
        "batch": f"{config.optim.batch_size} x accumulation {config.optim.grad_accum}",
        "schedule": f"CosineAnnealingWarmRestarts T_0={config.optim.t0} "
        f"T_mult={config.optim.t_mult} (epochs)",
        "loss": "BCEWithLogits"
        + (f" (pos_weight {config.optim.pos_weight:g})" if config.optim.pos_weight else ""),
        "epochs run": f"{len(history)} of {config.optim.epochs}",
        "best epoch": best["epoch"],
        "steps": history[-1]["global_step"] if history else 0,
        "segment": f"{seg.seconds:g} s at {seg.sample_rate} Hz, random crops; validation "
        f"crop {seg.eval_crop}; calibration and reports on the daemon's windows (VAD, 1 s hop)",
        "augmentation": ", ".join(
            f"{k} {v:g}" for k, v in config.augment.model_dump().items() if k.endswith("_p") and v
        )
        or "none",
        "seed": config.run.seed,
    }
    if config.data.leave_out:  # a leave-one-family-out fold: these fakes were never seen
        recipe["families left out"] = ", ".join(config.data.leave_out)
    data = {
        "train_total": sum(train_counts.values()),
        "train_counts": train_counts,
        "train_sources": train_sources or {},
        "val_total": len(val),
        "skipped": sum(1 for _ in (out_dir / "problems.txt").open())
        if (out_dir / "problems.txt").exists()
        else 0,
    }
    card = model_card(
        name=info.name,
        architecture=info.architecture,
        n_params=count_parameters(module),
        calibration=calibration,
        data=data,
        recipe=recipe,
        val_report=val_report,
        test_report=test_report,
        limits=config.export.limits,
        window_seconds=seg.seconds,
        sample_rate=seg.sample_rate,
    )
    provenance = {
        "trained_with": "streamguard train",
        "best_epoch": best["epoch"],
        "val_eer": best.get("val_eer"),
        "calibration": calibration,
        "train_counts": train_counts,
        "sources": [str(s.path) for s in config.data.sources],
        "seed": config.run.seed,
        "leave_out": list(config.data.leave_out),
    }
    if getattr(module, "provenance", None):  # whisper-asp: which encoder weights, by sha256
        provenance["encoder"] = dict(module.provenance)
    try:
        path = export_model(
            export_dir,
            module,
            params,
            name=info.name,
            architecture=info.architecture,
            threshold=calibration["threshold"],
            sample_rate=seg.sample_rate,
            window_seconds=seg.seconds,
            provenance=provenance,
            score_map=score_map,
            half=config.export.half,
            card=card,
        )
    except OSError as exc:
        raise StreamguardError(f"cannot write the model to {export_dir}: {exc}") from None
    shown = format_threshold(calibration["threshold"])
    echo(f"exported {path} (threshold {shown}, {calibration['method']})")
    return path
