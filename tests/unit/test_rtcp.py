"""RTCP parsing (RFC 3550 section 6) and what the RTP demux does with a BYE."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.codecs import encode
from streamguard.sources.base import Audio, CallEnd, CallStart, TrackEnd, sequence_problems
from streamguard.sources.rtcp import (
    AppPacket,
    Goodbye,
    OtherPacket,
    ReceiverReport,
    ReportBlock,
    RtcpError,
    SenderReport,
    SourceDescription,
    is_rtcp,
    parse_rtcp,
)
from streamguard.sources.rtp import BYE_GRACE_SECONDS, RtpDemux, RtpPacket

SSRC = 0x888112CF
# A compound SR + BYE exactly as Debian's ffmpeg sends it at the end of a stream with
# `-rtpflags send_bye` (captured on loopback).
FFMPEG_SR_BYE = bytes.fromhex(
    "80c80006888112cfeeba1e2a71eb851efd4540d60000001800005dc0" + "81cb0001888112cf"
)


def header(packet_type: int, count: int, body: bytes, padding: int = 0) -> bytes:
    if padding:
        body += bytes(padding - 1) + bytes([padding])
    assert len(body) % 4 == 0
    return (
        struct.pack("!BBH", 0x80 | (0x20 if padding else 0) | count, packet_type, len(body) // 4)
        + body
    )


def block(ssrc: int, lost: int = -2) -> bytes:
    return (
        struct.pack("!IB", ssrc, 12)
        + lost.to_bytes(3, "big", signed=True)
        + struct.pack("!IIII", 5000, 17, 0xAABBCCDD, 65536)
    )


def sr(ssrc: int = SSRC, blocks: int = 0) -> bytes:
    body = struct.pack("!IQIII", ssrc, 0xEEBA1E2A71EB851E, 160, 24, 3840)
    return header(200, blocks, body + b"".join(block(0x1000 + i) for i in range(blocks)))


def bye(*ssrcs: int, reason: bytes = b"") -> bytes:
    body = b"".join(struct.pack("!I", s) for s in ssrcs)
    if reason:
        body += bytes([len(reason)]) + reason
        body += bytes(-len(body) % 4)
    return header(203, len(ssrcs), body)


def sdes(ssrc: int, cname: bytes) -> bytes:
    chunk = struct.pack("!I", ssrc) + bytes([1, len(cname)]) + cname + b"\x00"
    chunk += bytes(-len(chunk) % 4)
    return header(202, 1, chunk)


def test_ffmpegs_compound_sender_report_and_bye():
    packets = parse_rtcp(FFMPEG_SR_BYE)
    assert isinstance(packets[0], SenderReport)
    assert (
        packets[0].ssrc == SSRC
        and packets[0].packet_count == 24
        and packets[0].octet_count == 24000  # 3 s of PCMU
    )
    assert packets[1] == Goodbye((SSRC,))
    assert is_rtcp(FFMPEG_SR_BYE)


def test_every_packet_type_round_trips():
    datagram = (
        sr(blocks=2)
        + header(201, 1, struct.pack("!I", 7) + block(9, lost=-5))
        + sdes(7, b"alice@example")
        + header(204, 3, struct.pack("!I", 7) + b"name" + b"data")
        + header(206, 1, b"\x00" * 8)
        + bye(7, 8, reason=b"call over")
    )
    a, b, c, d, e, f = parse_rtcp(datagram)
    assert isinstance(a, SenderReport) and len(a.reports) == 2 and a.reports[0].ssrc == 0x1000
    assert b == ReceiverReport(7, (ReportBlock(9, 12, -5, 5000, 17, 0xAABBCCDD, 65536),))
    assert c == SourceDescription(((7, ((1, b"alice@example"),)),))
    assert d == AppPacket(3, 7, b"name", b"data")
    assert e == OtherPacket(206, 1, b"\x00" * 8)
    assert f == Goodbye((7, 8), "call over")


def test_padding_on_the_last_packet_only():
    assert parse_rtcp(sr() + header(203, 1, struct.pack("!I", 5), padding=4)) == [
        parse_rtcp(sr())[0],
        Goodbye((5,)),
    ]
    with pytest.raises(RtcpError, match="not the last"):
        parse_rtcp(header(203, 1, struct.pack("!I", 5), padding=4) + sr())


@pytest.mark.parametrize(
    "datagram",
    [
        b"",
        b"\x80\xc8",
        b"\x40\xc8\x00\x00",  # version 1
        sr()[:-4],  # length says more than there is
        header(200, 1, struct.pack("!IQIII", 1, 2, 3, 4, 5)),  # a report block missing
        header(203, 2, struct.pack("!I", 5)),  # BYE lists 2 SSRCs, carries 1
        header(203, 1, struct.pack("!I", 5) + b"\x09abc"),  # reason longer than the packet
        header(202, 1, struct.pack("!I", 5) + b"\x01\x09abc\x00\x00\x00"),  # SDES item too long
        header(202, 1, struct.pack("!I", 5)),  # SDES chunk without its null item
        header(204, 0, struct.pack("!I", 5)),  # APP without a name
        sr() + b"\x80",
    ],
)
def test_malformed_rtcp_raises_rtcp_error(datagram):
    with pytest.raises(RtcpError):
        parse_rtcp(datagram)


@settings(max_examples=500)
@given(st.binary(max_size=120))
def test_random_bytes_raise_only_rtcp_error(data):
    with contextlib.suppress(RtcpError):
        parse_rtcp(data)


@settings(max_examples=300)
@given(
    st.lists(
        st.sampled_from([sr(), sr(blocks=1), bye(SSRC), sdes(1, b"x"), bye(1, reason=b"r")]),
        min_size=1,
        max_size=5,
    ),
    st.integers(0, 40),
)
def test_truncated_compounds_raise_only_rtcp_error(parts, cut):
    data = b"".join(parts)
    with contextlib.suppress(RtcpError):
        parse_rtcp(data[: max(0, len(data) - cut)])


# ---------------------------------------------------------------- BYE in the demux

ADDR = ("127.0.0.1", 40000)
RTCP_ADDR = ("127.0.0.1", 40001)


def rtp_stream(n: int, ssrc: int = SSRC) -> list[bytes]:
    tone = np.sin(np.arange(160 * n) * 0.3).astype(np.float32) * 0.5
    return [
        RtpPacket(
            0, 100 + i, 1000 + 160 * i, ssrc, encode("mulaw", tone[160 * i : 160 * (i + 1)])
        ).to_bytes()
        for i in range(n)
    ]


def test_bye_ends_the_call_at_once_with_everything_buffered_scored():
    demux = RtpDemux(idle_timeout=30.0)
    pairs = []
    for i, datagram in enumerate(rtp_stream(10)):
        pairs += demux.push(datagram, ADDR, i * 0.02)
    assert demux.push_rtcp(sr() + bye(SSRC), RTCP_ADDR, 0.19) == []  # RTP may still be queued
    assert demux.poll(0.3) == []  # 0.12 s after the last packet: within the grace
    pairs += demux.poll(0.19 + BYE_GRACE_SECONDS)
    events = [e for _, e in pairs]
    assert sequence_problems(events) == []
    assert isinstance(events[0], CallStart)
    assert sum(len(e.samples) for e in events if isinstance(e, Audio)) == 1600
    assert events[-2:] == [TrackEnd(f"{SSRC:08x}"), CallEnd("bye")]
    assert demux.stats.byes == 1 and demux.stats.rtcp == 1
    # RTP still in flight after the call ended on its BYE opens no new call
    assert demux.push(rtp_stream(12)[11], ADDR, 0.5) == []
    assert demux.stats.after_bye == 1


def test_a_bye_overtaking_the_rtp_on_its_own_socket_still_ends_the_call():
    demux = RtpDemux(idle_timeout=30.0)
    demux.push_rtcp(bye(SSRC), RTCP_ADDR, 0.0)  # read before any RTP of the stream
    pairs = []
    for i, datagram in enumerate(rtp_stream(10)):
        pairs += demux.push(datagram, ADDR, 0.001 * i)
    pairs += demux.poll(1.0)
    events = [e for _, e in pairs]
    assert sum(len(e.samples) for e in events if isinstance(e, Audio)) == 1600
    assert events[-1] == CallEnd("bye")


def test_bye_from_another_host_or_for_another_ssrc_changes_nothing():
    demux = RtpDemux(idle_timeout=30.0)
    for i, datagram in enumerate(rtp_stream(3)):
        demux.push(datagram, ADDR, i * 0.02)
    assert demux.push_rtcp(bye(SSRC), ("10.9.9.9", 40001), 0.1) == []
    assert demux.push_rtcp(bye(SSRC + 1), RTCP_ADDR, 0.1) == []
    assert demux.push_rtcp(b"\x80\xcb\x00\x05junk", RTCP_ADDR, 0.1) == []
    assert demux.stats.rtcp_malformed == 1 and len(demux.streams) == 1


def test_rtcp_multiplexed_on_the_rtp_port_is_understood():
    demux = RtpDemux(idle_timeout=30.0)
    for i, datagram in enumerate(rtp_stream(3)):
        demux.push(datagram, ADDR, i * 0.02)
    assert demux.push(bye(SSRC, reason=b"bye"), ADDR, 0.1) == []
    events = [e for _, e in demux.poll(0.05 + BYE_GRACE_SECONDS)]
    assert events[-1] == CallEnd("bye")
    assert demux.stats.malformed == 0


@settings(max_examples=200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["rtp", "rtcp", "mux"]),
            st.one_of(
                st.binary(max_size=60),
                st.sampled_from([*rtp_stream(4), bye(SSRC), sr() + bye(SSRC), FFMPEG_SR_BYE]),
            ),
        ),
        max_size=20,
    )
)
def test_rtp_and_rtcp_in_any_order_keep_the_invariants(datagrams):
    demux = RtpDemux(idle_timeout=1.0)
    pairs = []
    for i, (where, data) in enumerate(datagrams):
        now = 0.05 * i
        if where == "rtcp":
            pairs += demux.push_rtcp(data, RTCP_ADDR, now)
        else:
            pairs += demux.push(data, ADDR, now)
        pairs += demux.poll(now)
    pairs += demux.close()
    by_call: dict[str, list] = {}
    for call_id, event in pairs:
        by_call.setdefault(call_id, []).append(event)
    for events in by_call.values():
        assert sequence_problems(events) == []
        assert isinstance(events[-1], CallEnd)
