"""One verdict per track, shared by ``streamguard scan`` and the daemon's ``call_ended`` event.

The rule (also in the README, "Verdicts"):

1. **inconclusive** when no window was scored, or when the track held less than
   ``min_speech_seconds`` (default 2 s) of VAD speech: too little voice to judge.
2. otherwise **fake** when the *mean* window score is >= ``threshold`` (the model's threshold),
3. else **real**.

Why the mean and not the max: one odd window (a cough, a codec glitch) should not brand a whole
call as synthetic; the live daemon's smoothed alerts exist for "somewhere in this call". Both
callers pass the raw window P(fake): ``scan`` per file track, the daemon per call track
(``Smoother.summary``), so a recorded call and the live call get the same verdict.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

__all__ = ["DEFAULT_MIN_SPEECH_SECONDS", "Verdict", "decide_verdict"]

Verdict = Literal["fake", "real", "inconclusive"]

DEFAULT_MIN_SPEECH_SECONDS = 2.0


def decide_verdict(
    scores: Sequence[float],
    threshold: float,
    speech_seconds: float,
    *,
    min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS,
) -> Verdict:
    """``"fake"`` | ``"real"`` | ``"inconclusive"`` by the rule in the module docstring.

    NaN scores are ignored (a window that could not be scored); if nothing else is left the
    verdict is inconclusive.
    """
    values = [float(s) for s in scores if not math.isnan(float(s))]
    if not values or speech_seconds < min_speech_seconds:
        return "inconclusive"
    mean = math.fsum(values) / len(values)
    return "fake" if mean >= threshold else "real"
