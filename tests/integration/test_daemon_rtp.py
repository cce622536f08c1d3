"""RTP into the real daemon from a real sender: Debian's ffmpeg, as the README documents."""

from __future__ import annotations

import asyncio

import pytest

from .conftest import Subscriber

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires_tool("ffmpeg"),
]


async def ffmpeg_rtp(
    path, port: int, *extra: str, realtime: bool = False, rtcp_port: int | None = None
) -> None:
    proc = await asyncio.create_subprocess_exec(
        "ffmpeg",
        "-hide_banner",
        "-loglevel",
        "error",
        "-nostdin",
        *(["-re"] if realtime else []),
        "-i",
        str(path),
        "-ar",
        "8000",
        "-ac",
        "1",
        *extra,
        "-f",
        "rtp",
        f"rtp://127.0.0.1:{port}" + (f"?rtcpport={rtcp_port}" if rtcp_port else ""),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()


@pytest.mark.parametrize(("codec", "encoding"), [("pcm_mulaw", "mulaw"), ("pcm_alaw", "alaw")])
async def test_ffmpeg_rtp_sender_yields_scored_call(make_daemon, fixtures_dir, codec, encoding):
    daemon = await make_daemon(
        sources={
            "rtp": {"enabled": True, "host": "127.0.0.1", "port": 0, "idle_timeout_seconds": 0.5}
        }
    )
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        await ffmpeg_rtp(fixtures_dir / "speech_10s_8k.wav", daemon.rtp_port, "-acodec", codec)
        (ended,) = await sub.wait_call_ended(timeout=20)
    (started,) = sub.of_type("call_started")
    assert started["source"] == "rtp" and started["call_id"].startswith("rtp-127.0.0.1:")
    assert started["metadata"]["encoding"] == encoding
    scores = sub.of_type("score")
    assert scores and {e["track"] for e in scores} == {f"{started['metadata']['ssrc']:08x}"}
    assert [e["start"] for e in scores] == [float(i) for i in range(len(scores))]
    assert ended["reason"] == "idle"
    assert ended["summary"]["duration"] == pytest.approx(10.0, abs=0.1)


@pytest.mark.slow
async def test_ffmpeg_realtime_rtp(make_daemon, fixtures_dir):
    """The README's exact sender command (-re: paced like a live call)."""
    daemon = await make_daemon(
        sources={
            "rtp": {"enabled": True, "host": "127.0.0.1", "port": 0, "idle_timeout_seconds": 1.0}
        }
    )
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        await ffmpeg_rtp(
            fixtures_dir / "speech_10s_8k.wav",
            daemon.rtp_port,
            "-acodec",
            "pcm_mulaw",
            realtime=True,
        )
        (ended,) = await sub.wait_call_ended(timeout=20)
    assert ended["summary"]["windows_scored"] >= 5


async def test_ffmpeg_rtcp_bye_ends_the_call_at_once(make_daemon, fixtures_dir):
    """ffmpeg sends RTCP (sender reports) from its RTP port + 1, and a BYE at the end of the
    stream only when asked (-rtpflags send_bye). With a 30 s idle timeout, a call that ends
    within the test's 20 s can only have ended on the BYE."""
    daemon = await make_daemon(
        sources={
            "rtp": {"enabled": True, "host": "127.0.0.1", "port": 0, "idle_timeout_seconds": 30}
        }
    )
    assert daemon.rtcp_port is not None and daemon.rtcp_port != daemon.rtp_port
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        await ffmpeg_rtp(
            fixtures_dir / "speech_10s_8k.wav",
            daemon.rtp_port,
            "-acodec",
            "pcm_mulaw",
            "-rtpflags",
            "send_bye",
            rtcp_port=daemon.rtcp_port,
        )
        (ended,) = await sub.wait_call_ended(timeout=20)
    assert ended["reason"] == "bye"
    assert ended["summary"]["duration"] == pytest.approx(10.0, abs=0.1)
    assert daemon.rtp is not None and daemon.rtp.demux.stats.byes == 1
    assert daemon.rtp.demux.stats.rtcp >= 2  # the first sender report, then SR + BYE
