"""CallSession's part of the operator loop, driven as the daemon drives it (no loop): leg
selection, allowlisted windows, and evidence clips that still get a late alert's audio."""

from __future__ import annotations

import numpy as np

from streamguard.audio.file import read_audio
from streamguard.calls import CallPolicy, CallSession
from streamguard.evidence import CloseClip, OpenClip, WriteClip
from streamguard.policy.smoothing import SmoothingSettings
from streamguard.scoring.outcome import Allowlisted
from streamguard.sources.base import Audio, CallEnd, CallStart, TrackStart

ALWAYS = SmoothingSettings(on_threshold=0.0, off_threshold=0.0, raise_after=1)


def run_call(detector, policy, audio, rate, *, hold=False, mark=None):
    """Two tracks of ``audio``; ``mark(track, score)`` may turn a score into another outcome.
    With ``hold`` every score comes back only after the call ended."""
    session = CallSession(CallStart(call_id="c", source="native"), info=detector.info,
                          policy=policy)  # fmt: skip
    events, clips, held = [], [], []

    def pump():
        for pending in session.windows_to_score():
            held.append(pending)
        if not hold:
            deliver()
        events.extend(session.events_to_publish())
        clips.extend(session.clips_to_write())

    def deliver():
        while held:
            pending = held.pop(0)
            p = float(detector(pending.window.samples[None])[0])
            session.receive_score(pending, mark(pending.track, p) if mark else p)

    for track in ("inbound", "outbound"):
        session.handle(TrackStart(track=track, sample_rate=rate))
    step = rate // 10
    for i in range(0, audio.size, step):
        for track in ("inbound", "outbound"):
            session.handle(Audio(track=track, samples=audio[i : i + step]))
        pump()
    session.handle(CallEnd(reason="stop"))
    pump()
    deliver()
    events.extend(session.events_to_publish())
    clips.extend(session.clips_to_write())
    assert session.finished
    return events, clips


def test_a_left_out_leg_is_counted_not_scored(tiny_detector, fixtures_dir):
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    policy = CallPolicy(score_tracks=frozenset({"inbound"}))
    events, _ = run_call(tiny_detector, policy, mono[0], rate)
    assert {e.track for e in events if e.type == "score"} == {"inbound"}
    ended = events[-1]
    assert ended.tracks["outbound"].windows_scored == 0
    assert ended.tracks["outbound"].windows_not_scored == ended.tracks["inbound"].windows_scored
    assert ended.tracks["outbound"].verdict == "inconclusive"


def test_allowlisted_windows_are_reported_and_never_alert(tiny_detector, fixtures_dir):
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    policy = CallPolicy(smoothing=ALWAYS)

    def mark(track, p):
        return Allowlisted(p, "ivr", 0.9) if track == "inbound" else p

    events, _ = run_call(tiny_detector, policy, mono[0], rate, mark=mark)
    inbound = [e for e in events if e.type == "score" and e.track == "inbound"]
    assert inbound and all(e.allowlisted == "ivr" for e in inbound)
    assert {e.track for e in events if e.type == "alert"} == {"outbound"}
    tracks = events[-1].tracks
    assert tracks["inbound"].windows_allowlisted == len(inbound)
    assert tracks["inbound"].verdict != "fake" and tracks["outbound"].verdict == "fake"


def test_an_alert_that_comes_back_after_the_track_ended_still_gets_its_clip(
    tiny_detector, fixtures_dir
):
    """Scores arrive after CallEnd (a busy engine): the recorders must not finish before the
    last score is back, or the alert's audio is lost."""
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    policy = CallPolicy(smoothing=ALWAYS, evidence_keep="alerts", evidence_lookback_seconds=20.0)
    _, clips = run_call(tiny_detector, policy, mono[0], rate, hold=True)
    ops = [op for work in clips if work.track == "inbound" for op in work.ops]
    opened = [op for op in ops if isinstance(op, OpenClip)]
    closed = [op for op in ops if isinstance(op, CloseClip)]
    assert len(opened) == len(closed) == 1
    written = sum(op.samples.size for op in ops if isinstance(op, WriteClip))
    assert written == closed[0].end - opened[0].start == mono.shape[1] - opened[0].start
    assert np.all(np.diff([op.start for op in opened]) >= 0)
