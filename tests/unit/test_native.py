"""/ingest core (IngestProtocol): native PCM and the L16 forks (Vonage, FreeSWITCH, jambonz)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.codecs import decode, encode
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    Dtmf,
    Reject,
    TrackEnd,
    TrackStart,
    sequence_problems,
)
from streamguard.sources.edges.websocket import CLOSE_CODES
from streamguard.sources.native import IngestProtocol

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


def feed(core: IngestProtocol, frames) -> list:
    events = []
    for frame in frames:
        if isinstance(frame, str):
            events += core.receive_text(frame)
        else:
            events += core.receive_bytes(frame)
    return events


def audio_of(events, track) -> np.ndarray:
    parts = [e.samples for e in events if isinstance(e, Audio) and e.track == track]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def split_odd(raw: bytes, sizes=(1, 333, 7, 640, 1001)) -> list[bytes]:
    """Split into frames that deliberately cut samples and channel frames in half."""
    out, i, k = [], 0, 0
    while i < len(raw):
        out.append(raw[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


def test_native_mono_s16le_real_speech_split_mid_sample():
    speech, rate = sf.read(FIXTURES / "speech_10s_8k.wav", dtype="int16")
    raw = speech[: rate * 2].astype("<i2").tobytes()
    core = IngestProtocol()
    meta = json.dumps({"call_id": "c-1", "sample_rate": 8000, "encoding": "pcm_s16le", "who": 1})
    events = feed(core, [meta, *split_odd(raw), json.dumps({"event": "stop"})])
    assert sequence_problems(events) == []
    assert events[0] == CallStart(
        "c-1", "native", {"who": 1, "encoding": "pcm_s16le", "sample_rate": 8000, "channels": 1}
    )
    assert events[1] == TrackStart("0", 8000)
    np.testing.assert_array_equal(audio_of(events, "0"), decode("pcm_s16le", raw))
    assert events[-2:] == [TrackEnd("0"), CallEnd("stop")]
    assert core.stats.bytes == len(raw) and core.stats.dropped_bytes == 0


def test_native_stereo_real_file_is_split_into_named_tracks():
    stereo, rate = sf.read(FIXTURES / "speech_stereo_16k.wav", dtype="float32")
    assert stereo.ndim == 2 and stereo.shape[1] == 2
    raw = encode("f32le", stereo.reshape(-1))
    core = IngestProtocol()
    meta = {"sample_rate": rate, "encoding": "f32le", "channels": 2, "tracks": ["agent", "cust"]}
    events = feed(core, [json.dumps(meta), *split_odd(raw)]) + core.close()
    assert sequence_problems(events) == []
    assert events[1:3] == [TrackStart("agent", rate), TrackStart("cust", rate)]
    np.testing.assert_array_equal(audio_of(events, "agent"), np.clip(stereo[:, 0], -1, 1 - 2**-15))
    np.testing.assert_array_equal(audio_of(events, "cust"), np.clip(stereo[:, 1], -1, 1 - 2**-15))
    assert events[-1] == CallEnd("closed")


@pytest.mark.parametrize("encoding", ["mulaw", "alaw", "pcm_s16le", "pcm_s16be", "f32le"])
def test_native_three_channels_any_encoding(encoding):
    rng = np.random.default_rng(1)
    x = rng.uniform(-0.9, 0.9, size=(400, 3)).astype(np.float32)
    raw = encode(encoding, x.reshape(-1))
    expected = decode(encoding, raw).reshape(-1, 3)
    core = IngestProtocol()
    meta = json.dumps({"sample_rate": 48000, "encoding": encoding, "channels": "3"})
    events = feed(core, [meta, *split_odd(raw, (5, 3, 11))])
    for ch in range(3):
        np.testing.assert_array_equal(audio_of(events, str(ch)), expected[:, ch])


def test_vonage_first_frame_and_dtmf():
    core = IngestProtocol()
    first = {
        "event": "websocket:connected",
        "content-type": "audio/l16;rate=16000",
        "conversation_uuid": "CON-9",
        "caller": "447700900000",
    }
    pcm = np.arange(320, dtype="<i2").tobytes()  # one 20 ms frame = 640 bytes
    events = feed(
        core,
        [
            json.dumps(first),
            pcm,
            json.dumps({"event": "websocket:dtmf", "digit": "7", "duration": 200}),
        ],
    )
    assert events[0] == CallStart(
        "CON-9",
        "l16",
        {
            "conversation_uuid": "CON-9",
            "caller": "447700900000",
            "encoding": "pcm_s16le",
            "sample_rate": 16000,
            "channels": 1,
        },
    )
    assert events[1] == TrackStart("0", 16000)
    assert len(events[2].samples) == 320
    assert events[3] == Dtmf("0", "7")


def test_freeswitch_stereo_fork_gives_two_tracks():
    stereo, rate = sf.read(FIXTURES / "speech_stereo_16k.wav", dtype="int16")
    raw = stereo.reshape(-1).astype("<i2").tobytes()
    core = IngestProtocol()
    meta = {"sampleRate": rate, "mixType": "stereo", "uuid": "fs-uuid-1"}
    events = feed(core, [json.dumps(meta), *split_odd(raw)])
    assert events[0].call_id == "fs-uuid-1" and events[0].source == "l16"
    assert events[1:3] == [TrackStart("0", rate), TrackStart("1", rate)]
    np.testing.assert_array_equal(audio_of(events, "1"), stereo[:, 1] / np.float32(32768))


def test_jambonz_metadata_with_string_rate_and_generated_call_id():
    core = IngestProtocol(call_id_factory=lambda: "generated")
    events = core.receive_text(json.dumps({"sampleRate": "8000", "mixType": "mono", "from": "x"}))
    assert events[0].call_id == "generated"
    events = IngestProtocol().receive_text(json.dumps({"callSid": "CS1", "sampleRate": 24000}))
    assert events[0].call_id == "CS1" and events[1] == TrackStart("0", 24000)
    assert len(IngestProtocol().receive_text('{"sampleRate": 8000}')[0].call_id) == 32


@pytest.mark.parametrize(
    ("first", "code", "text"),
    [
        ("hello", 1008, "JSON object"),
        ('{"event": "hello"}', 1008, "no known protocol"),
        ('{"sample_rate": 16000}', 1008, "sample_rate and encoding"),
        ('{"sample_rate": 16000, "encoding": "opus"}', 1003, "unsupported encoding 'opus'"),
        ('{"sample_rate": 96000, "encoding": "f32le"}', 1003, "96000"),
        ('{"sample_rate": 7999, "encoding": "f32le"}', 1003, "7999"),
        ('{"sample_rate": "fast", "encoding": "f32le"}', 1008, "integer"),
        ('{"sample_rate": 8000, "encoding": "alaw", "channels": 9}', 1003, "channels"),
        ('{"sample_rate": 8000, "encoding": "alaw", "channels": 2, "tracks": ["a"]}', 1008, ""),
        ('{"sampleRate": 8000, "mixType": "quad"}', 1003, "mixType"),
        ('{"event": "websocket:connected", "content-type": "audio/opus"}', 1003, "content-type"),
        ('{"event": "websocket:connected", "content-type": "audio/l16"}', 1008, "rate"),
    ],
)
def test_first_frame_rejects(first, code, text):
    events = IngestProtocol().receive_text(first)
    assert len(events) == 1 and isinstance(events[0], Reject)
    assert CLOSE_CODES[events[0].kind] == code and text in events[0].reason


def test_binary_before_metadata_is_rejected_and_core_stays_finished():
    core = IngestProtocol()
    events = core.receive_bytes(b"\x00\x00")
    assert events == [Reject("protocol", events[0].reason)] and "metadata" in events[0].reason
    assert core.finished
    assert core.receive_text('{"sampleRate": 8000}') == [] and core.close() == []


def test_later_text_is_ignored_and_stop_ends_with_partial_sample_counted():
    core = IngestProtocol()
    events = feed(
        core,
        [
            '{"sample_rate": 8000, "encoding": "pcm_s16le"}',
            b"\x01\x00\x02",  # one and a half samples
            "not json at all",
            '{"event": "mark"}',
            '{"event": "stop"}',
            b"\x00\x00",
        ],
    )
    assert [type(e) for e in events] == [CallStart, TrackStart, Audio, TrackEnd, CallEnd]
    assert core.stats.ignored_text == 2
    assert core.stats.dropped_bytes == 1
    assert core.stats.ignored_after_end == 1
    assert core.close() == []


frames_strategy = st.lists(
    st.one_of(
        st.binary(max_size=64),
        st.text(max_size=40),
        st.sampled_from(
            [
                '{"sample_rate": 8000, "encoding": "pcm_s16le", "channels": 2}',
                '{"sample_rate": 16000, "encoding": "f32le"}',
                '{"sampleRate": 16000, "mixType": "stereo"}',
                '{"event": "websocket:connected", "content-type": "audio/l16;rate=8000"}',
                '{"event": "stop"}',
                '{"event": "websocket:dtmf", "dtmf": {"digit": 3}}',
                '{"sample_rate": 8000, "encoding": "mulaw", "tracks": [1]}',
            ]
        ),
    ),
    max_size=10,
)


@settings(max_examples=300)
@given(frames_strategy)
def test_random_frames_never_raise_and_keep_the_invariants(frames):
    core = IngestProtocol()
    events = feed(core, frames) + core.close()
    assert sequence_problems(events) == []
