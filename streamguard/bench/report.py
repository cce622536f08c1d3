"""Plain-text tables and the machine description that every figure needs next to it."""

from __future__ import annotations

import datetime
import os
import platform
from collections.abc import Sequence
from typing import Any


def machine() -> dict[str, Any]:
    """What the figures were measured on: CPU, cores, load, torch, device, date."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (line.split(":", 1)[1].strip() for line in f if line.startswith("model name")),
                cpu,
            )
    except OSError:
        pass
    info: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    return info


def format_machine(info: dict[str, Any]) -> str:
    load = " ".join(f"{x:g}" for x in info["load_average"])
    gpu = f", GPU {info['cuda']}" if info["cuda"] else ""
    return (
        f"{info['date']}: {info['cpu']}, {info['nproc']} CPUs (load {load}){gpu}; "
        f"python {info['python']}, torch {info['torch']} ({info['torch_threads']} threads)"
    )


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A right-aligned text table (first column left-aligned)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.ljust(w) if i == 0 else v.rjust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def format_model(result: dict[str, Any]) -> str:
    rows = [
        [t["batch"], t["runs"], t["median_ms"], t["p95_ms"], t["windows_per_second"]]
        for t in result["timings"]
    ]
    body = table(["batch", "runs", "median ms", "p95 ms", "windows/s"], rows)
    text = (
        f"model: {result['model']}\n"
        f"plain fp32 eager detector, torch threads {result['threads']}:\n{body}\n"
        f"reference (batch 16): {result['reference_batch16_windows_per_second']:.1f} windows/s"
        + (
            " (the faster of "
            + ", ".join(
                f"{t} thread(s): {w:.1f}" for t, w in result.get("reference_by_threads", {}).items()
            )
            + ")"
            if result.get("reference_by_threads")
            else ""
        )
    )
    paths = result.get("paths")
    if paths:
        rows = [
            [
                p["path"] + (f" ({p['error']})" if p.get("error") else ""),
                "-" if p.get("parity_max_abs_diff") is None else f"{p['parity_max_abs_diff']:.4f}",
                p.get("median_ms", "-"),
                p.get("windows_per_second", "-"),
                "-" if "vs_eager" not in p else f"{p['vs_eager']:.2f}x",
            ]
            for p in paths
        ]
        text += (
            f"\n\nprecision paths, batch {paths[0]['batch']}, {paths[0]['threads']} thread each, "
            "interleaved rounds on real windows:\n"
            + table(["path", "max |dP|", "median ms", "windows/s", "vs eager"], rows)
        )
    serving = result.get("serving")
    probe = (serving or {}).get("probe")
    if probe:
        text += f"\n\nstart-up probe (cpu {_cpu_text(probe.get('cpu', {}))}): "
        text += f"chose {probe['choice']}: {probe['reason']}"
    if serving:
        rows = [
            [t["batch"], t["runs"], t["median_ms"], t["p95_ms"], t["windows_per_second"]]
            for t in serving["timings"]
        ]
        parity = serving["parity_max_abs_diff"]
        gain = serving["best_windows_per_second"] / result["reference_batch16_windows_per_second"]
        parity_text = "" if parity is None else f", max |dP| vs eager {parity:.4f}"
        text += (
            f"\n\nserving: backend {serving['backend']}{parity_text}; {serving['workers']} "
            f"{serving['worker']} worker(s), {serving['threads_per_worker'] or 'default'} "
            "thread(s) each, working together:\n"
            + table(["batch", "batches", "median ms", "p95 ms", "windows/s"], rows)
            + f"\nbest: batch {serving['best_batch']} at "
            f"{serving['best_windows_per_second']:.1f} windows/s -> ~"
            f"{serving['best_windows_per_second'] * result['hop_seconds']:.0f} tracks at hop "
            f"{result['hop_seconds']:g} s, "
            f"{gain:.2f}x the reference"
        )
    return text


def _cpu_text(cpu: dict[str, Any]) -> str:
    flags = [*cpu.get("vnni", ()), *cpu.get("bf16", ())]
    simd = "AVX-512" if cpu.get("avx512f") else "AVX2" if cpu.get("avx2") else "no AVX2"
    return f"{cpu.get('model', '?')}, {simd}" + (f", {' '.join(flags)}" if flags else "")


def format_ingest(results: list[dict[str, Any]]) -> str:
    rows = [
        [
            r["workload"],
            r["protocol"],
            r["frame_ms"],
            r["tracks"],
            r["microseconds_per_frame"],
            r["core_percent_per_track"],
            r["windows"],
            r["windows_skipped"],
        ]
        for r in results
    ]
    return (
        table(
            [
                "workload",
                "protocol",
                "frame ms",
                "tracks",
                "us/frame",
                "% core/track",
                "windows",
                "skipped",
            ],
            rows,
        )
        + "\n(CPU of the protocol core + resample + ring + VAD + windowing, 8 kHz input, no "
        "model; % of one core per track)"
    )


def format_capacity(out: dict[str, Any], hop_seconds: float) -> str:
    lines = [f"model: {out['model']}; serving estimate ~{out['estimate_tracks']:.0f} tracks"]
    for name, res in out["workloads"].items():
        lines.append(f"\n{res['workload']}")
        lines.append(
            format_daemon(res["levels"], [lv["keeps_up"] for lv in res["levels"]], hop_seconds)
        )
        best = res["best_level"]
        if best:
            lines.append(
                f"-> {name}: {res['max_calls']} calls ({res['max_tracks']} tracks) in real time; "
                f"base RSS {best['base_rss_mib']:.0f} MiB, +{best['rss_per_track_mib']:.2f} MiB "
                "per track"
            )
        else:
            lines.append(f"-> {name}: no level kept up")
        if best and "first_verdict_seconds" in best["client"]:
            verdict = best["client"]["first_verdict_seconds"]
            lines.append(
                f"   first verdict at {res['max_calls']} calls: p50 {verdict['p50']:.2f} s, "
                f"max {verdict['max']:.2f} s after each caller started speaking (target <= 5 s)"
            )
    first = out["first_score"]
    lines.append(
        f"\nidle daemon, one call: first score {1000 * first['first_score_lag_seconds']:.0f} ms "
        f"after its first full window (lag p50 {1000 * first['lag_p50_seconds']:.0f} ms); "
        f"first verdict {first.get('first_verdict_seconds', float('nan')):.2f} s after the "
        "caller started speaking (target <= 5 s)"
    )
    ref = out.get("reference_batch16_windows_per_second")
    if ref:
        lines.append(_capacity_ratio_line(out, ref, hop_seconds))
    return "\n".join(lines)


def _capacity_ratio_line(out: dict[str, Any], ref: float, hop_seconds: float) -> str:
    """The issue's capacity figures (same run): calls per reference w/s, and the daemon's share
    of its serving runners' windows/s."""
    cont = out["workloads"].get("continuous")
    if not cont:
        return f"reference: plain fp32 eager {ref:.1f} w/s at batch 16"
    ratio = cont["max_calls"] / ref
    text = (
        f"capacity ratio: {cont['max_calls']} continuous calls / plain fp32 eager {ref:.1f} w/s "
        f"(batch 16, same run) = {ratio:.2f}x (target >= 2.0)"
    )
    serving = out.get("serving_windows_per_second")
    if serving:
        text += (
            f"; daemon efficiency {cont['max_tracks'] * hop_seconds / serving:.2f} of the "
            f"serving runners' {serving:.1f} w/s (target >= 0.8)"
        )
    return text


