"""Calibrate the daemon's alert policy (``[smoothing]``) on labelled calls.

Why: the model's threshold is set on single windows (e.g. 1% of real windows flagged), but a
call of a few minutes has hundreds of windows, so a per-window rate of 1% would still page
someone on most real calls. The policy (smoothing + ``raise_after`` consecutive windows over the
on-threshold) decides how much sustained evidence an alert needs. This module scores every call
once through the daemon's chain, replays each candidate policy over the scores, and picks the one
that keeps real calls quiet (at most ``--target`` of them alert, default 1%) while alerting on as
many synthetic calls as possible, as early as possible::

    python -m streamguard.training.policy --data training/corpus/v2/val-calls.csv \
        --out runs/policy            # the bundled model; --model SPEC for another

Calibrate on validation calls, then check the chosen policy on the test calls with
``streamguard evaluate --config`` (never choose it on the test calls).
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import product
from pathlib import Path
from typing import Any

from streamguard.errors import StreamguardError

MODES: list[dict[str, Any]] = [{"mode": "ema", "ema_alpha": a} for a in (0.3, 0.5, 0.7, 1.0)] + [
    {"mode": "mean", "mean_windows": n} for n in (3, 5)
]
RAISE_AFTER = (1, 2, 3, 4, 5, 6)
ON_OFFSETS = (0.0, 0.05, 0.1, 0.15)  # on-threshold = model threshold + offset (capped < 1)


def candidates(threshold: float) -> list[dict[str, Any]]:
    out = []
    for mode, raise_after, offset in product(MODES, RAISE_AFTER, ON_OFFSETS):
        on = min(threshold + offset, 0.999)
        out.append(dict(mode, raise_after=raise_after, on_threshold=None if not offset else on))
    return out


def calibrate(results, threshold: float, target: float) -> tuple[dict, list[dict]]:
    """``(best settings, every candidate's row)``; best = fewest missed synthetic calls among
    those with real-call alert rate <= target (and, with voice-switch calls among them, at
    most ``target`` of those alerting before the switch: that is a real voice flagged), then
    the shortest median delay, then the least strict rule (no threshold offset, fewest
    windows). Rows carry ``switch_in_time`` / ``switch_early`` when there are switch calls."""
    from streamguard.policy import AlertPolicy
    from streamguard.policy.smoothing import SmoothingSettings
    from streamguard.training.evaluate import apply_policy, policy_summary
    from streamguard.training.switch import switch_report

    rows = []
    for cand in candidates(threshold):
        apply_policy(results, AlertPolicy(threshold, SmoothingSettings(**cand)))
        summary = policy_summary(results)
        switch = switch_report(results)
        if switch is not None:
            summary["switch_in_time"] = switch["pooled"]["in_time"]
            summary["switch_early"] = switch["pooled"]["early_alarm"]
        rows.append({"settings": cand, **summary})

    def quiet(r: dict) -> bool:
        return (r["real_alerted"] or 0.0) <= target and r.get("switch_early", 0.0) <= target

    ok = [r for r in rows if quiet(r)]
    pool = ok or sorted(rows, key=lambda r: r["real_alerted"] or 0.0)[:1]

    def key(r):
        s = r["settings"]
        return (
            -(r["fake_alerted"] or 0.0),
            r["delay_median_s"] if r["delay_median_s"] is not None else 1e9,
            s.get("on_threshold") or 0.0,
            s["raise_after"],
        )

    return min(pool, key=key), rows


def results_from_report(folder: Path):
    """The ClipResults of a finished ``streamguard evaluate --out`` folder (clips.csv and
    windows.csv): calibrate again, at another threshold, without scoring anything again."""
    import csv

    import numpy as np

    from streamguard.training.data import Example
    from streamguard.training.evaluate import ClipResult

    windows: dict[str, list[tuple[float, float, float]]] = {}
    with (folder / "windows.csv").open(newline="") as fh:
        for w in csv.DictReader(fh):
            windows.setdefault(w["path"], []).append(
                (float(w["start"]), float(w["end"]), float(w["score"]))
            )
    results = []
    with (folder / "clips.csv").open(newline="") as fh:
        for c in csv.DictReader(fh):
            arr = np.asarray(windows.get(c["path"], []), dtype=np.float64).reshape(-1, 3)
            example = Example(
                Path(c["path"]),
                int(c["label"]),
                c["source"],
                c["subset"] or None,
                c["speaker"] or None,
                c["attack"] or None,
                c["condition"] or None,
                family=c["family"] or None,
                switch_at=float(c["switch_at"]) if c.get("switch_at") else None,
            )
            results.append(
                ClipResult(
                    example,
                    arr[:, 0],
                    arr[:, 1],
                    arr[:, 2].astype(np.float32),
                    duration=float(c["duration"]),
                    speech_seconds=float(c["speech_seconds"]),
                )
            )
    return results


def report_model(report: Path) -> tuple[str, float]:
    """The model name and threshold a `streamguard evaluate --out` folder was scored with."""
    try:
        meta = json.loads((report / "metrics.json").read_text())
        return str(meta.get("model", "?")), float(meta["threshold"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise StreamguardError(
            f"{report}: no readable metrics.json with a threshold ({exc})"
        ) from None


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except StreamguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _main(argv: list[str] | None = None) -> int:
    from streamguard.model import load_detector
    from streamguard.policy.verdict import format_threshold
    from streamguard.training.data import read_data
    from streamguard.training.evaluate import apply_policy, score_through_chain

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model spec (default: the bundled model)")
    parser.add_argument("--data", help="labelled calls (manifest CSV)")
    parser.add_argument(
        "--report",
        type=Path,
        help="instead of --data: a `streamguard evaluate --out` folder of the calls (no rescoring)",
    )
    parser.add_argument("--threshold", type=float, help="model threshold (default: the model's)")
    parser.add_argument(
        "--check",
        type=Path,
        metavar="CONFIG",
        help="do not search: report the [smoothing] of this daemon config on the calls "
        "(e.g. the test calls, after choosing on the validation calls)",
    )
    parser.add_argument(
        "--target", type=float, default=0.01, help="max share of real calls alerting"
    )
    parser.add_argument("--out", type=Path, help="write policy.json here")
    args = parser.parse_args(argv)
    if (args.data is None) == (args.report is None):
        parser.error("give exactly one of --data and --report")
    if args.report is not None and args.model is None:
        # The report knows which model scored it and at which threshold: judging its scores
        # at another model's (the bundled one's) threshold would be a silent mistake.
        name, threshold = report_model(args.report)
    else:
        detector = load_detector(args.model, device="cpu")
        name, threshold = detector.info.name, detector.info.threshold
    threshold = threshold if args.threshold is None else args.threshold
    if args.report is not None:
        results = results_from_report(args.report)
    else:
        results, _ = score_through_chain(
            detector, read_data(args.data, None).examples, progress=True
        )
    if args.check is not None:
        from streamguard.policy import AlertPolicy
        from streamguard.policy.tables import read_policy_tables
        from streamguard.training.evaluate import format_policy_table, policy_report
        from streamguard.training.switch import format_switch_table, switch_report

        tables = read_policy_tables(args.check)
        apply_policy(
            results,
            AlertPolicy(threshold, tables.smoothing, tables.verdict.min_speech_seconds),
        )
        print(f"[smoothing] of {args.check} at threshold {format_threshold(threshold)}:")
        print(format_policy_table(policy_report(results)))
        if (switch := switch_report(results)) is not None:
            print(format_switch_table(switch))
        return 0
    best, rows = calibrate(results, threshold, args.target)
    rows.sort(key=lambda r: (-(r["fake_alerted"] or 0), r["real_alerted"] or 0))
    print(f"model {name}, threshold {format_threshold(threshold)}, "
          f"{best['n_real']} real / {best['n_fake']} synthetic calls")  # fmt: skip
    switch = "switch_in_time" in best
    print(f"{'policy':58} {'real alerted':>12} {'fake alerted':>12} {'delay med':>9}"
          + (f" {'switch <= 6 s':>13} {'early alarm':>11}" if switch else ""))  # fmt: skip
    for r in [best, *[r for r in rows if (r["real_alerted"] or 0) <= args.target][:8]]:
        s = r["settings"]
        name = ", ".join(f"{k}={v}" for k, v in s.items() if v is not None)
        delay = r["delay_median_s"]
        print(f"{name:58} {100 * r['real_alerted']:11.2f}% {100 * r['fake_alerted']:11.2f}% "
              f"{delay if delay is not None else float('nan'):9.1f}"
              + (f" {100 * r['switch_in_time']:12.1f}% {100 * r['switch_early']:10.1f}%"
                 if switch else ""))  # fmt: skip
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "policy.json").write_text(
            json.dumps({"best": best, "candidates": rows}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
