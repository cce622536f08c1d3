"""The bounded reorder buffer shared by the RTP jitter buffer and the Telnyx core."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.sources.reorder import ReorderBuffer


def keys(released):
    return [k for k, _ in released]


def test_in_order_passes_straight_through():
    buf: ReorderBuffer[str] = ReorderBuffer(4)
    assert keys(buf.push(10, "a")) == [10]
    assert keys(buf.push(11, "b")) == [11]
    assert len(buf) == 0 and buf.stats.received == 2


def test_hole_waits_for_depth_then_is_lost_and_the_late_arrival_dropped():
    buf: ReorderBuffer[int] = ReorderBuffer(2, next_key=0)
    assert keys(buf.push(0, 0)) == [0]
    assert buf.push(2, 2) == [] and buf.push(3, 3) == []
    assert keys(buf.push(4, 4)) == [2, 3, 4]  # three held > depth 2: give up on 1
    assert buf.stats.lost == 1
    assert buf.push(1, 1) == [] and buf.stats.late == 1
    assert buf.push(3, 3) == [] and buf.stats.duplicates == 1


def test_duplicate_of_a_held_item_and_reorder_count():
    buf: ReorderBuffer[int] = ReorderBuffer(8, next_key=1)
    assert buf.push(3, 3) == [] and buf.push(3, 3) == []
    assert keys(buf.push(2, 2)) == []
    assert keys(buf.push(1, 1)) == [1, 2, 3]
    assert (buf.stats.duplicates, buf.stats.reordered) == (1, 2)


def test_time_based_release_and_flush():
    buf: ReorderBuffer[int] = ReorderBuffer(100, max_wait=0.1, next_key=0)
    buf.push(2, 2, now=1.0)
    buf.push(5, 5, now=1.05)
    assert buf.release_due(1.09) == []
    assert keys(buf.release_due(1.11)) == [2]  # the oldest waited > 0.1 s
    assert keys(buf.flush()) == [5]
    assert buf.stats.lost == 2 + 2


@settings(max_examples=200)
@given(st.lists(st.integers(0, 60), max_size=80), st.integers(0, 6))
def test_releases_are_strictly_increasing_and_bounded(pushes, depth):
    buf: ReorderBuffer[int] = ReorderBuffer(depth)
    out = []
    for k in pushes:
        out += keys(buf.push(k, k))
        assert len(buf) <= depth
    out += keys(buf.flush())
    assert out == sorted(set(out)) and len(out) == buf.stats.received
    s = buf.stats
    assert s.received + s.duplicates + s.late == len(pushes)
