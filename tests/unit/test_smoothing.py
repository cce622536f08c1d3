"""Smoothing and the alert hysteresis rule, edge by edge."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamguard.policy.smoothing import Smoother, SmoothingSettings

# mode="mean" with one window = no smoothing: smoothed == p_fake, so the tests below are about
# the hysteresis rule alone.
RAW = dict(mode="mean", mean_windows=1)


def run(smoother: Smoother, scores):
    """Push scores (1 s hop, 4 s windows); return the list of (index, state) transitions."""
    out = []
    for i, p in enumerate(scores):
        _, tr = smoother.push(p, float(i), float(i) + 4.0)
        if tr is not None:
            out.append((i, tr.state))
    return out


def test_default_thresholds_follow_the_model_threshold():
    s = Smoother(SmoothingSettings(), threshold=0.7)
    assert (s.on, s.off) == (0.7, pytest.approx(0.6))


@pytest.mark.parametrize(
    ("settings", "model_thr", "expected"),
    [
        (dict(on_threshold=0.8), 0.5, (0.8, 0.7)),
        (dict(off_threshold=0.2), 0.5, (0.5, 0.2)),
        (dict(margin=0.3), 0.2, (0.2, 0.0)),  # clamped at 0
        (dict(margin=0.0), 0.5, (0.5, 0.5)),
        (dict(off_threshold=0.9), 0.5, (0.5, 0.5)),  # off never above on
    ],
)
def test_threshold_defaults_and_clamping(settings, model_thr, expected):
    on, off = SmoothingSettings(**settings).thresholds(model_thr)
    assert (on, off) == pytest.approx(expected)


def test_explicit_off_above_on_is_a_settings_error():
    with pytest.raises(ValidationError):
        SmoothingSettings(on_threshold=0.5, off_threshold=0.6)


def test_ema_formula():
    s = Smoother(SmoothingSettings(mode="ema", ema_alpha=0.25), threshold=0.5)
    assert s.push(0.8, 0, 4)[0] == pytest.approx(0.8)  # first window seeds the average
    assert s.push(0.0, 1, 5)[0] == pytest.approx(0.6)
    assert s.push(1.0, 2, 6)[0] == pytest.approx(0.25 + 0.75 * 0.6)


def test_mean_of_last_k_windows_with_short_start():
    s = Smoother(SmoothingSettings(mode="mean", mean_windows=3), threshold=0.5)
    got = [s.push(p, 0, 4)[0] for p in (0.3, 0.6, 0.9, 0.0)]
    assert got == pytest.approx([0.3, 0.45, 0.6, 0.5])


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_raised_exactly_on_the_nth_consecutive_window(n):
    s = Smoother(SmoothingSettings(**RAW, raise_after=n), threshold=0.5)
    assert run(s, [0.9] * (n - 1)) == []  # N-1 is not enough
    _, tr = s.push(0.9, 10.0, 14.0)
    assert tr is not None and tr.state == "raised"


def test_equal_to_on_threshold_counts_equal_to_off_does_not_clear():
    s = Smoother(SmoothingSettings(**RAW, raise_after=2, clear_after=2), threshold=0.5)
    assert run(s, [0.5, 0.5]) == [(1, "raised")]
    s2 = Smoother(SmoothingSettings(**RAW, raise_after=1, clear_after=1), threshold=0.5)
    assert run(s2, [0.9, 0.4, 0.3999]) == [(0, "raised"), (2, "cleared")]  # off = 0.4


def test_just_below_on_never_raises():
    s = Smoother(SmoothingSettings(**RAW, raise_after=1), threshold=0.5)
    assert run(s, [0.4999] * 20) == []


def test_a_broken_run_starts_again_from_zero():
    s = Smoother(SmoothingSettings(**RAW, raise_after=3), threshold=0.5)
    assert run(s, [0.9, 0.9, 0.1, 0.9, 0.9]) == []
    _, tr = s.push(0.9, 5, 9)
    assert tr is not None and tr.state == "raised"


def test_oscillating_around_the_threshold_does_not_flap():
    s = Smoother(SmoothingSettings(**RAW, raise_after=2, clear_after=2), threshold=0.5)
    assert run(s, [0.51, 0.49] * 20) == []  # never 2 in a row above on
    s2 = Smoother(SmoothingSettings(**RAW, raise_after=1, clear_after=2), threshold=0.5)
    # raised at once; then it hovers between off (0.4) and on: stays raised
    assert run(s2, [0.9] + [0.45, 0.55] * 20) == [(0, "raised")]


def test_between_off_and_on_neither_raises_nor_clears():
    s = Smoother(SmoothingSettings(**RAW, raise_after=2, clear_after=2), threshold=0.5)
    assert run(s, [0.45] * 10) == []
    assert run(s, [0.9, 0.9] + [0.45] * 10) == [(1, "raised")]


def test_full_cycle_raise_clear_raise_and_counts():
    s = Smoother(SmoothingSettings(**RAW, raise_after=2, clear_after=3), threshold=0.5)
    seq = [0.9, 0.9, 0.1, 0.1, 0.9, 0.1, 0.1, 0.1, 0.8, 0.8]
    assert run(s, seq) == [(1, "raised"), (7, "cleared"), (9, "raised")]
    assert s.stats().alerts_raised == 2
    assert s.stats().windows == len(seq)


def test_transition_carries_threshold_and_run_window_range():
    s = Smoother(SmoothingSettings(**RAW, raise_after=3, clear_after=2), threshold=0.6)
    s.push(0.1, 0.0, 4.0)
    s.push(0.7, 1.0, 5.0)
    s.push(0.7, 2.0, 6.0)
    smoothed, tr = s.push(0.8, 3.0, 7.0)
    assert tr is not None
    assert (tr.state, tr.threshold, tr.start, tr.end, tr.smoothed) == (
        "raised",
        0.6,
        1.0,
        7.0,
        smoothed,
    )
    s.push(0.1, 4.0, 8.0)
    _, tr = s.push(0.1, 5.0, 9.0)
    assert tr is not None and tr.state == "cleared"
    assert tr.threshold == pytest.approx(0.5)
    assert (tr.start, tr.end) == (4.0, 9.0)


def test_ema_smoothing_delays_a_single_spike():
    s = Smoother(SmoothingSettings(mode="ema", ema_alpha=0.5, raise_after=1), threshold=0.5)
    assert run(s, [0.1, 0.8, 0.1, 0.1]) == []  # 0.1 -> 0.45 -> 0.275: the spike never passes


def test_verdict_follows_the_alerts():
    """One story: a track whose alert was raised ends "fake", one that never alerted "real",
    even when its mean raw score is above the threshold (no sustained run)."""
    spiky = Smoother(SmoothingSettings(mode="ema", ema_alpha=1.0, raise_after=2), threshold=0.5)
    for i, p in enumerate([0.9, 0.1, 0.9, 0.1, 0.9]):  # mean 0.58 >= 0.5, never 2 in a row
        spiky.push(p, i, i + 4)
    assert spiky.stats().alerts_raised == 0
    assert spiky.verdict(speech_seconds=9) == "real"
    burst = Smoother(SmoothingSettings(mode="ema", ema_alpha=1.0, raise_after=2), threshold=0.5)
    for i, p in enumerate([0.9, 0.9, 0.1, 0.1, 0.1, 0.1]):  # mean 0.37 < 0.5, but it alerted
        burst.push(p, i, i + 4)
    assert burst.stats().alerts_raised == 1
    assert burst.verdict(speech_seconds=9) == "fake"


def test_stats_and_verdict():
    s = Smoother(SmoothingSettings(mode="ema", ema_alpha=0.5, raise_after=2), threshold=0.5)
    assert s.stats().mean_smoothed is None and s.stats().max_smoothed is None
    for i, p in enumerate([0.9, 0.9, 0.9, 0.9]):
        s.push(p, i, i + 4)
    st = s.stats()
    assert st.max_smoothed == pytest.approx(0.9) and st.mean_smoothed == pytest.approx(0.9)
    assert st.windows == 4
    assert s.verdict(speech_seconds=6.0) == "fake"
    assert s.verdict(speech_seconds=1.0) == "inconclusive"  # below [verdict] min_speech_seconds
    assert s.verdict(speech_seconds=6.0, min_speech_seconds=8.0) == "inconclusive"
    real = Smoother(SmoothingSettings(), threshold=0.5)
    real.push(0.1, 0, 4)
    assert real.verdict(speech_seconds=4) == "real"


def test_unknown_setting_is_refused():
    with pytest.raises(ValidationError):
        SmoothingSettings(raise_afer=3)


def test_reconfigure_keeps_state_and_applies_new_rule():
    s = Smoother(SmoothingSettings(**RAW, raise_after=1, clear_after=5), threshold=0.5)
    assert run(s, [0.9]) == [(0, "raised")]
    s.push(0.1, 1, 5)  # one window towards clearing under the old rule (5 needed)
    s.reconfigure(SmoothingSettings(**RAW, raise_after=1, clear_after=2, margin=0.2), 0.5)
    assert (s.on, s.off) == pytest.approx((0.5, 0.3))
    assert s.raised
    _, tr = s.push(0.1, 2, 6)  # the run already had 1: 2 now clears
    assert tr is not None and tr.state == "cleared" and tr.start == 1


def test_reconfigure_resizes_the_mean_window_keeping_recent_scores():
    s = Smoother(SmoothingSettings(mode="mean", mean_windows=3), threshold=0.5)
    for p in (0.2, 0.4, 0.6):
        s.push(p, 0, 4)
    s.reconfigure(SmoothingSettings(mode="mean", mean_windows=2), 0.5)
    assert s.push(0.8, 0, 4)[0] == pytest.approx(0.7)
