"""The microphone source in the real daemon, with PortAudio replaced by a thread that plays a
real speech file through the same callback contract (no audio hardware in CI)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from streamguard.audio.file import read_audio

from .conftest import Subscriber

pytestmark = pytest.mark.integration


class FilePlayer:
    """sounddevice.InputStream's contract: callback(indata, frames, time, status) from a thread."""

    def __init__(self, audio: np.ndarray, **kwargs):
        self.audio = audio  # (frames, channels) at kwargs["samplerate"]
        self.callback = kwargs["callback"]
        self.finished = kwargs["finished_callback"]
        self.blocksize = kwargs["blocksize"]
        # 10x real time: faster than a real device, slow enough never to overrun the
        # daemon's bounded block queue (which would drop audio, as it should for a live mic)
        self.pause = self.blocksize / kwargs["samplerate"] / 10
        self.thread = threading.Thread(target=self._play, daemon=True)
        self.closed = threading.Event()

    def start(self) -> None:
        self.thread.start()

    def _play(self) -> None:
        status = type("Status", (), {"input_overflow": False})()
        for i in range(0, len(self.audio), self.blocksize):
            if self.closed.is_set():
                return
            block = self.audio[i : i + self.blocksize]
            self.callback(block, len(block), None, status)
            time.sleep(self.pause)
        self.finished()

    def close(self) -> None:
        self.closed.set()


async def test_microphone_call_is_scored_and_ended(make_daemon, fixtures_dir, tiny_detector):
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    audio = np.ascontiguousarray(mono.T)

    def factory(**kwargs):
        assert kwargs["samplerate"] == rate and kwargs["channels"] == 1
        return FilePlayer(audio, **kwargs)

    from streamguard.daemon import Daemon

    from .conftest import daemon_settings

    settings = daemon_settings(
        sources={"rtp": {"enabled": False}, "mic": {"enabled": True, "sample_rate": rate}}
    )
    daemon = Daemon(settings, detector=tiny_detector, mic_stream_factory=factory)
    # Subscribe before the microphone starts: start the daemon's listener first.
    await daemon.start()
    try:
        async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
            (ended,) = await sub.wait_call_ended()
    finally:
        await daemon.stop()
    # the subscriber may connect after call_started; call_ended's summary covers the whole call
    assert ended["source"] == "mic" and ended["reason"] == "closed"
    assert ended["summary"]["duration"] == pytest.approx(10.0, abs=0.01)
    assert ended["summary"]["windows_scored"] >= 5


async def test_missing_portaudio_device_is_one_error_and_other_sources_run(
    make_daemon, fixtures_dir
):
    """A microphone that cannot open does not stop the WebSocket sources."""
    try:  # PortAudio comes from scripts/system-deps.sh; without it this is another test's job
        import sounddevice  # noqa: F401
    except OSError:
        pytest.skip("PortAudio (libportaudio2) is not installed")

    daemon = await make_daemon(sources={"mic": {"enabled": True, "device": "no-such-device"}})
    from streamguard.client import send_frames
    from streamguard.sources.senders import native_frames

    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    async with Subscriber(f"ws://127.0.0.1:{daemon.port}/alerts") as sub:
        await send_frames(
            f"ws://127.0.0.1:{daemon.port}/ingest", native_frames(mono, rate, call_id="x")
        )
        (ended,) = await sub.wait_call_ended()
    assert ended["call_id"] == "x"
    assert daemon._mic_task is not None and daemon._mic_task.done()
