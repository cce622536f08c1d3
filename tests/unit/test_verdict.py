"""The verdict rule ``scan``, ``evaluate`` and ``call_ended`` share: the alert policy replayed
(:func:`streamguard.policy.replay`)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.policy import AlertPolicy, replay
from streamguard.policy.smoothing import SmoothingSettings

NAN = float("nan")


def replay_verdict(scores, threshold, speech, smoothing=None):
    policy = AlertPolicy(threshold, smoothing or SmoothingSettings())
    return replay(scores, policy, speech_seconds=speech)[1]


@pytest.mark.parametrize(
    ("scores", "speech", "expected"),
    [
        ([], 10.0, "inconclusive"),  # nothing scored
        ([0.9, 0.9, 0.9], 1.9, "inconclusive"),  # too little speech
        ([0.9, 0.9, 0.9], 2.0, "fake"),  # exactly the minimum speech is enough
        ([0.9, 0.9], 5.0, "real"),  # two windows over the threshold: raise_after is 3
        ([0.99, 0.1, 0.1, 0.1], 5.0, "real"),  # one odd window does not decide
        ([NAN, 0.9, 0.9, 0.9], 5.0, "fake"),  # NaN (unscored) ignored
        ([NAN], 5.0, "inconclusive"),
    ],
)
def test_rule_with_the_daemons_default_policy(scores, speech, expected):
    assert replay_verdict(scores, 0.5, speech) == expected


@given(
    scores=st.lists(st.floats(0, 1), min_size=1, max_size=30),
    threshold=st.floats(0, 1),
    raise_after=st.integers(1, 5),
)
def test_raw_scores_are_fake_iff_a_run_of_raise_after_reaches_the_threshold(
    scores, threshold, raise_after
):
    policy = SmoothingSettings(mode="ema", ema_alpha=1.0, raise_after=raise_after)  # no smoothing
    run = longest = 0
    for p in scores:
        run = run + 1 if p >= threshold else 0
        longest = max(longest, run)
    expected = "fake" if longest >= raise_after else "real"
    assert replay_verdict(scores, threshold, 10.0, policy) == expected


def test_replay_reports_the_alerts_at_their_window_spans():
    policy = AlertPolicy(0.5, SmoothingSettings(mode="ema", ema_alpha=1.0, raise_after=2))
    spans = [(0.0, 4.0), (1.0, 5.0), (2.0, 6.0), (3.0, 7.0)]
    alerts, verdict = replay([0.9, 0.9, 0.1, 0.1], policy, speech_seconds=6.0, spans=spans)
    assert [(a.state, a.start, a.end) for a in alerts] == [
        ("raised", 0.0, 5.0),
        ("cleared", 2.0, 7.0),
    ]
    assert verdict == "fake"


def test_replay_honours_min_speech_seconds():
    scores = [0.9, 0.9, 0.9]
    strict = AlertPolicy(0.5, min_speech_seconds=5.0)
    assert replay(scores, strict, speech_seconds=4.0)[1] == "inconclusive"
    assert replay(scores, AlertPolicy(0.5), speech_seconds=4.0)[1] == "fake"
