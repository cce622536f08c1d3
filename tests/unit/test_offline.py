"""Offline scoring (scan, evaluate, the trainer's reports): tracks through the per-track chain,
windows of all tracks in the engine's batches, every score back on its own track in order."""

from __future__ import annotations

import numpy as np
import torch

from streamguard.audio.demo import demo_windows
from streamguard.audio.file import read_audio
from streamguard.audio.track import TrackSettings
from streamguard.model import Detector, ModelInfo
from streamguard.scoring.offline import OfflineScorer, score_file
from tests.unit.test_scan_batching import MeanLevel


class AbsLevel(MeanLevel):
    """The scan tests' transparent model on loudness: logit = 100 x mean |sample|."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.batches.append(x.shape[0])
        return 100 * x.abs().mean(dim=1)


def detector() -> Detector:
    info = ModelInfo(name="level", architecture="test", window_seconds=1.0)
    return Detector(AbsLevel(), info, device="cpu")


def run(det, tracks, max_batch, block=1600):
    scorer = OfflineScorer(det, TrackSettings(hop_seconds=0.5), max_batch=max_batch)
    ids = [scorer.track(rate, str(i)) for i, (rate, _) in enumerate(tracks)]
    longest = max(len(audio) for _, audio in tracks)
    for start in range(0, longest, block):  # interleaved, as scan reads blocks
        for i, (_, audio) in zip(ids, tracks, strict=True):
            if start < len(audio):
                scorer.push(i, audio[start : start + block])
    for i in ids:
        scorer.finish(i)
    return scorer.close()


def test_tracks_share_full_batches_and_keep_their_own_scores_in_order(fixtures_dir):
    rate, mono = read_audio(fixtures_dir / "speech_10s_8k.wav")
    tracks = [(rate, mono[0]), (rate, 0.25 * mono[0][: 6 * rate])]
    batched_det, single_det = detector(), detector()
    together = run(batched_det, tracks, max_batch=3)
    alone = run(single_det, tracks, max_batch=1)
    n = sum(len(t.scores) for t in together)
    assert n >= 10
    # every batch full until the last, which holds what close() found queued
    assert batched_det.module.batches[:-1] == [3] * (len(batched_det.module.batches) - 1)
    assert sum(batched_det.module.batches) == n
    for a, b in zip(together, alone, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-6)
        assert a.starts == sorted(a.starts) and a.starts == b.starts
        assert a.speech_seconds > 0 and a.duration > 0
    # the quieter track scores lower window for window (the transparent model)
    assert max(together[1].scores) < min(together[0].scores[: len(together[1].scores)])


def test_score_file_tracks_per_channel_or_the_mix(fixtures_dir, tiny_detector):
    path = str(fixtures_dir / "speech_10s_8k.wav")
    per_channel = score_file(path, tiny_detector, max_batch=4)
    mixed = score_file(path, tiny_detector, mix=True, keep_audio=True)
    assert [t.name for t in per_channel.tracks] == ["0"] and mixed.tracks[0].name == "mix"
    assert per_channel.sample_rate == 8000 and per_channel.duration == mixed.duration
    np.testing.assert_allclose(per_channel.tracks[0].scores, mixed.tracks[0].scores, atol=1e-5)
    assert mixed.audio is not None and per_channel.audio is None


def test_demo_windows_are_speech_windows_on_a_shifted_grid():
    first, shifted = demo_windows(16_000), demo_windows(16_000, offset_seconds=0.5)
    assert first.shape[1] == 16_000 and first.dtype == np.float32 and len(first) > 4
    assert not np.array_equal(first[0], shifted[0])
