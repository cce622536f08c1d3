"""What the scoring engine hands back for one window: a P(fake), or why there is none.

Two kinds of "no score" mean different things to an operator, so they are kept apart all the
way to the ``call_ended`` summary and the metrics:

* **dropped** (``lag``, ``queue``): the engine could not get to the window in time. Capacity.
* **failed** (``error``, ``nonfinite``, ``out_of_range``): the model ran and gave no usable
  number, even when the window was retried alone. A broken model, a bad window or a GPU fault.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

__all__ = [
    "DROP_REASONS",
    "FAIL_REASONS",
    "Allowlisted",
    "BatchTiming",
    "ScoreOutcome",
    "TimedCallback",
    "Unscored",
    "UnscoredReason",
    "stamp_timing",
]

UnscoredReason: TypeAlias = Literal["lag", "queue", "error", "nonfinite", "out_of_range"]
DROP_REASONS: frozenset[str] = frozenset({"lag", "queue"})
FAIL_REASONS: frozenset[str] = frozenset({"error", "nonfinite", "out_of_range"})


@dataclass(frozen=True, slots=True)
class Unscored:
    """A window given back without a score, and why."""

    reason: UnscoredReason

    @property
    def failed(self) -> bool:
        """True when the model failed on it; False when it was dropped for capacity."""
        return self.reason in FAIL_REASONS


@dataclass(frozen=True, slots=True)
class Allowlisted:
    """A scored window whose speaker is an enrolled voice of the allow-list (the operator's
    own IVR or voicemail TTS): reported, never fed to the alert policy."""

    p_fake: float
    voice: str
    similarity: float


#: A window's result: P(fake) in [0, 1], :class:`Allowlisted`, or :class:`Unscored`.
ScoreOutcome: TypeAlias = float | Allowlisted | Unscored


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """How a scored window went through the engine (for traces, streamguard/telemetry.py)."""

    queue_wait: float  # seconds from submit until its batch was taken
    batch_size: int  # windows scored in that batch
    inference_seconds: float  # the batch's inference time


class TimedCallback:
    """A score callback that also wants its window's :class:`BatchTiming`: the engine sets
    ``timing`` before it calls it (still None for a window dropped before inference). Plain
    callbacks, the default, cost the engine one ``isinstance`` per window."""

    __slots__ = ("timing",)

    def __init__(self) -> None:
        self.timing: BatchTiming | None = None

    def __call__(self, outcome: ScoreOutcome) -> None:
        raise NotImplementedError


def stamp_timing(
    requests: Sequence[tuple[Any, float]], taken: float, inference_seconds: float
) -> None:
    """Give each :class:`TimedCallback` of a batch its timing: ``requests`` are the batch's
    ``(callback, enqueued)`` pairs (monotonic submit time); ``taken`` is when the batch was
    formed."""
    for callback, enqueued in requests:
        if isinstance(callback, TimedCallback):
            callback.timing = BatchTiming(taken - enqueued, len(requests), inference_seconds)
