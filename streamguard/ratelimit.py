"""A token bucket: the one rate limiter the edges share (feed messages, RTP packets).

Pure: it is handed ``now`` (any monotonic clock, in seconds) and never reads a clock itself.
``rate`` tokens are added per second up to ``burst``; each event takes one.
"""

from __future__ import annotations

__all__ = ["TokenBucket"]


class TokenBucket:
    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.last = now

    def _refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    def allow(self, now: float) -> bool:
        """Take a token if there is one (drop the event otherwise): for traffic we may lose."""
        self._refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False

    def delay(self, now: float) -> float:
        """Take a token, borrowing if needed: the seconds to wait before handling the event
        (0 when one was there). Waiting that long keeps the long-run rate at ``rate``."""
        self._refill(now)
        self.tokens -= 1.0
        return 0.0 if self.tokens >= 0.0 else -self.tokens / self.rate
