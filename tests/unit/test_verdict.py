"""decide_verdict: the documented rule (inconclusive / mean >= threshold)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.scoring.verdict import decide_verdict


@pytest.mark.parametrize(
    ("scores", "threshold", "speech", "expected"),
    [
        ([], 0.5, 10.0, "inconclusive"),  # nothing scored
        ([0.9, 0.9], 0.5, 1.9, "inconclusive"),  # too little speech
        ([0.9, 0.9], 0.5, 2.0, "fake"),  # exactly the minimum speech is enough
        ([0.5], 0.5, 5.0, "fake"),  # mean == threshold is fake
        ([0.49], 0.5, 5.0, "real"),
        ([0.99, 0.1, 0.1, 0.1], 0.5, 5.0, "real"),  # one odd window does not decide
        ([0.6, 0.6, 0.29], 0.5, 5.0, "real"),  # mean 0.4967
        ([0.6, 0.6, 0.4], 0.5, 5.0, "fake"),  # mean 0.5333
        ([float("nan"), 0.9], 0.5, 5.0, "fake"),  # NaN (unscored) ignored
        ([float("nan")], 0.5, 5.0, "inconclusive"),
    ],
)
def test_rule(scores, threshold, speech, expected):
    assert decide_verdict(scores, threshold, speech) == expected


def test_min_speech_is_configurable():
    assert decide_verdict([0.9], 0.5, 0.6, min_speech_seconds=0.5) == "fake"
    assert decide_verdict([0.9], 0.5, 0.6, min_speech_seconds=1.0) == "inconclusive"


@given(
    scores=st.lists(st.floats(0, 1), min_size=1, max_size=30),
    threshold=st.floats(0, 1),
    speech=st.floats(2, 1000),
)
def test_fake_iff_mean_reaches_threshold(scores, threshold, speech):
    mean = math.fsum(scores) / len(scores)
    assert decide_verdict(scores, threshold, speech) == ("fake" if mean >= threshold else "real")
