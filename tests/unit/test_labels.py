"""Analyst labels: request bodies to `label` events, and labelled calls read back from the log."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.alerts.events import CallEnded, CallSummary, Label, Score, parse_event
from streamguard.alerts.store import EventStore
from streamguard.labels import (
    LabelRejected,
    collect_labelled_calls,
    iter_log,
    parse_label_request,
)


def test_a_valid_request_becomes_a_label_draft():
    body = json.dumps({"call_id": "CA1", "label": "fake", "track": "inbound", "note": " IVR "})
    event = parse_label_request(body.encode(), who="analyst-token")
    assert isinstance(event, Label)
    assert (event.call_id, event.track, event.label, event.note, event.who) == (
        "CA1",
        "inbound",
        "fake",
        "IVR",
        "analyst-token",
    )
    assert event.source is None and not event.published
    assert parse_event(event.to_json()) == event
    whole = parse_label_request({"call_id": "CA1", "label": "real"}, who="local")
    assert isinstance(whole, Label) and whole.track is None and whole.note is None


@pytest.mark.parametrize(
    ("body", "status", "fragment"),
    [
        (b"x" * 9000, 413, "larger than 8192 bytes"),
        (b"{not json", 400, "not JSON"),
        (b"\xff\xfe", 400, "not JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b'{"call_id": "c", "label": "fake", "who": "me"}', 422, "unknown field 'who'"),
        (b'{"label": "fake"}', 422, "call_id: required"),
        (b'{"call_id": "  ", "label": "fake"}', 422, "call_id: required"),
        (json.dumps({"call_id": "c" * 257, "label": "fake"}).encode(), 422, "call_id: not a"),
        (b'{"call_id": "c", "label": "FAKE"}', 422, "one of fake, real, unsure"),
        (b'{"call_id": "c"}', 422, "label: required"),
        (b'{"call_id": "c", "label": "real", "track": 3}', 422, "track:"),
        (b'{"call_id": "c", "label": "real", "track": ""}', 422, "track:"),
        (b'{"call_id": "c", "label": "real", "note": 5}', 422, "note: text"),
        (b'{"call_id": "c", "label": "real", "note": "\\ud800"}', 422, "note: text"),
        (json.dumps({"call_id": "c", "label": "real", "note": "n" * 1001}).encode(), 422, "1000"),
    ],
)
def test_bad_requests_are_one_clear_4xx_line(body, status, fragment):
    result = parse_label_request(body, who="local")
    assert isinstance(result, LabelRejected)
    assert result.status == status and fragment in result.message
    assert "\n" not in result.message


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "call_id": st.text(max_size=300),
            "label": st.sampled_from(["fake", "real", "unsure", "x"]),
        },
        optional={"track": json_values, "note": json_values},
    ).map(lambda v: json.dumps(v).encode()),
)


@given(bodies)
def test_any_body_is_a_storable_label_or_a_4xx_never_an_exception(body):
    result = parse_label_request(body, who="local")
    if isinstance(result, LabelRejected):
        assert 400 <= result.status < 500 and result.message
    else:
        assert parse_event(result.to_json()) == result  # it can be logged and read back


def summary(speech: float) -> CallSummary:
    return CallSummary(
        duration=10, speech_seconds=speech, windows_scored=3, windows_skipped=0,
        max_smoothed=0.5, mean_smoothed=0.4, verdict="real",
    )  # fmt: skip


def score(call_id, track, start, p):
    return Score(
        call_id=call_id, track=track, source="twilio", start=start, end=start + 4,
        p_fake=p, smoothed=p,
    )  # fmt: skip


def label(call_id, value, track=None):
    return Label(call_id=call_id, track=track, source=None, label=value, who="local")


def test_labelled_calls_come_back_from_the_log_with_their_scores(tmp_path):
    store = EventStore(tmp_path / "events.db")
    drafts = [
        score("A", "inbound", 0, 0.2),
        score("B", "inbound", 0, 0.9),
        score("A", "outbound", 0, 0.1),
        score("A", "inbound", 1, 0.3),
        CallEnded(
            call_id="A",
            track=None,
            source="twilio",
            summary=summary(9),
            reason="stop",
            tracks={"inbound": summary(7), "outbound": summary(2)},
        ),
        score("C", "0", 0, 0.5),  # never labelled: not read into the result
        label("A", "real"),
        label("B", "real"),
        label("B", "fake"),  # the last label of a call wins
        label("A", "fake", track="inbound"),  # a track's own label beats the call's
        label("D", "unsure", track="inbound"),  # labelled, never scored
    ]
    stamped = [d.unnumbered(ts="2025-01-01T00:00:00.000Z", model="m") for d in drafts]
    store.append(stamped)
    reader = EventStore(tmp_path / "events.db", readonly=True)
    calls = {c.call_id: c for c in collect_labelled_calls(reader.read, page=2)}
    assert set(calls) == {"A", "B", "D"}
    a = calls["A"]
    assert a.labels == {"inbound": "fake", "outbound": "real"} and a.kind == "fake"
    assert a.tracks["inbound"].windows() == [(0.0, 4.0, 0.2), (1.0, 5.0, 0.3)]
    assert a.tracks["inbound"].speech_seconds == 7 and a.judged_tracks() == ["inbound"]
    assert calls["B"].labels == {"inbound": "fake"}
    assert calls["D"].labels == {"inbound": "unsure"} and calls["D"].kind is None
    assert calls["D"].tracks["inbound"].windows() == []
    assert len(list(iter_log(reader.read, page=3))) == len(drafts)
