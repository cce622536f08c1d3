"""TrackPipeline on real speech fixtures: timing rule, chunking invariance, counters."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
from pydantic import ValidationError

from streamguard.audio.track import TrackPipeline, TrackSettings


def _load(fixtures_dir, name):
    x, rate = sf.read(fixtures_dir / name, dtype="float32", always_2d=True)
    return x.T, rate


def _run(pipe: TrackPipeline, x: np.ndarray, chunk: int | None = None):
    out = []
    step = chunk or max(1, x.size)
    for i in range(0, x.size, step):
        out.extend(pipe.push(x[i : i + step]))
    return out + pipe.finish()


def test_ten_second_8k_file_gives_windows_0_to_6(fixtures_dir):
    x, rate = _load(fixtures_dir, "speech_10s_8k.wav")
    pipe = TrackPipeline(rate, TrackSettings())
    windows = _run(pipe, x[0])
    assert [(w.start, w.end) for w in windows] == [(float(s), s + 4.0) for s in range(7)]
    assert pipe.windows_emitted == 7 and pipe.windows_skipped == 0
    assert pipe.duration_seconds == 10.0 and pipe.samples_in == 80_000
    assert 5.0 < pipe.speech_seconds <= 10.0
    assert all(w.samples.shape == (64_000,) and w.samples.dtype == np.float32 for w in windows)
    # window audio is exactly the one-shot 16 kHz resampling of the file
    whole = soxr.resample(x[0], rate, 16_000, quality="HQ")
    for w in windows:
        np.testing.assert_allclose(w.samples, whole[w.start_sample : w.end_sample], atol=2**-15)


def test_chunk_size_does_not_change_windows(fixtures_dir):
    x, rate = _load(fixtures_dir, "speech_10s_8k.wav")
    ref = _run(TrackPipeline(rate), x[0])
    for chunk in (160, 1234, 8000):
        got = _run(TrackPipeline(rate), x[0], chunk)
        assert [(w.start_sample, w.speech_ratio) for w in got] == [
            (w.start_sample, w.speech_ratio) for w in ref
        ]
        for a, b in zip(got, ref, strict=True):
            np.testing.assert_allclose(a.samples, b.samples, atol=1e-6)


@pytest.mark.parametrize("coalesce_ms", [0, 20, 250])
def test_coalescing_does_not_change_windows(fixtures_dir, coalesce_ms):
    x, rate = _load(fixtures_dir, "speech_10s_8k.wav")
    ref = _run(TrackPipeline(rate), x[0], 160)
    got = _run(TrackPipeline(rate, TrackSettings(coalesce_ms=coalesce_ms)), x[0], 160)
    assert [(w.start_sample, w.speech_ratio) for w in got] == [
        (w.start_sample, w.speech_ratio) for w in ref
    ]
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)


def test_input_is_held_until_coalesce_ms_arrived():
    pipe = TrackPipeline(8000, TrackSettings(coalesce_ms=100, min_speech_seconds=0.0))
    for _ in range(4):  # 80 ms: held, nothing reaches the resampler yet
        pipe.push(np.zeros(160, np.float32))
    assert pipe.resampler.samples_in == 0 and pipe.samples_in == 640
    pipe.push(np.zeros(160, np.float32))  # 100 ms: the chain runs once on all of it
    assert pipe.resampler.samples_in == 800


def test_hop_two_seconds(fixtures_dir):
    x, rate = _load(fixtures_dir, "speech_10s_8k.wav")
    windows = _run(TrackPipeline(rate, TrackSettings(hop_seconds=2.0)), x[0])
    assert [w.start for w in windows] == [0.0, 2.0, 4.0, 6.0]


def test_short_call_one_padded_window(fixtures_dir):
    x, rate = _load(fixtures_dir, "short_speech_1s.wav")
    pipe = TrackPipeline(rate)
    windows = _run(pipe, x[0])
    assert len(windows) == 1
    assert (windows[0].start, windows[0].end, windows[0].valid_samples) == (0.0, 1.0, 16_000)


def test_silence_gives_no_windows(fixtures_dir):
    x, rate = _load(fixtures_dir, "silence_3s.wav")
    pipe = TrackPipeline(rate)
    assert _run(pipe, x[0]) == []
    assert pipe.speech_seconds == 0 and pipe.windows_skipped == 1
    assert pipe.duration_seconds == 3.0


def test_push_silence_is_a_gap_in_call_time(fixtures_dir):
    x, rate = _load(fixtures_dir, "short_speech_1s.wav")
    pipe = TrackPipeline(rate)
    out = pipe.push_silence(rate * 5)  # 5 s of nothing, then speech
    out += _run(pipe, x[0])
    assert pipe.duration_seconds == 6.0
    assert out and out[-1].end == 6.0  # the speech is scored at its call time
    assert all(w.start >= 2.0 for w in out)


def test_the_window_is_the_models():
    pipe = TrackPipeline(16_000, TrackSettings(), window_seconds=2.0)
    assert pipe.window_samples == 32_000
    windows = _run(pipe, np.zeros(16_000 * 3, np.float32))
    assert windows == [] and pipe.windows_skipped == 2  # [0,2] and [1,3]


def test_the_ring_grows_for_a_long_window_and_min_speech_must_fit_it():
    pipe = TrackPipeline(16_000, TrackSettings(ring_seconds=5.0), window_seconds=8.0)
    assert pipe.ring.capacity == 16_000 * 10  # window + 1 hop + 1 s
    with pytest.raises(ValueError, match="cannot exceed the 2 s window"):
        TrackPipeline(16_000, TrackSettings(min_speech_seconds=3.0), window_seconds=2.0)


def test_a_whole_long_push_never_overwrites_unread_audio():
    # 60 s pushed at once into a 5 s ring: the pipeline slices input, nothing is lost
    settings = TrackSettings(ring_seconds=5.0, min_speech_seconds=0.0)
    pipe = TrackPipeline(16_000, settings)
    windows = _run(pipe, np.zeros(16_000 * 60, np.float32))
    assert len(windows) == 57 and pipe.windower.windows_lost == 0


def test_push_after_finish_raises():
    pipe = TrackPipeline(16_000)
    pipe.finish()
    assert pipe.finish() == []
    with pytest.raises(RuntimeError):
        pipe.push(np.zeros(10, np.float32))


@pytest.mark.parametrize(
    "bad",
    [
        {"hop_seconds": 0},
        {"min_speech_seconds": -1.0},
        {"vad_aggressiveness": 4},
        {"vad_frame_ms": 25},
        {"ring_seconds": 0},
        {"window_seconds": 4.0},  # the model's, not a setting
        {"unknown_key": 1},
    ],
)
def test_settings_validation(bad):
    with pytest.raises(ValidationError):
        TrackSettings(**bad)


def test_settings_defaults():
    s = TrackSettings()
    assert (s.hop_seconds, s.min_speech_seconds) == (1.0, 0.5)
    assert (s.vad_aggressiveness, s.vad_frame_ms, s.ring_seconds) == (2, 30, 6.0)
    assert s.coalesce_ms == 100
