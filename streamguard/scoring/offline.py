"""Offline scoring: audio (a file or arrays) -> the daemon's per-track chain -> the engine's
batching -> scores. The one path ``scan``, ``evaluate`` and the trainer's reports take, so an
offline score is the score a live call of the same audio gets.

Owns: :class:`OfflineScorer` (tracks in, :class:`ScoredTrack` out: each track through its own
:class:`~streamguard.audio.track.TrackPipeline`, the windows of every track queued in the
engine's pure :class:`~streamguard.scoring.batcher.Batcher` and scored a full batch at a time
with :func:`~streamguard.scoring.batching.score_windows`, the remainder at the end);
:func:`score_file` (one audio file, a track per channel or the mix-down). No threads: the
caller's thread does the inference. (The serving backends' check audio is cut by the same
track chain in :mod:`streamguard.audio.demo`, below the model layer.)
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamguard.audio.track import TrackPipeline, TrackSettings
from streamguard.audio.windows import Window
from streamguard.scoring.batcher import Batch, Batcher
from streamguard.scoring.batching import score_windows

__all__ = ["OfflineScorer", "ScoredFile", "ScoredTrack", "score_file"]


@dataclass
class ScoredTrack:
    """One track after the chain: its scored windows (call seconds) and what the chain saw."""

    name: str
    starts: list[float] = field(default_factory=list)
    ends: list[float] = field(default_factory=list)  # end of each window's real audio
    speech_ratios: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)  # P(fake), window order
    duration: float = 0.0
    speech_seconds: float = 0.0
    windows_skipped: int = 0

    def _add(self, window: Window, p_fake: float) -> None:
        self.starts.append(window.start)
        self.ends.append(window.end)
        self.speech_ratios.append(window.speech_ratio)
        self.scores.append(p_fake)


class OfflineScorer:
    """Many tracks' windows scored in shared batches (the engine's batch formation with an
    unbounded wait: a batch goes when ``max_batch`` windows are queued, the rest at
    :meth:`close`). Usage: ``i = scorer.track(rate)``, ``scorer.push(i, samples)`` any number
    of times, ``scorer.finish(i)``, then ``tracks = scorer.close()``."""

    def __init__(
        self, detector: Any, settings: TrackSettings | None = None, *, max_batch: int = 16
    ) -> None:
        self.detector = detector
        self.settings = settings or TrackSettings()
        self.max_batch = max_batch
        # Offline nothing is late and nothing overflows: only the batch size forms batches.
        self._batcher = Batcher(
            max_batch=max_batch, max_wait=math.inf, max_lag=math.inf, queue_size=sys.maxsize
        )
        self._pipes: list[TrackPipeline] = []
        self.tracks: list[ScoredTrack] = []

    def track(self, sample_rate: int, name: str = "0") -> int:
        """Open a track of ``sample_rate`` audio; returns its index."""
        window_seconds = self.detector.info.window_seconds
        self._pipes.append(TrackPipeline(sample_rate, self.settings, window_seconds=window_seconds))
        self.tracks.append(ScoredTrack(name))
        return len(self.tracks) - 1

    def push(self, index: int, samples: np.ndarray) -> None:
        """More audio (float32 mono) for track ``index``."""
        self._queue(index, self._pipes[index].push(samples))

    def finish(self, index: int) -> ScoredTrack:
        """End track ``index`` (its last partial window is cut); its scores arrive by
        :meth:`close`."""
        pipe = self._pipes[index]
        self._queue(index, pipe.finish())
        track = self.tracks[index]
        track.duration = pipe.duration_seconds
        track.speech_seconds = pipe.speech_seconds
        track.windows_skipped = pipe.windows_skipped
        return track

    def close(self) -> list[ScoredTrack]:
        """Score what is still queued; every track's windows, in call order."""
        self._batcher.stop()
        self._score_ready()
        return self.tracks

    def _queue(self, index: int, windows: list[Window]) -> None:
        for window in windows:
            self._batcher.push(window, index, now=0.0)
        self._score_ready()

    def _score_ready(self) -> None:
        while (batch := self._batcher.next_batch(0.0)) is not None:
            self._score(batch)

    def _score(self, batch: Batch) -> None:
        scores = score_windows(self.detector, batch.windows, max_batch=self.max_batch)
        for request, p_fake in zip(batch.fresh, scores, strict=True):
            self.tracks[request.ticket]._add(request.window, float(p_fake))


@dataclass
class ScoredFile:
    """:func:`score_file`'s answer."""

    sample_rate: int
    channels: int
    duration: float
    tracks: list[ScoredTrack]
    audio: np.ndarray | None  # the mono mix, when asked for (plots)


def score_file(
    path: str,
    detector: Any,
    settings: TrackSettings | None = None,
    *,
    mix: bool = False,
    max_batch: int = 16,
    keep_audio: bool = False,
) -> ScoredFile:
    """One audio file, block by block: a track per channel (``"0"``, ``"1"`` ...) or one for
    the mix-down (``"mix"``). Raises :class:`~streamguard.errors.AudioError` when the file
    cannot be decoded."""
    from streamguard.audio.file import open_audio

    scorer = OfflineScorer(detector, settings, max_batch=max_batch)
    with open_audio(path) as reader:
        names = ["mix"] if mix else [str(c) for c in range(reader.channels)]
        indices = [scorer.track(reader.sample_rate, name) for name in names]
        kept: list[np.ndarray] = []
        for block in reader.blocks():
            mono = block.mean(axis=0) if (mix or keep_audio) else None
            for i in indices:
                scorer.push(i, mono if mix else block[i])
            if keep_audio:
                kept.append(mono)
        for i in indices:
            scorer.finish(i)
        tracks = scorer.close()
        audio = (np.concatenate(kept) if kept else np.zeros(0, np.float32)) if keep_audio else None
        return ScoredFile(reader.sample_rate, reader.channels, tracks[0].duration, tracks, audio)
