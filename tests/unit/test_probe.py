"""The start-up probe (model/probe.py): the fastest precision path at score parity on this CPU,
cached per model, CPU and thread count; ``[model] backend`` other than auto skips it."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from streamguard.model import Detector, ModelInfo, build_module
from streamguard.model.probe import (
    BF16_FLAGS,
    VNNI_FLAGS,
    Decision,
    Trial,
    _cpuinfo_flags,
    _numpy_flags,
    cpu_flags,
    cpu_model,
    decide,
    precision_candidates,
    runtime_cpu_flags,
    time_candidates,
)
from streamguard.model.serving import PARITY_TOLERANCE, cache_dir, cached_decision, serve
from tests.conftest import TINY_MODEL_PARAMS


def fresh_tiny(seed: int) -> Detector:
    torch.manual_seed(seed)
    module = build_module("koyelog-resnet", TINY_MODEL_PARAMS)
    return Detector(module, ModelInfo(name="tiny", architecture="koyelog-resnet"), device="cpu")


def test_the_fastest_candidate_at_parity_serves():
    trials = [
        Trial("onnxruntime-int8", 0.004, (0.010, 0.011, 0.009)),
        Trial("onnxruntime", 1e-7, (0.020, 0.021, 0.019)),
        Trial("torch-bf16", 0.006, (0.005, 0.005, 0.006)),
    ]
    d = decide(trials, PARITY_TOLERANCE)
    assert d.choice == "torch-bf16"
    assert d.order == ("torch-bf16", "onnxruntime-int8", "onnxruntime")  # fallbacks fastest first
    assert "torch-bf16 200.0 w/s" in d.reason


def test_drift_and_failures_never_serve_however_fast():
    trials = [
        Trial("onnxruntime-int8", 0.09, (0.001,)),  # drifted
        Trial("onnxruntime", 0.0, (0.020,)),
        Trial("torch-bf16", None, (), error="bf16 trace failed: RuntimeError"),
    ]
    d = decide(trials, PARITY_TOLERANCE)
    assert d.choice == "onnxruntime" and d.order == ("onnxruntime",)
    none = decide(trials[:1] + trials[2:], PARITY_TOLERANCE)
    assert none.choice is None and none.order == ()
    assert "parity 0.09" in none.reason and "bf16 trace failed" in none.reason


def test_timing_noise_within_the_margin_keeps_the_preferred_candidate():
    trials = [Trial("onnxruntime-int8", 0.0, (0.0100,)), Trial("onnxruntime", 0.0, (0.0097,))]
    assert decide(trials, PARITY_TOLERANCE).choice == "onnxruntime-int8"  # 3 % faster: noise
    trials[1] = Trial("onnxruntime", 0.0, (0.0090,))
    assert decide(trials, PARITY_TOLERANCE).choice == "onnxruntime"  # 10 % faster


def test_bf16_is_probed_only_where_the_cpu_has_bf16_instructions(tmp_path):
    avx2 = frozenset({"avx2", "fma"})
    assert precision_candidates(avx2) == ("onnxruntime-int8", "onnxruntime")
    for flag in ("avx512_bf16", "amx_bf16"):
        assert "torch-bf16" in precision_candidates(avx2 | {flag})
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Test CPU 9000\nflags\t\t: fpu avx2 amx_bf16 amx_int8\n"
    )
    assert cpu_flags(cpuinfo) == {"fpu", "avx2", "amx_bf16", "amx_int8"}
    assert cpu_model(cpuinfo) == "Test CPU 9000"
    # hidden or flag-less: the flags come from CPUID instead (the next tests check them)
    assert cpu_flags(tmp_path / "missing") == runtime_cpu_flags()
    (tmp_path / "noflags").write_text("processor\t: 0\n")
    assert cpu_flags(tmp_path / "noflags") == runtime_cpu_flags()


def _verdicts(flags: frozenset[str]) -> dict[str, object]:
    """What the probe decides from the flags: the candidates and the VNNI / BF16 / ISA lines."""
    return {
        "candidates": precision_candidates(flags),
        "vnni": any(f in flags for f in VNNI_FLAGS),
        "bf16": any(f in flags for f in BF16_FLAGS),
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
    }


REAL_CPUINFO = Path("/proc/cpuinfo")
needs_cpuinfo = pytest.mark.skipif(
    not _cpuinfo_flags(REAL_CPUINFO),
    reason="no /proc/cpuinfo flags line here to compare the CPUID fallback with",
)


@needs_cpuinfo
def test_the_cpuid_fallback_agrees_with_proc_cpuinfo_on_this_cpu(tmp_path):
    """Two independent sources (the kernel's flags line, CPUID through numpy/torch): the
    fallback must lead the probe to the same candidates and verdicts, and name no flag the
    kernel does not (it may know fewer: AMX and AVX-VNNI are missing from numpy's table)."""
    real = _cpuinfo_flags(REAL_CPUINFO)
    fallback = cpu_flags(tmp_path / "nonexistent")
    assert _verdicts(fallback) == _verdicts(real)
    assert fallback <= real, sorted(fallback - real)
    # torch's half reads /proc/cpuinfo itself: the CPUID half alone must carry the verdicts,
    # as it does where the file is hidden (the next test, for real)
    assert _verdicts(frozenset(_numpy_flags())) == _verdicts(real)


def _hidden_proc_flags() -> frozenset[str] | None:
    """:func:`cpu_flags` in a child whose /proc is mounted as systemd's ``ProcSubset=pid``
    mounts it (``subset=pid``: process directories only, no cpuinfo), or None where this host
    cannot make that mount (no mount namespace for us)."""
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    script = (
        "import json, pathlib; from streamguard.model.probe import cpu_flags; "
        "assert not pathlib.Path('/proc/cpuinfo').exists(), 'cpuinfo still visible'; "
        "print(json.dumps(sorted(cpu_flags())))"
    )
    python = shlex.quote(sys.executable)
    shell = f"mount -t proc -o subset=pid proc /proc && exec {python} -c {shlex.quote(script)}"
    flags = ["--mount", "--pid", "--fork"]
    if os.geteuid() != 0:
        flags = ["--map-root-user", *flags]
    try:
        done = subprocess.run(
            [unshare, *flags, "sh", "-c", shell], capture_output=True, text=True, timeout=120
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 and "Traceback" not in done.stderr:
        return None  # the namespaces or the subset=pid mount are not ours to make here
    assert done.returncode == 0, done.stderr
    return frozenset(json.loads(done.stdout.strip().splitlines()[-1]))


@pytest.mark.slow
@needs_cpuinfo
def test_a_daemon_under_proc_subset_pid_still_sees_this_cpus_precisions():
    """As under the shipped unit (``ProcSubset=pid``): /proc without cpuinfo, for real."""
    hidden = _hidden_proc_flags()
    if hidden is None:
        pytest.skip("cannot mount /proc with subset=pid here (no mount namespace)")
    assert _verdicts(hidden) == _verdicts(_cpuinfo_flags(REAL_CPUINFO))
    assert hidden <= _cpuinfo_flags(REAL_CPUINFO), sorted(hidden - _cpuinfo_flags(REAL_CPUINFO))


def test_candidates_are_timed_in_interleaved_rounds():
    order: list[str] = []
    ticks = iter(range(1000))

    def runner(name):
        return lambda batch: order.append(name)

    seconds = time_candidates(
        {"a": runner("a"), "b": runner("b")}, torch.zeros(4, 8), rounds=3, warmup=1,
        clock=lambda: float(next(ticks)),
    )  # fmt: skip
    assert order == ["a", "b", "a", "b", "a", "b", "a", "b"]  # warm-up, then one of each per round
    assert seconds == {"a": (0.25,) * 3, "b": (0.25,) * 3}  # one tick per call / 4 windows


def test_a_decision_survives_its_json_form():
    d = decide([Trial("onnxruntime", 1e-7, (0.02, 0.03))], PARITY_TOLERANCE)
    back = Decision.from_dict(json.loads(json.dumps(d.to_dict())))
    assert back.choice == d.choice and back.order == d.order and back.trials == d.trials
    assert d.to_dict()["trials"][0]["windows_per_second"] == pytest.approx(40.0)


@pytest.mark.slow
def test_auto_probes_once_serves_the_choice_and_caches_it_per_thread_count():
    detector = fresh_tiny(21)  # weights no other test probed
    assert cached_decision(detector, 1) is None
    name = serve(detector, "auto", threads=1)
    probe = detector.backend_probe
    assert probe is not None and name == probe["choice"] == detector.backend
    assert detector.backend_parity <= PARITY_TOLERANCE
    tried = {t["name"]: t for t in probe["trials"]}
    assert set(tried) == set(precision_candidates(cpu_flags()))  # what this CPU can run
    assert all(t["parity"] <= PARITY_TOLERANCE for t in tried.values() if t["error"] is None)
    assert probe["cpu"]["avx2"] == ("avx2" in cpu_flags())
    # cached beside the builds, keyed by the weights, the CPU and the threads
    cached = cached_decision(fresh_tiny(21), 1)
    assert cached is not None and cached.choice == name
    assert list((cache_dir() / "probe").glob("*.json"))
    assert cached_decision(fresh_tiny(21), 2) is None
    assert cached_decision(fresh_tiny(22), 1) is None
    # a later start serves the cached choice without timing anything again
    again = fresh_tiny(21)
    assert serve(again, "auto", threads=1) == name
    assert again.backend_probe["trials"] == probe["trials"]


@pytest.mark.slow
def test_a_named_backend_overrides_the_probe():
    detector = fresh_tiny(23)
    assert serve(detector, "onnxruntime", threads=1) == "onnxruntime"
    assert detector.backend_probe is None
    assert cached_decision(detector, 1) is None  # no probe ran


def test_a_damaged_cache_file_means_probing_again():
    from streamguard.model.serving import _probe_key

    detector = fresh_tiny(24)
    folder = cache_dir() / "probe"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{_probe_key(detector.module, detector.window_samples, 1)}.json").write_text("{")
    assert cached_decision(detector, 1) is None


def test_bf16_path_scores_close_to_eager_where_torch_runs_it():
    """The bf16 runner itself (oneDNN bf16 where the CPU has it, emulated elsewhere)."""
    from streamguard.model.serving import (
        Bf16Runner,
        check_windows,
        parity,
        reference_probabilities,
    )

    detector = fresh_tiny(25)
    waves = torch.from_numpy(check_windows(detector.window_samples)[:8])
    runner = Bf16Runner(detector.module, detector.window_samples)
    report = parity(reference_probabilities(detector.module, waves), runner, waves)
    assert report.max_abs_diff < 0.05  # bf16 keeps 8 mantissa bits: close, not equal
    assert next(detector.module.parameters()).dtype == torch.float32  # the caller's module
