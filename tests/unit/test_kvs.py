"""The Kinesis Video Streams core: Amazon Connect fragments as ffmpeg and mkvmerge mux them
(real speech), resume after a dropped response, another contact on the stream, bad input."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    Gap,
    Reject,
    TrackEnd,
    TrackStart,
    sequence_problems,
)
from streamguard.sources.edges.websocket import CLOSE_CODES
from streamguard.sources.kvs import KvsCallCore
from streamguard.sources.mkv import (
    CLUSTER,
    EBML_HEADER,
    SEGMENT,
    SIMPLE_BLOCK,
    SIMPLE_TAG,
    TAG,
    TAGS,
    TRACK_ENTRY,
    TRACKS,
    encode_element,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
CONNECT = FIXTURES / "kvs_connect_ffmpeg.mkv"
MKVMERGE = FIXTURES / "kvs_mkvmerge.mkv"
CONTACT = "d111f871-5fe7-40b1-b5f7-6b67060de0c2"
FIRST = 91343852333181531502161607852955530730504675150


def speech(channel: int, seconds: int) -> np.ndarray:
    pcm, rate = sf.read(FIXTURES / "speech_stereo_8k.wav", dtype="int16")
    assert rate == 8000
    return pcm[: seconds * rate, channel].astype(np.float32) / 32768


def feed(core: KvsCallCore, data: bytes, chunk: int = 997) -> list:
    events: list = []
    for i in range(0, len(data), chunk):
        events += core.receive_data(data[i : i + chunk])
    return events


def audio(events: list, track: str) -> np.ndarray:
    parts = [e.samples for e in events if isinstance(e, Audio) and e.track == track]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


def fragment_offsets(data: bytes) -> list[int]:
    marker = b"\x1a\x45\xdf\xa3"
    offsets, i = [], data.find(marker)
    while i >= 0:
        offsets.append(i)
        i = data.find(marker, i + 1)
    return offsets


@pytest.mark.parametrize(("path", "seconds"), [(CONNECT, 6), (MKVMERGE, 3)])
@pytest.mark.parametrize("chunk", [1, 333, 65536])
def test_connect_call_decodes_both_tracks_sample_exact(path, seconds, chunk):
    core = KvsCallCore(call_id="contact-1", contact_id=CONTACT, metadata={"stream_arn": "arn"})
    events = feed(core, path.read_bytes(), chunk)
    events += core.end_of_response(clean=True)
    events += core.close("idle")
    assert sequence_problems(events) == []
    start = events[0]
    assert isinstance(start, CallStart) and (start.call_id, start.source) == ("contact-1", "kvs")
    assert start.metadata["stream_arn"] == "arn" and start.metadata["contact_id"] == CONTACT
    codec = "A_AAC" if path == CONNECT else "A_PCM/INT/LIT"
    assert start.metadata["codecs"] == {"inbound": codec, "outbound": codec}
    assert TrackStart("inbound", 8000) in events and TrackStart("outbound", 8000) in events
    np.testing.assert_array_equal(audio(events, "inbound"), speech(0, seconds))
    np.testing.assert_array_equal(audio(events, "outbound"), speech(1, seconds))
    assert events[-3:] == [TrackEnd("inbound"), TrackEnd("outbound"), CallEnd("idle")]
    assert core.last_fragment_number == str(FIRST + 3148 * (seconds - 1))
    assert core.millis_behind_now == 2000 - 250 * (seconds - 1)
    assert core.stats.fragments == seconds and not any(isinstance(e, Gap) for e in events)


def test_contact_id_before_the_cluster_lets_audio_flow_block_by_block():
    """ffmpeg writes the fragment's Tags before its Cluster: the contact is confirmed first."""
    data = CONNECT.read_bytes()
    assert data.find(b"CONTACTID") < data.find(b"\x1f\x43\xb6\x75")
    core = KvsCallCore(call_id="c", contact_id=CONTACT)
    events = core.receive_data(data[: fragment_offsets(data)[1] - 5000])
    assert 0 < len(audio(events, "inbound")) < 8000


