"""A small bounded reorder buffer keyed by an increasing integer (sequence number).

Used where a feed may deliver items out of order: RTP over UDP (key = extended sequence number)
and Telnyx media streams (key = ``sequence_number``; Telnyx documents that frame order is not
guaranteed). Items are released strictly in key order. A hole is waited for until either more than
``depth`` items are held behind it or (when a clock is passed in) the oldest held item has waited
``max_wait`` seconds; then the hole is skipped and counted as lost. Items for keys already released
or skipped are dropped and counted (duplicate vs late), so memory stays bounded whatever arrives.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["ReorderBuffer", "ReorderStats"]


@dataclass(slots=True)
class ReorderStats:
    received: int = 0  # items pushed that were accepted into the buffer
    duplicates: int = 0  # key already held or already released: dropped
    late: int = 0  # key was skipped as lost before it arrived: dropped
    reordered: int = 0  # arrived after a higher key, still released in order
    lost: int = 0  # keys skipped because they never arrived in time


class ReorderBuffer(Generic[T]):
    """Release ``(key, item)`` pairs in key order from out-of-order pushes.

    ``next_key`` is the key expected next; ``None`` means "take the first key pushed".
    """

    def __init__(
        self,
        depth: int,
        *,
        max_wait: float | None = None,
        next_key: int | None = None,
        stats: ReorderStats | None = None,
    ) -> None:
        if depth < 0:
            raise ValueError("depth must be >= 0")
        self.depth = depth
        self.max_wait = max_wait
        self.next_key = next_key
        self.stats = stats if stats is not None else ReorderStats()  # shareable across resets
        self._held: dict[int, tuple[T, float]] = {}
        self._max_key: int | None = None
        self._skipped: deque[tuple[int, int]] = deque(maxlen=64)  # [lo, hi) ranges given up on

    def __len__(self) -> int:
        return len(self._held)

    def push(self, key: int, item: T, now: float = 0.0) -> list[tuple[int, T]]:
        """Offer one item; return the items that are now releasable, in order."""
        if self.next_key is None:
            self.next_key = key
        if key < self.next_key or key in self._held:
            if any(lo <= key < hi for lo, hi in self._skipped):
                self.stats.late += 1
            else:
                self.stats.duplicates += 1
            return []
        self.stats.received += 1
        if self._max_key is not None and key < self._max_key:
            self.stats.reordered += 1
        if self._max_key is None or key > self._max_key:
            self._max_key = key
        self._held[key] = (item, now)
        out = self._release_contiguous()
        while len(self._held) > self.depth:
            out += self._skip_hole()
        return out

    def release_due(self, now: float) -> list[tuple[int, T]]:
        """Skip holes the oldest held item has waited more than ``max_wait`` seconds for."""
        out: list[tuple[int, T]] = []
        if self.max_wait is None:
            return out
        while self._held and now - min(t for _, t in self._held.values()) > self.max_wait:
            out += self._skip_hole()
        return out

    def flush(self) -> list[tuple[int, T]]:
        """Release everything held, in order (end of stream); holes count as lost."""
        out: list[tuple[int, T]] = []
        while self._held:
            out += self._skip_hole()
        return out

    def _skip_hole(self) -> list[tuple[int, T]]:
        assert self.next_key is not None
        first = min(self._held)
        if first > self.next_key:
            self.stats.lost += first - self.next_key
            self._skipped.append((self.next_key, first))
            self.next_key = first
        return self._release_contiguous()

    def _release_contiguous(self) -> list[tuple[int, T]]:
        out: list[tuple[int, T]] = []
        assert self.next_key is not None
        while self.next_key in self._held:
            item, _ = self._held.pop(self.next_key)
            out.append((self.next_key, item))
            self.next_key += 1
        return out
