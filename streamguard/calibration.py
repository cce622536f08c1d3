"""Choose the alert policy on the operator's own labelled calls (``streamguard calibrate``).

A pure core: labelled calls (each track's window scores, and the analysts' labels) and a
``replay`` callable in, a :class:`Calibration` out (the chosen ``[smoothing]``, its figures
and what it costs), plus :func:`toml_snippet`. It never scores audio and never reads the log:
``streamguard.labels.collect_labelled_calls`` gathers the calls from the event log, the
offline chain scores recordings, and both hand this module the same :class:`LabelledCall`.

**What is measured, per call** (the unit an operator is paged for):

* a *real* call (at least one track labelled ``real``, none ``fake``) is a **false alarm**
  when any of its real-labelled tracks raises an alert;
* a *fake* call (at least one track labelled ``fake``) is **caught** when any of its
  fake-labelled tracks raises an alert; the **detection delay** is the call time of the
  first such alert (the end of the window that raised it);
* ``unsure`` tracks, and calls with no other label, are left out.

**The search.** Smoothing mode and weight stay the operator's (``base``); for each
``raise_after`` in a small grid the on-threshold is found by bisection on the replayed calls:
whether a track ever alerts can only go down as the on-threshold goes up (a run of windows at
or above a higher bar is also one at or above a lower bar), so the false alarms and the
catches are monotone step functions of it. For each ``raise_after`` the lowest on-threshold
with at most ``max_false_alarms`` of the real calls alerting is found, then the highest that
still catches as many fake calls; the middle of that range is kept (the widest margin either
way on these calls). The best setting catches the most fake calls, then alerts soonest (median
delay), then needs the fewest windows.

**What may be promised.** With ``n`` real calls and none alerting, the one-sided 95% upper
bound of the false-alarm rate is ``1 - 0.05 ** (1 / n)`` (the "rule of three": about 3/n), so
claiming a rate ``r`` needs ``n >= ln(0.05) / ln(1 - r)`` real calls (299 for 1%). With fewer,
the setting is still chosen and reported, but :attr:`Calibration.promise` is None and
:attr:`Calibration.warning` says how many calls are needed. Intervals are exact
(Clopper-Pearson).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from streamguard.policy.replay import AlertPolicy, replay
from streamguard.policy.smoothing import AlertTransition, SmoothingSettings

__all__ = [
    "Calibration",
    "CallOutcome",
    "LabelledCall",
    "Outcome",
    "Replay",
    "TrackScores",
    "calibrate",
    "clopper_pearson",
    "evaluate_policy",
    "needed_real_calls",
    "smoother_replay",
    "toml_snippet",
    "upper_bound",
]

Label = Literal["fake", "real", "unsure"]


@dataclass(frozen=True)
class TrackScores:
    """One track's scored windows, in the order the daemon smoothed them (call seconds)."""

    starts: tuple[float, ...] = ()
    ends: tuple[float, ...] = ()
    scores: tuple[float, ...] = ()
    speech_seconds: float | None = None  # from call_ended, when known

    def __post_init__(self) -> None:
        if not len(self.starts) == len(self.ends) == len(self.scores):
            raise ValueError("starts, ends and scores must have one value per window")

    @classmethod
    def of(cls, windows: Sequence[tuple[float, float, float]], **kw: Any) -> TrackScores:
        """From ``(start, end, p_fake)`` triples."""
        starts, ends, scores = zip(*windows, strict=True) if windows else ((), (), ())
        return cls(tuple(starts), tuple(ends), tuple(scores), **kw)

    def windows(self) -> list[tuple[float, float, float]]:
        return list(zip(self.starts, self.ends, self.scores, strict=True))


@dataclass(frozen=True)
class LabelledCall:
    """A call's scored tracks and its labels, resolved per track (``labels[track]``)."""

    call_id: str
    tracks: Mapping[str, TrackScores]
    labels: Mapping[str, Label]

    @property
    def kind(self) -> Literal["fake", "real"] | None:
        """``fake`` if any track is labelled fake, else ``real`` if any is, else None."""
        values = set(self.labels.values())
        return "fake" if "fake" in values else "real" if "real" in values else None

    def judged_tracks(self) -> list[str]:
        """The tracks whose alerts count: the fake ones of a fake call, the real ones of a
        real call."""
        kind = self.kind
        return [t for t, label in self.labels.items() if label == kind and t in self.tracks]


#: ``replay(track, settings) -> (alerts, verdict)``: the daemon's alert policy over one
#: track's windows (alerts as :class:`AlertTransition`, in order). One code path with the
#: daemon and ``evaluate``: pass the policy module's replay (adapted to this shape).
Replay = Callable[[TrackScores, SmoothingSettings], tuple[Sequence[AlertTransition], str]]


