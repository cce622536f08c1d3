"""Per-track smoothing and alert hysteresis: a pure core (no clocks, no I/O).

Owns the alert rule and its settings (``[smoothing]``). One :class:`Smoother` per track: the
daemon's call session pushes each scored window into it, in order, and publishes a ``score``
event (and an ``alert`` event when a transition comes back); :func:`streamguard.policy.replay`
pushes recorded scores through the same object for ``scan``, ``evaluate`` and the trainer.

The rule (documented in the README, "Smoothing and alerts"):

* ``smoothed`` is either an exponential moving average,
  ``s_1 = p_1``, ``s_t = alpha * p_t + (1 - alpha) * s_{t-1}`` (``mode = "ema"``), or the mean of
  the last ``mean_windows`` raw scores (``mode = "mean"``; fewer at the start of a track).
* ``on = on_threshold`` (default: the model's threshold); ``off = off_threshold`` (default:
  ``on - margin`` clamped to ``[0, on]``). ``off <= on`` always.
* While clear, an alert is **raised** on the window that makes ``raise_after`` consecutive
  windows with ``smoothed >= on`` (equal counts). While raised, it is **cleared** on the window
  that makes ``clear_after`` consecutive windows with ``smoothed < off`` (equal does not count).
  A window that breaks a run resets that run's counter to zero. A track starts clear.

Why hysteresis: a single window's P(fake) is noisy; one-window spikes must not page anyone, and
a score hovering around the threshold must not flap raised/cleared every second. The gap
between ``on`` and ``off`` plus the consecutive-window counts bound the alert rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamguard.policy.verdict import DEFAULT_MIN_SPEECH_SECONDS, Verdict, policy_verdict

AlertState = Literal["raised", "cleared"]


class SmoothingSettings(BaseModel):
    """``[smoothing]`` in the config (reloadable on SIGHUP)."""

    model_config = ConfigDict(extra="forbid")

    mode: Literal["ema", "mean"] = "ema"
    ema_alpha: float = Field(0.7, gt=0, le=1, description="weight of the newest window (ema)")
    mean_windows: int = Field(3, ge=1, description="windows averaged (mean)")
    on_threshold: float | None = Field(None, ge=0, le=1, description="None = model threshold")
    off_threshold: float | None = Field(None, ge=0, le=1, description="None = on - margin")
    margin: float = Field(0.1, ge=0, le=1, description="default gap between on and off")
    raise_after: int = Field(
        3, ge=1, description="consecutive windows >= on to raise (3 = ~6 s of call audio)"
    )
    clear_after: int = Field(2, ge=1, description="consecutive windows < off to clear")

    @model_validator(mode="after")
    def _off_below_on(self) -> SmoothingSettings:
        if (
            self.on_threshold is not None
            and self.off_threshold is not None
            and self.off_threshold > self.on_threshold
        ):
            raise ValueError(
                f"off_threshold ({self.off_threshold}) must not exceed on_threshold "
                f"({self.on_threshold})"
            )
        return self

    def thresholds(self, model_threshold: float) -> tuple[float, float]:
        """``(on, off)`` for a model whose own threshold is ``model_threshold``."""
        on = self.on_threshold if self.on_threshold is not None else model_threshold
        if self.off_threshold is not None:
            off = min(self.off_threshold, on)
        else:
            off = min(max(on - self.margin, 0.0), on)
        return on, off


@dataclass(frozen=True)
class AlertTransition:
    """An alert state change; the fields of the ``alert`` event."""

    state: AlertState
    smoothed: float
    threshold: float  # on for "raised", off for "cleared"
    start: float  # start of the first window of the run that triggered it
    end: float  # end of the window that completed the run


@dataclass(frozen=True)
class SmootherStats:
    windows: int
    max_smoothed: float | None
    mean_smoothed: float | None
    alerts_raised: int


class Smoother:
    """Smooths one track's window scores and decides alert transitions.

    Also keeps the raw scores (one float per hop; bounded by ``[limits] max_call_seconds``); the
    call's verdict is derived from this smoother's alerts, as ``scan``'s is.
    """

    def __init__(self, settings: SmoothingSettings, threshold: float):
        self.settings = settings
        self.on, self.off = settings.thresholds(threshold)
        self.raised = False
        self.scores: list[float] = []  # raw p_fake, in order
        self._ema: float | None = None
        self._recent: deque[float] = deque(maxlen=settings.mean_windows)
        self._run = 0  # length of the current run towards the *other* state
        self._run_start = 0.0
        self._max: float | None = None
        self._sum = 0.0
        self._alerts_raised = 0

    def reconfigure(self, settings: SmoothingSettings, threshold: float) -> None:
        """Apply new settings mid-track (SIGHUP): state, EMA value and recent scores are kept.

        The alert state does not jump: a raised alert stays raised until the new rule clears
        it; a run in progress keeps its length and is judged against the new counts.
        """
        self.settings = settings
        self.on, self.off = settings.thresholds(threshold)
        self._recent = deque(self._recent, maxlen=settings.mean_windows)

    def _smooth(self, p_fake: float) -> float:
        if self.settings.mode == "ema":
            a = self.settings.ema_alpha
            self._ema = p_fake if self._ema is None else a * p_fake + (1 - a) * self._ema
            return self._ema
        self._recent.append(p_fake)
        return sum(self._recent) / len(self._recent)

    def push(self, p_fake: float, start: float, end: float) -> tuple[float, AlertTransition | None]:
        """Feed one scored window; returns ``(smoothed, transition or None)``."""
        p_fake = float(p_fake)
        smoothed = self._smooth(p_fake)
        self.scores.append(p_fake)
        self._sum += smoothed
        self._max = smoothed if self._max is None else max(self._max, smoothed)

        toward_other = smoothed < self.off if self.raised else smoothed >= self.on
        if not toward_other:
            self._run = 0
            return smoothed, None
        if self._run == 0:
            self._run_start = start
        self._run += 1
        needed = self.settings.clear_after if self.raised else self.settings.raise_after
        if self._run < needed:
            return smoothed, None
        self.raised = not self.raised
        self._run = 0
        if self.raised:
            self._alerts_raised += 1
        return smoothed, AlertTransition(
            state="raised" if self.raised else "cleared",
            smoothed=smoothed,
            threshold=self.on if self.raised else self.off,
            start=self._run_start,
            end=end,
        )

    def stats(self) -> SmootherStats:
        n = len(self.scores)
        return SmootherStats(
            windows=n,
            max_smoothed=self._max,
            mean_smoothed=self._sum / n if n else None,
            alerts_raised=self._alerts_raised,
        )

    def verdict(
        self, speech_seconds: float, min_speech_seconds: float = DEFAULT_MIN_SPEECH_SECONDS
    ) -> Verdict:
        """The track's verdict from its alert history
        (:func:`~streamguard.policy.verdict.policy_verdict`): ``fake`` exactly when this track
        raised an alert, so the ``call_ended`` summary and the alerts tell one story."""
        stats = self.stats()
        return policy_verdict(
            stats.alerts_raised,
            stats.windows,
            speech_seconds,
            min_speech_seconds=min_speech_seconds,
        )
