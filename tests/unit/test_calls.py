"""CallSession (a pure core: events in, windows and typed events out) and the CallRegistry wiring.

The session is driven here exactly as the daemon drives it, without a loop or a network: feed it
source events, score the windows it hands out with the real tiny detector, hand the outcomes back.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from streamguard.alerts.bus import AlertBus
from streamguard.audio.file import read_audio
from streamguard.calls import (
    CallFeed,
    CallIdInUse,
    CallLimitReached,
    CallPolicy,
    CallRegistry,
    CallSession,
    Refusal,
)
from streamguard.policy.smoothing import SmoothingSettings
from streamguard.scoring.outcome import Unscored
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallShare,
    CallStart,
    Gap,
    TrackEnd,
    TrackStart,
)
from streamguard.sources.edges.websocket import CLOSE_CODES


class Scorer:
    """Scores what a session hands out with the real detector, now or later (``hold``)."""

    def __init__(self, detector, session: CallSession, hold: bool = False):
        self.detector = detector
        self.session = session
        self.hold = hold
        self.waiting: list = []
        self.events: list[dict] = []

    def pump(self) -> None:
        """Move the session's outputs: score its windows (unless held), collect its events."""
        while True:
            pending = self.session.windows_to_score()
            if self.hold:
                self.waiting += pending
            else:
                for item in pending:
                    self.session.receive_score(item, self.score(item))
            out = self.session.events_to_publish()
            self.events += [e.to_dict() for e in out]
            if not out and (self.hold or not pending):
                return

    def score(self, item) -> float:
        return float(self.detector(item.window.samples[None])[0])

    def feed(self, *events) -> list[dict]:
        for event in events:
            self.session.handle(event)
            self.pump()
        return self.events

    def release(self, outcome=None) -> None:
        waiting, self.waiting = self.waiting, []
        for item in waiting:
            self.session.receive_score(item, self.score(item) if outcome is None else outcome)
        self.pump()


@pytest.fixture
def speech(fixtures_dir):
    rate, audio = read_audio(fixtures_dir / "speech_10s_8k.wav")
    return rate, audio[0]


def make_session(tiny_detector, hold=False, info=None, **policy):
    session = CallSession(
        CallStart("c1", "native", {"customParameters": {"token": "s3cret", "agent": "7"}}),
        info=info or tiny_detector.info,
        policy=CallPolicy(**policy),
    )
    scorer = Scorer(tiny_detector, session, hold=hold)
    scorer.pump()
    return session, scorer


