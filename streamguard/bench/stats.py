"""Small summary statistics shared by both suites (no numpy needed by the load generator)."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) with linear interpolation; NaN for no values.

    Implemented here rather than with numpy so the load-generator process stays light.
    """
    if not values:
        return math.nan
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def summary(values: Sequence[float]) -> dict[str, float]:
    """``{n, mean, p50, p95, p99, max}`` of ``values`` (NaN where there are none)."""
    n = len(values)
    return {
        "n": n,
        "mean": sum(values) / n if n else math.nan,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
        "p99": percentile(values, 99),
        "max": max(values) if n else math.nan,
    }
