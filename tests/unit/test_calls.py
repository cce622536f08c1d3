"""CallSession and CallRegistry: source events in, published events out (no network)."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard.alerts.bus import AlertBus
from streamguard.audio.file import read_audio
from streamguard.calls import CallLimitReached, CallPolicy, CallRegistry, CallSession
from streamguard.sources.base import Audio, CallEnd, CallStart, Gap, TrackEnd, TrackStart


class Scorer:
    """The engine's contract, run inline with the real tiny detector; can hold scores back."""

    def __init__(self, detector, hold: bool = False):
        self.detector = detector
        self.hold = hold
        self.waiting: list = []

    def __call__(self, window, callback) -> None:
        if self.hold:
            self.waiting.append((window, callback))
        else:
            callback(float(self.detector(window.samples[None])[0]))

    def release(self, drop: bool = False) -> None:
        waiting, self.waiting = self.waiting, []
        for window, callback in waiting:
            callback(None if drop else float(self.detector(window.samples[None])[0]))


@pytest.fixture
def speech(fixtures_dir):
    rate, audio = read_audio(fixtures_dir / "speech_10s_8k.wav")
    return rate, audio[0]


def make_session(tiny_detector, scorer, **policy):
    bus = AlertBus("tiny")
    sub = bus.subscribe()
    session = CallSession(
        CallStart("c1", "native", {"customParameters": {"token": "s3cret", "agent": "7"}}),
        info=tiny_detector.info,
        policy=CallPolicy(**policy),
        submit=scorer,
        publish=bus.publish,
    )
    return session, sub


def events(sub):
    return [e.to_dict() for e in sub.drain()]


def test_session_scores_each_hop_and_ends_with_summary(tiny_detector, speech):
    rate, audio = speech
    session, sub = make_session(tiny_detector, Scorer(tiny_detector))
    session.handle_all([TrackStart("0", rate)])
    for i in range(0, audio.size, 160):  # 20 ms frames, as feeds send them
        session.handle(Audio("0", audio[i : i + 160]))
    session.handle_all([TrackEnd("0"), CallEnd("stop")])
    out = events(sub)
    assert out[0]["type"] == "call_started"
    assert out[0]["metadata"]["customParameters"] == {"token": "[redacted]", "agent": "7"}
    scores = [e for e in out if e["type"] == "score"]
    assert [e["start"] for e in scores] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert out[-1]["type"] == "call_ended" and out[-1]["reason"] == "stop"
    assert out[-1]["summary"]["windows_scored"] == 7
    assert out[-1]["summary"]["duration"] == pytest.approx(10.0)
    assert session.finished


def test_call_ended_waits_for_outstanding_scores_and_counts_drops(tiny_detector, speech):
    rate, audio = speech
    scorer = Scorer(tiny_detector, hold=True)
    session, sub = make_session(tiny_detector, scorer)
    session.handle_all([TrackStart("0", rate), Audio("0", audio), CallEnd("closed")])
    assert [e["type"] for e in events(sub)] == ["call_started"]  # nothing scored yet
    assert not session.finished
    scorer.release(drop=True)
    (ended,) = events(sub)
    assert ended["type"] == "call_ended"
    assert ended["summary"]["windows_dropped"] == 7
    assert ended["summary"]["windows_scored"] == 0
    assert ended["summary"]["verdict"] == "inconclusive"


def test_gap_keeps_call_time(tiny_detector, speech):
    rate, audio = speech
    session, sub = make_session(tiny_detector, Scorer(tiny_detector))
    session.handle_all(
        [TrackStart("0", rate), Gap("0", 2 * rate), Audio("0", audio), CallEnd("stop")]
    )
    ended = events(sub)[-1]
    assert ended["summary"]["duration"] == pytest.approx(12.0)


def test_max_call_seconds_flags_the_session(tiny_detector, speech):
    rate, audio = speech
    session, _ = make_session(tiny_detector, Scorer(tiny_detector), max_call_seconds=3.0)
    session.handle_all([TrackStart("0", rate), Audio("0", audio[: 2 * rate])])
    assert not session.over_limit
    session.handle(Audio("0", audio[2 * rate : 4 * rate]))
    assert session.over_limit


def test_alert_raised_when_scores_stay_high(tiny_detector, speech):
    """Threshold below every score of the tiny model: the alert must be raised after 2 windows."""
    rate, audio = speech
    info = tiny_detector.info.replace(threshold=0.01)
    bus = AlertBus("tiny")
    sub = bus.subscribe()
    session = CallSession(
        CallStart("c2", "native", {}),
        info=info,
        policy=CallPolicy(),
        submit=Scorer(tiny_detector),
        publish=bus.publish,
    )
    session.handle_all([TrackStart("0", rate), Audio("0", audio), CallEnd("stop")])
    out = events(sub)
    alerts = [e for e in out if e["type"] == "alert"]
    assert [a["state"] for a in alerts] == ["raised"]
    assert alerts[0]["start"] == 0.0 and alerts[0]["end"] == 5.0
    assert out[-1]["summary"]["verdict"] == "fake"


async def test_registry_limits_calls_and_drains(tiny_detector, speech):
    rate, audio = speech
    bus = AlertBus("tiny")
    sub = bus.subscribe()
    registry = CallRegistry(
        info=tiny_detector.info,
        policy=CallPolicy(),
        submit=Scorer(tiny_detector),
        publish=bus.publish,
        max_calls=1,
    )
    session = registry.open(CallStart("a", "native", {}))
    session.handle_all([TrackStart("0", rate), Audio("0", audio[: 5 * rate])])
    with pytest.raises(CallLimitReached):
        registry.open(CallStart("b", "native", {}))
    await registry.drain()
    assert not registry.sessions
    ended = [e for e in events(sub) if e["type"] == "call_ended"]
    assert [(e["call_id"], e["reason"]) for e in ended] == [("a", "shutdown")]
    with pytest.raises(CallLimitReached, match="shutting down"):
        registry.open(CallStart("c", "native", {}))
    assert np.isfinite(ended[0]["summary"]["duration"])


def test_input_after_the_call_ends_is_ignored(tiny_detector, speech):
    """A track that starts during a drain must not keep call_ended waiting forever."""
    rate, audio = speech
    scorer = Scorer(tiny_detector, hold=True)
    session, sub = make_session(tiny_detector, scorer)
    session.handle_all([TrackStart("0", rate), Audio("0", audio[: 5 * rate])])
    session.end("shutdown")
    session.handle_all([TrackStart("late", rate), Audio("late", audio), Audio("0", audio)])
    scorer.release()
    ended = events(sub)[-1]
    assert ended["type"] == "call_ended" and ended["reason"] == "shutdown"
    assert set(ended["tracks"]) == {"0"}
    assert ended["summary"]["duration"] == pytest.approx(5.0)
