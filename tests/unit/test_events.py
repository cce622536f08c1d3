"""The event schema: field sets, rounding, JSON round-trip, strictness."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from streamguard.alerts.events import (
    EVENT_MODELS,
    EVENT_TYPES,
    Alert,
    CallEnded,
    CallSummary,
    EventParseError,
    Score,
    combine_summaries,
    format_ts,
    parse_event,
)

COMMON = {"seq": 7, "ts": "2025-01-31T12:00:00.123Z", "call_id": "CA1", "source": "twilio"}


def summary(**kw):
    base = dict(
        duration=10,
        speech_seconds=8,
        windows_scored=7,
        windows_skipped=0,
        windows_dropped=0,
        max_smoothed=0.9,
        mean_smoothed=0.6,
        verdict="fake",
    )
    return CallSummary(**{**base, **kw})


def test_format_ts_is_iso_utc_with_milliseconds_and_z():
    assert format_ts(0) == "1970-01-01T00:00:00.000Z"
    assert format_ts(1738324800.1239) == "2025-01-31T12:00:00.123Z"


def test_every_type_has_a_model_and_type_comes_first_in_json():
    assert set(EVENT_MODELS) == EVENT_TYPES
    e = Score(**COMMON, track="inbound", model="m", start=1, end=5, p_fake=0.5, smoothed=0.5)
    keys = list(json.loads(e.to_json()))
    assert keys[:7] == ["type", "seq", "ts", "call_id", "track", "source", "model"]


def test_rounding_probabilities_4_decimals_seconds_ms():
    e = Score(
        **COMMON,
        track="inbound",
        model="m",
        start=1.23456,
        end=5.23456,
        p_fake=0.123456,
        smoothed=0.98765432,
    )
    assert (e.start, e.end, e.p_fake, e.smoothed) == (1.235, 5.235, 0.1235, 0.9877)


@pytest.mark.parametrize(
    "event",
    [
        Score(**COMMON, track="0", model="m", start=0, end=4, p_fake=0.3, smoothed=0.2),
        Alert(
            **COMMON,
            track="inbound",
            model="m",
            state="raised",
            smoothed=0.7,
            threshold=0.5,
            start=2,
            end=8,
        ),
        CallEnded(
            **COMMON,
            track=None,
            model="m",
            summary=summary(),
            reason="stop",
            tracks={"inbound": summary()},
        ),
    ],
)
def test_json_round_trip(event):
    again = parse_event(event.to_json())
    assert again == event and type(again) is type(event)
    assert parse_event(event.to_dict()) == event


def test_unknown_field_is_refused_at_the_publisher():
    with pytest.raises(ValidationError):
        Score(**COMMON, track="0", model="m", start=0, end=4, p_fake=0.3, smoothed=0.2, p_fak=1)


def test_p_fake_out_of_range_is_refused():
    with pytest.raises(ValidationError):
        Score(**COMMON, track="0", model="m", start=0, end=4, p_fake=1.5, smoothed=0.2)


def test_unknown_source_is_refused():
    with pytest.raises(ValidationError):
        Score(
            **{**COMMON, "source": "skype"},
            track="0",
            model="m",
            start=0,
            end=4,
            p_fake=0.3,
            smoothed=0.2,
        )


@pytest.mark.parametrize("bad", ['{"type":"nope","seq":1}', "not json", '{"type":"score"}'])
def test_parse_errors_are_one_line(bad):
    with pytest.raises(EventParseError) as info:
        parse_event(bad)
    assert "\n" not in str(info.value)


def test_combine_summaries_any_fake_track_makes_the_call_fake():
    call = combine_summaries(
        {
            "inbound": summary(verdict="fake", windows_scored=3, mean_smoothed=0.9),
            "outbound": summary(
                verdict="real",
                windows_scored=1,
                mean_smoothed=0.1,
                max_smoothed=0.2,
                duration=12,
            ),
        }
    )
    assert call.verdict == "fake"
    assert call.duration == 12
    assert call.windows_scored == 4
    assert call.max_smoothed == 0.9
    assert call.mean_smoothed == pytest.approx((0.9 * 3 + 0.1) / 4, abs=1e-4)


def test_combine_summaries_real_beats_inconclusive_and_empty_is_inconclusive():
    real = summary(verdict="real")
    unsure = summary(
        verdict="inconclusive", windows_scored=0, max_smoothed=None, mean_smoothed=None
    )
    assert combine_summaries({"a": real, "b": unsure}).verdict == "real"
    assert combine_summaries({"a": unsure}).mean_smoothed is None
    assert combine_summaries({}).verdict == "inconclusive"
