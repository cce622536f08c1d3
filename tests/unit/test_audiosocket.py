"""Asterisk AudioSocket: the frame parser and the protocol core, on real speech."""

from __future__ import annotations

import struct
import uuid
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.codecs import decode
from streamguard.sources.audiosocket import (
    AUDIO_KINDS,
    AudioSocketError,
    AudioSocketParser,
    AudioSocketProtocol,
    Frame,
    encode_frame,
)
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

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CALL = uuid.UUID("4b9b3b3c-7e5e-4bd1-9f6a-0c1d2e3f4a5b")


def asterisk_stream(pcm: bytes, kind: int = 0x10, frame_bytes: int = 320) -> bytes:
    """What app_audiosocket writes: the UUID, then 20 ms slin frames (8 kHz: 320 bytes)."""
    out = encode_frame(0x01, CALL.bytes)
    for i in range(0, len(pcm), frame_bytes):
        out += encode_frame(kind, pcm[i : i + frame_bytes])
    return out


def speech_pcm(seconds: float = 2.0) -> bytes:
    speech, rate = sf.read(FIXTURES / "speech_10s_8k.wav", dtype="int16")
    assert rate == 8000
    return speech[: int(seconds * rate)].astype("<i2").tobytes()


def split(raw: bytes, sizes=(1, 2, 5, 333, 7, 1000)) -> list[bytes]:
    out, i, k = [], 0, 0
    while i < len(raw):
        out.append(raw[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return out


def test_header_is_kind_then_big_endian_length():
    assert encode_frame(0x10, b"\x01\x02" * 160)[:3] == b"\x10\x01\x40"
    assert encode_frame(0x00) == b"\x00\x00\x00"
    parser = AudioSocketParser()
    assert parser.push(b"\x10\x00\x04\x01\x00\xff\x7f\x00\x00\x00") == [
        Frame(0x10, b"\x01\x00\xff\x7f"),
        Frame(0x00, b""),
    ]


def test_a_call_in_arbitrary_tcp_chunks_decodes_exactly():
    pcm = speech_pcm()
    core = AudioSocketProtocol(remote="127.0.0.1:5555")
    events = []
    for chunk in split(asterisk_stream(pcm) + encode_frame(0x03, b"5") + encode_frame(0x00)):
        events += core.receive_data(chunk)
    assert sequence_problems(events) == []
    assert events[0] == CallStart(
        str(CALL),
        "audiosocket",
        {"uuid": str(CALL), "encoding": "pcm_s16le", "remote": "127.0.0.1:5555"},
    )
    assert events[1] == TrackStart("0", 8000)
    got = np.concatenate([e.samples for e in events if isinstance(e, Audio)])
    np.testing.assert_array_equal(got, decode("pcm_s16le", pcm))
    assert Dtmf("0", "5") in events
    assert events[-2:] == [TrackEnd("0"), CallEnd("hangup")]
    assert core.finished and core.receive_data(b"\x10\x00\x02\x00\x00") == []


@pytest.mark.parametrize(("kind", "rate"), sorted(AUDIO_KINDS.items()))
def test_every_audio_kind_maps_to_its_rate(kind, rate):
    core = AudioSocketProtocol()
    events = core.receive_data(asterisk_stream(b"\x00\x01" * 320, kind=kind))
    if rate <= 64000:
        assert events[1] == TrackStart("0", rate)
        assert sum(len(e.samples) for e in events if isinstance(e, Audio)) == 320
    else:  # 96 and 192 kHz are beyond what the daemon resamples
        assert isinstance(events[-1], Reject) and CLOSE_CODES[events[-1].kind] == 1003
        assert events[-2] == CallEnd("error")


# include/asterisk/res_audiosocket.h (asterisk/asterisk master, commit ff0523a3 "res_audiosocket:
# add message types for all slin sample rates", in 20.17.0, 21.12.0, 22.7.0, 23.1.0): the enum
# transcribed by hand, so this table does not come from the code under test
UPSTREAM_KINDS = {
    "AST_AUDIOSOCKET_KIND_AUDIO": (0x10, 8000),  # slin
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN12": (0x11, 12000),
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN16": (0x12, 16000),
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN24": (0x13, 24000),
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN32": (0x14, 32000),
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN44": (0x15, 44100),
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN48": (0x16, 48000),
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN96": (0x17, 96000),
    "AST_AUDIOSOCKET_KIND_AUDIO_SLIN192": (0x18, 192000),
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_KINDS))
def test_frames_built_from_asterisks_definitions(name):
    """A call as res_audiosocket.c writes it for a channel in that slin format: UUID, then
    20 ms frames of 16-bit little-endian speech at the format's rate."""
    import soxr

    kind, rate = UPSTREAM_KINDS[name]
    speech, source = sf.read(FIXTURES / "speech_10s_8k.wav", dtype="float32")
    pcm = np.round(soxr.resample(speech[:8000], source, rate) * 32767).astype("<i2")
    frame_bytes = rate // 50 * 2
    core = AudioSocketProtocol()
    events = core.receive_data(asterisk_stream(pcm.tobytes(), kind, frame_bytes))
    events += core.receive_data(encode_frame(0x00))
    assert sequence_problems(events) == []
    if rate > 64000:
        assert isinstance(events[-1], Reject) and f"{rate} Hz not supported" in events[-1].reason
        return
    assert events[1] == TrackStart("0", rate) and core.sample_rate == rate
    got = np.concatenate([e.samples for e in events if isinstance(e, Audio)])
    np.testing.assert_array_equal(got, pcm.astype(np.float32) / 32768)
    assert events[-1] == CallEnd("hangup")


def test_0x11_is_12_khz_not_16():
    """Issue #19 guessed 0x11 for 16 kHz; upstream defines 0x11 = slin12 and 0x12 = slin16."""
    core = AudioSocketProtocol()
    assert core.receive_data(asterisk_stream(b"\0\0" * 240, 0x11))[1] == TrackStart("0", 12000)


def test_connection_closed_without_hangup():
    core = AudioSocketProtocol()
    core.receive_data(asterisk_stream(speech_pcm(0.1)))
    assert core.close() == [TrackEnd("0"), CallEnd("closed")]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [(b"\x01", CallEnd("hangup")), (b"\x02", None), (b"\x04", None), (b"", None)],
)
def test_error_kind(payload, reason):
    core = AudioSocketProtocol()
    events = core.receive_data(asterisk_stream(speech_pcm(0.1)) + encode_frame(0xFF, payload))
    if reason is not None:
        assert events[-1] == reason
    else:
        assert events[-2] == CallEnd("error") and isinstance(events[-1], Reject)
        assert "Asterisk reported an error" in events[-1].reason
    assert sequence_problems(events) == []


