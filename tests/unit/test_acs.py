"""Azure Communication Services media streaming: messages shaped as Microsoft's quickstart and
the Call Automation SDKs show them, carrying real speech (16 kHz and 24 kHz, mixed and
unmixed), silent frames, DTMF, time gaps, bad input, fuzzing."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.sources.acs import AcsMediaCore
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    Dtmf,
    Gap,
    Reject,
    TrackEnd,
    TrackStart,
    sequence_problems,
)
from streamguard.sources.edges.websocket import CLOSE_CODES

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
SUBSCRIPTION = "89e8cb59-b991-48b0-b154-1db84f16a077"
CALLER = "4:+15550100"  # a phone participant's raw ID
AGENT = "8:acs:3d20e1de-0f28-41c5-a5c2-7b04d1cb1e2a_00000020-1234"
T0 = datetime(2024, 11, 15, 19, 16, 12, 925000, tzinfo=UTC)


def speech(rate: int) -> np.ndarray:
    """(samples, 2) int16 real speech at ``rate``: channel 0 = caller, 1 = agent."""
    pcm, source = sf.read(FIXTURES / "speech_stereo_16k.wav", dtype="int16")
    if rate == source:
        return pcm
    out = soxr.resample(pcm.astype(np.float32) / 32768, source, rate)
    return np.clip(np.round(out * 32768), -32768, 32767).astype(np.int16)


def metadata(rate: int) -> str:
    return json.dumps(
        {
            "kind": "AudioMetadata",
            "audioMetadata": {
                "subscriptionId": SUBSCRIPTION,
                "encoding": "PCM",
                "sampleRate": rate,
                "channels": 1,
                "length": rate // 50 * 2,
            },
        }
    )


def audio_data(pcm: np.ndarray, at: datetime, participant: str | None, silent=False) -> str:
    frame = {
        "timestamp": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "data": base64.b64encode(pcm.astype("<i2").tobytes()).decode(),
        "silent": silent,
    }
    if participant is not None:
        frame["participantRawID"] = participant
    return json.dumps({"kind": "AudioData", "audioData": frame})


def frames(pcm: np.ndarray, rate: int, participant: str | None, start: int = 0):
    """20 ms AudioData messages, as ACS sends them, timestamped from T0."""
    step = rate // 50
    for i in range(0, len(pcm) - step + 1, step):
        at = T0 + timedelta(seconds=(start + i) / rate)
        yield audio_data(pcm[i : i + step], at, participant)


def run(messages, **kw) -> tuple[list, AcsMediaCore]:
    core = AcsMediaCore(**kw)
    events: list = []
    for m in messages:
        events += core.receive_text(m)
    return events + core.close(), core


def track_audio(events, track) -> np.ndarray:
    return np.concatenate([e.samples for e in events if isinstance(e, Audio) and e.track == track])


@pytest.mark.parametrize("rate", [16000, 24000])
def test_mixed_audio_is_one_track(rate):
    pcm = speech(rate)[:, 0]
    events, _ = run([metadata(rate), *frames(pcm, rate, None)], call_id="conn-1")
    assert sequence_problems(events) == []
    start = events[0]
    assert isinstance(start, CallStart) and (start.call_id, start.source) == ("conn-1", "acs")
    assert start.metadata["subscriptionId"] == SUBSCRIPTION
    assert events[1] == TrackStart("0", rate)
    n = len(pcm) - len(pcm) % (rate // 50)
    np.testing.assert_array_equal(track_audio(events, "0"), pcm[:n].astype(np.float32) / 32768)
    assert events[-2:] == [TrackEnd("0"), CallEnd("closed")]


def test_unmixed_audio_is_one_track_per_participant_named_without_phone_numbers():
    pcm = speech(16000)
    caller = list(frames(pcm[:, 0], 16000, CALLER))
    agent = list(frames(pcm[:, 1], 16000, AGENT))
    interleaved = [m for pair in zip(caller, agent, strict=True) for m in pair]
    events, core = run([metadata(16000), *interleaved])
    assert sequence_problems(events) == []
    assert events[0].call_id == SUBSCRIPTION  # no call id from the edge
    assert core.participants == {CALLER: "p1", AGENT: "p2"}
    assert "+15550100" not in repr([e for e in events if not isinstance(e, Audio)])
    for track, ch in (("p1", 0), ("p2", 1)):
        got = track_audio(events, track)
        np.testing.assert_array_equal(got, pcm[: len(got), ch].astype(np.float32) / 32768)
    raw, core = run([metadata(16000), caller[0]], raw_id_tracks=True)
    assert TrackStart(CALLER, 16000) in raw


def test_a_participant_who_falls_silent_gets_a_gap_and_keeps_the_call_clock():
    """Unmixed ACS sends only dominant speakers: the agent speaks at 0-1 s and 3-4 s."""
    rate = 16000
    pcm = speech(rate)[:, 1]
    first = list(frames(pcm[:rate], rate, AGENT))
    later = list(frames(pcm[3 * rate : 4 * rate], rate, AGENT, start=3 * rate))
    caller_late = list(frames(speech(rate)[:rate, 0], rate, CALLER, start=2 * rate))
    events, _ = run([metadata(rate), *first, *caller_late, *later])
    assert sequence_problems(events) == []
    # the agent spoke first: p1; the caller is p2
    assert Gap("p1", 2 * rate) in events  # the agent: 1 s -> 3 s
    assert Gap("p2", 2 * rate) in events  # the caller starts at 2 s
    assert len(track_audio(events, "p1")) == 2 * rate


def test_silent_frames_are_time_too():
    rate = 16000
    empty = json.dumps({"kind": "AudioData", "audioData": {
        "timestamp": "2024-11-15T19:16:12.925Z", "data": "", "silent": True}})  # fmt: skip
    zeros = audio_data(np.zeros(320, np.int16), T0 + timedelta(milliseconds=20), None, True)
    events, core = run([metadata(rate), empty, zeros])
    assert sequence_problems(events) == [] and core.stats.silent_frames == 2
    assert [len(e.samples) for e in events if isinstance(e, Audio)] == [320, 320]
    assert not track_audio(events, "0").any()


def test_dtmf_transcription_and_unknown_kinds():
    dtmf = json.dumps({"kind": "DtmfData", "dtmfData": {"data": "5"}})
    transcript = json.dumps({"kind": "TranscriptionData", "transcriptionData": {"text": "hi"}})
    future = json.dumps({"kind": "SomethingNew", "somethingNew": {}})
    events, core = run([metadata(16000), dtmf, transcript, future])
    assert Dtmf("0", "5") in events and core.stats.ignored == 2
    assert sequence_problems(events) == []


def test_binary_frames_carry_the_same_json():
    core = AcsMediaCore()
    events = core.receive_bytes(metadata(24000).encode())
    assert isinstance(events[0], CallStart) and core.sample_rate == 24000
    assert isinstance(core.receive_bytes(b"\xff\xfe")[-1], Reject)


@pytest.mark.parametrize(
    ("messages", "code", "reason"),
    [
        (["{not json"], 1008, "not JSON"),
        (['{"audioData": {}}'], 1008, "without a string 'kind'"),
        ([audio_data(np.zeros(4, np.int16), T0, None)], 1008, "AudioData before AudioMetadata"),
        ([metadata(16000).replace('"PCM"', '"OPUS"')], 1003, "unsupported encoding 'OPUS'"),
        ([metadata(16000).replace('"channels": 1', '"channels": 2')], 1003, "2 channels"),
        ([metadata(96000)], 1003, "96000 Hz not supported"),
        ([metadata(16000), metadata(16000)], 1008, "second AudioMetadata"),
        ([metadata(16000), '{"kind": "AudioData", "audioData": {"data": "!!"}}'], 1008,
         "not valid base64"),
        ([metadata(16000), '{"kind": "AudioData", "audioData": {"data": "AAAA"}}'], 1008,
         "3 bytes is not whole 16-bit samples"),
        ([metadata(16000), '{"kind": "AudioData", "audioData": {"data": "", "timestamp": "x"}}'],
         1008, "not ISO 8601"),
        ([metadata(16000), '{"kind": "AudioData"}'], 1008, "AudioData message without"),
    ],
)  # fmt: skip
def test_bad_input_one_reason(messages, code, reason):
    events, core = run(messages)
    rejects = [e for e in events if isinstance(e, Reject)]
    assert (
        len(rejects) == 1 and CLOSE_CODES[rejects[0].kind] == code and reason in rejects[0].reason
    ), events
    assert sequence_problems(events) == [] and core.finished


def test_too_many_participants():
    many = [audio_data(np.zeros(320, np.int16), T0, f"8:acs:{i}") for i in range(3)]
    events, _ = run([metadata(16000), *many], max_tracks=2)
    assert isinstance(events[-1], Reject) and "more than 2 participants" in events[-1].reason
    assert sequence_problems(events) == []


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=60),
            st.sampled_from(
                [
                    metadata(16000),
                    metadata(24000),
                    audio_data(np.arange(-4, 4, dtype=np.int16), T0, None),
                    audio_data(np.arange(8, dtype=np.int16), T0 + timedelta(seconds=2), AGENT),
                    audio_data(np.zeros(0, np.int16), T0, CALLER, silent=True),
                    json.dumps({"kind": "DtmfData", "dtmfData": {"data": "#"}}),
                ]
            ),
            st.builds(
                lambda kind, body: json.dumps({"kind": kind, "audioData": body}),
                st.sampled_from(["AudioData", "AudioMetadata"]),
                st.dictionaries(
                    st.sampled_from(["data", "timestamp", "participantRawID", "silent"]),
                    st.one_of(st.text(max_size=12), st.integers(), st.booleans(), st.none()),
                ),
            ),
        ),
        max_size=10,
    )
)
def test_fuzz_never_raises_and_keeps_the_invariants(messages):
    events, _ = run(messages)
    assert sequence_problems(events) == []
