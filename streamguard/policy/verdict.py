"""The verdict rule: one verdict per track, shared by ``streamguard scan``, ``streamguard
evaluate``, the trainer and the daemon's ``call_ended`` event, and derived from the **same
policy as the alerts**. Also owns how a threshold is shown (:func:`format_threshold`).

The rule (also in the README, "Verdicts"):

1. **inconclusive** when no window was scored, or when the track held less than
   ``min_speech_seconds`` (default 2 s) of VAD speech: too little voice to judge.
2. otherwise **fake** when the alert policy (:class:`streamguard.policy.smoothing.Smoother`:
   smoothing, on-threshold, ``raise_after`` consecutive windows) raised an alert at least once
   on the track,
3. else **real**.

Why: an operator must never see alerts on a call whose verdict then says "real", nor a "fake"
verdict on a call that never alerted. (Before, the verdict compared the *mean* raw score with
the threshold while alerts used smoothed runs: a real call could raise two alerts and end
"real".) One odd window still cannot brand a call: the policy needs sustained evidence.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "DEFAULT_MIN_SPEECH_SECONDS",
    "THRESHOLD_DIGITS",
    "Verdict",
    "VerdictSettings",
    "format_threshold",
    "policy_verdict",
]

Verdict = Literal["fake", "real", "inconclusive"]

DEFAULT_MIN_SPEECH_SECONDS = 2.0

#: How many decimals a threshold is shown with, everywhere people read one: ``watch``/``demo``
#: alert lines, ``model info``, ``scan`` reports and plots, the trainer's reports and the
#: dashboard (``THRESHOLD_DIGITS`` in dashboard/static/chart.js). 0.8949 shows as 0.895 in
#: each, never 0.89 in one place and 0.8949 in another. JSON output keeps the full value.
THRESHOLD_DIGITS = 3


def format_threshold(value: float) -> str:
    """A P(fake) threshold as people see it (:data:`THRESHOLD_DIGITS` decimals)."""
    return f"{value:.{THRESHOLD_DIGITS}f}"


def policy_verdict(
    alerts_raised: int,
    windows_scored: int,
    speech_seconds: float,
    *,
    min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS,
) -> Verdict:
    """The track's verdict from its alert history (the rule in the module docstring)."""
    if windows_scored == 0 or speech_seconds < min_speech_seconds:
        return "inconclusive"
    return "fake" if alerts_raised > 0 else "real"


class VerdictSettings(BaseModel):
    """``[verdict]`` in the config (reloadable on SIGHUP)."""

    model_config = ConfigDict(extra="forbid")

    min_speech_seconds: float = Field(DEFAULT_MIN_SPEECH_SECONDS, ge=0)
