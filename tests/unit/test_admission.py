"""RTP admission (allow-list, packet rate, SSRC count) and the token bucket it shares."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streamguard.ratelimit import TokenBucket
from streamguard.sources.admission import RtpAdmission, rtp_ssrc
from streamguard.sources.rtp import RtpPacket

LOCAL = ("127.0.0.1", 40000)


def packet(ssrc: int, seq: int = 0) -> bytes:
    return RtpPacket(0, seq, seq * 160, ssrc, bytes(160)).to_bytes()


def test_token_bucket_allows_a_burst_then_the_rate():
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.allow(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.allow(0.1) and not bucket.allow(0.1)  # one token per 0.1 s
    assert bucket.allow(100.0)  # refills, capped at the burst
    assert sum(bucket.allow(100.0) for _ in range(10)) == 4


def test_token_bucket_delay_paces_to_the_rate():
    bucket = TokenBucket(rate=100, burst=2, now=0.0)
    delays = [bucket.delay(0.0) for _ in range(5)]
    assert delays[:2] == [0.0, 0.0]
    assert delays[2:] == pytest.approx([0.01, 0.02, 0.03])


@pytest.mark.parametrize("bad", [(0, 1), (-1, 1), (1, 0.5)])
def test_token_bucket_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        TokenBucket(*bad, now=0.0)


def test_ssrc_of_rtp_but_not_of_rtcp_or_garbage():
    assert rtp_ssrc(packet(0xDEADBEEF)) == 0xDEADBEEF
    rtcp_rr = struct.pack("!BBHI", 0x81, 201, 7, 0x1234) + bytes(24)
    assert rtp_ssrc(rtcp_rr) is None
    assert rtp_ssrc(b"\x80\x00" + bytes(5)) is None  # short
    assert rtp_ssrc(b"\x40" + bytes(20)) is None  # version 1


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("127.0.0.1", True),
        ("127.9.9.9", True),
        ("::1", True),
        ("::ffff:127.0.0.1", True),  # a dual-stack socket reports IPv4 senders this way
        ("10.0.0.5", True),
        ("10.1.0.5", False),
        ("192.0.2.1", False),
        ("fe80::1%eth0", False),
        ("not-an-address", False),
    ],
)
def test_allow_list(host, allowed):
    adm = RtpAdmission(["127.0.0.0/8", "::1/128", "10.0.0.0/16"])
    verdict = adm.admit((host, 5004), 1, 0.0)
    assert (verdict.reason is None) is allowed
    if not allowed:
        assert verdict == ("not_allowed", True)
        assert adm.admit((host, 5005), 1, 0.1) == ("not_allowed", False)  # reported once


def test_rate_is_per_sender_and_reported_once():
    adm = RtpAdmission(["127.0.0.0/8"], max_packets_per_second=50)
    verdicts = [adm.admit(LOCAL, 1, 0.0) for _ in range(52)]
    assert [v.reason for v in verdicts[:50]] == [None] * 50
    assert verdicts[50] == ("rate", True) and verdicts[51] == ("rate", False)
    assert adm.admit(("127.0.0.1", 40002), 2, 0.0).reason is None  # another sender: own bucket
    assert adm.admit(LOCAL, 1, 1.0).reason is None  # a second later: refilled


def test_ssrc_count_per_sender_frees_idle_ssrcs():
    adm = RtpAdmission(["127.0.0.0/8"], max_ssrcs_per_sender=2, ssrc_idle_seconds=5)
    assert adm.admit(LOCAL, 1, 0.0).reason is None
    assert adm.admit(LOCAL, 2, 0.0).reason is None
    assert adm.admit(LOCAL, 3, 0.0) == ("ssrcs", True)
    assert adm.admit(LOCAL, 1, 4.0).reason is None  # known SSRCs keep flowing
    assert adm.admit(LOCAL, None, 4.0).reason is None  # RTCP: only the rate applies
    assert adm.admit(LOCAL, 3, 5.5).reason is None  # SSRC 2 went idle: its slot is free
    assert adm.admit(LOCAL, 4, 5.5) == ("ssrcs", False)


def test_sender_state_is_bounded():
    adm = RtpAdmission(["127.0.0.0/8"], max_senders=10)
    for port in range(1000):
        adm.admit(("127.0.0.1", port), port, 0.0)
    assert len(adm._senders) == 10


@given(
    data=st.binary(max_size=64),
    host=st.one_of(st.ip_addresses().map(str), st.text(max_size=20)),
    port=st.integers(0, 65535),
    now=st.floats(0, 1e6),
)
def test_admission_never_raises(data, host, port, now):
    adm = RtpAdmission(["127.0.0.0/8", "::1/128"])
    verdict = adm.admit((host, port), rtp_ssrc(data), now)
    assert verdict.reason in (None, "not_allowed", "rate", "ssrcs")
