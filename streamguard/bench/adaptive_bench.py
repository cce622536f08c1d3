"""Adaptive scoring (``[track] adaptive_stride``): capacity gained on real speech, delay added
on synthetic speech. Offline, through the real :class:`~streamguard.calls.CallSession` and the
real detector, no daemon: the figures are counts of windows and call-time seconds, so they do
not depend on the machine.

Workloads, all cut from the bundled demo call (channel 0 = a synthetic voice, channel 1 = a
human): ``real`` = the human track looped to ``seconds``; ``synthetic`` = the synthetic track;
``splice`` = the human track, then the synthetic one (a voice that turns synthetic mid-call).
For each stride: windows scored per call (capacity gain = windows at stride 1 / windows at
this stride) and when the first alert was raised (call seconds; for ``splice``, after the
splice point).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _run_call(detector: Any, audio: np.ndarray, rate: int, stride: int) -> dict[str, Any]:
    from streamguard.audio.track import TrackSettings
    from streamguard.calls import CallPolicy, CallSession
    from streamguard.sources.base import Audio, CallEnd, CallStart, TrackStart

    policy = CallPolicy(track=TrackSettings(adaptive_stride=stride))
    session = CallSession(CallStart("adaptive", "native"), info=detector.info, policy=policy)
    session.handle(TrackStart("0", rate))
    raised: float | None = None
    step = rate // 10
    for i in range(0, audio.size + step, step):
        if i < audio.size:
            session.handle(Audio("0", audio[i : i + step]))
        else:
            session.handle(CallEnd("stop"))
        pending = session.windows_to_score()
        if pending:
            scores = detector(np.stack([p.window.samples for p in pending]))
            for p, score in zip(pending, scores, strict=True):
                session.receive_score(p, float(score))
        for event in session.events_to_publish():
            if event.type == "alert" and event.state == "raised" and raised is None:
                raised = event.end
            if event.type == "call_ended":
                summary = event.summary
    return {
        "windows_scored": summary.windows_scored,
        "first_alert_seconds": raised,
        "verdict": summary.verdict,
    }


def run_adaptive_bench(
    detector: Any, file: str, *, strides=(1, 2, 3), seconds: float = 60.0
) -> dict[str, Any]:
    from streamguard.audio.file import read_audio
    from streamguard.bench.loadgen import call_audio

    rate, channels = read_audio(file)
    if channels.shape[0] < 2:
        return {"skipped": f"{file} has one channel; needs the demo call (synthetic + human)"}
    _, looped = call_audio(file, seconds)
    human, synthetic = looped[1], channels[0]
    splice_at = channels.shape[1] / rate
    workloads = {
        "real": human,
        "synthetic": synthetic,
        "splice": np.concatenate([channels[1], synthetic]),
    }
    out: dict[str, Any] = {"splice_at_seconds": splice_at, "strides": {}}
    for stride in strides:
        out["strides"][stride] = {
            name: _run_call(detector, audio, rate, stride) for name, audio in workloads.items()
        }
    base = out["strides"][strides[0]]
    for res in out["strides"].values():
        res["real_capacity_gain"] = base["real"]["windows_scored"] / max(
            1, res["real"]["windows_scored"]
        )
        for name in ("synthetic", "splice"):
            a, b = base[name]["first_alert_seconds"], res[name]["first_alert_seconds"]
            res[name]["added_delay_seconds"] = None if a is None or b is None else b - a
    return out