def smoother_replay(track: TrackScores, settings: SmoothingSettings) -> tuple[list, str]:
    """The daemon's alert policy over one track: :func:`streamguard.policy.replay`, the one
    replay ``scan``, ``evaluate`` and the trainer use. ``settings.on_threshold`` must be set;
    calibration judges alerts, so the verdict's speech minimum is not applied."""
    if settings.on_threshold is None:
        raise ValueError("calibration replays explicit on-thresholds")
    policy = AlertPolicy(settings.on_threshold, settings, min_speech_seconds=0.0)
    alerts, verdict = replay(
        track.scores,
        policy,
        speech_seconds=track.speech_seconds or 0.0,
        spans=list(zip(track.starts, track.ends, strict=True)),
    )
    return alerts, verdict if track.scores else "inconclusive"


# ------------------------------------------------------------------------ statistics


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided interval for a rate of ``k`` in ``n`` (``(0, 1)`` when ``n`` is 0)."""
    from scipy.stats import beta

    if n == 0:
        return 0.0, 1.0
    tail = (1 - confidence) / 2
    low = 0.0 if k == 0 else float(beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - tail, k + 1, n - k))
    return low, high


def upper_bound(k: int, n: int, confidence: float = 0.95) -> float:
    """Exact one-sided upper bound of a rate of ``k`` in ``n``: what may be claimed."""
    from scipy.stats import beta

    if n == 0 or k >= n:
        return 1.0
    return float(beta.ppf(confidence, k + 1, n - k))


def needed_real_calls(rate: float, confidence: float = 0.95) -> int:
    """Real calls, none alerting, needed to claim a false-alarm rate of at most ``rate``:
    the least ``n`` with ``(1 - rate) ** n <= 1 - confidence``."""
    if not 0 < rate < 1:
        raise ValueError(f"rate must be between 0 and 1, got {rate}")
    n = math.ceil(math.log(1 - confidence) / math.log(1 - rate))
    while upper_bound(0, n, confidence) > rate:  # guard against rounding at the boundary
        n += 1
    return n


# ------------------------------------------------------------------------ evaluation


@dataclass(frozen=True)
class CallOutcome:
    call_id: str
    kind: Literal["fake", "real"]
    alerted: bool
    first_alert: float | None  # call seconds (end of the window that raised it)


@dataclass(frozen=True)
class Outcome:
    """A policy's figures on the labelled calls."""

    settings: SmoothingSettings
    n_real: int
    false_alarms: int
    n_fake: int
    caught: int
    delays: tuple[float, ...]
    calls: tuple[CallOutcome, ...] = field(repr=False)
    confidence: float = 0.95

    @property
    def false_alarm_rate(self) -> float | None:
        return self.false_alarms / self.n_real if self.n_real else None

    @property
    def catch_rate(self) -> float | None:
        return self.caught / self.n_fake if self.n_fake else None

    @property
    def false_alarm_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.false_alarms, self.n_real, self.confidence)

    @property
    def catch_interval(self) -> tuple[float, float]:
        return clopper_pearson(self.caught, self.n_fake, self.confidence)

    @property
    def delay_median(self) -> float | None:
        return _quantile(self.delays, 0.5)

    @property
    def delay_p90(self) -> float | None:
        return _quantile(self.delays, 0.9)

    def to_dict(self) -> dict[str, Any]:
        return {
            "smoothing": self.settings.model_dump(exclude_none=True),
            "real_calls": self.n_real,
            "false_alarms": self.false_alarms,
            "false_alarm_rate": self.false_alarm_rate,
            "false_alarm_interval": list(self.false_alarm_interval),
            "fake_calls": self.n_fake,
            "caught": self.caught,
            "catch_rate": self.catch_rate,
            "catch_interval": list(self.catch_interval),
            "delay_median_s": self.delay_median,
            "delay_p90_s": self.delay_p90,
        }


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    import numpy as np

    return float(np.quantile(np.asarray(values, dtype=float), q))


