"""Twilio Media Streams and Telnyx media streaming core (MediaStreamProtocol)."""

from __future__ import annotations

import base64
import json
import random
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.codecs import decode, encode
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallShare,
    CallStart,
    Dtmf,
    Gap,
    Reject,
    TrackEnd,
    TrackStart,
    sequence_problems,
)
from streamguard.sources.edges.websocket import CLOSE_CODES
from streamguard.sources.twilio import MediaStreamProtocol

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
FRAME = 160  # 20 ms at 8 kHz


def speech_mulaw(seconds: float = 2.0) -> bytes:
    speech, rate = sf.read(FIXTURES / "speech_10s_8k.wav", dtype="float32")
    assert rate == 8000
    return encode("mulaw", speech[: int(seconds * rate)])


def twilio_start(tracks=("inbound",), **fmt) -> str:
    media_format = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1, **fmt}
    return json.dumps(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ123",
            "start": {
                "accountSid": "AC1",
                "streamSid": "MZ123",
                "callSid": "CA42",
                "tracks": list(tracks),
                "customParameters": {"agent": "7"},
                "mediaFormat": media_format,
            },
        }
    )


def twilio_media(payload: bytes, *, track="inbound", chunk: int, ms: int) -> str:
    return json.dumps(
        {
            "event": "media",
            "sequenceNumber": str(chunk + 1),
            "streamSid": "MZ123",
            "media": {
                "track": track,
                "chunk": str(chunk),
                "timestamp": str(ms),
                "payload": base64.b64encode(payload).decode(),
            },
        }
    )


def run(core: MediaStreamProtocol, messages) -> list:
    events = []
    for message in messages:
        events += core.receive_text(message)
    return events


