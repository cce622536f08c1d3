"""Which precision path serves this model fastest on this CPU: a short probe at start-up.

Why a probe and not a table: the fastest path depends on the CPU (int8 with VNNI, bf16 with
AVX512-BF16 or AMX, plain fp32 AVX2), the model (how much of it is convolutions, which int8
kernels its shapes hit) and the ONNX Runtime / oneDNN versions, and issue #20 measured the
order change between an AVX2 AMD box and an AVX-512/AMX Xeon. So at the first start with a
model, every candidate that this CPU can run is built, checked for score parity against eager
fp32, and timed on a few real batches; the fastest one at parity serves. The decision is
cached beside the built models (``serving.cache_dir()/probe``), keyed by the weights, the CPU
and the thread count, so later starts skip the probe.

:func:`decide` is the pure part (unit-tested with injected timings); :func:`time_candidates`
takes the timings (interleaved rounds, as the benchmarks do, so a burst of load on a shared
host is spread over every candidate instead of ruining one).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: A later candidate must be this much faster (per window) to displace an earlier one: timing
#: noise on a shared host must not flip the choice between two near-equal paths.
MARGIN = 0.05

#: CPU flags (``/proc/cpuinfo`` names) that say a precision has native instructions here.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
VNNI_FLAGS = ("amx_int8", "avx512_vnni", "avx_vnni")


@dataclass(frozen=True)
class Trial:
    """One candidate as the probe found it: parity (max |dP| vs eager fp32) and seconds per
    window of each timed batch; ``error`` when it could not be built or run."""

    name: str
    parity: float | None = None
    seconds_per_window: tuple[float, ...] = ()
    error: str | None = None

    @property
    def median(self) -> float | None:
        if not self.seconds_per_window:
            return None
        return statistics.median(self.seconds_per_window)

    def passes(self, tolerance: float) -> bool:
        return (
            self.error is None
            and self.parity is not None
            and self.parity <= tolerance
            and self.median is not None
        )


@dataclass(frozen=True)
class Decision:
    """What serves (``choice``), the order to fall back in, and the evidence."""

    choice: str | None
    order: tuple[str, ...]  # the passing candidates, the choice first
    trials: tuple[Trial, ...] = ()
    reason: str = ""
    cpu: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["trials"] = [
            {**asdict(t), "windows_per_second": None if not t.median else 1.0 / t.median}
            for t in self.trials
        ]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        trials = tuple(
            Trial(
                name=str(t["name"]),
                parity=t.get("parity"),
                seconds_per_window=tuple(float(v) for v in t.get("seconds_per_window", ())),
                error=t.get("error"),
            )
            for t in data.get("trials", ())
        )
        return cls(
            choice=data.get("choice"),
            order=tuple(data.get("order", ())),
            trials=trials,
            reason=str(data.get("reason", "")),
            cpu=dict(data.get("cpu", {})),
        )


def decide(trials: Sequence[Trial], tolerance: float, margin: float = MARGIN) -> Decision:
    """The fastest candidate at parity; ``trials`` are in preference order.

    A candidate that failed, drifted beyond ``tolerance`` or has no timing never serves. Among
    the rest, a later one replaces the current pick only when its median seconds per window is
    more than ``margin`` below the pick's (ties and noise keep the preferred, earlier one).
    The order to fall back in is every passing candidate, fastest first.
    """
    passing = [t for t in trials if t.passes(tolerance)]
    if not passing:
        why = (
            "; ".join(f"{t.name}: {t.error or f'parity {t.parity}'}" for t in trials)
            or "no candidates"
        )
        return Decision(None, (), tuple(trials), f"nothing at parity ({why})")
    best = passing[0]
    for trial in passing[1:]:
        if trial.median < best.median * (1.0 - margin):  # type: ignore[operator]
            best = trial
    rest = sorted((t for t in passing if t is not best), key=lambda t: t.median)  # type: ignore[arg-type,return-value]
    speedups = ", ".join(f"{t.name} {1.0 / t.median:.1f} w/s" for t in [best, *rest])  # type: ignore[operator]
    return Decision(
        best.name,
        (best.name, *(t.name for t in rest)),
        tuple(trials),
        f"fastest at parity: {speedups}",
    )


def time_candidates(
    runners: dict[str, Callable[[Any], Any]],
    batch: Any,
    *,
    rounds: int = 5,
    warmup: int = 2,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, tuple[float, ...]]:
    """Seconds per window of each runner on ``batch`` (rows = windows), ``rounds`` times,
    one call of every runner per round (interleaved)."""
    rows = int(batch.shape[0])
    for run in runners.values():
        for _ in range(warmup):
            run(batch)
    out: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            started = clock()
            run(batch)
            out[name].append((clock() - started) / rows)
    return {name: tuple(v) for name, v in out.items()}


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """This CPU's feature flags, by their ``/proc/cpuinfo`` names.

    From ``cpuinfo`` when it has a flags line; where it is unreadable (systemd's
    ``ProcSubset=pid`` in the shipped unit hides it) or has none, from :func:`runtime_cpu_flags`
    (CPUID as the numeric libraries see it), so the probe still offers the bf16 path on a CPU
    that has it.
    """
    return _cpuinfo_flags(cpuinfo) or runtime_cpu_flags()


def _cpuinfo_flags(cpuinfo: Path) -> frozenset[str]:
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


#: numpy's CPU feature names (``__cpu_features__``, from CPUID on x86) -> ``/proc/cpuinfo``'s.
_NUMPY_FLAGS = {
    "SSE3": "pni", "SSSE3": "ssse3", "SSE41": "sse4_1", "SSE42": "sse4_2", "POPCNT": "popcnt",
    "AVX": "avx", "F16C": "f16c", "FMA3": "fma", "AVX2": "avx2", "BMI": "bmi1", "BMI2": "bmi2",
    "LZCNT": "abm", "MOVBE": "movbe", "AVX512F": "avx512f", "AVX512CD": "avx512cd",
    "AVX512BW": "avx512bw", "AVX512DQ": "avx512dq", "AVX512VL": "avx512vl",
    "AVX512IFMA": "avx512ifma", "AVX512VBMI": "avx512vbmi", "AVX512VBMI2": "avx512_vbmi2",
    "AVX512BITALG": "avx512_bitalg", "AVX512VPOPCNTDQ": "avx512_vpopcntdq",
    "AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16", "AVX512FP16": "avx512_fp16",
    "GFNI": "gfni", "VAES": "vaes", "VPCLMULQDQ": "vpclmulqdq",
    "ASIMD": "asimd", "ASIMDHP": "asimdhp", "ASIMDDP": "asimddp", "ASIMDFHM": "asimdfhm",
}  # fmt: skip

#: torch's capability names (``torch.cpu.get_capabilities()``) that differ from the kernel's;
#: the rest (avx2, avx512_vnni, avx_vnni, avx512_bf16, amx_bf16, amx_int8, ...) are the same.
_TORCH_FLAGS = {
    "sse3": "pni", "fma3": "fma", "bmi": "bmi1", "lzcnt": "abm", "sha": "sha_ni",
    "avx512_f": "avx512f", "avx512_cd": "avx512cd", "avx512_dq": "avx512dq",
    "avx512_bw": "avx512bw", "avx512_vl": "avx512vl", "avx512_ifma": "avx512ifma",
    "avx512_vbmi": "avx512vbmi",
}  # fmt: skip


@functools.cache
def runtime_cpu_flags() -> frozenset[str]:
    """This CPU's flags without ``/proc``, mapped onto ``/proc/cpuinfo``'s names.

    Two sources, united. numpy's dispatch table executes CPUID itself, so it answers under
    ``ProcSubset=pid``; it knows AVX2, the AVX-512 family with VNNI and BF16, but not AMX or
    AVX-VNNI (every CPU with AMX-BF16 so far also has AVX512-BF16, so the bf16 verdict holds;
    an AVX-VNNI-only CPU loses its VNNI line in the probe's record, which chooses nothing).
    torch's capabilities (its cpuinfo library) name AMX and AVX-VNNI too, but that library
    parses ``/proc/cpuinfo`` on Linux and answers nothing where it is hidden: it helps only
    where the file is there without a flags line.
    """
    return frozenset(_numpy_flags() | _torch_capabilities())


def _numpy_flags() -> set[str]:
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # numpy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return set()
    return {_NUMPY_FLAGS[k] for k, on in features.items() if on and k in _NUMPY_FLAGS}


def _torch_capabilities() -> set[str]:
    try:
        import torch
    except ImportError:
        return set()
    cpu = getattr(torch, "cpu", None)
    read = getattr(cpu, "get_capabilities", None)  # public in torch 2.14
    if read is None:
        read = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    if read is None:
        return set()
    try:
        caps = dict(read())
    except Exception:  # a capability query must never stop the probe
        return set()
    return {_TORCH_FLAGS.get(k, k) for k, on in caps.items() if on is True}


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (``unknown`` where ``/proc/cpuinfo`` is hidden)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name":
            return value.strip()
    return "unknown"


def precision_candidates(flags: frozenset[str], *, bf16: bool = True) -> tuple[str, ...]:
    """Serving backends worth probing on a CPU with ``flags``, in preference order.

    int8 first (static QDQ convolutions: VNNI does them natively, plain AVX2 with u8 x s8
    multiply-adds, still faster than fp32 on the models measured), then fp32 ONNX; bf16
    (oneDNN through torch) only where the CPU has bf16 instructions: elsewhere it is emulated
    and only slower.
    """
    names = ["onnxruntime-int8", "onnxruntime"]
    if bf16 and any(f in flags for f in BF16_FLAGS):
        names.append("torch-bf16")
    return tuple(names)


def cpu_summary(flags: frozenset[str]) -> dict[str, Any]:
    """What the decision cache records about the CPU (and keys on)."""
    return {
        "model": cpu_model(),
        "vnni": sorted(f for f in VNNI_FLAGS if f in flags),
        "bf16": sorted(f for f in BF16_FLAGS if f in flags),
        "avx512f": "avx512f" in flags,
        "avx2": "avx2" in flags,
    }
