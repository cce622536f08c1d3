"""``replay(scores, policy)``: recorded window scores through the live alert policy.

Owns the one offline replay of the alert rule. ``scan``, ``evaluate``, the trainer's policy
calibration and its reports call it; the daemon's call session pushes the same
:class:`~streamguard.policy.smoothing.Smoother` one window at a time as scores come back, and
asks it for the same verdict. So a recorded call and the live call of the same audio get the
same alerts and the same verdict: there is no second implementation to drift.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from streamguard.policy.smoothing import AlertTransition, Smoother, SmoothingSettings
from streamguard.policy.verdict import DEFAULT_MIN_SPEECH_SECONDS, Verdict

__all__ = ["AlertPolicy", "replay"]


@dataclass(frozen=True)
class AlertPolicy:
    """Everything that turns a track's scores into alerts and a verdict: the ``[smoothing]``
    rule, the model's threshold it is relative to, and ``[verdict] min_speech_seconds``."""

    threshold: float
    smoothing: SmoothingSettings = field(default_factory=SmoothingSettings)
    min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS

    def smoother(self) -> Smoother:
        """A fresh per-track smoother under this policy (the daemon's, and the replay's)."""
        return Smoother(self.smoothing, self.threshold)


def replay(
    scores: Sequence[float],
    policy: AlertPolicy,
    *,
    speech_seconds: float,
    spans: Sequence[tuple[float, float]] | None = None,
) -> tuple[list[AlertTransition], Verdict]:
    """The alerts and the verdict a live track with these window scores would have given.

    ``spans``: each window's ``(start, end)`` in call seconds (default: window ``i`` spans
    ``i`` to ``i + 1``), which the alerts report. A NaN score (a window that was not scored)
    is skipped, as the daemon skips a window the engine gave back unscored.
    """
    smoother = policy.smoother()
    alerts: list[AlertTransition] = []
    for i, p in enumerate(scores):
        value = float(p)
        if math.isnan(value):
            continue
        start, end = spans[i] if spans is not None else (float(i), float(i + 1))
        _, transition = smoother.push(value, float(start), float(end))
        if transition is not None:
            alerts.append(transition)
    return alerts, smoother.verdict(speech_seconds, policy.min_speech_seconds)
