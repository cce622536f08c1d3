"""Calibration on labelled calls: the statistics, the search, what it costs, the TOML it writes."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.calibration import (
    CalibrationError,
    LabelledCall,
    TrackScores,
    calibrate,
    clopper_pearson,
    evaluate_policy,
    needed_real_calls,
    toml_snippet,
    upper_bound,
)
from streamguard.config import load_config
from streamguard.policy.smoothing import SmoothingSettings

BASE = SmoothingSettings()  # ema 0.7, raise_after 3, the model's threshold


def track(*scores: float) -> TrackScores:
    return TrackScores.of([(float(i), i + 4.0, p) for i, p in enumerate(scores)])


def call(call_id: str, label: str, *scores: float, **more: TrackScores) -> LabelledCall:
    tracks = {"inbound": track(*scores), **more}
    labels = {"inbound": label, **dict.fromkeys(more, "real")}
    return LabelledCall(call_id, tracks, labels)


# ------------------------------------------------------------------ statistics


def test_exact_intervals_and_the_rule_of_three():
    low, high = clopper_pearson(0, 10)
    assert low == 0 and high == pytest.approx(0.3085, abs=1e-4)
    low, high = clopper_pearson(5, 10)
    assert (low, high) == (pytest.approx(0.1871, abs=1e-4), pytest.approx(0.8129, abs=1e-4))
    assert clopper_pearson(0, 0) == (0.0, 1.0)
    # one-sided: no false alarm in n calls bounds the rate by 1 - 0.05 ** (1 / n) (~3/n)
    assert upper_bound(0, 100) == pytest.approx(1 - 0.05 ** (1 / 100))
    assert needed_real_calls(0.01) == 299 == math.ceil(math.log(0.05) / math.log(0.99))
    assert needed_real_calls(0.05) == 59
    assert upper_bound(0, 299) <= 0.01 < upper_bound(0, 298)


# ------------------------------------------------------------------ the search


def test_it_silences_the_labelled_false_alarms_and_says_what_that_costs():
    calls = [
        # real calls: a hold-music burst scored 0.8 for 8 windows alerts at the model's 0.5
        *(call(f"real{i}", "real", 0.1, *[0.8] * 8, 0.1, 0.1) for i in range(3)),
        *(call(f"quiet{i}", "real", 0.1, 0.2, 0.1, 0.15, 0.1) for i in range(5)),
        # fakes: two sure ones, one the model is only lukewarm about (0.75)
        call("fake-sure", "fake", 0.2, 0.97, 0.98, 0.99, 0.97, 0.99),
        call("fake-sure2", "fake", 0.95, 0.96, 0.99, 0.97),
        call("fake-weak", "fake", 0.75, 0.76, 0.75, 0.74, 0.75),
    ]
    result = calibrate(calls, base=BASE, model_threshold=0.5, max_false_alarms=0.0)
    assert (result.current.false_alarms, result.current.caught) == (3, 3)
    chosen = result.chosen
    assert chosen.false_alarms == 0 and chosen.caught == 2
    assert result.false_alarms_silenced == 3 and result.catches_lost == 1
    on = chosen.settings.on_threshold
    # any on above the real calls' sustained 0.8 and at most the sure fakes' level would do;
    # the middle of that range is kept
    lo, hi = result.threshold_range
    assert 0.79 < lo <= on <= hi <= 0.99
    assert on == pytest.approx(round((lo + hi) / 2, 4), abs=1e-4)
    assert result.promise is None and "can never be promised" in result.warning
    again = evaluate_policy(calls, chosen.settings)
    assert (again.false_alarms, again.caught) == (0, 2)
    assert chosen.delay_median is not None and chosen.delay_median > 0


def test_a_call_labelled_fake_on_one_track_is_judged_on_that_track():
    noisy_agent = track(0.9, 0.9, 0.9, 0.9)  # the agent's leg of a fake call: not judged
    fake = LabelledCall(
        "c1", {"inbound": track(0.1, 0.1, 0.1, 0.1), "outbound": noisy_agent},
        {"inbound": "fake", "outbound": "real"},
    )  # fmt: skip
    real = LabelledCall("c2", {"inbound": track(0.1, 0.1, 0.1)}, {"inbound": "real"})
    unsure = LabelledCall("c3", {"inbound": track(0.9, 0.9, 0.9)}, {"inbound": "unsure"})
    out = evaluate_policy([fake, real, unsure], BASE.model_copy(update={"on_threshold": 0.5}))
    assert (out.n_fake, out.caught, out.n_real, out.false_alarms) == (1, 0, 1, 0)


def test_too_few_real_calls_are_no_promise_and_enough_are():
    quiet = [call(f"r{i}", "real", 0.1, 0.2, 0.1, 0.1) for i in range(40)]
    fakes = [call(f"f{i}", "fake", 0.9, 0.95, 0.97, 0.9) for i in range(5)]
    few = calibrate(quiet + fakes, base=BASE, model_threshold=0.5, max_false_alarms=0.01)
    assert few.promise is None and few.needed_real_calls == 299
    assert "needs at least 299 real calls" in few.warning and "there are 40" in few.warning
    many = [call(f"r{i}", "real", 0.1, 0.2, 0.1, 0.1) for i in range(300)]
    enough = calibrate(many + fakes, base=BASE, model_threshold=0.5, max_false_alarms=0.01)
    assert enough.warning is None and enough.promise == pytest.approx(upper_bound(0, 300))
    assert enough.promise <= 0.01 and enough.chosen.caught == 5


def test_nothing_to_hold_a_rate_on_is_refused_in_one_line():
    with pytest.raises(CalibrationError, match="no labelled real calls"):
        calibrate([call("f", "fake", 0.9, 0.9, 0.9)], base=BASE, model_threshold=0.5,
                  max_false_alarms=0.01)  # fmt: skip
    stuck = [call("r", "real", 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0)]
    with pytest.raises(CalibrationError, match="scores them too high"):
        calibrate(stuck, base=BASE, model_threshold=0.5, max_false_alarms=0.0)


def test_the_snippet_is_the_daemons_own_config(tmp_path):
    calls = [call("r", "real", 0.1, 0.6, 0.6, 0.6, 0.1), call("f", "fake", 0.9, 0.9, 0.95, 0.9)]
    result = calibrate(calls, base=BASE, model_threshold=0.5, max_false_alarms=0.0)
    text = toml_snippet(result, source="events.db")
    assert text.startswith("# streamguard calibrate (events.db): 1 real and 1 fake")
    assert "# NOT A PROMISE:" in text
    path = tmp_path / "c.toml"
    path.write_text(text)
    assert load_config(path).smoothing == result.chosen.settings


scores = st.lists(st.floats(0, 1, allow_nan=False), min_size=0, max_size=12)


@settings(max_examples=40)
@given(
    real=st.lists(scores, min_size=1, max_size=6),
    fake=st.lists(scores, min_size=0, max_size=6),
    target=st.sampled_from([0.0, 0.2, 0.5]),
)
def test_the_choice_meets_the_target_and_no_coarser_setting_beats_it(real, fake, target):
    calls = [call(f"r{i}", "real", *s) for i, s in enumerate(real)]
    calls += [call(f"f{i}", "fake", *s) for i, s in enumerate(fake)]
    allowed = math.floor(target * len(real) + 1e-9)
    try:
        result = calibrate(calls, base=BASE, model_threshold=0.5, max_false_alarms=target)
    except CalibrationError:  # refused only when even the strictest setting alerts too often
        strictest = BASE.model_copy(update={"on_threshold": 1.0, "raise_after": 6})
        assert evaluate_policy(calls, strictest).false_alarms > allowed
        return
    chosen = result.chosen
    assert chosen.false_alarms <= allowed
    assert evaluate_policy(calls, chosen.settings).caught == chosen.caught
    for k in (1, 3, 6):
        for on in (0.05 * i for i in range(21)):
            other = evaluate_policy(
                calls, BASE.model_copy(update={"on_threshold": on, "raise_after": k})
            )
            if other.false_alarms <= allowed:
                assert other.caught <= chosen.caught
