"""RingBuffer against a plain-list model: absolute addressing, overwrite, errors."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.ringbuffer import OverwrittenError, RingBuffer


def test_basic_write_read_and_counters():
    rb = RingBuffer(10)
    rb.write(np.arange(4, dtype=np.float32))
    assert rb.total_written == 4 and rb.oldest_available == 0 and rb.overwritten == 0
    assert len(rb) == 4
    np.testing.assert_array_equal(rb.read(1, 4), [1, 2, 3])


def test_wraparound_read_spans_the_seam():
    rb = RingBuffer(8)
    rb.write(np.arange(6, dtype=np.float32))
    rb.write(np.arange(6, 11, dtype=np.float32))  # wraps: 11 written, capacity 8
    assert rb.oldest_available == 3 and rb.overwritten == 3
    np.testing.assert_array_equal(rb.read(3, 11), np.arange(3, 11))
    np.testing.assert_array_equal(rb.read(7, 9), [7, 8])


def test_reading_overwritten_samples_raises_and_counts():
    rb = RingBuffer(5)
    rb.write(np.arange(12, dtype=np.float32))
    with pytest.raises(OverwrittenError):
        rb.read(6, 8)
    np.testing.assert_array_equal(rb.read(7, 12), np.arange(7, 12))


def test_write_larger_than_capacity_keeps_the_newest():
    rb = RingBuffer(4)
    rb.write(np.arange(10, dtype=np.float32))
    assert rb.total_written == 10 and rb.oldest_available == 6
    np.testing.assert_array_equal(rb.read(6, 10), [6, 7, 8, 9])


@pytest.mark.parametrize("bad", [(-1, 2), (3, 2), (0, 6)])
def test_bad_ranges_raise_value_error(bad):
    rb = RingBuffer(8)
    rb.write(np.zeros(5, np.float32))
    with pytest.raises(ValueError):
        rb.read(*bad)


def test_int16_ring_keeps_int16():
    rb = RingBuffer(4, dtype=np.int16)
    rb.write(np.array([1, -2, 32767, -32768], np.int16))
    out = rb.read(1, 4)
    assert out.dtype == np.int16 and out.tolist() == [-2, 32767, -32768]


def test_read_returns_a_copy():
    rb = RingBuffer(4)
    rb.write(np.ones(4, np.float32))
    out = rb.read(0, 4)
    rb.write(np.zeros(4, np.float32))
    assert out.sum() == 4


def test_empty_write_and_empty_read():
    rb = RingBuffer(3)
    rb.write(np.zeros(0, np.float32))
    assert rb.total_written == 0
    assert rb.read(0, 0).size == 0


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        RingBuffer(0)


@settings(max_examples=200)
@given(
    capacity=st.integers(1, 40),
    ops=st.lists(
        st.one_of(
            st.tuples(st.just("w"), st.integers(0, 60)),
            st.tuples(st.just("r"), st.integers(0, 200), st.integers(0, 60)),
        ),
        max_size=40,
    ),
)
def test_matches_list_model(capacity, ops):
    rb = RingBuffer(capacity)
    model: list[float] = []  # every sample ever written, by absolute index
    for op in ops:
        if op[0] == "w":
            chunk = np.arange(len(model), len(model) + op[1], dtype=np.float32)
            rb.write(chunk)
            model.extend(chunk.tolist())
        else:
            start, length = op[1], op[2]
            stop = start + length
            oldest = max(0, len(model) - capacity)
            assert rb.total_written == len(model)
            assert rb.oldest_available == oldest == rb.overwritten
            if stop > len(model):
                with pytest.raises(ValueError):
                    rb.read(start, stop)
            elif start < oldest:
                with pytest.raises(OverwrittenError):
                    rb.read(start, stop)
            else:
                assert rb.read(start, stop).tolist() == model[start:stop]
    assert len(rb) == min(capacity, len(model))
