"""Microphone capture, the sans-I/O core: captured blocks in, source events out.

Owns what a microphone call looks like as source events (one call, a track per channel named
by its index, ``source`` ``"mic"``). The capture itself (PortAudio's thread, the bounded block
queue) is the edge's: :mod:`streamguard.sources.edges.mic`.
"""

from __future__ import annotations

import uuid
from typing import Any

import numpy as np

from streamguard.errors import StreamguardError
from streamguard.sources.base import Audio, CallLifecycle, SourceEvent, rate_problem

__all__ = ["MicCore"]


class MicCore:
    """Sans-I/O: turn captured ``(frames, channels)`` float32 blocks into source events.

    Tracks are named by channel index (``"0"``, ``"1"``, ...); ``source`` is ``"mic"``.
    """

    def __init__(
        self,
        sample_rate: int,
        channels: int = 1,
        *,
        call_id: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        if problem := rate_problem(sample_rate):
            raise StreamguardError(f"microphone: {problem}")
        if channels < 1:
            raise StreamguardError(f"microphone: channels must be >= 1, got {channels}")
        self.sample_rate = sample_rate
        self.channels = channels
        self.call_id = call_id or f"mic-{uuid.uuid4().hex[:12]}"
        self.metadata = dict(metadata or {})
        self._call = CallLifecycle()

    def start(self) -> list[SourceEvent]:
        if self._call.started:
            return []
        meta = {**self.metadata, "sample_rate": self.sample_rate, "channels": self.channels}
        events = self._call.start_call(self.call_id, "mic", meta)
        for ch in range(self.channels):
            events += self._call.start_track(str(ch), self.sample_rate)
        return events

    def push(self, block: np.ndarray) -> list[SourceEvent]:
        if not self._call.started or self._call.finished:
            return []
        data = np.asarray(block, dtype=np.float32).reshape(-1, self.channels)
        if not len(data):
            return []
        return [Audio(str(ch), np.ascontiguousarray(data[:, ch])) for ch in range(self.channels)]

    def stop(self, reason: str = "stop") -> list[SourceEvent]:
        return self._call.end(reason)
