"""A real RTP sender (Debian's ffmpeg) into a real UDP socket on 127.0.0.1, into RtpDemux."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamguard.sources.base import Audio, CallStart, Gap, TrackStart, sequence_problems
from streamguard.sources.rtp import RtpDemux

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.requires_tool("ffmpeg"),
]


def capture_rtp(wav: Path, codec: str, seconds: float) -> list[tuple[bytes, tuple, float]]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.settimeout(0.2)
        proc = subprocess.Popen(
            ["ffmpeg", "-nostdin", "-loglevel", "error", "-t", str(seconds), "-i", str(wav),
             "-ar", "8000", "-ac", "1", "-acodec", codec, "-f", "rtp", f"rtp://127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        received = []
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                try:
                    data, addr = sock.recvfrom(65536)
                except TimeoutError:
                    if proc.poll() is not None:
                        break
                    continue
                received.append((data, addr, time.monotonic()))
        finally:
            proc.kill()
            _, err = proc.communicate()
        assert proc.returncode in (0, -9), err.decode(errors="replace")
    return received


@pytest.mark.parametrize(("codec", "pt"), [("pcm_mulaw", 0), ("pcm_alaw", 8)])
def test_ffmpeg_rtp_stream_decodes_to_the_original_speech(codec, pt):
    wav = FIXTURES / "speech_10s_8k.wav"
    speech, rate = sf.read(wav, dtype="float32")
    seconds = 2.0
    datagrams = capture_rtp(wav, codec, seconds)
    assert datagrams, "ffmpeg sent nothing"

    demux = RtpDemux(idle_timeout=5.0)
    pairs = []
    for data, addr, now in datagrams:
        pairs += demux.push(data, addr, now)
    pairs += demux.close()

    calls = {cid for cid, _ in pairs}
    assert len(calls) == 1
    events = [ev for _, ev in pairs]
    assert sequence_problems(events) == []
    assert isinstance(events[0], CallStart) and events[0].metadata["payload_type"] == pt
    assert isinstance(events[1], TrackStart) and events[1].sample_rate == 8000
    assert not any(isinstance(e, Gap) for e in events)  # loopback: nothing lost
    got = np.concatenate([e.samples for e in events if isinstance(e, Audio)])
    want = speech[: int(seconds * rate)]
    assert len(got) == len(want)  # audio from ffmpeg's very first packet is kept
    snr = 10 * np.log10(np.sum(want**2) / np.sum((got - want) ** 2))
    assert snr > 25, snr
