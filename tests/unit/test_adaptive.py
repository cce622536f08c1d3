"""Adaptive scoring: a calm real track skips windows, a rising score brings every hop back."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.track import TrackSettings
from streamguard.calls import CallPolicy, CallSession
from streamguard.model.base import ModelInfo
from streamguard.policy.adaptive import RISE, ScoreThinner
from streamguard.sources.base import Audio, CallEnd, CallStart, TrackStart


def test_stride_one_never_skips():
    thinner = ScoreThinner(1, below=0.5)
    for _ in range(10):
        assert thinner.take()
        thinner.observe(0.0)
    assert thinner.thinned == 0


def test_two_calm_scores_then_every_second_window():
    thinner = ScoreThinner(2, below=0.5)
    taken = []
    for _ in range(8):
        ok = thinner.take()
        taken.append(ok)
        if ok:
            thinner.observe(0.1)
    assert taken == [True, True, False, True, False, True, False, True]
    assert thinner.thinned == 3


@pytest.mark.parametrize("score", [0.5, 0.1 + RISE])
def test_a_rising_or_high_score_brings_every_hop_back(score):
    thinner = ScoreThinner(3, below=0.5)
    for _ in range(2):
        assert thinner.take()
        thinner.observe(0.1)
    assert thinner.active
    thinner.observe(score)  # e.g. the last scored window came back higher
    assert not thinner.active
    assert all(thinner.take() for _ in range(3))


@settings(max_examples=200)
@given(
    stride=st.integers(1, 4),
    scores=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=60),
)
def test_never_more_than_stride_minus_one_windows_in_a_row_are_skipped(stride, scores):
    thinner = ScoreThinner(stride, below=0.4)
    run = worst = 0
    feed = iter(scores)
    for _ in range(len(scores) * stride):
        if thinner.take():
            run = 0
            score = next(feed, None)
            if score is None:
                break
            thinner.observe(score)
        else:
            run += 1
            worst = max(worst, run)
    assert worst <= stride - 1


def _session(stride: int) -> CallSession:
    info = ModelInfo(name="m", architecture="koyelog-resnet", threshold=0.5)
    policy = CallPolicy(track=TrackSettings(adaptive_stride=stride, min_speech_seconds=0.0))
    session = CallSession(CallStart("c", "native"), info=info, policy=policy)
    session.handle(TrackStart("0", 16_000))
    return session


def test_a_calm_call_scores_fewer_windows_and_always_its_last():
    scored = {}
    for stride in (1, 2):
        session = _session(stride)
        noise = (0.01 * np.random.default_rng(0).standard_normal(16_000)).astype(np.float32)
        count = 0
        for _ in range(20):  # 20 s: windows at 0..16 s
            session.handle(Audio("0", noise))
            for pending in session.windows_to_score():
                session.receive_score(pending, 0.05)  # confidently real
                count += 1
        session.handle(CallEnd("stop"))
        for pending in session.windows_to_score():
            session.receive_score(pending, 0.05)
            count += 1
        (ended,) = [e for e in session.events_to_publish() if e.type == "call_ended"]
        assert ended.summary.windows_scored == count
        scored[stride] = count
    assert scored[1] == 17
    assert scored[2] < scored[1] and scored[2] >= scored[1] // 2
