"""Bounded per-track audio store addressed by absolute sample index (call time).

Why absolute indices: the windower, the VAD gate and every event talk about "sample N of the
call" (call time = samples / 16000). Keeping that one coordinate system end to end means no
off-by-a-chunk bugs when a chunk straddles the wrap point. The buffer holds the last
``capacity`` samples; older ones are overwritten and can no longer be read, which bounds a
track's memory no matter how long the call runs.
"""

from __future__ import annotations

import numpy as np

__all__ = ["OverwrittenError", "RingBuffer"]


class OverwrittenError(LookupError):
    """The requested samples were already overwritten by newer audio."""


class RingBuffer:
    """Fixed-capacity ring buffer with absolute sample addressing (float32 or int16).

    ``write`` appends; ``read(start, stop)`` returns a copy of samples ``[start, stop)`` of the
    stream, in the buffer's dtype. Counters: ``total_written`` (samples ever written),
    ``oldest_available`` (first index still readable) and ``overwritten`` (samples dropped to
    make room, equal to ``oldest_available``). A read of overwritten samples raises
    :class:`OverwrittenError`; whoever asked counts it (the windower's ``windows_lost``).

    The live track chain stores int16 (``dtype=np.int16``): half the memory of float32, and the
    audio came off the wire as 8- or 16-bit samples anyway.
    """

    def __init__(self, capacity_samples: int, dtype: type = np.float32) -> None:
        if int(capacity_samples) <= 0:
            raise ValueError(f"capacity must be positive, got {capacity_samples}")
        self.capacity = int(capacity_samples)
        self.dtype = np.dtype(dtype)
        self._buf = np.zeros(self.capacity, dtype=self.dtype)
        self.total_written = 0

    @property
    def oldest_available(self) -> int:
        return max(0, self.total_written - self.capacity)

    @property
    def overwritten(self) -> int:
        return self.oldest_available

    def __len__(self) -> int:
        """Number of samples currently readable."""
        return self.total_written - self.oldest_available

    def write(self, samples: np.ndarray) -> None:
        x = np.asarray(samples, dtype=self.dtype).reshape(-1)
        n = x.size
        if n == 0:
            return
        if n > self.capacity:  # only the newest `capacity` samples can survive
            skip = n - self.capacity
            self.total_written += skip
            x = x[skip:]
            n = self.capacity
        pos = self.total_written % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[pos : pos + first] = x[:first]
        if first < n:
            self._buf[: n - first] = x[first:]
        self.total_written += n

    def read(self, start: int, stop: int) -> np.ndarray:
        """Copy of samples ``[start, stop)``.

        Raises ``OverwrittenError`` when ``start < oldest_available`` and ``ValueError`` for a
        range that is reversed, negative or reaches past ``total_written``.
        """
        start, stop = int(start), int(stop)
        if start < 0 or stop < start:
            raise ValueError(f"bad range [{start}, {stop})")
        if stop > self.total_written:
            raise ValueError(f"range [{start}, {stop}) reaches past {self.total_written} written")
        if start < self.oldest_available:
            raise OverwrittenError(
                f"samples [{start}, {stop}) overwritten; oldest available is "
                f"{self.oldest_available}"
            )
        n = stop - start
        pos = start % self.capacity
        first = min(n, self.capacity - pos)
        out = np.empty(n, dtype=self.dtype)
        out[:first] = self._buf[pos : pos + first]
        if first < n:
            out[first:] = self._buf[: n - first]
        return out
