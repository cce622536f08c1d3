"""Detection metrics: EER and its threshold, ROC-AUC, threshold metrics, calibration points.

Conventions (used everywhere in streamguard):

* label 1 = fake (the positive class), label 0 = real; a score is P(fake); a clip is called fake
  when ``score >= threshold``.
* FPR (false-alarm rate, FAR) = real clips called fake / real clips.
  FNR (miss rate) = fake clips called real / fake clips = 1 - TPR.

**EER** (equal error rate): sweep the threshold over every distinct score, from above the highest
(nothing called fake: FPR 0, FNR 1) down to the lowest (everything fake: FPR 1, FNR 0), giving
ROC points ``(FPR_k, FNR_k)`` at thresholds ``t_k`` (sklearn's ``roc_curve`` with
``drop_intermediate=False``; its first threshold is +inf). FNR - FPR starts at 1 and ends at -1.
Let ``i`` be the first point with ``FNR_i <= FPR_i``. If equal, EER = FPR_i at threshold t_i.
Otherwise the crossing lies on the segment between points ``i-1`` and ``i``; with
``d_k = FNR_k - FPR_k`` and ``a = d_{i-1} / (d_{i-1} - d_i)`` in (0, 1]:

    EER = FPR_{i-1} + a * (FPR_i - FPR_{i-1})   (= FNR_{i-1} + a * (FNR_i - FNR_{i-1}))
    threshold = t_{i-1} + a * (t_i - t_{i-1})    (t_{i-1} = +inf is replaced by 1.0, the
                                                  largest possible P(fake))

This is the standard linear interpolation of the ROC (the rate a randomised mix of the two
neighbouring thresholds would achieve). A single fixed threshold between two neighbouring scores
behaves like t_{i-1}; the interpolated threshold is the natural point to deploy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


def _arrays(labels: Sequence[int], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (real) or 1 (fake)")
    return y, s


def has_both_classes(labels: Sequence[int]) -> bool:
    y = np.asarray(labels)
    return bool((y == 0).any() and (y == 1).any())


def roc_points(labels, scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, fnr, thresholds)`` for every distinct score, thresholds decreasing (first +inf)."""
    from sklearn.metrics import roc_curve

    y, s = _arrays(labels, scores)
    fpr, tpr, thresholds = roc_curve(y, s, pos_label=1, drop_intermediate=False)
    return fpr, 1.0 - tpr, thresholds


def eer(labels, scores) -> tuple[float, float]:
    """``(EER, threshold)`` by the interpolation in the module docstring.

    Needs both classes (ValueError otherwise).
    """
    y, s = _arrays(labels, scores)
    if not has_both_classes(y):
        raise ValueError("EER needs both real and fake examples")
    fpr, fnr, thr = roc_points(y, s)
    thr = np.where(np.isinf(thr), 1.0 if s.max() <= 1.0 else s.max() + 1.0, thr)
    diff = fnr - fpr
    i = int(np.argmax(diff <= 0))  # first point where FNR <= FPR (exists: last diff = -1)
    if diff[i] == 0 or i == 0:
        return float(fpr[i]), float(thr[i])
    a = diff[i - 1] / (diff[i - 1] - diff[i])
    rate = fpr[i - 1] + a * (fpr[i] - fpr[i - 1])
    threshold = thr[i - 1] + a * (thr[i] - thr[i - 1])
    return float(rate), float(threshold)


def roc_auc(labels, scores) -> float:
    from sklearn.metrics import roc_auc_score

    y, s = _arrays(labels, scores)
    return float(roc_auc_score(y, s))


def threshold_for_far(labels, scores, target_far: float) -> tuple[float, float, float]:
    """The lowest threshold whose false-alarm rate is at most ``target_far``.

    Lowest = catches the most fakes while keeping real clips flagged at or below the target.
    Returns ``(threshold, achieved_far, achieved_fnr)``; when even the highest score gives
    too many false alarms, the threshold sits just above every score (nothing flagged).
    """
    y, s = _arrays(labels, scores)
    if not (y == 0).any():
        raise ValueError("a false-alarm rate needs real examples")
    fpr, fnr, thr = roc_points(y, s)
    ok = np.flatnonzero(fpr <= target_far)
    i = int(ok[-1])  # fpr is non-decreasing along the sweep; point 0 has fpr 0
    threshold = float(thr[i])
    if math.isinf(threshold):
        threshold = float(np.nextafter(s.max(), np.inf))
    return threshold, float(fpr[i]), float(fnr[i])


@dataclass(frozen=True)
class ThresholdMetrics:
    threshold: float
    accuracy: float
    precision: float | None  # None when nothing is called fake
    recall: float | None  # = TPR; None when there are no fakes
    f1: float | None
    far: float | None  # false-alarm rate (FPR); None when there are no real clips
    frr: float | None  # miss rate (FNR)
    tp: int
    fp: int
    tn: int
    fn: int

    def to_dict(self) -> dict:
        return asdict(self)


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def at_threshold(labels, scores, threshold: float) -> ThresholdMetrics:
    """Confusion counts and rates when clips with ``score >= threshold`` are called fake."""
    y, s = _arrays(labels, scores)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    tn = int(np.sum(~pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    f1 = (
        2 * precision * recall / (precision + recall)
        if precision is not None and recall is not None and (precision + recall) > 0
        else (0.0 if precision is not None and recall is not None else None)
    )
    return ThresholdMetrics(
        threshold=float(threshold),
        accuracy=(tp + tn) / max(1, y.size),
        precision=precision,
        recall=recall,
        f1=f1,
        far=_ratio(fp, fp + tn),
        frr=_ratio(fn, fn + tp),
        tp=tp,
        fp=fp,
        tn=tn,
        fn=fn,
    )


def summary(labels, scores, threshold: float) -> dict:
    """Everything for one group: counts, EER (+threshold), AUC and the threshold metrics.

    EER/AUC are None when the group holds only one class.
    """
    y, s = _arrays(labels, scores)
    out: dict = {"n": int(y.size), "n_real": int((y == 0).sum()), "n_fake": int((y == 1).sum())}
    if has_both_classes(y):
        rate, thr = eer(y, s)
        out.update(eer=rate, eer_threshold=thr, auc=roc_auc(y, s))
    else:
        out.update(eer=None, eer_threshold=None, auc=None)
    out.update(at_threshold(y, s, threshold).to_dict())
    return out
