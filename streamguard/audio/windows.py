"""Cut a track into the model's windows, every hop of call time, where there is speech.

The rule (also in docs/scan.md, "Windows"):

* **Regular windows.** Window *k* covers samples ``[k*hop, k*hop + window)`` of the track (16 kHz
  call time). It is considered as soon as that whole range is in the ring buffer *and* decided
  by the VAD. It is emitted when it holds at least ``min_speech`` samples of speech, else counted
  in ``windows_skipped``. A 10 s call with a 4 s window and a 1 s hop therefore yields windows
  starting at 0, 1, ..., 6 s (the last one is [6, 10]).
* **Final window** (``finish``, at the end of the call). Let *covered_end* be the end of the last
  emitted window (0 if none). If the tail ``[covered_end, end_of_call)`` is non-empty and holds
  at least ``min_speech`` of speech -- speech no emitted window has scored -- one more window is
  emitted, aligned to the end of the call: ``[max(0, end - window), end)``. A call shorter than
  one window gets its audio zero-padded at the end (``valid_samples`` < window length); when
  such a short call has too little speech it counts as one skipped window. Nothing else is
  emitted at the end: in the 10 s example the tail after [6, 10] is empty, so no extra window.
  A tail with less speech than ``min_speech`` is dropped, as it would be by a regular window.

``speech_ratio`` is the fraction of a window's real (non-padding) samples the VAD called speech.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from streamguard.audio.ringbuffer import OverwrittenError, RingBuffer
from streamguard.audio.vad import SpeechFrame

__all__ = ["SAMPLE_RATE", "Window", "Windower"]

#: The rate every window is at (after resampling); window times are call seconds at this rate.
SAMPLE_RATE = 16_000

#: int16 ring samples -> float32 window samples (the codecs' convention: ``v / 32768``).
_PCM16_SCALE = np.float32(1.0 / 32768.0)
#: Pruned decisions are deleted from the front of the lists in chunks of at least this many.
_PRUNE_CHUNK = 256


@dataclass(frozen=True, eq=False)
class Window:
    """One model input: ``samples`` (float32, the model's window length) from ``start_sample``.

    ``valid_samples`` is how many leading samples are real audio (``None``: all of them); the
    rest is zero padding, used only for a call shorter than one window.
    """

    start_sample: int
    samples: np.ndarray
    speech_ratio: float
    valid_samples: int | None = None

    @property
    def end_sample(self) -> int:
        """End of the real audio (exclusive), in samples of call time."""
        n = len(self.samples) if self.valid_samples is None else self.valid_samples
        return self.start_sample + n

    @property
    def start(self) -> float:
        """Start in call seconds."""
        return self.start_sample / SAMPLE_RATE

    @property
    def end(self) -> float:
        """End of the real audio in call seconds."""
        return self.end_sample / SAMPLE_RATE


class Windower:
    """Turns VAD decisions over audio already in ``ring`` into :class:`Window` objects.

    Feed it, in order, every :class:`SpeechFrame` of the track (contiguous from sample 0); the
    audio of those frames must already be written to ``ring`` (float32, or int16 read back as
    ``v / 32768``). Memory is bounded: it keeps only the decisions of the last window's worth
    of audio, as prefix sums, so the speech in any range costs two binary searches.

    ``windows_lost`` counts windows that were due but whose audio the ring had already
    overwritten (a ring too small for the window; the track chain sizes it so this cannot
    happen, and the daemon exports it as ``windows_dropped_total{reason="overwritten"}``).
    """

    def __init__(
        self,
        ring: RingBuffer,
        window_samples: int,
        hop_samples: int,
        min_speech_samples: int,
    ) -> None:
        if window_samples <= 0 or hop_samples <= 0:
            raise ValueError("window and hop must be positive")
        if not 0 <= min_speech_samples <= window_samples:
            raise ValueError("min_speech must be between 0 and the window length")
        if ring.capacity < window_samples:
            raise ValueError("the ring buffer must hold at least one window")
        self.ring = ring
        self.window_samples = int(window_samples)
        self.hop_samples = int(hop_samples)
        self.min_speech_samples = int(min_speech_samples)
        self.windows_emitted = 0
        self.windows_skipped = 0
        self.windows_lost = 0  # wanted but already overwritten in the ring (ring too small)
        self.decided_samples = 0
        self.speech_samples = 0
        # Kept decisions: frame i starts at _starts[i], holds _sizes[i] samples, is speech or
        # not, and the track had _cum[i] speech samples before it.
        self._starts: list[int] = []
        self._sizes: list[int] = []
        self._speech: list[bool] = []
        self._cum: list[int] = []
        self._next_start = 0
        self._covered_end = 0
        self._speech_before_covered = 0
        self._finished = False

    # -- helpers -------------------------------------------------------------------------
    def _speech_before(self, t: int) -> int:
        """Speech samples in ``[0, t)``; ``t`` must not precede the oldest kept decision."""
        if t >= self.decided_samples:
            return self.speech_samples
        i = bisect_right(self._starts, t) - 1
        if i < 0:
            return 0
        return self._cum[i] + (t - self._starts[i] if self._speech[i] else 0)

    def _speech_in(self, start: int, stop: int) -> int:
        return self._speech_before(stop) - self._speech_before(start)

    def _emit(self, start: int, stop: int, speech: int) -> Window | None:
        try:
            raw = self.ring.read(start, stop)
        except OverwrittenError:
            self.windows_lost += 1
            return None
        valid = stop - start
        if valid == self.window_samples and raw.dtype == np.float32:
            audio = raw
        else:  # int16 from the track's ring, or a short call padded with zeros
            audio = np.zeros(self.window_samples, np.float32)
            if raw.dtype == np.int16:
                np.multiply(raw, _PCM16_SCALE, out=audio[:valid], dtype=np.float32)
            else:
                audio[:valid] = raw
        window = Window(
            start_sample=start,
            samples=audio,
            speech_ratio=speech / valid,
            valid_samples=None if valid == self.window_samples else valid,
        )
        self.windows_emitted += 1
        self._covered_end = stop
        self._speech_before_covered = self._speech_before(stop)
        return window

    def _prune(self) -> None:
        keep_from = max(0, min(self._next_start, self.decided_samples - self.window_samples))
        # frames ending at or before keep_from are no longer needed
        n = bisect_right(self._starts, keep_from) - 1
        if n >= 0 and self._starts[n] + self._sizes[n] > keep_from:
            n -= 1
        if n + 1 >= _PRUNE_CHUNK:
            for kept in (self._starts, self._sizes, self._speech, self._cum):
                del kept[: n + 1]

    # -- API -------------------------------------------------------------------------------
    def push(self, frames: Iterable[SpeechFrame]) -> list[Window]:
        """Record decisions; return the regular windows that became complete."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        for f in frames:
            if f.start_sample != self.decided_samples:
                raise ValueError(
                    f"speech frames must be contiguous: expected start {self.decided_samples}, "
                    f"got {f.start_sample}"
                )
            self._starts.append(f.start_sample)
            self._sizes.append(f.n_samples)
            self._speech.append(f.is_speech)
            self._cum.append(self.speech_samples)
            self.decided_samples = f.end_sample
            if f.is_speech:
                self.speech_samples += f.n_samples
        out: list[Window] = []
        w = self.window_samples
        while self._next_start + w <= self.decided_samples:
            start = self._next_start
            speech = self._speech_in(start, start + w)
            if speech >= self.min_speech_samples:
                window = self._emit(start, start + w, speech)
                if window is not None:
                    out.append(window)
            else:
                self.windows_skipped += 1
            self._next_start += self.hop_samples
        self._prune()
        return out

    def finish(self) -> list[Window]:
        """End of the call: the final window over unscored speech, if any (see module doc)."""
        if self._finished:
            return []
        self._finished = True
        end = self.decided_samples
        if end <= self._covered_end:
            return []
        unscored = self.speech_samples - self._speech_before_covered
        start = max(0, end - self.window_samples)
        short_call = end < self.window_samples and self.windows_emitted == 0
        if unscored >= self.min_speech_samples:
            window = self._emit(start, end, self._speech_in(start, end))
            return [window] if window is not None else []
        if short_call:
            self.windows_skipped += 1
        return []
