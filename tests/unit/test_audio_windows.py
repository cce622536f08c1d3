"""Windower: the window rule (regular windows every hop, final window over unscored speech)
checked against a direct reference implementation over random speech masks and chunkings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.audio.ringbuffer import RingBuffer
from streamguard.audio.vad import SpeechFrame
from streamguard.audio.windows import Window, Windower


def reference(mask: np.ndarray, w: int, hop: int, min_speech: int):
    """The README rule, written as plainly as possible over the whole call at once."""
    total = mask.size
    emitted, skipped = [], 0
    k = 0
    while k * hop + w <= total:
        s = k * hop
        if mask[s : s + w].sum() >= min_speech:
            emitted.append((s, s + w))
        else:
            skipped += 1
        k += 1
    covered_end = emitted[-1][1] if emitted else 0
    if total > covered_end and mask[covered_end:].sum() >= min_speech:
        s = max(0, total - w)
        emitted.append((s, total))
    elif total > covered_end and total < w:
        skipped += 1
    return emitted, skipped


def run_windower(mask, frame_lengths, push_groups, w, hop, min_speech, ring_capacity=None):
    total = mask.size
    ring = RingBuffer(ring_capacity or max(total, w, 1))
    audio = np.arange(total, dtype=np.float32)  # sample value = its index: checks content
    windower = Windower(ring, w, hop, min_speech)
    frames, pos, i = [], 0, 0
    while pos < total:
        n = min(frame_lengths[i % len(frame_lengths)], total - pos)
        frames.append(SpeechFrame(pos, n, bool(mask[pos : pos + n].all())))
        pos += n
        i += 1
    # the frame decision is per frame, so the effective mask is per frame too
    eff = np.concatenate([np.full(f.n_samples, f.is_speech) for f in frames]) if frames else mask
    out: list[Window] = []
    j = g = 0
    while j < len(frames):
        group = frames[j : j + push_groups[g % len(push_groups)]]
        ring.write(audio[group[0].start_sample : group[-1].end_sample])
        out.extend(windower.push(group))
        j += len(group)
        g += 1
    out.extend(windower.finish())
    return out, windower, eff, audio


@settings(max_examples=300)
@given(
    w=st.integers(4, 40),
    hop_frac=st.floats(0.1, 1.5),
    min_frac=st.floats(0.0, 1.0),
    mask=st.lists(st.booleans(), min_size=0, max_size=200).map(lambda m: np.array(m, bool)),
    frame_lengths=st.lists(st.integers(1, 7), min_size=1, max_size=4),
    push_groups=st.lists(st.integers(1, 9), min_size=1, max_size=4),
)
def test_matches_reference(w, hop_frac, min_frac, mask, frame_lengths, push_groups):
    hop = max(1, round(w * hop_frac))
    min_speech = round(w * min_frac)
    out, windower, eff, audio = run_windower(mask, frame_lengths, push_groups, w, hop, min_speech)
    expected, skipped = reference(eff, w, hop, min_speech)
    assert [(x.start_sample, x.end_sample) for x in out] == expected
    assert windower.windows_emitted == len(out)
    assert windower.windows_skipped == skipped
    assert windower.speech_samples == int(eff.sum())
    for x in out:
        s, e = x.start_sample, x.end_sample
        assert x.samples.dtype == np.float32 and x.samples.size == w
        np.testing.assert_array_equal(x.samples[: e - s], audio[s:e])
        assert not x.samples[e - s :].any()  # padding is zeros
        assert x.speech_ratio == pytest.approx(eff[s:e].sum() / (e - s))
    starts = [x.start_sample for x in out]
    assert starts == sorted(set(starts))  # strictly increasing, no duplicate window


@settings(max_examples=100)
@given(
    mask=st.lists(st.booleans(), min_size=0, max_size=150).map(lambda m: np.array(m, bool)),
    groups_a=st.lists(st.integers(1, 9), min_size=1, max_size=4),
    groups_b=st.lists(st.integers(1, 9), min_size=1, max_size=4),
)
def test_push_grouping_does_not_change_windows(mask, groups_a, groups_b):
    a, *_ = run_windower(mask, [3], groups_a, 20, 5, 6)
    b, *_ = run_windower(mask, [3], groups_b, 20, 5, 6)
    assert [(x.start_sample, x.end_sample, x.speech_ratio) for x in a] == [
        (x.start_sample, x.end_sample, x.speech_ratio) for x in b
    ]


def _all_speech_run(total: int, w: int = 64_000, hop: int = 16_000):
    return run_windower(np.ones(total, bool), [480], [7], w, hop, 8000)


def test_ten_seconds_hop_one_second_gives_windows_at_0_to_6():
    out, windower, *_ = _all_speech_run(160_000)
    assert [(x.start, x.end) for x in out] == [(float(s), s + 4.0) for s in range(7)]
    assert windower.windows_skipped == 0


def test_tail_shorter_than_min_speech_is_not_scored_again():
    out, *_ = _all_speech_run(160_000 + 4_000)  # 0.25 s past [6, 10]
    assert out[-1].start == 6.0


def test_tail_with_enough_unscored_speech_gets_a_final_window():
    out, *_ = _all_speech_run(160_000 + 9_600)  # 0.6 s past [6, 10]
    assert (out[-1].start, out[-1].end) == (6.6, 10.6)
    assert out[-1].valid_samples is None  # a full window, no padding


def test_short_call_gets_one_zero_padded_window():
    out, windower, *_ = _all_speech_run(16_000)
    assert len(out) == 1 and windower.windows_skipped == 0
    x = out[0]
    assert (x.start, x.end, x.valid_samples, x.speech_ratio) == (0.0, 1.0, 16_000, 1.0)
    assert x.samples.size == 64_000 and not x.samples[16_000:].any()


def test_short_call_without_speech_counts_one_skipped_window():
    out, windower, *_ = run_windower(np.zeros(16_000, bool), [480], [5], 64_000, 16_000, 8000)
    assert out == [] and windower.windows_skipped == 1


def test_overwritten_window_is_counted_as_lost_not_crashing():
    mask = np.ones(400, bool)
    out, windower, *_ = run_windower(mask, [10], [40], 40, 10, 5, ring_capacity=60)
    assert windower.windows_lost > 0
    assert windower.windows_emitted == len(out)


def test_non_contiguous_frames_are_rejected():
    windower = Windower(RingBuffer(100), 10, 5, 0)
    windower.push([SpeechFrame(0, 5, True)])
    with pytest.raises(ValueError):
        windower.push([SpeechFrame(6, 5, True)])


def test_push_after_finish_raises_and_finish_is_idempotent():
    windower = Windower(RingBuffer(100), 10, 5, 0)
    assert windower.finish() == []
    assert windower.finish() == []
    with pytest.raises(RuntimeError):
        windower.push([])


@pytest.mark.parametrize(
    "args", [(0, 5, 0), (10, 0, 0), (10, 5, 11), (10, 5, -1)], ids=["w0", "hop0", "min>w", "min<0"]
)
def test_bad_parameters(args):
    with pytest.raises(ValueError):
        Windower(RingBuffer(100), *args)


def test_ring_must_hold_a_window():
    with pytest.raises(ValueError):
        Windower(RingBuffer(5), 10, 5, 0)


def test_window_properties():
    x = Window(16_000, np.zeros(64_000, np.float32), 0.5)
    assert (x.start, x.end, x.end_sample) == (1.0, 5.0, 80_000)
    padded = Window(0, np.zeros(64_000, np.float32), 1.0, valid_samples=8_000)
    assert (padded.end_sample, padded.end) == (8_000, 0.5)
