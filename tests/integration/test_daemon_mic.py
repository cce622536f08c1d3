"""The microphone source in the real daemon, with PortAudio replaced by a thread that plays a
real speech file through the same callback contract (no audio hardware in CI)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from streamguard.audio.file import read_audio

from .conftest import Subscriber

pytestmark = pytest.mark.integration


class FilePlayer:
    """sounddevice.InputStream's contract: callback(indata, frames, time, status) from a thread.

    Faster than a real device, but never faster than the daemon reads: the next block is
    played only while the microphone's bounded queue has room (a live mic drops the oldest
    audio when the daemon falls behind, as it should; a test must not depend on the machine's
    load to keep up with a fixed pace)."""

    def __init__(self, audio: np.ndarray, **kwargs):
        self.audio = audio  # (frames, channels) at kwargs["samplerate"]
        self.callback = kwargs["callback"]
        self.microphone = self.callback.__self__  # the Microphone whose queue this fills
        self.finished = kwargs["finished_callback"]
        self.blocksize = kwargs["blocksize"]
        self.thread = threading.Thread(target=self._play, daemon=True)
        self.closed = threading.Event()

    def start(self) -> None:
        self.thread.start()

    def _play(self) -> None:
        status = type("Status", (), {"input_overflow": False})()
        for sent, i in enumerate(range(0, len(self.audio), self.blocksize)):
            # readiness, not a pace: blocks handed to the loop and not yet taken by the daemon
            # (still on their way to the queue, or in it) stay well under the queue's bound
            mic = self.microphone
            while sent - mic.stats.blocks + mic.queued_blocks >= 4:
                if self.closed.wait(0.005):
                    return
            if self.closed.is_set():
                return
            block = self.audio[i : i + self.blocksize]
            self.callback(block, len(block), None, status)
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
    assert daemon.microphone is not None and daemon.microphone.stats.dropped_blocks == 0


async def test_a_microphone_that_cannot_open_stops_the_start_before_ready(tiny_detector):
    """docs/sources.md: without PortAudio or an input device the daemon stops with one line.
    The real sounddevice is asked for a device that does not exist (no audio hardware here)."""
    from streamguard.daemon import Daemon
    from streamguard.errors import StreamguardError

    from .conftest import daemon_settings

    settings = daemon_settings(sources={"mic": {"enabled": True, "device": "no-such-device"}})
    daemon = Daemon(settings, detector=tiny_detector)
    try:
        with pytest.raises(StreamguardError, match=r"device|PortAudio") as info:
            await daemon.start()
    finally:
        await daemon.stop()
    assert "\n" not in str(info.value)
    assert not daemon.ready and daemon._mic_task is None
