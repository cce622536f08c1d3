"""The daemon benchmark's load generator: N concurrent calls plus one /alerts subscriber.

It runs as its own process (``python -m streamguard.bench.loadgen``, a JSON job on stdin, a
JSON report on stdout) so that building, pacing and sending frames does not compete with the
daemon for its event loop and GIL, and so that the daemon's CPU time is the daemon's alone.
Sending and receiving happen in this one process, so lag is measured on one clock:

    lag = arrival of a ``score`` event - moment the frame holding the window's last sample
          finished sending

Send moments are recorded by wrapping the frame iterator handed to
:func:`streamguard.client.send_frames`: the sender asks for frame k+1 right after frame k's
``send`` returned. Every wait is bounded by the job's ``deadline_seconds``.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamguard.bench.stats import summary


@dataclass
class Job:
    """What the parent asks for (the JSON on stdin)."""

    base_url: str  # ws://127.0.0.1:PORT
    feed_path: str  # /twilio or /ingest
    alerts_path: str
    protocol: str  # twilio | native | l16
    file: str
    calls: int
    call_seconds: float
    speed: float = 1.0
    stagger_seconds: float = 1.0  # call i starts i * stagger / calls after the first
    deadline_seconds: float = 120.0
    call_prefix: str = "bench"
    chunk_ms: int = 20  # audio per frame
    mix: bool = False  # mix the file's channels into one track (continuous speech)


@dataclass
class RecordedFrames:
    """Frames for one call, recording when each one finished sending (monotonic seconds)."""

    frames: list[tuple[float, Any]]
    sent: list[float] = field(default_factory=list)
    started: float = 0.0

    def __post_init__(self) -> None:
        self.call_times = [t for t, _ in self.frames]

    def __iter__(self) -> Iterator[tuple[float, Any]]:
        for item in self.frames:
            yield item
            self.sent.append(time.monotonic())  # resumed: the previous send has returned

    def sent_at(self, call_seconds: float) -> float | None:
        """When the frame holding the sample just before ``call_seconds`` had been sent."""
        i = bisect.bisect_left(self.call_times, call_seconds) - 1
        i = max(i, 0)
        return self.sent[i] if i < len(self.sent) else None

    def lateness(self, speed: float) -> list[float]:
        """Seconds each frame went out after its real-time schedule (the sender's own lag)."""
        return [
            sent - (self.started + t / speed)
            for sent, t in zip(self.sent, self.call_times, strict=False)
        ]


def speech_onsets(audio: np.ndarray, rate: int) -> list[float | None]:
    """Call time (s) of each channel's first speech, by the daemon's own VAD (webrtcvad, 30 ms
    frames, aggressiveness 2): where a caller "starts speaking" for the first-verdict figure.
    None for a channel without speech."""
    from streamguard.audio.vad import SpeechGate

    out: list[float | None] = []
    for channel in audio:
        gate = SpeechGate(rate)
        first = next((f for f in gate.push(channel) + gate.flush() if f.is_speech), None)
        out.append(None if first is None else first.start_sample / rate)
    return out


def _track_onset(track: str, onsets: list[float | None]) -> float | None:
    """The speech onset of a track as the daemon names it: Twilio's inbound/outbound, or the
    native/L16 channel index ("0", "1"); a mono call has one."""
    if len(onsets) == 1:
        return onsets[0]
    from streamguard.sources.senders import TWILIO_TRACKS

    if track in TWILIO_TRACKS:
        index = TWILIO_TRACKS.index(track)
    elif track.isdigit():
        index = int(track)
    else:
        return None
    return onsets[index] if index < len(onsets) else None


def _loop_time(monotonic_deadline: float) -> float:
    """A ``time.monotonic()`` deadline on the running loop's clock (for ``timeout_at``)."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def call_audio(path: str, seconds: float, *, mix: bool = False) -> tuple[int, np.ndarray]:
    """The file's audio, repeated or cut to ``seconds`` (benchmark calls of any length).

    ``mix`` sums the channels into one track: the bundled demo call's two speakers take
    turns, so their mix is one track of continuous conversation (every window has speech).
    """
    from streamguard.audio.file import read_audio

    rate, channels = read_audio(path)
    if channels.shape[1] == 0:
        raise ValueError(f"{path}: no audio")
    if mix and channels.shape[0] > 1:
        channels = np.clip(channels.sum(axis=0, keepdims=True), -1.0, 1.0).astype(np.float32)
    n = max(1, round(seconds * rate))
    reps = -(-n // channels.shape[1])
    return rate, np.tile(channels, (1, reps))[:, :n]


async def _subscribe(url: str, ready: asyncio.Event, sink: list[tuple[float, dict]]) -> None:
    from websockets.asyncio.client import connect

    async with connect(url, max_size=None) as ws:
        ready.set()
        async for message in ws:
            sink.append((time.monotonic(), json.loads(message)))


async def run_job(job: Job) -> dict[str, Any]:
    from streamguard.client import send_frames
    from streamguard.sources.senders import frames_for

    rate, audio = call_audio(job.file, job.call_seconds, mix=job.mix)
    ids = [f"{job.call_prefix}-{i}" for i in range(job.calls)]
    recorded = {
        cid: RecordedFrames(
            list(frames_for(job.protocol, audio, rate, call_id=cid, chunk_ms=job.chunk_ms))
        )
        for cid in ids
    }
    onsets = speech_onsets(audio, rate)
    events: list[tuple[float, dict]] = []
    ready = asyncio.Event()
    errors: list[str] = []
    results: dict[str, Any] = {}
    deadline = time.monotonic() + job.deadline_seconds
    subscriber = asyncio.create_task(_subscribe(job.base_url + job.alerts_path, ready, events))
    await asyncio.wait_for(ready.wait(), 10)
    t0 = time.monotonic() + 0.2

    async def one_call(i: int, cid: str) -> None:
        await asyncio.sleep(max(0.0, t0 + i * job.stagger_seconds / job.calls - time.monotonic()))
        recorded[cid].started = time.monotonic()  # send_frames' own clock starts here
        try:
            res = await send_frames(
                job.base_url + job.feed_path,
                recorded[cid],
                realtime=True,
                speed=job.speed,
                close_timeout=max(5.0, deadline - time.monotonic()),
            )
            results[cid] = {"frames": res.frames, "close_code": res.close_code}
        except Exception as exc:  # one failed call must not hide the others' figures
            errors.append(f"{cid}: {exc}")

    started = time.monotonic()
    try:
        async with asyncio.timeout_at(_loop_time(deadline)):
            await asyncio.gather(*(one_call(i, cid) for i, cid in enumerate(ids)))
    except TimeoutError:
        errors.append(f"deadline: {job.calls - len(results)} call(s) still sending")
    sending_seconds = time.monotonic() - started
    # send_frames returns once the daemon closed the call; call_ended may still be in flight.
    # Bounded: an overloaded daemon (or a subscriber that was sent "dropped") may never tell.
    settle = min(deadline, time.monotonic() + 10.0)
    wanted = set(ids)
    while wanted and time.monotonic() < settle:
        wanted -= {e["call_id"] for _, e in events if e["type"] == "call_ended"}
        if wanted:
            await asyncio.sleep(0.05)
    if wanted:
        errors.append(f"no call_ended seen for {len(wanted)} call(s)")
    subscriber.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await subscriber
    return _report(job, recorded, events, results, errors, sending_seconds, onsets)


def _report(job, recorded, events, results, errors, sending_seconds, onsets=()) -> dict[str, Any]:
    lags: list[float] = []
    first_lags: list[float] = []  # each track's first score after its first full window
    # each track's first score after its caller started speaking (the frame holding the first
    # speech sample had been sent): the call time a first verdict takes (issue #20: <= 5 s)
    first_verdicts: list[float] = []
    seen_tracks: set[tuple[str, str]] = set()
    arrivals: list[float] = []
    unknown = 0
    for arrived, event in events:
        if event["type"] != "score":
            continue
        frames = recorded.get(event["call_id"])
        sent = frames.sent_at(event["end"]) if frames else None
        if sent is None:
            unknown += 1
            continue
        lags.append(arrived - sent)
        arrivals.append(arrived)
        track = (event["call_id"], event["track"])
        if track not in seen_tracks:
            seen_tracks.add(track)
            first_lags.append(arrived - sent)
            onset = _track_onset(str(event["track"]), list(onsets))
            # the frame holding the first speech sample (frames are stamped with their start)
            spoke = frames.sent_at(onset + 1e-6) if frames and onset is not None else None
            if spoke is not None:
                first_verdicts.append(arrived - spoke)
    lateness = [x for frames in recorded.values() for x in frames.lateness(job.speed)]
    ended = [e for _, e in events if e["type"] == "call_ended" and e["call_id"] in recorded]
    span = (max(arrivals) - min(arrivals)) if len(arrivals) > 1 else 0.0
    return {
        "calls": job.calls,
        "calls_completed": len(results),
        "calls_ended_events": len(ended),
        "errors": errors,
        "score_events": len(lags) + unknown,
        "score_events_per_second": (len(arrivals) - 1) / span if span > 0 else 0.0,
        "dropped_events": sum(1 for _, e in events if e["type"] == "dropped"),
        "alerts": sum(1 for _, e in events if e["type"] == "alert"),
        "windows_dropped_in_summaries": sum(
            e["summary"].get("windows_dropped") or 0 for e in ended
        ),
        "lag_seconds": summary(lags),
        "first_score_lag_seconds": summary(first_lags),
        "first_verdict_seconds": summary(first_verdicts),
        "windows_skipped_in_summaries": sum(
            e["summary"].get("windows_skipped") or 0 for e in ended
        ),
        "sender_lateness_seconds": summary(lateness),
        "sending_seconds": sending_seconds,
        "frames_sent": sum(len(f.sent) for f in recorded.values()),
    }


def main() -> int:
    job = Job(**json.loads(sys.stdin.read()))
    report = asyncio.run(run_job(job))
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
