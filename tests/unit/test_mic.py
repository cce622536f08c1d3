"""Microphone: real float32 blocks from a real thread into a real asyncio loop.

The only stand-in is for the sound card: ``ThreadedStream`` plays the part of
``sounddevice.InputStream`` (same keyword arguments, callback called from its own thread).
"""

from __future__ import annotations

import asyncio
import importlib.abc
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from streamguard.errors import StreamguardError
from streamguard.sources.base import (
    Audio,
    CallEnd,
    CallStart,
    TrackEnd,
    TrackStart,
    sequence_problems,
)
from streamguard.sources.edges.mic import Microphone, load_sounddevice
from streamguard.sources.mic import MicCore

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"


class ThreadedStream:
    """Calls ``callback`` from a thread with consecutive blocks of ``audio``, like PortAudio."""

    def __init__(self, audio, *, overflow_every=0, started=None, **kwargs):
        self.audio = audio
        self.kwargs = kwargs
        self.callback = kwargs["callback"]
        self.finished_callback = kwargs.get("finished_callback")
        self.overflow_every = overflow_every
        self.started = started
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        bs = self.kwargs["blocksize"]
        for i, at in enumerate(range(0, len(self.audio), bs)):
            if self._stop.is_set():
                return
            block = self.audio[at : at + bs]
            flags = SimpleNamespace(
                input_overflow=bool(self.overflow_every and i % self.overflow_every == 0)
            )
            self.callback(block, len(block), None, flags)
            if i == 0 and self.started is not None:
                self.started.set()
        if self.finished_callback:
            self.finished_callback()

    def close(self):
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5)


def stereo_speech():
    audio, rate = sf.read(FIXTURES / "speech_stereo_16k.wav", dtype="float32")
    return audio, rate


async def collect(mic: Microphone, timeout=10.0) -> list:
    async def run():
        return [ev async for ev in mic.events()]

    return await asyncio.wait_for(run(), timeout)


def test_stereo_capture_through_a_real_thread_and_loop():
    audio, rate = stereo_speech()
    streams = []

    def factory(**kwargs):
        streams.append(ThreadedStream(audio, overflow_every=7, **kwargs))
        return streams[0]

    mic = Microphone(
        sample_rate=rate, channels=2, block_seconds=0.05, max_queue_blocks=10_000,
        call_id="mic-test", stream_factory=factory,
    )  # fmt: skip
    events = asyncio.run(collect(mic))

    assert sequence_problems(events) == []
    assert events[0] == CallStart(
        "mic-test", "mic", {"device": None, "sample_rate": rate, "channels": 2}
    )
    assert events[1:3] == [TrackStart("0", rate), TrackStart("1", rate)]
    for ch in (0, 1):
        got = np.concatenate(
            [e.samples for e in events if isinstance(e, Audio) and e.track == str(ch)]
        )
        np.testing.assert_array_equal(got, audio[:, ch])
    assert events[-3:] == [TrackEnd("0"), TrackEnd("1"), CallEnd("closed")]
    n_blocks = -(-len(audio) // mic.block_frames)
    assert mic.stats.blocks == n_blocks and mic.stats.dropped_blocks == 0
    assert mic.stats.input_overflows == len(range(0, n_blocks, 7))
    kwargs = streams[0].kwargs
    assert (kwargs["samplerate"], kwargs["channels"], kwargs["dtype"]) == (rate, 2, "float32")


def test_slow_consumer_drops_the_oldest_blocks_and_counts_them():
    audio, rate = stereo_speech()
    mono = np.ascontiguousarray(audio[:, 0])

    def factory(**kwargs):
        return ThreadedStream(mono, **kwargs)

    mic = Microphone(
        sample_rate=rate, channels=1, block_seconds=0.01, max_queue_blocks=4, stream_factory=factory
    )

    async def main():
        events, agen = [], mic.events()
        events.append(await agen.__anext__())  # CallStart: the stream is running now
        await asyncio.sleep(0)
        # Block the loop while the audio thread delivers everything (a consumer far behind).
        threading.Event().wait(0.5)
        events += [ev async for ev in agen]
        return events

    events = asyncio.run(asyncio.wait_for(main(), 10))
    assert sequence_problems(events) == []
    n_blocks = -(-len(mono) // mic.block_frames)
    assert mic.stats.blocks == n_blocks
    assert mic.stats.dropped_blocks > 0
    got = np.concatenate([e.samples for e in events if isinstance(e, Audio)])
    kept_blocks = n_blocks - mic.stats.dropped_blocks
    assert len(got) <= kept_blocks * mic.block_frames
    # What is kept is the newest audio: the end of the recording is all there.
    np.testing.assert_array_equal(got[-mic.block_frames :], mono[-mic.block_frames :])


def test_stop_from_the_loop_ends_the_call_with_stop():
    audio = np.zeros((16000 * 60, 1), np.float32)  # a minute: far longer than the test
    started = threading.Event()

    def factory(**kwargs):
        return ThreadedStream(audio, started=started, **kwargs)

    mic = Microphone(sample_rate=16000, block_seconds=0.02, stream_factory=factory)

    async def main():
        events = []
        async for ev in mic.events():
            events.append(ev)
            if isinstance(ev, Audio):
                mic.stop()
        return events

    events = asyncio.run(asyncio.wait_for(main(), 10))
    assert events[-2:] == [TrackEnd("0"), CallEnd("stop")]
    assert sequence_problems(events) == []


def test_real_sounddevice_without_an_input_device_names_the_fix():
    try:
        sd = load_sounddevice()
    except StreamguardError as exc:  # no PortAudio here: that message is checked below too
        assert "libportaudio2" in str(exc)
        return
    try:
        has_input = any(d["max_input_channels"] > 0 for d in sd.query_devices())
    except sd.PortAudioError:
        has_input = False
    if has_input:
        pytest.skip("this machine has a real input device")
    mic = Microphone(sample_rate=16000)
    with pytest.raises(StreamguardError, match="no input device found"):
        asyncio.run(collect(mic))


class _NoPortAudio(importlib.abc.MetaPathFinder):
    """Makes ``import sounddevice`` fail the way it does when libportaudio2 is missing."""

    def find_spec(self, name, path=None, target=None):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return None


def test_missing_portaudio_becomes_one_clear_error(monkeypatch):
    monkeypatch.delitem(sys.modules, "sounddevice", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_NoPortAudio(), *sys.meta_path])
    with pytest.raises(StreamguardError, match=r"apt-get install libportaudio2"):
        load_sounddevice()
    with pytest.raises(StreamguardError, match="libportaudio2"):
        asyncio.run(collect(Microphone(sample_rate=16000)))


def test_mic_core_events_and_validation():
    core = MicCore(8000, 2, call_id="c")
    assert core.push(np.zeros((4, 2), np.float32)) == []  # not started: nothing
    events = core.start() + core.push(np.arange(8, dtype=np.float32).reshape(4, 2) / 10)
    events += core.stop()
    assert [type(e) for e in events] == [
        CallStart,
        TrackStart,
        TrackStart,
        Audio,
        Audio,
        TrackEnd,
        TrackEnd,
        CallEnd,
    ]
    np.testing.assert_allclose(events[4].samples, [0.1, 0.3, 0.5, 0.7])
    assert core.stop() == []
    with pytest.raises(StreamguardError, match="sample rate"):
        MicCore(1000)
