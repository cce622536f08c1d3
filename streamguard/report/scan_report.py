"""What ``streamguard scan`` found in one file: data classes, the JSON line, the text table.

The JSON field names are a stable interface (documented in docs/scan.md, "`--json` fields"); add
fields, never rename or remove them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from streamguard.policy.verdict import Verdict, format_threshold

__all__ = ["FileReport", "TrackReport", "WindowScore", "file_verdict"]


@dataclass(frozen=True)
class WindowScore:
    """One scored window: call seconds ``[start, end)``, VAD speech fraction, P(fake)."""

    start: float
    end: float
    speech_ratio: float
    p_fake: float

    def to_dict(self) -> dict[str, float]:
        return {
            "start": round(self.start, 3),
            "end": round(self.end, 3),
            "speech_ratio": round(self.speech_ratio, 3),
            "p_fake": round(self.p_fake, 6),
        }


@dataclass
class TrackReport:
    """One track (a channel, or ``"mix"``) of a scanned file."""

    track: str
    windows: list[WindowScore] = field(default_factory=list)
    windows_skipped: int = 0
    speech_seconds: float = 0.0
    duration: float = 0.0
    verdict: Verdict = "inconclusive"

    @property
    def mean_p_fake(self) -> float | None:
        if not self.windows:
            return None
        return math.fsum(w.p_fake for w in self.windows) / len(self.windows)

    @property
    def max_p_fake(self) -> float | None:
        return max((w.p_fake for w in self.windows), default=None)

    def to_dict(self) -> dict[str, Any]:
        mean, top = self.mean_p_fake, self.max_p_fake
        return {
            "track": self.track,
            "duration": round(self.duration, 3),
            "speech_seconds": round(self.speech_seconds, 3),
            "windows": [w.to_dict() for w in self.windows],
            "windows_scored": len(self.windows),
            "windows_skipped": self.windows_skipped,
            "mean_p_fake": None if mean is None else round(mean, 6),
            "max_p_fake": None if top is None else round(top, 6),
            "verdict": self.verdict,
        }


def file_verdict(tracks: list[TrackReport]) -> Verdict:
    """A file is ``fake`` if any track is (one synthetic voice on a call is enough), else
    ``real`` if any track is, else ``inconclusive``."""
    verdicts = {t.verdict for t in tracks}
    if "fake" in verdicts:
        return "fake"
    if "real" in verdicts:
        return "real"
    return "inconclusive"


@dataclass
class FileReport:
    """Everything ``scan`` reports about one file."""

    file: str
    sample_rate: int
    channels: int
    duration: float
    model: str
    threshold: float
    min_speech_seconds: float
    tracks: list[TrackReport] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        return file_verdict(self.tracks)

    @property
    def speech_seconds(self) -> float:
        return max((t.speech_seconds for t in self.tracks), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "model": self.model,
            "threshold": self.threshold,
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "duration": round(self.duration, 3),
            "verdict": self.verdict,
            "tracks": [t.to_dict() for t in self.tracks],
        }

    def warning(self) -> str | None:
        """One line for stderr when the file could not be judged, else None."""
        if self.verdict != "inconclusive":
            return None
        speech = self.speech_seconds
        if speech == 0:
            return f"{self.file}: no speech found; verdict inconclusive"
        return (
            f"{self.file}: only {speech:.2f} s of speech (need {self.min_speech_seconds:g} s "
            f"on a track); verdict inconclusive"
        )

    def format_text(self) -> str:
        """The readable table: one row per scored window, a verdict line per track and file."""
        ch = "channel" if self.channels == 1 else "channels"
        lines = [
            f"{self.file}  ({self.sample_rate} Hz, {self.channels} {ch}, {self.duration:.2f} s; "
            f"model {self.model}, threshold {format_threshold(self.threshold)})",
            f"  {'track':>5}  {'start':>7}  {'end':>7}  {'speech':>6}  {'p_fake':>7}",
        ]
        for t in self.tracks:
            for w in t.windows:
                flag = "  *" if w.p_fake >= self.threshold else ""
                lines.append(
                    f"  {t.track:>5}  {w.start:7.2f}  {w.end:7.2f}  {w.speech_ratio:6.2f}  "
                    f"{w.p_fake:7.4f}{flag}"
                )
        for t in self.tracks:
            if t.windows:
                stats = f"mean p_fake {t.mean_p_fake:.4f}, max {t.max_p_fake:.4f}; "
            else:
                stats = ""
            lines.append(
                f"  track {t.track}: {t.verdict.upper()}  ({stats}windows scored {len(t.windows)},"
                f" skipped {t.windows_skipped}; speech {t.speech_seconds:.2f} s of "
                f"{t.duration:.2f} s)"
            )
        lines.append(f"verdict: {self.verdict.upper()}  {self.file}")
        return "\n".join(lines)