def test_session_scores_each_hop_and_ends_with_summary(tiny_detector, speech):
    rate, audio = speech
    session, scorer = make_session(tiny_detector)
    scorer.feed(TrackStart("0", rate))
    for i in range(0, audio.size, 160):  # 20 ms frames, as feeds send them
        scorer.feed(Audio("0", audio[i : i + 160]))
    out = scorer.feed(TrackEnd("0"), CallEnd("stop"))
    assert out[0]["type"] == "call_started"
    assert out[0]["metadata"]["customParameters"] == {"token": "[redacted]", "agent": "7"}
    assert out[0]["seq"] == 0  # the bus numbers events; the session only makes them
    scores = [e for e in out if e["type"] == "score"]
    assert [e["start"] for e in scores] == [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert out[-1]["type"] == "call_ended" and out[-1]["reason"] == "stop"
    assert out[-1]["summary"]["windows_scored"] == 7
    assert out[-1]["summary"]["duration"] == pytest.approx(10.0)
    assert session.finished


def test_call_started_carries_the_declared_sample_rate(tiny_detector):
    session = CallSession(
        CallStart(
            "c", "twilio", {"mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000}}
        ),
        info=tiny_detector.info,
        policy=CallPolicy(),
    )
    (started,) = session.events_to_publish()
    assert started.sample_rate == 8000
    assert session.events_to_publish() == []  # each event is handed out once


def test_call_ended_waits_for_outstanding_scores_and_counts_drops(tiny_detector, speech):
    rate, audio = speech
    session, scorer = make_session(tiny_detector, hold=True)
    out = scorer.feed(TrackStart("0", rate), Audio("0", audio), CallEnd("closed"))
    assert [e["type"] for e in out] == ["call_started"]  # nothing scored yet
    assert not session.finished
    scorer.release(Unscored("lag"))
    ended = scorer.events[-1]
    assert ended["type"] == "call_ended"
    assert ended["summary"]["windows_dropped"] == 7
    assert ended["summary"]["windows_failed"] == 0
    assert ended["summary"]["windows_scored"] == 0
    assert ended["summary"]["verdict"] == "inconclusive"


def test_failed_windows_are_counted_apart_and_the_call_still_ends(tiny_detector, speech):
    """The NaN hang: windows the model failed on must still let call_ended out."""
    rate, audio = speech
    session, scorer = make_session(tiny_detector, hold=True)
    scorer.feed(TrackStart("0", rate), Audio("0", audio), CallEnd("stop"))
    held = scorer.waiting
    scorer.waiting = []
    for i, item in enumerate(held):
        outcome = Unscored("nonfinite") if i % 2 else scorer.score(item)
        session.receive_score(item, outcome)
    scorer.pump()
    ended = scorer.events[-1]
    assert ended["type"] == "call_ended" and session.finished
    assert ended["summary"]["windows_failed"] == 3
    assert ended["tracks"]["0"]["windows_failed"] == 3
    assert ended["summary"]["windows_scored"] == 4
    assert all(math.isfinite(e["p_fake"]) for e in scorer.events if e["type"] == "score")


def test_gap_keeps_call_time(tiny_detector, speech):
    rate, audio = speech
    _, scorer = make_session(tiny_detector)
    out = scorer.feed(TrackStart("0", rate), Gap("0", 2 * rate), Audio("0", audio), CallEnd("stop"))
    assert out[-1]["summary"]["duration"] == pytest.approx(12.0)


def test_max_call_seconds_flags_the_session(tiny_detector, speech):
    rate, audio = speech
    session, scorer = make_session(tiny_detector, max_call_seconds=3.0)
    scorer.feed(TrackStart("0", rate), Audio("0", audio[: 2 * rate]))
    assert not session.over_limit
    scorer.feed(Audio("0", audio[2 * rate : 4 * rate]))
    assert session.over_limit


def test_alert_raised_when_scores_stay_high(tiny_detector, speech):
    """Threshold below every score of the tiny model: the alert must be raised after 2 windows
    (raise_after=2 here: the mechanics, not the shipped default)."""
    rate, audio = speech
    info = tiny_detector.info.replace(threshold=0.01)
    _, scorer = make_session(tiny_detector, info=info, smoothing=SmoothingSettings(raise_after=2))
    out = scorer.feed(TrackStart("0", rate), Audio("0", audio), CallEnd("stop"))
    alerts = [e for e in out if e["type"] == "alert"]
    assert [a["state"] for a in alerts] == ["raised"]
    assert alerts[0]["start"] == 0.0 and alerts[0]["end"] == 5.0
    assert out[-1]["summary"]["verdict"] == "fake"


def test_input_after_the_call_ends_is_ignored(tiny_detector, speech):
    """A track that starts during a drain must not keep call_ended waiting forever."""
    rate, audio = speech
    session, scorer = make_session(tiny_detector, hold=True)
    scorer.feed(TrackStart("0", rate), Audio("0", audio[: 5 * rate]))
    session.end("shutdown")
    scorer.feed(TrackStart("late", rate), Audio("late", audio), Audio("0", audio))
    scorer.release()
    ended = scorer.events[-1]
    assert ended["type"] == "call_ended" and ended["reason"] == "shutdown"
    assert set(ended["tracks"]) == {"0"}
    assert ended["summary"]["duration"] == pytest.approx(5.0)


class InlineEngine:
    """The engine's ``submit`` contract, run inline with the real tiny detector."""

    def __init__(self, detector):
        self.detector = detector

    def __call__(self, window, callback) -> None:
        callback(float(self.detector(window.samples[None])[0]))


async def test_registry_moves_windows_and_events_limits_calls_and_drains(tiny_detector, speech):
    rate, audio = speech
    bus = AlertBus("tiny")
    sub = bus.subscribe()
    registry = CallRegistry(
        info=tiny_detector.info,
        policy=CallPolicy(),
        submit=InlineEngine(tiny_detector),
        publish=bus.publish,
        max_calls=1,
    )
    session = registry.open(CallStart("a", "native", {}))
    registry.handle(session, TrackStart("0", rate))
    registry.handle(session, Audio("0", audio[: 5 * rate]))
    with pytest.raises(CallLimitReached):
        registry.open(CallStart("b", "native", {}))
    await registry.drain()
    assert not registry.sessions
    events = [e.to_dict() for e in sub.drain()]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["type"] for e in events][:2] == ["call_started", "score"]
    ended = [e for e in events if e["type"] == "call_ended"]
    assert [(e["call_id"], e["reason"]) for e in ended] == [("a", "shutdown")]
    with pytest.raises(CallLimitReached, match="shutting down"):
        registry.open(CallStart("c", "native", {}))
    assert np.isfinite(ended[0]["summary"]["duration"])


class FailingPublish:
    """The bus's publish, failing for the events ``fail`` picks (a bug somewhere behind it)."""

    def __init__(self, bus: AlertBus, fail):
        self.bus, self.fail = bus, fail

    def __call__(self, event):
        if self.fail(event):
            raise RuntimeError(f"cannot publish {event.type}")
        return self.bus.publish(event)


def test_a_call_whose_call_started_cannot_be_published_is_not_left_open(tiny_detector):
    """Registered, then call_started fails: the one path takes the call out again, so the
    slot is free and the feed is told (1011) instead of the call staying open forever."""
    bus = AlertBus("tiny")
    publish = FailingPublish(bus, lambda e: e.call_id == "bad")
    registry = CallRegistry(
        info=tiny_detector.info,
        policy=CallPolicy(),
        submit=InlineEngine(tiny_detector),
        publish=publish,
        max_calls=1,
    )
    with pytest.raises(RuntimeError):
        registry.open(CallStart("bad", "native", {}))
    assert not registry.sessions
    feed = CallFeed("native", registry)
    refusal = feed.route([CallStart("bad", "native", {})])
    assert refusal == Refusal("error", "internal error: the call could not be opened")
    assert CLOSE_CODES[refusal.kind] == 1011
    assert feed.session is None and not registry.sessions
    good = registry.open(CallStart("good", "native", {}))  # the one slot is free
    registry.end(good, "stop")
    assert not registry.sessions


def test_a_finished_call_leaves_the_registry_even_if_call_ended_fails(tiny_detector):
    bus = AlertBus("tiny")
    registry = CallRegistry(
        info=tiny_detector.info,
        policy=CallPolicy(),
        submit=InlineEngine(tiny_detector),
        publish=FailingPublish(bus, lambda e: e.type == "call_ended"),
        max_calls=1,
    )
    session = registry.open(CallStart("a", "native", {}))
    with pytest.raises(RuntimeError):
        registry.end(session, "stop")
    assert session.finished and not registry.sessions
    registry.open(CallStart("b", "native", {}))


def share(account: str, *tracks: str) -> CallShare:
    return CallShare(account, frozenset(tracks))


def test_a_live_call_id_is_refused_unless_it_is_another_track_of_the_same_call(tiny_detector):
    registry = CallRegistry(
        info=tiny_detector.info,
        policy=CallPolicy(),
        submit=InlineEngine(tiny_detector),
        publish=AlertBus("tiny").publish,
    )
    inbound = registry.open(CallStart("CA1", "twilio", {}, share("twilio:AC1", "inbound")))
    # Twilio's second stream of the call (<Stream track="outbound_track">): joins it.
    outbound = registry.open(CallStart("CA1", "twilio", {}, share("twilio:AC1", "outbound")))
    refused = [
        CallStart("CA1", "native", {}),  # another feed reusing the id
        CallStart("CA1", "twilio", {}),  # a stream that names no tracks: the whole call
        CallStart("CA1", "twilio", {}, share("twilio:AC1", "inbound")),  # a track taken
        CallStart("CA1", "twilio", {}, share("twilio:AC2", "x")),  # another account
        CallStart("CA1", "telnyx", {}, share("twilio:AC1", "x")),  # another provider
    ]
    for start in refused:
        with pytest.raises(CallIdInUse):
            registry.open(start)
    feed = CallFeed("native", registry)
    refusal = feed.route([CallStart("CA1", "native", {})])
    assert refusal == Refusal("in_use", "call_id already live on another connection")
    assert CLOSE_CODES[refusal.kind] == 1008
    # Once the call's connections have ended (even before their last scores), the id is free.
    registry.end(inbound, "stop")
    registry.end(outbound, "stop")
    again = registry.open(CallStart("CA1", "native", {}))
    with pytest.raises(CallIdInUse):
        registry.open(CallStart("CA1", "native", {}))
    registry.end(again, "stop")
