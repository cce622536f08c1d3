"""StreamResampler: chunked output must equal one-shot output (no seams at chunk edges)."""

from __future__ import annotations

import numpy as np
import pytest
import soxr
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.resample import StreamResampler


def _signal(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.8 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3100 * t)).astype(
        np.float32
    )


def _chunked(r: StreamResampler, x: np.ndarray, sizes: list[int]) -> np.ndarray:
    out, i, k = [], 0, 0
    while i < x.size:
        n = sizes[k % len(sizes)]
        out.append(r.push(x[i : i + n]))
        i += n
        k += 1
    out.append(r.flush())
    return np.concatenate(out)


@settings(max_examples=25)
@given(
    in_rate=st.sampled_from([8000, 11025, 22050, 44100, 48000]),
    sizes=st.lists(st.integers(1, 3000), min_size=1, max_size=8),
)
def test_chunked_equals_one_shot(in_rate, sizes):
    x = _signal(in_rate // 2, in_rate)
    chunked = _chunked(StreamResampler(in_rate), x, sizes)
    whole = soxr.resample(x, in_rate, 16000, quality="HQ")
    assert chunked.dtype == np.float32
    assert chunked.shape == whole.shape
    np.testing.assert_allclose(chunked, whole, atol=1e-6)


def test_length_matches_rate_ratio_after_flush():
    r = StreamResampler(8000)
    out = np.concatenate([r.push(np.zeros(80_000, np.float32)), r.flush()])
    assert out.size == 160_000
    assert r.samples_in == 80_000 and r.samples_out == 160_000


def test_startup_delay_is_held_until_flush():
    r = StreamResampler(8000)
    first = r.push(_signal(800, 8000))
    assert first.size < 1600  # the filter holds samples back ...
    assert first.size + r.flush().size == 1600  # ... and flush gives them all back


def test_passthrough_copies_and_keeps_values():
    r = StreamResampler(16000)
    assert r.passthrough
    x = _signal(1000, 16000)
    y = r.push(x)
    np.testing.assert_array_equal(x, y)
    x[:] = 0  # caller reuses its buffer: output must not change
    assert np.abs(y).max() > 0.5
    assert r.flush().size == 0


def test_push_after_flush_raises_and_flush_is_idempotent():
    r = StreamResampler(8000)
    r.push(np.zeros(100, np.float32))
    r.flush()
    assert r.flush().size == 0
    with pytest.raises(RuntimeError):
        r.push(np.zeros(10, np.float32))


def test_accepts_float64_and_2d_single_channel_input():
    r = StreamResampler(8000)
    y = np.concatenate([r.push(np.zeros((400, 1))), r.flush()])
    assert y.dtype == np.float32 and y.size == 800


@pytest.mark.parametrize("rates", [(0, 16000), (8000, 0), (-1, 16000)])
def test_rejects_bad_rates(rates):
    with pytest.raises(ValueError):
        StreamResampler(*rates)
