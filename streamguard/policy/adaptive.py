"""Adaptive scoring: score a confidently real track every few hops, not every hop.

Why: on a screening line most voices are real, and once a track has scored well below the
threshold twice in a row another window one second later rarely says anything new. Skipping
``stride - 1`` windows out of ``stride`` while that holds frees the engine for other tracks
(``[track] adaptive_stride``; 1 = off, every window scored). As soon as a score rises (by
:data:`RISE` or more over the previous one) or reaches ``below``, the track is scored every hop
again, before the window after it. The cost is detection delay when a real voice turns into a
synthetic one mid-call: at most ``stride - 1`` hops; a call that is synthetic from its first
window is never thinned (its scores are high from the start). benchmarks/README.md has the
measured gain and delay.

A pure per-track object: :meth:`take` for each regular window (True = score it),
:meth:`observe` for each score that comes back. The final window of a track is always scored.
"""

from __future__ import annotations

__all__ = ["RISE", "ScoreThinner"]

#: A score this much above the previous one ends thinning at once.
RISE = 0.1
#: Consecutive calm scores before windows are skipped.
CALM_SCORES = 2


class ScoreThinner:
    """Which of a track's windows to score (see the module docstring)."""

    def __init__(self, stride: int = 1, below: float = 0.25) -> None:
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.stride = stride
        self.below = below
        self.thinned = 0  # windows not scored because the track was calm
        self._skip = 0
        self._calm = 0
        self._last: float | None = None

    @property
    def active(self) -> bool:
        """Whether windows are being skipped right now."""
        return self._skip > 0

    def take(self) -> bool:
        """One regular window is ready: True to score it, False to skip it."""
        if self._skip > 0:
            self._skip -= 1
            self.thinned += 1
            return False
        return True

    def observe(self, p_fake: float) -> None:
        """A score came back for this track."""
        rising = self._last is not None and p_fake >= self._last + RISE
        self._last = p_fake
        if p_fake >= self.below or rising:
            self._calm = 0
            self._skip = 0  # every hop again, from the next window on
            return
        self._calm += 1
        if self._calm >= CALM_SCORES:
            self._skip = self.stride - 1
