"""SpeechGate on real speech and silence; chunking must not change decisions."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.vad import SpeechFrame, SpeechGate, float_to_pcm16


@pytest.fixture(scope="module")
def speech16k(fixtures_dir):
    x, rate = sf.read(fixtures_dir / "short_speech_1s.wav", dtype="float32")
    assert rate == 16000
    return x


def _all(gate: SpeechGate, x: np.ndarray, sizes: list[int]) -> list[SpeechFrame]:
    out, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        out.extend(gate.push(x[i : i + n]))
        i += n
        k += 1
    return out + gate.flush()


def test_speech_is_detected_and_silence_is_not(speech16k):
    frames = _all(SpeechGate(), speech16k, [speech16k.size])
    assert any(f.is_speech for f in frames)
    silence = _all(SpeechGate(), np.zeros(16000, np.float32), [16000])
    assert not any(f.is_speech for f in silence)


def test_frames_are_contiguous_and_cover_every_sample(speech16k):
    x = speech16k[: 16000 - 100]  # not a multiple of 480: flush decides the remainder
    gate = SpeechGate(frame_ms=30)
    frames = _all(gate, x, [1000])
    assert frames[0].start_sample == 0
    for a, b in itertools.pairwise(frames):
        assert b.start_sample == a.end_sample
    assert frames[-1].end_sample == x.size == gate.samples_decided
    assert all(f.n_samples == 480 for f in frames[:-1])
    assert frames[-1].n_samples == x.size % 480
    assert gate.speech_samples == sum(f.n_samples for f in frames if f.is_speech)


@settings(max_examples=15)
@given(sizes=st.lists(st.integers(1, 2000), min_size=1, max_size=6))
def test_chunking_does_not_change_decisions(speech16k, sizes):
    ref = _all(SpeechGate(), speech16k, [speech16k.size])
    assert _all(SpeechGate(), speech16k, sizes) == ref


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_frame_lengths(frame_ms, speech16k):
    frames = SpeechGate(frame_ms=frame_ms).push(speech16k)
    assert {f.n_samples for f in frames} == {16 * frame_ms}


def test_flush_without_remainder_is_empty():
    gate = SpeechGate()
    gate.push(np.zeros(960, np.float32))
    assert gate.flush() == []


def test_float_to_pcm16_clips_instead_of_wrapping():
    pcm = float_to_pcm16(np.array([0.0, 0.5, 1.0, 2.0, -1.0, -7.0], np.float32))
    assert pcm.dtype == np.int16
    assert pcm.tolist() == [0, 16384, 32767, 32767, -32768, -32768]  # x 32768 (audio.pcm)


def test_loud_clipped_speech_is_still_classified(speech16k):
    frames = _all(SpeechGate(), speech16k * 10.0, [speech16k.size])  # heavily overdriven
    assert len(frames) == 34


@pytest.mark.parametrize(
    "kwargs",
    [{"sample_rate": 22050}, {"frame_ms": 25}, {"aggressiveness": 4}, {"aggressiveness": -1}],
)
def test_rejects_settings_webrtcvad_cannot_do(kwargs):
    with pytest.raises(ValueError):
        SpeechGate(**kwargs)