@pytest.mark.parametrize(
    ("stream", "fragment"),
    [
        (encode_frame(0x10, b"\x00\x00"), "before the UUID"),
        (encode_frame(0x01, CALL.bytes) + encode_frame(0x01, CALL.bytes), "second UUID"),
        (encode_frame(0x01, CALL.bytes[:8]), "UUID message of 8 bytes"),
        (encode_frame(0x01, CALL.bytes) + b"\x07\x00\x00", "unknown message kind 0x07"),
        (encode_frame(0x01, CALL.bytes) + encode_frame(0x10, b"\x00"), "even"),
        (encode_frame(0x01, CALL.bytes) + encode_frame(0x03, b"12"), "DTMF message of 2"),
        (
            encode_frame(0x01, CALL.bytes)
            + encode_frame(0x10, b"\0\0")
            + encode_frame(0x12, b"\0\0"),
            "sample rate changed",
        ),
    ],
)
def test_malformed_streams_are_rejected(stream, fragment):
    core = AudioSocketProtocol()
    events = core.receive_data(stream)
    assert isinstance(events[-1], Reject) and fragment in events[-1].reason
    assert sequence_problems(events) == []
    assert core.finished


@settings(max_examples=400)
@given(st.binary(max_size=200))
def test_parser_raises_only_its_own_error(data):
    parser = AudioSocketParser()
    try:
        frames = parser.push(data)
    except AudioSocketError:
        return
    assert sum(3 + len(f.payload) for f in frames) + parser.pending_bytes == len(data)


@settings(max_examples=300)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=40),
            st.builds(
                lambda k, p: encode_frame(k, p),
                st.sampled_from([0x00, 0x01, 0x03, 0x10, 0x12, 0x18, 0xFF]),
                st.binary(max_size=20),
            ),
            st.just(encode_frame(0x01, CALL.bytes)),
            st.just(encode_frame(0x10, struct.pack("<4h", 1, -1, 300, -300))),
        ),
        max_size=10,
    )
)
def test_core_never_raises_and_keeps_the_invariants(chunks):
    core = AudioSocketProtocol()
    events = []
    for chunk in chunks:
        events += core.receive_data(chunk)
    events += core.close()
    assert sequence_problems(events) == []
