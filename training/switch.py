"""The voice-switch attack in ``streamguard evaluate``'s call-level report (issue #17).

A call that opens with a real voice and switches to a synthetic one mid-call must alert soon
after the switch and never before it. A call manifest marks such calls with a ``switch_at``
column (call seconds where the synthetic voice starts; ``training/corpus/build_switch.py``
makes them); everything else about the call (label ``fake``, family, condition) is as usual.

For each switch call the alert policy's replay (``evaluate.apply_policy``, the daemon's
``Smoother``) gives the times alerts were raised (the end of the window that raised them, in
call seconds). Here:

* an alert raised **before** ``switch_at`` is an early alarm: the real opening was flagged (a
  false alarm on a real voice, whatever happened later);
* the **delay** is the first alert at or after ``switch_at``, minus ``switch_at``;
* a call is **caught in time** when it has no early alarm and its delay is at most
  ``target_s`` (6 s: the issue's target).

Pure functions of the clip results; the report lands in ``metrics.json`` (``switch``) and
``metrics.txt``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

TARGET_S = 6.0
GROUP_KEYS = ("family", "condition")


def switch_row(result: Any, target_s: float = TARGET_S) -> dict[str, Any]:
    """One switch call: its early alarm (first alert before the switch), delay, verdict."""
    at = float(result.example.switch_at)
    raised = [t for state, t in result.alerts if state == "raised"]
    early = [t for t in raised if t < at]
    after = [t for t in raised if t >= at]
    delay = after[0] - at if after else None
    return {
        "path": str(result.example.path),
        "family": result.example.family,
        "condition": result.example.condition,
        "switch_at": at,
        "duration": result.duration,
        "early_alarm_s": early[0] if early else None,
        "delay_s": delay,
        "in_time": not early and delay is not None and delay <= target_s,
    }


def switch_summary(rows: Sequence[dict[str, Any]], target_s: float = TARGET_S) -> dict[str, Any]:
    """Shares over switch calls: alerted after the switch, early alarms, caught in time; delays."""
    n = len(rows)
    delays = np.array([r["delay_s"] for r in rows if r["delay_s"] is not None], dtype=float)

    def share(pred) -> float | None:
        return sum(1 for r in rows if pred(r)) / n if n else None

    return {
        "n": n,
        "target_s": target_s,
        "alerted_after": share(lambda r: r["delay_s"] is not None),
        "early_alarm": share(lambda r: r["early_alarm_s"] is not None),
        "in_time": share(lambda r: r["in_time"]),
        "delay_median_s": float(np.median(delays)) if delays.size else None,
        "delay_p90_s": float(np.percentile(delays, 90)) if delays.size else None,
        "delay_max_s": float(delays.max()) if delays.size else None,
    }


def switch_report(results: Sequence[Any], target_s: float = TARGET_S) -> dict[str, Any] | None:
    """``pooled``, per family / condition, and every call's row; None without switch calls.

    ``results`` are :class:`streamguard.training.evaluate.ClipResult` after the policy replay.
    """
    rows = [switch_row(r, target_s) for r in results if r.example.switch_at is not None]
    if not rows:
        return None
    groups: dict[str, dict[str, Any]] = {}
    for key in GROUP_KEYS:
        values = sorted({r[key] for r in rows if r[key]})
        if len(values) >= 2:
            groups[key] = {
                v: switch_summary([r for r in rows if r[key] == v], target_s) for v in values
            }
    return {"pooled": switch_summary(rows, target_s), "groups": groups, "calls": rows}


def format_switch_table(report: dict[str, Any]) -> str:
    """Plain-text table: pooled, then per family and condition."""
    columns = (
        ("calls", "n", None),
        ("alerted after", "alerted_after", "%"),
        ("early alarm", "early_alarm", "%"),
        (f"in time (<= {report['pooled']['target_s']:g} s)", "in_time", "%"),
        ("delay med", "delay_median_s", "s"),
        ("delay p90", "delay_p90_s", "s"),
        ("delay max", "delay_max_s", "s"),
    )

    def cell(value: Any, kind: str | None) -> str:
        if value is None:
            return "n/a"
        if kind == "%":
            return f"{100 * value:.1f}%"
        if kind == "s":
            return f"{value:.1f}"
        return str(value)

    rows = [["pooled"] + [cell(report["pooled"][k], kind) for _, k, kind in columns]]
    for key, groups in report["groups"].items():
        for value, summary in groups.items():
            rows.append([f"{key}={value}"] + [cell(summary[k], kind) for _, k, kind in columns])
    header = ["switch calls"] + [title for title, _, _ in columns]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
