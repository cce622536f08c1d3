"""Which audio of one track to keep as evidence: a pure core (no files, no clocks).

One :class:`TrackRecorder` per recorded track. The wiring feeds it the track's audio as it
arrives (:meth:`~TrackRecorder.push`, :meth:`~TrackRecorder.push_silence`: the same samples
and gaps the track's scoring chain gets) and the track's alert transitions
(:meth:`~TrackRecorder.raised` with the ``alert`` event's ``start``,
:meth:`~TrackRecorder.cleared` with its ``end``), and the end of the track
(:meth:`~TrackRecorder.finish`). Each call returns clip operations, :class:`OpenClip`,
:class:`WriteClip` and :class:`CloseClip`, which :class:`streamguard.evidence.store.
EvidenceStore` turns into files. Audio is written as it comes, so no clip is ever held whole
in memory (``keep = "all"`` of a four-hour call included).

The rule for ``keep = "alerts"`` (docs/operations.md, "Evidence audio"): a clip runs from
``context`` seconds before the first window of the run that raised the alert to ``context``
seconds after the window that cleared it (or to the end of the track), and alerts whose spans
overlap or touch share one clip.

Why a look-back buffer: an alert is raised only once ``raise_after`` windows, each a model
window long, were scored, seconds after their audio arrived; the clip must start before the
first of them. So the recorder keeps the last ``lookback_seconds`` of audio
(:func:`lookback_seconds` sizes it from the window, the run, the engine's lag bound and the
context). For the same reason a cleared clip is closed only once no later alert could reach
back into it: ``lookback`` after its end. A raise that reaches further back than the buffer
holds starts its clip at the oldest audio still held (an engine lagging beyond
``max_lag_seconds`` drops its windows anyway).

Times are sample indices of the recorded stream (the track's own rate, or the rate it is
resampled to), counted from the track's first sample: the call time of events, at ``rate``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from streamguard.audio.pcm import float_to_int16
from streamguard.audio.resample import StreamResampler
from streamguard.audio.ringbuffer import RingBuffer

__all__ = [
    "CONTEXT_SECONDS",
    "ClipOp",
    "CloseClip",
    "OpenClip",
    "TrackRecorder",
    "WriteClip",
    "lookback_seconds",
    "new_clip_id",
]

#: Seconds of audio kept before an alert's first window and after its clear.
CONTEXT_SECONDS = 1.0
#: Slack on the look-back for what the sizing does not model exactly (the resampler's start-up
#: delay in the scoring chain, a batch's wait).
_LOOKBACK_MARGIN_SECONDS = 0.5


def lookback_seconds(
    *,
    window_seconds: float,
    hop_seconds: float,
    raise_after: int,
    max_lag_seconds: float,
    coalesce_ms: float = 0.0,
    context_seconds: float = CONTEXT_SECONDS,
) -> float:
    """How much audio a track must keep so a clip can start ``context_seconds`` before the
    first window of the run that raised an alert.

    When the alert comes back, the newest audio is at most the run's span (one window and
    ``raise_after - 1`` hops), the engine's lag bound (older windows are dropped, never
    scored) and the chain's coalescing past the first window's start.
    """
    return (
        window_seconds
        + max(0, raise_after - 1) * hop_seconds
        + max_lag_seconds
        + coalesce_ms / 1000.0
        + context_seconds
        + _LOOKBACK_MARGIN_SECONDS
    )


def new_clip_id() -> str:
    """A clip's id: 16 random hex digits (unguessable; safe in a file name and a URL)."""
    return secrets.token_hex(8)


@dataclass(frozen=True, slots=True)
class OpenClip:
    """Start a clip at sample ``start`` of the recorded stream."""

    clip: str
    start: int


@dataclass(frozen=True, slots=True, eq=False)
class WriteClip:
    """Append ``samples`` (int16, contiguous with what the clip holds) to the clip."""

    clip: str
    samples: np.ndarray


@dataclass(frozen=True, slots=True)
class CloseClip:
    """The clip is complete: it holds samples ``[start, end)``."""

    clip: str
    end: int


ClipOp = OpenClip | WriteClip | CloseClip


@dataclass
class _Clip:
    clip: str
    start: int
    written_to: int  # the clip holds [start, written_to)
    until: int | None  # where it stops: None while an alert is raised (or keep="all")
    promised: int = 0  # the furthest end an earlier, merged alert asked for: never cut back


