"""Metrics against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest
from streamguard.training import metrics
from streamguard.training.export import calibrate

# Hand-checked example: 4 real clips, 3 fake clips.
REAL = [0.1, 0.2, 0.3, 0.6]
FAKE = [0.4, 0.7, 0.9]
LABELS = [0] * 4 + [1] * 3
SCORES = REAL + FAKE


def test_eer_on_the_hand_computed_example():
    """Sweep the threshold t down the distinct scores; "fake" means score >= t.

    ====  ==========  =====================  =====================  ==========
    t     called fake  FPR (real >= t) / 4    FNR (fake < t) / 3     FNR - FPR
    ====  ==========  =====================  =====================  ==========
    inf   -           0                      1                      1
    0.9   .9          0                      2/3                    2/3
    0.7   .9 .7       0                      1/3                    1/3
    0.6   + .6        1/4                    1/3                    1/12
    0.4   + .4        1/4                    0                      -1/4
    0.3   + .3        2/4                    0                      -1/2
    ...
    ====  ==========  =====================  =====================  ==========

    The sign of FNR - FPR changes between t=0.6 (d=1/12) and t=0.4 (d=-1/4), so
    a = (1/12) / (1/12 + 1/4) = (1/12) / (4/12) = 1/4, and
    EER = FPR(0.6) + a * (FPR(0.4) - FPR(0.6)) = 1/4 + 1/4 * 0 = 1/4
        = FNR(0.6) + a * (FNR(0.4) - FNR(0.6)) = 1/3 - 1/4 * 1/3 = 1/4   (both agree)
    threshold = 0.6 + a * (0.4 - 0.6) = 0.6 - 0.05 = 0.55.
    """
    rate, threshold = metrics.eer(LABELS, SCORES)
    assert rate == pytest.approx(0.25)
    assert threshold == pytest.approx(0.55)


def test_eer_exact_crossing_and_perfect_separation():
    # real [0.1, 0.3, 0.6], fake [0.4, 0.7, 0.9]: at t=0.6 FPR = FNR = 1/3 exactly.
    rate, thr = metrics.eer([0, 0, 0, 1, 1, 1], [0.1, 0.3, 0.6, 0.4, 0.7, 0.9])
    assert rate == pytest.approx(1 / 3) and thr == pytest.approx(0.6)
    # Perfect separation: EER 0 at the lowest fake score.
    rate, thr = metrics.eer([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9])
    assert rate == 0.0 and thr == pytest.approx(0.8)
    with pytest.raises(ValueError, match="both"):
        metrics.eer([1, 1], [0.2, 0.3])


def test_auc_and_threshold_metrics_by_hand():
    # AUC = P(fake score > real score) over the 12 pairs: 0.4 beats 3 reals, 0.7 and 0.9 beat 4.
    assert metrics.roc_auc(LABELS, SCORES) == pytest.approx(11 / 12)
    m = metrics.at_threshold(LABELS, SCORES, 0.5)
    # called fake: 0.6 (real), 0.7, 0.9 -> tp 2, fp 1; tn 3, fn 1 (0.4)
    assert (m.tp, m.fp, m.tn, m.fn) == (2, 1, 3, 1)
    assert m.accuracy == pytest.approx(5 / 7)
    assert m.precision == pytest.approx(2 / 3) and m.recall == pytest.approx(2 / 3)
    assert m.f1 == pytest.approx(2 / 3)
    assert m.far == pytest.approx(1 / 4) and m.frr == pytest.approx(1 / 3)
    none_called = metrics.at_threshold(LABELS, SCORES, 0.95)
    assert none_called.precision is None and none_called.recall == 0.0


def test_threshold_for_a_target_false_alarm_rate():
    # FAR <= 0: lowest threshold with no real clip flagged is the 0.7 point (FNR 1/3).
    thr, far, fnr = metrics.threshold_for_far(LABELS, SCORES, 0.0)
    assert (thr, far, fnr) == (pytest.approx(0.7), 0.0, pytest.approx(1 / 3))
    # FAR <= 0.25 allows t = 0.4 (FPR 1/4, FNR 0).
    thr, far, fnr = metrics.threshold_for_far(LABELS, SCORES, 0.25)
    assert (thr, far, fnr) == (pytest.approx(0.4), 0.25, 0.0)
    # Everything real scores above every fake: only "flag nothing" meets FAR 0.
    thr, far, _ = metrics.threshold_for_far([0, 1], [0.9, 0.1], 0.0)
    assert thr > 0.9 and far == 0.0


def test_summary_of_a_single_class_group():
    s = metrics.summary([1, 1, 1], [0.2, 0.6, 0.9], 0.5)
    assert s["eer"] is None and s["auc"] is None and s["recall"] == pytest.approx(2 / 3)
    assert s["far"] is None and s["n_fake"] == 3


def test_calibration_methods():
    eer_point = calibrate(LABELS, SCORES)
    assert eer_point["method"] == "eer" and eer_point["threshold"] == pytest.approx(0.55)
    assert eer_point["far"] == pytest.approx(0.25) and eer_point["frr"] == pytest.approx(1 / 3)
    strict = calibrate(LABELS, SCORES, target_far=0.01)
    assert strict["threshold"] == pytest.approx(0.7) and strict["far"] == 0.0
    assert calibrate([1, 1], [0.3, 0.4])["threshold"] == 0.5


def test_eer_matches_a_brute_force_sweep_on_random_scores():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 400)
    scores = rng.normal(labels * 1.0, 1.0)
    rate, thr = metrics.eer(labels, scores)
    grid = np.linspace(scores.min(), scores.max(), 4001)
    far = np.array([(scores[labels == 0] >= t).mean() for t in grid])
    frr = np.array([(scores[labels == 1] < t).mean() for t in grid])
    best = np.argmin(np.abs(far - frr))
    assert rate == pytest.approx((far[best] + frr[best]) / 2, abs=0.01)
    assert thr == pytest.approx(grid[best], abs=0.05)