def format_adaptive(result: dict[str, Any]) -> str:
    if "skipped" in result:
        return result["skipped"]

    def alert(res: dict[str, Any], offset: float = 0.0) -> str:
        t = res["first_alert_seconds"]
        return "-" if t is None else f"{t - offset:.0f} s"

    rows = []
    for stride, res in result["strides"].items():
        rows.append(
            [
                stride,
                res["real"]["windows_scored"],
                f"{res['real_capacity_gain']:.2f}x",
                alert(res["synthetic"]),
                alert(res["splice"], result["splice_at_seconds"]),
            ]
        )
    return (
        table(
            [
                "stride",
                "real: windows",
                "capacity gain",
                "synthetic: alert at",
                "splice: alert after switch",
            ],
            rows,
        )
        + "\n(offline, the real detector: the demo call's human track looped to 60 s; its "
        "synthetic track; human then synthetic)"
    )


def format_targets(t: dict[str, Any]) -> str:
    def line(label: str, key: str, fmt: str) -> str:
        v = t[key]["value"]
        shown = "-" if v is None else format(v, fmt)
        return f"{label:<44} {shown:>8}   target {t[key]['target']}"

    return "\n".join(
        [
            line("capacity ratio (continuous calls / ref w/s)", "capacity_ratio", ".2f"),
            line("daemon efficiency (tracks / serving w/s)", "daemon_efficiency", ".2f"),
            line("ingest, % of a core per 8 kHz track", "ingest_core_percent_per_track", ".3f"),
            line("first score after first full window, s", "first_score_seconds", ".3f"),
            line("first verdict after speech starts, s", "first_verdict_seconds", ".2f"),
            line("RSS per additional track, MiB", "rss_mib_per_track", ".3f"),
            line("base RSS, MiB", "base_rss_mib", ".0f"),
            f"continuous: {t['continuous_calls']} calls; demo: {t['demo_calls']} calls "
            f"({t['demo_tracks']} tracks); reference {t['reference_windows_per_second']:.1f} w/s, "
            f"serving ({t['serving_backend']}) {t['serving_windows_per_second']:.1f} w/s",
        ]
    )


