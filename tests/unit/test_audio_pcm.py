"""streamguard.audio.pcm: the one int16 convention (x 32768) and the one pad/crop helper."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from streamguard.audio import codecs
from streamguard.audio.pcm import fit_length, float_to_int16, int16_to_float
from streamguard.audio.vad import float_to_pcm16


def test_scale_is_32768_and_clips():
    x = np.array([0.0, 0.5, -0.5, -1.0, 1.0, 3.0, -3.0, np.nan], np.float32)
    assert float_to_int16(x).tolist() == [0, 16384, -16384, -32768, 32767, 32767, -32768, 0]
    assert int16_to_float(np.array([-32768, 16384], np.int16)).tolist() == [-1.0, 0.5]


@given(arrays(np.int16, st.integers(0, 64)))
def test_int16_round_trip_is_exact(values):
    assert np.array_equal(float_to_int16(int16_to_float(values)), values)


def test_every_path_uses_the_same_convention():
    """The codecs, the VAD and the training cache once disagreed (x32767 vs x32768)."""
    x = np.linspace(-1.0, 1.0, 1001, dtype=np.float32)
    assert np.array_equal(codecs.float_to_int16(x), float_to_int16(x))
    assert np.array_equal(float_to_pcm16(x), float_to_int16(x))
    pcm16 = codecs.decode("pcm_s16le", float_to_int16(x).astype("<i2").tobytes())
    assert np.array_equal(pcm16, int16_to_float(float_to_int16(x)))


def test_fit_length_pads_and_crops_numpy_and_torch():
    clip = np.arange(10, dtype=np.float32)
    assert fit_length(clip, 4).tolist() == [0, 1, 2, 3]
    assert fit_length(clip, 4, "center").tolist() == [3, 4, 5, 6]
    assert fit_length(clip[:2], 4).tolist() == [0, 1, 0, 0]
    a = fit_length(clip, 4, "random", np.random.default_rng(3))
    b = fit_length(clip, 4, "random", np.random.default_rng(3))
    assert a.tolist() == b.tolist() and a[1] - a[0] == 1
    t = fit_length(torch.arange(3, dtype=torch.float32), 5)
    assert isinstance(t, torch.Tensor) and t.tolist() == [0, 1, 2, 0, 0]
    with pytest.raises(ValueError, match="rng"):
        fit_length(clip, 4, "random")
    with pytest.raises(ValueError, match="crop mode"):
        fit_length(clip, 4, "middle")  # type: ignore[arg-type]