def evaluate_policy(
    calls: Sequence[LabelledCall],
    settings: SmoothingSettings,
    *,
    replay: Replay = smoother_replay,
    confidence: float = 0.95,
) -> Outcome:
    """Replay every judged track of every labelled call under ``settings``."""
    outcomes = []
    for call in calls:
        kind = call.kind
        if kind is None:
            continue
        first: float | None = None
        for name in call.judged_tracks():
            alerts, _ = replay(call.tracks[name], settings)
            raised = [a.end for a in alerts if a.state == "raised"]
            if raised and (first is None or raised[0] < first):
                first = raised[0]
        outcomes.append(CallOutcome(call.call_id, kind, first is not None, first))
    real = [o for o in outcomes if o.kind == "real"]
    fake = [o for o in outcomes if o.kind == "fake"]
    return Outcome(
        settings=settings,
        n_real=len(real),
        false_alarms=sum(o.alerted for o in real),
        n_fake=len(fake),
        caught=sum(o.alerted for o in fake),
        delays=tuple(o.first_alert for o in fake if o.first_alert is not None),
        calls=tuple(outcomes),
        confidence=confidence,
    )


# ------------------------------------------------------------------------ the search


@dataclass(frozen=True)
class Calibration:
    """The chosen setting, the current one, and what may be claimed."""

    chosen: Outcome
    current: Outcome
    max_false_alarms: float
    threshold_range: tuple[float, float]  # any on-threshold in it gives the same figures
    needed_real_calls: int
    promise: float | None  # the false-alarm rate that may be claimed (its upper bound), or None
    warning: str | None
    candidates: tuple[Outcome, ...] = field(repr=False, default=())

    @property
    def catches_lost(self) -> int:
        """Fake calls the current setting catches and the chosen one does not."""
        now = {o.call_id for o in self.current.calls if o.kind == "fake" and o.alerted}
        then = {o.call_id for o in self.chosen.calls if o.kind == "fake" and o.alerted}
        return len(now - then)

    @property
    def false_alarms_silenced(self) -> int:
        now = {o.call_id for o in self.current.calls if o.kind == "real" and o.alerted}
        then = {o.call_id for o in self.chosen.calls if o.kind == "real" and o.alerted}
        return len(now - then)

    def to_dict(self) -> dict[str, Any]:
        return {
            "max_false_alarms": self.max_false_alarms,
            "chosen": self.chosen.to_dict(),
            "current": self.current.to_dict(),
            "on_threshold_range": list(self.threshold_range),
            "catches_lost": self.catches_lost,
            "false_alarms_silenced": self.false_alarms_silenced,
            "needed_real_calls": self.needed_real_calls,
            "promise": self.promise,
            "warning": self.warning,
        }


class CalibrationError(ValueError):
    """Nothing to calibrate on (no labelled real calls), or no setting can meet the target."""


#: The ``raise_after`` values searched: 1 to 6 windows (1 to 6 s more audio at the 1 s hop).
RAISE_AFTER_GRID = (1, 2, 3, 4, 5, 6)
#: Resolution of the on-threshold search (events round probabilities to 4 decimals).
_STEP = 1e-4


def _with(base: SmoothingSettings, on: float, raise_after: int) -> SmoothingSettings:
    on = round(min(max(on, 0.0), 1.0), 4)
    off = None if base.off_threshold is None else min(base.off_threshold, on)
    return base.model_copy(
        update={"on_threshold": on, "off_threshold": off, "raise_after": raise_after}
    )