def test_without_contact_id_audio_flows_block_by_block():
    data = MKVMERGE.read_bytes()  # mkvmerge writes the tags after the cluster
    core = KvsCallCore(call_id="c")
    events = core.receive_data(data[: fragment_offsets(data)[1] // 2])
    assert any(isinstance(e, Audio) for e in events)


def test_held_audio_waits_for_the_contact_id_that_comes_after_the_cluster():
    data = MKVMERGE.read_bytes()
    end = fragment_offsets(data)[1]
    tag = data.find(b"ContactId")
    core = KvsCallCore(call_id="c", contact_id=CONTACT)
    before = core.receive_data(data[: tag - 8])  # the whole cluster, not yet its ContactId
    assert not any(isinstance(e, Audio) for e in before)
    after = core.receive_data(data[tag - 8 : end])
    assert len(audio(after, "inbound")) == 8000 and len(audio(after, "outbound")) == 8000


def test_another_contact_on_the_stream_ends_the_call_without_its_audio():
    one = CONNECT.read_bytes()
    offsets = fragment_offsets(one)
    first_two = one[: offsets[2]]
    foreign = one[offsets[2] : offsets[3]].replace(CONTACT.encode(), b"e" * len(CONTACT))
    core = KvsCallCore(call_id="c", contact_id=CONTACT)
    events = feed(core, first_two + foreign + one[offsets[3] :])
    assert sequence_problems(events) == []
    assert events[-1] == CallEnd("stop")
    assert len(audio(events, "inbound")) == 16000  # the two fragments of this contact only
    assert core.finished and core.receive_data(one[:100]) == []


def test_resume_after_a_dropped_response_repeats_nothing_and_loses_nothing():
    """The connection breaks mid-fragment; the next response starts after the last complete
    fragment (or, read the other way, at it): either way the audio comes out once, in order."""
    data = CONNECT.read_bytes()
    offsets = [*fragment_offsets(data), len(data)]
    for restart_at in (offsets[2], offsets[1]):  # after fragment 2, or repeating fragment 2
        core = KvsCallCore(call_id="c", contact_id=CONTACT)
        cut = offsets[2] + (offsets[3] - offsets[2]) // 2  # inside fragment 3
        events = feed(core, data[:cut])
        events += core.end_of_response(clean=False)
        assert core.last_fragment_number == str(FIRST + 3148)  # fragment 2 completed
        events += feed(core, data[restart_at:])
        events += core.end_of_response(clean=True) + core.close("idle")
        assert sequence_problems(events) == []
        np.testing.assert_array_equal(audio(events, "inbound"), speech(0, 6))
        np.testing.assert_array_equal(audio(events, "outbound"), speech(1, 6))
        assert core.stats.responses == 3
        # what fragment 3 emitted before the cut comes again and is dropped; so is fragment 2
        # when the new response repeats it
        repeated = 2 * 8000 if restart_at == offsets[1] else 0
        assert core.stats.duplicate_samples > repeated


def test_a_missing_fragment_becomes_a_gap_on_both_tracks():
    data = CONNECT.read_bytes()
    offsets = [*fragment_offsets(data), len(data)]
    core = KvsCallCore(call_id="c", contact_id=CONTACT)
    events = feed(core, data[: offsets[2]] + data[offsets[3] :])
    events += core.end_of_response(clean=True) + core.close("idle")
    assert sequence_problems(events) == []
    assert Gap("inbound", 8000) in events and Gap("outbound", 8000) in events
    inbound = audio(events, "inbound")
    np.testing.assert_array_equal(inbound, np.concatenate([speech(0, 2), speech(0, 6)[24000:]]))


def mini_fragment(tracks: list[tuple[int, str, str]], blocks: list[bytes], tags=()) -> bytes:
    entries = b"".join(
        encode_element(
            TRACK_ENTRY,
            encode_element(0xD7, bytes([n])) + encode_element(0x536E, name.encode())
            + encode_element(0x86, codec.encode()),
        )
        for n, name, codec in tracks
    )  # fmt: skip
    simple = b"".join(
        encode_element(
            SIMPLE_TAG, encode_element(0x45A3, k.encode()) + encode_element(0x4487, v.encode())
        )
        for k, v in tags
    )
    cluster = encode_element(CLUSTER, encode_element(0xE7, b"\x01") + b"".join(blocks))
    body = encode_element(TRACKS, entries) + cluster
    if simple:
        body += encode_element(TAGS, encode_element(TAG, simple))
    return encode_element(EBML_HEADER) + encode_element(SEGMENT, body, unknown_size=True)


def block(track: int, timecode: int, payload: bytes) -> bytes:
    return encode_element(SIMPLE_BLOCK, bytes([0x80 | track]) + struct.pack(">hB", timecode, 0x80)
                          + payload)  # fmt: skip


@pytest.mark.parametrize(
    ("data", "code", "reason"),
    [
        (mini_fragment([(1, "VIDEO", "V_MPEG4/ISO/AVC")], []), 1008,
         "no AUDIO_FROM_CUSTOMER or AUDIO_TO_CUSTOMER track in the fragment (tracks: VIDEO)"),
        (mini_fragment([(1, "AUDIO_FROM_CUSTOMER", "A_OPUS")], []), 1003, "codec 'A_OPUS'"),
        (mini_fragment([(1, "AUDIO_FROM_CUSTOMER", "A_AAC")], [block(1, 0, b"\x01\x02\x03")]),
         1008, "not whole 16-bit samples"),
        (mini_fragment([(1, "AUDIO_FROM_CUSTOMER", "A_AAC"), (2, "AUDIO_FROM_CUSTOMER", "A_AAC")],
                       []), 1008, "two AUDIO_FROM_CUSTOMER tracks"),
        (encode_element(EBML_HEADER) + b"\x18\x53\x80\x67\x01\xff\xff\xff\xff\xff\xff\xff"
         + b"\xa3\x00\x10\x00", 1008, "bad Matroska from KVS"),
        (encode_element(EBML_HEADER) + encode_element(SEGMENT, block(1, 0, b"\0\0")), 1008,
         "before the fragment's Tracks"),
    ],
)  # fmt: skip
def test_bad_input_gets_one_reason_and_ends_the_call(data, code, reason):
    core = KvsCallCore(call_id="c")
    events = core.receive_data(data) + core.end_of_response(clean=True) + core.close()
    assert sequence_problems(events) == []
    rejects = [e for e in events if isinstance(e, Reject)]
    assert (
        len(rejects) == 1 and CLOSE_CODES[rejects[0].kind] == code and reason in rejects[0].reason
    ), events
    assert core.finished


def test_unknown_tracks_beside_a_known_one_are_ignored_and_counted():
    data = mini_fragment(
        [(1, "AUDIO_FROM_CUSTOMER", "A_AAC"), (2, "SOMETHING_ELSE", "A_AAC")],
        [block(1, 0, b"\x01\x00" * 80), block(2, 0, b"\x02\x00" * 80), block(3, 0, b"\0\0")],
    )
    core = KvsCallCore(call_id="c")
    events = core.receive_data(data) + core.end_of_response(clean=True) + core.close()
    assert sequence_problems(events) == [] and len(audio(events, "inbound")) == 80
    assert core.stats.unknown_tracks == {"SOMETHING_ELSE"}
    assert core.stats.unknown_track_blocks == 2


def test_error_tags_are_reported():
    data = mini_fragment(
        [(1, "AUDIO_FROM_CUSTOMER", "A_AAC")], [],
        tags=[("AWS_KINESISVIDEO_ERROR_CODE", "Requested fragment is not found"),
              ("AWS_KINESISVIDEO_ERROR_ID", "4000")],
    )  # fmt: skip
    core = KvsCallCore(call_id="c")
    core.receive_data(data)
    assert core.error_tag == ("Requested fragment is not found", "4000")


@settings(max_examples=200)
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=60),
            st.sampled_from(
                [
                    mini_fragment([(1, "AUDIO_FROM_CUSTOMER", "A_AAC")],
                                  [block(1, 0, b"\1\0" * 8)]),
                    mini_fragment([(2, "AUDIO_TO_CUSTOMER", "A_PCM/INT/BIG")],
                                  [block(2, 30, b"\0\1" * 8)], tags=[("ContactId", CONTACT)]),
                    mini_fragment([(1, "X", "A_AAC")], []),
                ]
            ),
        ),
        max_size=8,
    ),
    st.booleans(),
    st.sampled_from([None, CONTACT]),
)  # fmt: skip
def test_fuzz_core_never_raises_and_keeps_the_invariants(chunks, clean, contact):
    core = KvsCallCore(call_id="c", contact_id=contact, max_element_bytes=4096)
    events: list = []
    for i, chunk in enumerate(chunks):
        events += core.receive_data(chunk)
        if i == len(chunks) // 2:
            events += core.end_of_response(clean=clean)
    events += core.close("idle")
    assert sequence_problems(events) == []


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("sox", "ffmpeg", "mkvmerge")),
    reason="needs sox, ffmpeg and mkvmerge (scripts/system-deps.sh)",
)
def test_the_fixture_script_still_makes_files_the_core_reads(tmp_path):
    """Today's muxers, run by the committed script, give the same audio as the fixtures."""
    script = FIXTURES / "make_kvs_fixtures.py"
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, timeout=120)
    for name, seconds in (("kvs_connect_ffmpeg.mkv", 6), ("kvs_mkvmerge.mkv", 3)):
        core = KvsCallCore(call_id="c", contact_id=CONTACT)
        events = feed(core, (tmp_path / name).read_bytes(), 4096)
        events += core.end_of_response(clean=True) + core.close("idle")
        assert sequence_problems(events) == []
        np.testing.assert_array_equal(audio(events, "outbound"), speech(1, seconds))