class TrackRecorder:
    """Decides which of one track's audio to keep; see the module docstring.

    ``input_rate``: the rate of the samples pushed (the track's). ``rate``: the rate clips are
    written at (default ``input_rate``; another rate is resampled with soxr, statefully).
    ``keep``: ``"alerts"`` or ``"all"`` (``"none"`` needs no recorder).
    """

    def __init__(
        self,
        input_rate: int,
        *,
        keep: Literal["alerts", "all"],
        lookback_seconds: float,
        rate: int | None = None,
        context_seconds: float = CONTEXT_SECONDS,
        new_id: Callable[[], str] = new_clip_id,
    ) -> None:
        if keep not in ("alerts", "all"):
            raise ValueError(f"keep must be 'alerts' or 'all', got {keep!r}")
        if lookback_seconds < context_seconds:
            raise ValueError("lookback_seconds must cover at least the context")
        self.input_rate = int(input_rate)
        self.rate = int(rate or input_rate)
        self.keep = keep
        self.context = round(context_seconds * self.rate)
        self.lookback = max(1, round(lookback_seconds * self.rate))
        self._new_id = new_id
        self._resampler = (
            StreamResampler(self.input_rate, self.rate) if self.rate != self.input_rate else None
        )
        self._ring = RingBuffer(self.lookback, dtype=np.int16) if keep == "alerts" else None
        self.head = 0  # samples of the recorded stream so far
        self._active: _Clip | None = None
        self._closed_to = 0  # end of the last closed clip: a new clip never starts before it
        self._finished = False

    # -- input ---------------------------------------------------------------------------
    def push(self, samples: np.ndarray) -> list[ClipOp]:
        """The track's next samples (float32 in [-1, 1) at ``input_rate``)."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if self._resampler is not None:
            x = self._resampler.push(x)
        return self._append(float_to_int16(x))

    def push_silence(self, n_samples: int) -> list[ClipOp]:
        """``n_samples`` (at ``input_rate``) that never arrived: recorded as silence, so clip
        times stay call times."""
        ops: list[ClipOp] = []
        remaining = int(n_samples)
        step = max(1, self.input_rate)  # a second at a time: a long gap is never one array
        while remaining > 0:
            n = min(remaining, step)
            ops += self.push(np.zeros(n, np.float32))
            remaining -= n
        return ops

    def raised(self, start: float) -> list[ClipOp]:
        """An alert was raised; ``start``: call seconds of the first window of its run.

        Runs never start before an earlier run of the track (its windows are scored in
        order), so a raise either extends the open clip or starts a later one.
        """
        if self._finished or self.keep != "alerts":
            return []
        want = max(0, round(start * self.rate) - self.context)
        active = self._active
        if active is not None and (active.until is None or want <= active.until):
            active.promised = max(active.promised, active.until or 0)
            active.until = None  # merged: the clip runs on until this alert clears
            return self._catch_up(active)
        ops = self._close_active()
        assert self._ring is not None
        first = min(max(want, self._ring.oldest_available, self._closed_to), self.head)
        clip = _Clip(self._new_id(), first, first, None)
        self._active = clip
        return [*ops, OpenClip(clip.clip, first), *self._catch_up(clip)]

    def cleared(self, end: float) -> list[ClipOp]:
        """The alert was cleared; ``end``: call seconds of the end of the clearing window."""
        active = self._active
        if self._finished or self.keep != "alerts" or active is None or active.until is not None:
            return []
        # The clear comes back after its window was scored: the audio since may already be
        # written, and stays (a little more context, never less).
        # A merged earlier alert keeps its own end and context too (``promised``).
        wanted = round(end * self.rate) + self.context
        active.until = max(active.written_to, wanted, active.promised)
        return self._catch_up(active) + self._maybe_close()

    def finish(self) -> list[ClipOp]:
        """The track ended: write what the resampler holds and close the open clip."""
        if self._finished:
            return []
        ops: list[ClipOp] = []
        if self._resampler is not None:
            ops += self._append(float_to_int16(self._resampler.flush()))
        self._finished = True
        return ops + self._close_active()

    # -- internals -------------------------------------------------------------------------
    def _append(self, pcm: np.ndarray) -> list[ClipOp]:
        if not pcm.size:
            return []
        ops: list[ClipOp] = []
        if self.keep == "all" and self._active is None:
            self._active = _Clip(self._new_id(), 0, 0, None)
            ops.append(OpenClip(self._active.clip, 0))
        if self._ring is not None:
            self._ring.write(pcm)
        begin = self.head
        self.head += pcm.size
        active = self._active
        if active is not None:
            stop = self.head if active.until is None else min(self.head, active.until)
            if stop > active.written_to:
                piece = pcm[active.written_to - begin : stop - begin]
                active.written_to = stop
                ops.append(WriteClip(active.clip, piece))
        return ops + self._maybe_close()

    def _catch_up(self, clip: _Clip) -> list[ClipOp]:
        """Write the held audio the clip is owed, up to the head (or its end)."""
        assert self._ring is not None
        stop = self.head if clip.until is None else min(self.head, clip.until)
        if stop <= clip.written_to:
            return []
        piece = self._ring.read(clip.written_to, stop)
        clip.written_to = stop
        return [WriteClip(clip.clip, piece)]

    def _maybe_close(self) -> list[ClipOp]:
        """Close a cleared clip once no later raise could reach back into it."""
        active = self._active
        if active is None or active.until is None or active.written_to < active.until:
            return []
        if self.head - self.lookback < active.until:
            return []
        return self._close_active()

    def _close_active(self) -> list[ClipOp]:
        active, self._active = self._active, None
        if active is None:
            return []
        self._closed_to = active.written_to
        return [CloseClip(active.clip, active.written_to)]