def format_daemon(levels: list[dict[str, Any]], ok: list[bool], hop_seconds: float) -> str:
    rows = []
    for level, good in zip(levels, ok, strict=True):
        client = level["client"]
        rows.append(
            [
                level["calls"],
                level["offered_windows_per_second"],
                level["windows_per_second"],
                level["windows_scored"],
                level["windows_dropped"],
                level["mean_batch"],
                level["inference_ms_per_batch"]["p50"],
                level["engine_lag_mean_seconds"] * 1000,
                client["lag_seconds"]["p50"] * 1000,
                client["lag_seconds"]["p99"] * 1000,
                level["realtime_factor"],
                100.0 * level["inference_seconds"] / client["sending_seconds"]
                if client["sending_seconds"]
                else float("nan"),
                level["cpu_percent"],
                level["loop_lag_seconds"]["p95"] * 1000,
                level["peak_rss_mib"],
                level["rss_per_track_mib"],
                "yes" if good else "NO",
            ]
        )
    headers = [
        "calls",
        "offered w/s",
        "scored w/s",
        "scored",
        "dropped",
        "batch",
        "infer ms",
        "engine ms",
        "lag p50 ms",
        "lag p99 ms",
        "rtf",
        "busy %",
        "cpu %",
        "loop p95 ms",
        "rss MiB",
        "MiB/track",
        "keeps up",
    ]
    lines = [table(headers, rows)]
    for level in levels:
        sizes = ", ".join(f"{b}:{n}" for b, n in level["batch_sizes"].items()) or "-"
        client = level["client"]
        late = client["sender_lateness_seconds"]["p95"] * 1000
        extra = f"; ERRORS: {client['errors'][:3]}" if client["errors"] else ""
        in_log = level.get("calls_ended_in_log")
        if in_log is not None and in_log != level["calls"]:
            extra += f"; call_ended in the event log for {in_log} of {level['calls']} calls"
        elif in_log is not None and client["errors"]:
            extra += f" (the event log holds call_ended for all {in_log} calls)"
        lines.append(
            f"  {level['calls']:>3} calls: batch sizes {{{sizes}}}; load-generator CPU "
            f"{level['loadgen_cpu_seconds']:.1f} s, sender lateness p95 {late:.0f} ms{extra}"
        )
    good = [lv["calls"] for lv, g in zip(levels, ok, strict=True) if g]
    bad = [lv["calls"] for lv, g in zip(levels, ok, strict=True) if not g]
    verdict = (
        f"keeps up (every window scored, lag p99 < {hop_seconds:g} s) at up to {max(good)} calls"
        if good
        else "kept up at no level"
    )
    if bad:
        verdict += f"; falls behind from {min(bad)} calls"
    lines.append(verdict)
    return "\n".join(lines)