def audio_of(events, track) -> np.ndarray:
    parts = [e.samples for e in events if isinstance(e, Audio) and e.track == track]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def test_twilio_call_with_both_tracks_of_real_speech():
    raw = speech_mulaw(2.0)
    core = MediaStreamProtocol()
    messages = [
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        twilio_start(tracks=["inbound", "outbound"]),
    ]
    for i in range(len(raw) // FRAME):
        chunk = raw[i * FRAME : (i + 1) * FRAME]
        messages.append(twilio_media(chunk, track="inbound", chunk=i + 1, ms=20 * i))
        messages.append(twilio_media(chunk[::-1], track="outbound", chunk=i + 1, ms=20 * i))
    messages.append(json.dumps({"event": "stop", "stop": {"callSid": "CA42"}}))
    events = run(core, messages)

    assert sequence_problems(events) == []
    assert events[0] == CallStart(
        "CA42",
        "twilio",
        {
            "accountSid": "AC1",
            "streamSid": "MZ123",
            "customParameters": {"agent": "7"},
            "tracks": ["inbound", "outbound"],
            "encoding": "mulaw",
            "sample_rate": 8000,
        },
        # It names its tracks: another stream of the call may carry others (none here).
        CallShare("twilio:AC1", frozenset({"inbound", "outbound"})),
    )
    assert events[1:3] == [TrackStart("inbound", 8000), TrackStart("outbound", 8000)]
    np.testing.assert_array_equal(audio_of(events, "inbound"), decode("mulaw", raw))
    assert len(audio_of(events, "outbound")) == len(raw)
    assert not any(isinstance(e, Gap) for e in events)
    assert events[-3:] == [TrackEnd("inbound"), TrackEnd("outbound"), CallEnd("stop")]
    assert core.finished and core.source == "twilio" and core.call_id == "CA42"
    assert core.stats.media == 2 * (len(raw) // FRAME)
    assert core.receive_text(twilio_media(raw[:FRAME], chunk=999, ms=0)) == []
    assert core.close() == []


def test_track_starts_on_first_media_when_start_lists_none():
    core = MediaStreamProtocol()
    events = run(core, [twilio_start(tracks=[]), twilio_media(b"\xff" * FRAME, chunk=1, ms=0)])
    assert [type(e) for e in events] == [CallStart, TrackStart, Audio]
    assert events[1] == TrackStart("inbound", 8000)


def test_missing_chunk_becomes_a_gap_of_the_missing_samples():
    core = MediaStreamProtocol()
    frame = b"\x10" * FRAME
    events = run(
        core,
        [
            twilio_start(),
            twilio_media(frame, chunk=1, ms=0),
            twilio_media(frame, chunk=2, ms=20),
            # chunks 3 and 4 (40 ms, 60 ms) never arrive
            twilio_media(frame, chunk=5, ms=80),
            twilio_media(frame, chunk=6, ms=101),  # 1 ms of clock jitter: no gap
        ],
    )
    gaps = [e for e in events if isinstance(e, Gap)]
    assert gaps == [Gap("inbound", 2 * FRAME)]
    kinds = [type(e).__name__ for e in events[2:]]
    assert kinds == ["Audio", "Audio", "Gap", "Audio", "Audio"]
    assert core.stats.gaps == 1 and core.stats.gap_samples == 320


def test_gap_is_bounded_and_the_track_resyncs_after_it():
    core = MediaStreamProtocol(max_gap_seconds=10.0)
    frame = b"\x10" * FRAME
    events = run(
        core,
        [
            twilio_start(),
            twilio_media(frame, chunk=1, ms=0),
            twilio_media(frame, chunk=2, ms=60_000),  # a minute later
            twilio_media(frame, chunk=3, ms=60_020),
            twilio_media(frame, chunk=4, ms=60_040),
        ],
    )
    assert [e for e in events if isinstance(e, Gap)] == [Gap("inbound", 80_000)]


def test_duplicate_and_late_chunks_are_dropped():
    core = MediaStreamProtocol()
    frame = b"\x10" * FRAME
    events = run(
        core,
        [
            twilio_start(),
            twilio_media(frame, chunk=1, ms=0),
            twilio_media(frame, chunk=2, ms=20),
            twilio_media(frame, chunk=2, ms=20),
            twilio_media(frame, chunk=1, ms=0),
            twilio_media(frame, chunk=3, ms=40),
        ],
    )
    assert sum(isinstance(e, Audio) for e in events) == 3
    assert core.stats.duplicates == 2


def test_dtmf_mark_and_unknown_events():
    core = MediaStreamProtocol()
    events = run(
        core,
        [
            twilio_start(),
            json.dumps({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "5"}}),
            json.dumps({"event": "mark", "mark": {"name": "x"}}),
            json.dumps({"event": "future-thing"}),
        ],
    )
    assert events[-1] == Dtmf("inbound", "5")
    assert core.stats.ignored == 2


def test_rejects_with_clear_reasons():
    cases = [
        (["{not json"], 1008, "not valid JSON"),
        (["[1, 2]"], 1008, "not a JSON object"),
        (['{"media": {}}'], 1008, "'event'"),
        ([twilio_media(b"\xff", chunk=1, ms=0)], 1008, "media before start"),
        ([json.dumps({"event": "start", "start": {}})], 1008, "callSid"),
        ([twilio_start(encoding="audio/opus")], 1003, "unsupported media encoding"),
        ([twilio_start(sampleRate="4000")], 1003, "4000"),
        ([twilio_start(channels=2)], 1003, "mono"),
        ([twilio_start(), twilio_start()], 1008, "second start"),
        ([json.dumps({"event": "stop"})], 1008, "stop before start"),
    ]
    for messages, code, text in cases:
        events = run(MediaStreamProtocol(), messages)
        assert isinstance(events[-1], Reject), messages
        assert CLOSE_CODES[events[-1].kind] == code and text in events[-1].reason, events[-1]
        assert sequence_problems(events) == []


def test_bad_base64_mid_call_ends_tracks_then_rejects():
    core = MediaStreamProtocol()
    bad = json.dumps({"event": "media", "media": {"track": "inbound", "payload": "!!notb64"}})
    events = run(core, [twilio_start(), twilio_media(b"\xff" * FRAME, chunk=1, ms=0), bad])
    assert events[-3:] == [
        TrackEnd("inbound"),
        CallEnd("error"),
        Reject("protocol", "media payload is not valid base64"),
    ]
    assert sequence_problems(events) == []
    assert core.finished and core.close() == []


def test_binary_frame_is_rejected():
    core = MediaStreamProtocol()
    run(core, [twilio_start()])
    events = core.receive_bytes(b"\x00\x01")
    assert CLOSE_CODES[events[-1].kind] == 1003
    assert events[:-1] == [TrackEnd("inbound"), CallEnd("error")]


def test_close_without_stop_ends_the_call():
    core = MediaStreamProtocol()
    run(core, [twilio_start(tracks=["inbound", "outbound"])])
    assert core.close() == [TrackEnd("inbound"), TrackEnd("outbound"), CallEnd("closed")]
    assert MediaStreamProtocol().close() == []  # nothing started: nothing to end


def test_long_close_reason_fits_a_close_frame():
    reject = Reject("protocol", "x" * 500)
    assert len(reject.reason.encode()) <= 123


# --------------------------------------------------------------------------- Telnyx
def telnyx_start(encoding="PCMU", rate=8000, seq=1) -> str:
    return json.dumps(
        {
            "event": "start",
            "sequence_number": str(seq),
            "stream_id": "S-1",
            "start": {
                "call_control_id": "v2:abc",
                "call_session_id": "sess",
                "from": "+1",
                "to": "+2",
                "custom_parameters": {"k": "v"},
                "media_format": {"encoding": encoding, "sample_rate": rate, "channels": 1},
            },
        }
    )


def telnyx_media(payload: bytes, seq: int, chunk: int, track="inbound", ms=None) -> str:
    media = {"track": track, "chunk": str(chunk), "payload": base64.b64encode(payload).decode()}
    if ms is not None:
        media["timestamp"] = str(ms)
    return json.dumps(
        {"event": "media", "sequence_number": str(seq), "stream_id": "S-1", "media": media}
    )


def test_telnyx_out_of_order_media_is_released_in_order_and_duplicates_dropped():
    raw = speech_mulaw(1.0)
    frames = [raw[i * FRAME : (i + 1) * FRAME] for i in range(len(raw) // FRAME)]
    media = [telnyx_media(f, seq=i + 2, chunk=i + 1) for i, f in enumerate(frames)]
    rng = random.Random(7)
    shuffled = []
    for i in range(0, len(media), 4):  # shuffle within windows of 4 (reorder depth 16)
        window = media[i : i + 4]
        rng.shuffle(window)
        shuffled += window
    shuffled.insert(10, media[3])  # a duplicate of something already released
    shuffled.insert(20, media[25])  # a duplicate of something maybe still held
    core = MediaStreamProtocol()
    stop = json.dumps({"event": "stop", "sequence_number": str(len(media) + 2), "stop": {}})
    events = run(core, [json.dumps({"event": "connected", "version": "1.0.0"}), telnyx_start()])
    events += run(core, [*shuffled, stop])
    assert sequence_problems(events) == []
    assert events[0].source == "telnyx" and events[0].call_id == "v2:abc"
    assert events[0].metadata["stream_id"] == "S-1"
    assert events[0].metadata["custom_parameters"] == {"k": "v"}
    np.testing.assert_array_equal(audio_of(events, "inbound"), decode("mulaw", raw))
    assert core.stats.reorder.duplicates == 2
    assert core.stats.reorder.reordered > 0
    assert events[-1] == CallEnd("stop")


def test_telnyx_media_before_start_is_held_not_rejected():
    core = MediaStreamProtocol()
    frame = b"\x20" * FRAME
    events = run(core, [telnyx_media(frame, seq=2, chunk=1), telnyx_start(seq=1)])
    assert [type(e) for e in events] == [CallStart, TrackStart, Audio]


def test_telnyx_lost_sequence_number_is_skipped_after_the_reorder_depth():
    core = MediaStreamProtocol(reorder_depth=3)
    frame = b"\x20" * FRAME
    events = run(core, [telnyx_start()])
    # seq 2 never arrives
    events += run(core, [telnyx_media(frame, seq=s, chunk=s - 1) for s in range(3, 7)])
    assert sum(isinstance(e, Audio) for e in events) == 4
    assert core.stats.reorder.lost == 1


def test_telnyx_l16_is_big_endian_rtp_payload():
    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(320) / 16000)).astype(np.float32)
    core = MediaStreamProtocol()
    events = run(
        core,
        [telnyx_start("L16", 16000), telnyx_media(encode("pcm_s16be", tone), seq=2, chunk=1)],
    )
    assert events[1] == TrackStart("inbound", 16000)
    np.testing.assert_allclose(audio_of(events, "inbound"), tone, atol=1 / 32768)


def test_telnyx_unsupported_codec_and_odd_l16_payload():
    events = run(MediaStreamProtocol(), [telnyx_start("OPUS", 16000)])
    assert CLOSE_CODES[events[-1].kind] == 1003 and "OPUS" in events[-1].reason
    events = run(
        MediaStreamProtocol(), [telnyx_start("L16", 16000), telnyx_media(b"\x00" * 3, 2, 1)]
    )
    assert CLOSE_CODES[events[-1].kind] == 1008 and "whole number" in events[-1].reason


def test_telnyx_close_releases_held_media_first():
    core = MediaStreamProtocol()
    frame = b"\x20" * FRAME
    events = run(core, [telnyx_start(), telnyx_media(frame, seq=4, chunk=3)])
    assert [type(e) for e in events] == [CallStart]
    events += core.close()
    assert [type(e) for e in events] == [CallStart, TrackStart, Audio, TrackEnd, CallEnd]
    assert events[-1] == CallEnd("closed")


# --------------------------------------------------------------------------- robustness
@settings(max_examples=300)
@given(st.lists(st.text(max_size=200), max_size=6))
def test_random_text_never_raises(messages):
    core = MediaStreamProtocol()
    events = run(core, messages) + core.close()
    assert sequence_problems(events) == []


json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.text(max_size=12)
)
field_values = st.one_of(
    json_scalars,
    st.sampled_from(["inbound", "outbound", "PCMU", "L16", "audio/x-mulaw", "8000", "/w==", "1"]),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
    st.lists(json_scalars, max_size=3),
)
keys = st.sampled_from(
    ["track", "chunk", "timestamp", "payload", "callSid", "call_control_id", "tracks",
     "mediaFormat", "media_format", "encoding", "sampleRate", "sample_rate", "channels",
     "digit", "sequence_number"]
)  # fmt: skip
inner = st.dictionaries(keys, field_values, max_size=6)
messages = st.builds(
    lambda event, body_key, body, extra: {"event": event, body_key: body, **extra},
    st.sampled_from(["connected", "start", "media", "stop", "dtmf", "mark", "error", "x"]),
    st.sampled_from(["start", "media", "stop", "dtmf"]),
    st.one_of(inner, st.builds(lambda d: {"media_format": d}, inner)),
    st.dictionaries(st.sampled_from(["sequence_number", "streamSid"]), field_values, max_size=2),
)


@settings(max_examples=200)
@given(st.sampled_from(["none", "twilio", "telnyx"]), st.lists(messages, max_size=8))
def test_random_protocol_like_messages_never_raise(prefix, msgs):
    """After no start, a valid Twilio start or a valid Telnyx start, reach the deeper states."""
    first = {"none": [], "twilio": [twilio_start()], "telnyx": [telnyx_start()]}[prefix]
    core = MediaStreamProtocol()
    events = run(core, first + [json.dumps(m) for m in msgs]) + core.close()
    assert sequence_problems(events) == []