def calibrate(
    calls: Sequence[LabelledCall],
    *,
    base: SmoothingSettings,
    model_threshold: float,
    max_false_alarms: float,
    replay: Replay = smoother_replay,
    raise_after: Sequence[int] = RAISE_AFTER_GRID,
    confidence: float = 0.95,
) -> Calibration:
    """Choose ``on_threshold`` and ``raise_after`` (module docstring); ``base`` keeps the rest
    (mode, weight, margin, clear_after), ``model_threshold`` is the on-threshold ``base``
    means when it sets none."""
    if not 0 <= max_false_alarms < 1:
        raise CalibrationError(f"max_false_alarms must be in [0, 1), got {max_false_alarms}")
    current_on = base.on_threshold if base.on_threshold is not None else model_threshold
    current = evaluate_policy(
        calls, _with(base, current_on, base.raise_after), replay=replay, confidence=confidence
    )
    if current.n_real == 0:
        raise CalibrationError(
            "no labelled real calls: label some calls real (streamguard label CALL_ID real) "
            "so there is a false-alarm rate to hold"
        )
    allowed = math.floor(max_false_alarms * current.n_real + 1e-9)

    real = [c for c in calls if c.kind == "real"]
    fake = [c for c in calls if c.kind == "fake"]

    def run(on: float, k: int, subset: Sequence[LabelledCall] = calls) -> Outcome:
        settings = _with(base, on, k)
        return evaluate_policy(subset, settings, replay=replay, confidence=confidence)

    found: list[tuple[Outcome, tuple[float, float]]] = []
    for k in raise_after:
        lo = _first_step(lambda i, k=k: run(i * _STEP, k, real).false_alarms <= allowed)
        if lo is None:
            continue  # even on = 1.0 alerts on too many real calls
        caught = run(lo * _STEP, k, fake).caught
        # the highest on that still catches as many: catches only fall as on rises
        top = _last_step(lambda i, k=k, c=caught: run(i * _STEP, k, fake).caught >= c, lo)
        mid = round((lo + top) / 2) if caught else lo  # nothing caught: the least strict
        found.append((run(mid * _STEP, k), (round(lo * _STEP, 4), round(top * _STEP, 4))))
    if not found:
        raise CalibrationError(
            f"no setting keeps false alarms at or below {max_false_alarms:.2%} of "
            f"{current.n_real} real calls: the model scores them too high"
        )

    def rank(item: tuple[Outcome, tuple[float, float]]) -> tuple:
        o = item[0]
        delay = o.delay_median if o.delay_median is not None else math.inf
        return (-o.caught, o.false_alarms, delay, o.settings.raise_after)

    chosen, span = min(found, key=rank)
    needed = needed_real_calls(max_false_alarms, confidence) if max_false_alarms > 0 else 0
    bound = upper_bound(chosen.false_alarms, chosen.n_real, confidence)
    promise: float | None = None
    warning: str | None = None
    if max_false_alarms == 0:
        warning = (
            "a false-alarm rate of 0 can never be promised: the chosen setting silences every "
            f"labelled false alarm; the {confidence:.0%} upper bound on these "
            f"{chosen.n_real} real calls is {bound:.1%}"
        )
    elif chosen.n_real < needed:
        warning = (
            f"too few labelled real calls to promise a false-alarm rate of at most "
            f"{max_false_alarms:.2%}: that needs at least {needed} real calls with no false "
            f"alarm ({confidence:.0%} confidence), there are {chosen.n_real}; on these calls "
            f"the rate is at most {bound:.1%}"
        )
    elif bound > max_false_alarms:
        warning = (
            f"{chosen.false_alarms} false alarms in {chosen.n_real} real calls: the "
            f"{confidence:.0%} upper bound {bound:.2%} is above {max_false_alarms:.2%}; "
            "label more real calls before relying on it"
        )
    else:
        promise = bound
    return Calibration(
        chosen=chosen,
        current=current,
        max_false_alarms=max_false_alarms,
        threshold_range=span,
        needed_real_calls=needed,
        promise=promise,
        warning=warning,
        candidates=tuple(o for o, _ in found),
    )


_STEPS = round(1 / _STEP)


def _first_step(ok: Callable[[int], bool]) -> int | None:
    """The least ``i`` in ``[0, 1/_STEP]`` with ``ok(i)``, for ``ok`` false then true."""
    if not ok(_STEPS):
        return None
    lo, hi = -1, _STEPS  # ok(hi) holds; ok(lo) is taken as false
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _last_step(ok: Callable[[int], bool], start: int) -> int:
    """The greatest ``i`` in ``[start, 1/_STEP]`` with ``ok(i)``, for ``ok`` true then false
    (``ok(start)`` holds)."""
    lo, hi = start, _STEPS + 1
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            lo = mid
        else:
            hi = mid
    return lo


# ------------------------------------------------------------------------ output


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value)


def toml_snippet(result: Calibration, *, source: str = "") -> str:
    """``[smoothing]`` as the daemon's config reads it (paste into the config, or
    ``--write`` it), with the figures it was chosen on as comments."""
    c, now = result.chosen, result.current
    lo, hi = c.false_alarm_interval
    lines = [
        f"# streamguard calibrate{f' ({source})' if source else ''}: "
        f"{c.n_real} real and {c.n_fake} fake labelled calls",
        f"# false alarms: {c.false_alarms} of {c.n_real} real calls "
        f"(95% interval {lo:.1%} to {hi:.1%}); now {now.false_alarms}",
    ]
    if c.n_fake:
        clo, chi = c.catch_interval
        lines.append(
            f"# caught: {c.caught} of {c.n_fake} fake calls (95% interval {clo:.1%} to "
            f"{chi:.1%}); now {now.caught}; median delay "
            + (f"{c.delay_median:.1f} s" if c.delay_median is not None else "n/a")
        )
    if result.promise is not None:
        lines.append(
            f"# promise: false-alarm rate at most {result.promise:.2%} "
            f"(target {result.max_false_alarms:.2%})"
        )
    if result.warning:
        lines.append(f"# NOT A PROMISE: {result.warning}")
    lines.append("[smoothing]")
    for key, value in c.settings.model_dump(exclude_none=True).items():
        lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
