"""RTP: packet parsing, sequence handling, jitter buffer, gap fill, demux by (address, SSRC)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.codecs import decode, encode
from streamguard.errors import ConfigError
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    Gap,
    TrackEnd,
    TrackStart,
    sequence_problems,
)
from streamguard.sources.rtp import RtpDemux, RtpError, RtpPacket, parse_rtp, validate_pt_map

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ADDR = ("127.0.0.1", 40000)
SSRC = 0x1234ABCD
FRAME = 160


def speech_frames(seconds=1.0, law="mulaw") -> list[bytes]:
    speech, rate = sf.read(FIXTURES / "speech_10s_8k.wav", dtype="float32")
    raw = encode(law, speech[: int(seconds * rate)])
    return [raw[i : i + FRAME] for i in range(0, len(raw) - FRAME + 1, FRAME)]


def pkt(seq, payload=b"\xff" * FRAME, *, ts=None, pt=0, ssrc=SSRC, **kw) -> bytes:
    ts = (seq * FRAME) if ts is None else ts
    return RtpPacket(pt, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc, payload, **kw).to_bytes()


def push_all(demux, datagrams, *, addr=ADDR, start=0.0, step=0.02):
    out = []
    for i, d in enumerate(datagrams):
        out += demux.push(d, addr, start + i * step)
    return out


def events_of(pairs, call_id=None):
    return [ev for cid, ev in pairs if call_id is None or cid == call_id]


def audio(events) -> np.ndarray:
    parts = [e.samples for e in events if isinstance(e, Audio)]
    return np.concatenate(parts) if parts else np.zeros(0, np.float32)


# --------------------------------------------------------------------------- parsing
def test_parse_round_trip_with_csrcs_extension_padding_marker():
    packet = RtpPacket(
        96, 65535, 0xFFFFFFF0, 0xDEADBEEF, b"abcd", marker=True,
        csrcs=(1, 2, 3), extension=(0xBEDE, b"\x01\x02\x03\x04"), padding=4,
    )  # fmt: skip
    raw = packet.to_bytes()
    assert raw[0] == 0x80 | 0x20 | 0x10 | 3
    assert parse_rtp(raw) == packet
    assert parse_rtp(raw).payload == b"abcd"


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"\x80\x00\x00", "shorter than the 12-byte"),
        (b"\x40" + bytes(11), "version 1"),
        (b"\x82" + bytes(11) + bytes(4), "CSRC"),
        (b"\x90" + bytes(11) + b"\x00\x00", "extension"),
        (b"\x90" + bytes(11) + b"\x00\x00\x00\x02" + bytes(4), "extension longer"),
        (b"\xa0" + bytes(11) + b"ab\x00", "padding count 0"),
        (b"\xa0" + bytes(11) + b"ab\x09", "padding count 9"),
    ],
)
def test_malformed_packets(data, text):
    with pytest.raises(RtpError, match=text):
        parse_rtp(data)


@settings(max_examples=500)
@given(st.binary(max_size=80))
def test_parse_random_bytes_raises_only_rtp_error(data):
    try:
        packet = parse_rtp(data)
    except RtpError:
        return
    assert 0 <= packet.payload_type < 128 and len(packet.payload) <= len(data) - 12


def _whole_words(b: bytes) -> bytes:
    return b[: len(b) // 4 * 4]


@settings(max_examples=200)
@given(
    pt=st.integers(0, 127),
    seq=st.integers(0, 65535),
    ts=st.integers(0, 2**32 - 1),
    ssrc=st.integers(0, 2**32 - 1),
    payload=st.binary(max_size=40),
    marker=st.booleans(),
    csrcs=st.lists(st.integers(0, 2**32 - 1), max_size=15).map(tuple),
    ext=st.none() | st.tuples(st.integers(0, 65535), st.binary(max_size=12).map(_whole_words)),
    padding=st.integers(0, 255),
)  # fmt: skip
def test_serialise_parse_round_trip(pt, seq, ts, ssrc, payload, marker, csrcs, ext, padding):
    packet = RtpPacket(pt, seq, ts, ssrc, payload, marker, csrcs, ext, padding)
    assert parse_rtp(packet.to_bytes()) == packet


# --------------------------------------------------------------------------- streams
def test_in_order_speech_from_packet_one():
    frames = speech_frames(1.0)
    demux = RtpDemux()
    first = demux.push(pkt(1000, frames[0]), ADDR, 0.0)
    assert first == []  # probation: one stray datagram does not open a call
    pairs = first + push_all(
        demux, [pkt(1000 + i, f) for i, f in enumerate(frames)][1:], start=0.02
    )
    call_id = "rtp-127.0.0.1:40000-1234abcd"
    assert {cid for cid, _ in pairs} == {call_id}
    events = events_of(pairs)
    assert events[0] == CallStart(
        call_id,
        "rtp",
        {
            "remote": "127.0.0.1:40000",
            "ssrc": SSRC,
            "payload_type": 0,
            "encoding": "mulaw",
            "sample_rate": 8000,
        },
    )
    assert events[1] == TrackStart("1234abcd", 8000)
    events += events_of(demux.close())
    assert sequence_problems(events) == []
    np.testing.assert_array_equal(audio(events), decode("mulaw", b"".join(frames)))
    assert events[-1] == CallEnd("closed")
    assert not any(isinstance(e, Gap) for e in events)


def test_sequence_wrap_65535_to_0():
    demux = RtpDemux()
    seqs = [65533, 65534, 65535, 0, 1, 2]
    pairs = push_all(
        demux, [pkt(s, bytes([s % 256]) * FRAME, ts=i * FRAME) for i, s in enumerate(seqs)]
    )
    firsts = [e.samples[0] for e in events_of(pairs) if isinstance(e, Audio)]
    np.testing.assert_array_equal(firsts, decode("mulaw", bytes(s % 256 for s in seqs)))
    stats = next(iter(demux.streams.values())).stats
    assert stats.lost == 0 and stats.received == 6 and stats.duplicates == 0


def test_reordered_packets_are_released_in_order():
    demux = RtpDemux()
    order = [0, 1, 3, 2, 5, 4, 6, 8, 7, 9]
    pairs = push_all(demux, [pkt(s, bytes([s]) * FRAME) for s in order])
    stats = next(iter(demux.streams.values())).stats
    assert (stats.reordered, stats.lost, stats.duplicates, stats.late) == (3, 0, 0, 0)
    events = events_of(pairs) + events_of(demux.close())
    assert [e.samples[0] for e in events if isinstance(e, Audio)] == list(
        decode("mulaw", bytes(range(10)))
    )
    assert not any(isinstance(e, Gap) for e in events)


def test_duplicates_late_packets_and_gap_fill():
    demux = RtpDemux(jitter_packets=2)
    seqs = [0, 1, 2, 2, 1, 4, 5, 6, 7, 3]  # 3 arrives after the buffer gave up on it
    pairs = push_all(demux, [pkt(s) for s in seqs])
    stream = next(iter(demux.streams.values()))
    events = events_of(pairs)
    assert [type(e).__name__ for e in events[2:]] == [
        "Audio", "Audio", "Audio", "Gap", "Audio", "Audio", "Audio", "Audio",
    ]  # fmt: skip
    assert [e for e in events if isinstance(e, Gap)] == [Gap("1234abcd", FRAME)]
    assert stream.stats.duplicates == 2
    assert stream.stats.late == 1
    assert stream.stats.lost == 1
    assert stream.stats.gap_samples == FRAME


def test_reorder_counts_and_time_based_release_on_poll():
    demux = RtpDemux(jitter_packets=50, max_delay=0.1)
    pairs = push_all(demux, [pkt(0), pkt(1), pkt(3), pkt(4)])  # 2 is missing
    assert sum(isinstance(e, Audio) for e in events_of(pairs)) == 2
    assert demux.poll(0.1) == []  # not held long enough yet
    released = events_of(demux.poll(0.2))
    assert [type(e) for e in released] == [Gap, Audio, Audio]
    assert released[0].n_samples == FRAME


def test_silence_suppression_gap_comes_from_timestamps():
    demux = RtpDemux()
    # consecutive sequence numbers, but the sender skipped 1 s of silence (DTX)
    pairs = push_all(demux, [pkt(0, ts=0), pkt(1, ts=160), pkt(2, ts=160 + 8160)])
    gaps = [e for e in events_of(pairs) if isinstance(e, Gap)]
    assert gaps == [Gap("1234abcd", 8000)]


def test_gap_fill_is_bounded():
    demux = RtpDemux(max_gap_seconds=2.0)
    pairs = push_all(demux, [pkt(0, ts=0), pkt(1, ts=160), pkt(2, ts=160 + 8000 * 60)])
    assert [e for e in events_of(pairs) if isinstance(e, Gap)] == [Gap("1234abcd", 16000)]


def test_timestamp_wrap_does_not_create_a_gap():
    demux = RtpDemux()
    base = 2**32 - 320
    pairs = push_all(demux, [pkt(i, ts=base + i * FRAME) for i in range(5)])
    assert not any(isinstance(e, Gap) for e in events_of(pairs))
    assert sum(isinstance(e, Audio) for e in events_of(pairs)) == 5


def test_new_ssrc_from_same_address_is_a_new_call_and_old_one_idles_out():
    demux = RtpDemux(idle_timeout=1.0)
    pairs = push_all(demux, [pkt(i) for i in range(5)])
    pairs += push_all(demux, [pkt(i, ssrc=0xAA) for i in range(5)], start=0.5)
    calls = list(dict.fromkeys(cid for cid, _ in pairs))
    assert calls == ["rtp-127.0.0.1:40000-1234abcd", "rtp-127.0.0.1:40000-000000aa"]
    ended = demux.poll(1.5)
    assert ended == [
        (calls[0], TrackEnd("1234abcd")),
        (calls[0], CallEnd("idle")),
    ]
    assert events_of(demux.poll(3.0)) == [TrackEnd("000000aa"), CallEnd("idle")]
    for cid in calls:
        assert sequence_problems(events_of(pairs + ended, cid)) == []


def test_ipv6_call_id_brackets_the_host():
    demux = RtpDemux()
    pairs = push_all(demux, [pkt(0), pkt(1)], addr=("::1", 5004, 0, 0))
    assert pairs[0].call_id == "rtp-[::1]:5004-1234abcd"


def test_unknown_payload_types_rtcp_and_garbage():
    demux = RtpDemux()
    assert demux.push(pkt(0, pt=101), ADDR, 0.0) == []  # telephone-event first: no call
    assert demux.push(b"\x81\xc8" + bytes(26), ADDR, 0.0) == []  # RTCP sender report
    assert demux.push(b"garbage", ADDR, 0.0) == []
    assert (demux.stats.unknown_pt, demux.stats.rtcp, demux.stats.malformed) == (1, 1, 1)
    # mid-stream telephone-event packets share the sequence space: no loss, and the
    # timeline is kept by a gap sized from the timestamps.
    pairs = push_all(demux, [pkt(1), pkt(2), pkt(3, pt=101), pkt(4)])
    events = events_of(pairs)
    assert [type(e) for e in events] == [CallStart, TrackStart, Audio, Audio, Gap, Audio]
    stream = next(iter(demux.streams.values()))
    assert stream.stats.unknown_pt == 1 and stream.stats.lost == 0


def test_dynamic_payload_type_l16_big_endian_16k():
    tone = (0.25 * np.sin(2 * np.pi * 300 * np.arange(640) / 16000)).astype(np.float32)
    raw = encode("pcm_s16be", tone)
    demux = RtpDemux({96: ("pcm_s16be", 16000)})
    pairs = push_all(demux, [pkt(0, raw[:640], pt=96, ts=0), pkt(1, raw[640:], pt=96, ts=320)])
    events = events_of(pairs)
    assert events[1] == TrackStart("1234abcd", 16000)
    np.testing.assert_allclose(audio(events), tone, atol=1 / 32768)
    bad = demux.push(pkt(2, b"\x00" * 3, pt=96, ts=640), ADDR, 1.0)  # odd L16 payload
    assert bad == [] and next(iter(demux.streams.values())).stats.bad_payload == 1


def test_sender_restart_is_accepted_after_two_sequential_packets():
    demux = RtpDemux()
    pairs = push_all(demux, [pkt(i) for i in range(5)])
    pairs += push_all(demux, [pkt(30000 + i, ts=999_000 + i * FRAME) for i in range(4)], start=1)
    stream = next(iter(demux.streams.values()))
    assert stream.stats.jumps == 1 and stream.stats.restarts == 1
    # 5 before, the first jumped packet dropped, then 3 after the restart
    assert sum(isinstance(e, Audio) for e in events_of(pairs)) == 8
    assert not any(isinstance(e, Gap) for e in events_of(pairs))


def test_single_stray_datagram_never_becomes_a_call():
    demux = RtpDemux(idle_timeout=1.0)
    assert demux.push(pkt(7), ADDR, 0.0) == []
    assert demux.poll(5.0) == [] and demux.streams == {}


def test_interarrival_jitter():
    steady = RtpDemux()
    push_all(steady, [pkt(i) for i in range(50)])
    assert next(iter(steady.streams.values())).stats.jitter == pytest.approx(0.0, abs=1e-9)
    jittery = RtpDemux()
    for i in range(200):
        jittery.push(pkt(i), ADDR, i * 0.02 + (0.005 if i % 2 else 0.0))
    # |D| alternates around 40 timestamp units (5 ms at 8 kHz): J converges to 40.
    assert next(iter(jittery.streams.values())).stats.jitter == pytest.approx(40.0, rel=0.05)


def test_max_streams_bounds_state():
    demux = RtpDemux(max_streams=2)
    for ssrc in range(5):
        demux.push(pkt(0, ssrc=ssrc), ADDR, 0.0)
    assert len(demux.streams) == 2 and demux.stats.refused_streams == 3


def test_pt_map_validation():
    assert validate_pt_map({"97": ("pcm_s16be", 8000)}) == {97: ("pcm_s16be", 8000)}
    assert validate_pt_map({0: ("pcmu", 8000), 98: ["L16", 16000]}) == {
        0: ("mulaw", 8000),
        98: ("pcm_s16be", 16000),
    }
    with pytest.raises(ConfigError, match=r"0\.\.127"):
        RtpDemux({200: ("mulaw", 8000)})
    with pytest.raises(ConfigError, match="opus"):
        RtpDemux({96: ("opus", 48000)})
    with pytest.raises(ConfigError, match="4000"):
        RtpDemux({96: ("pcm_s16be", 4000)})
    with pytest.raises(ConfigError, match="encoding, clock_rate"):
        RtpDemux({96: "L16"})


@settings(max_examples=150)
@given(
    start=st.integers(0, 65535),
    packets=st.lists(
        st.tuples(
            st.one_of(st.integers(-5, 8), st.integers(-5, 8), st.integers(0, 65535)),  # seq step
            st.integers(-200, 200),  # timestamp jitter around seq * 160
            st.sampled_from([0, 0, 0, 8, 96, 101, 13]),
            st.sampled_from([1, 1, 1, 2]),  # ssrc
            st.sampled_from([0, 1, 160, 160, 321]),  # payload bytes
            st.sampled_from([0.0, 0.02, 0.02, 0.3, 2.0]),  # time to the next datagram
        ),
        max_size=50,
    ),
)
def test_random_packet_streams_keep_the_invariants(start, packets):
    demux = RtpDemux({96: ("pcm_s16be", 8000)}, idle_timeout=1.0, max_gap_seconds=0.5)
    pairs, seq, now = [], start, 0.0
    for step, jitter, pt, ssrc, size, dt in packets:
        seq = (seq + step) % 65536
        datagram = pkt(seq, b"\x01" * size, ts=seq * FRAME + jitter, pt=pt, ssrc=ssrc)
        pairs += demux.push(datagram, ADDR, now)
        now += dt
        pairs += demux.poll(now)
    pairs += demux.close()
    for cid in {cid for cid, _ in pairs}:
        events = events_of(pairs, cid)
        assert sequence_problems(events) == []
        assert isinstance(events[-1], CallEnd)
        assert all(0 < e.n_samples <= 4000 for e in events if isinstance(e, Gap))


def test_wrong_version_datagram_struct_is_counted_not_raised():
    demux = RtpDemux()
    assert demux.push(struct.pack("!BBHII", 0x40, 0, 1, 2, 3), ADDR, 0.0) == []
    assert demux.stats.malformed == 1
