"""Serving backends: how a loaded :class:`~streamguard.model.base.Detector` runs its network.

``[model] backend`` chooses (benchmarks/README.md has the measurements behind the default):

=====================  ==============================================================  ==========
backend                what runs the network                                           devices
=====================  ==============================================================  ==========
``eager``              the PyTorch module as it is                                     CPU, CUDA
``torchscript``        a TorchScript trace (one C++ call per batch), checked vs eager  CPU, CUDA
``onnxruntime``        ONNX Runtime (CPU), fp32, exported from the module, front end   CPU
                       included (waveforms in, logits out: one native call a batch)
``onnxruntime-int8``   ONNX Runtime with int8 convolutions (static, per channel),      CPU
                       calibrated on the bundled demo call; front end and stem fp32
``torch-bf16``         a TorchScript trace with bf16 weights (oneDNN: AVX512-BF16,     CPU
                       AMX), the front end fp32
``cuda-graphs``        CUDA graphs captured per batch size 1, 2, 4 ... max_batch       CUDA
                       (model/cuda_graphs.py); batches padded to the next size
``auto``               CUDA: ``cuda-graphs``, then ``torchscript``, then ``eager``;    CPU, CUDA
                       CPU: the fastest at parity of ``onnxruntime-int8``,
                       ``onnxruntime`` and (CPUs with bf16 instructions)
                       ``torch-bf16``, chosen by a probe (model/probe.py) and cached;
                       then ``torchscript``, ``eager``
=====================  ==============================================================  ==========

Score parity is a hard rule: a backend is used only if its P(fake) stays within
:data:`PARITY_TOLERANCE` of the eager fp32 module on check windows it was not calibrated on
(the demo call cut half a hop off the calibration grid, plus noise and silence). Otherwise the
next backend in line is used and the reason logged, so an exotic model never gets a silently
different detector.

The ONNX graph holds the front end too: ``torch.stft`` does not export (complex tensors), so a
front end with a ``matmul_form()`` (the log-mels: model/frontend.py, ``DFTPower``) is exported
in that form, and a batch is one ONNX Runtime call, waveform to logit, with the GIL released
throughout (before, a dozen torch calls of the front end ran first, each re-taking the GIL
beside the event loop). A front end without one stays in torch before the graph;
architectures without a separate front end are exported whole.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import structlog

# The speech backends are calibrated and checked on: the demo call, cut by audio/demo.py (this
# module reads no audio files itself).
from streamguard.audio.demo import check_windows, demo_windows
from streamguard.backends import BACKENDS

log = structlog.get_logger(__name__)


#: Largest |P(fake) difference| from eager fp32 a backend may show on the check windows.
PARITY_TOLERANCE = 0.01

_CPU_CHAIN = ("onnxruntime-int8", "onnxruntime", "torchscript", "eager")

#: Whether ONNX builds take waveforms (the log-mel inside the graph) or log-mels (the log-mel in
#: torch before the graph, as before issue #20). Not a config option: ``streamguard bench
#: --onnx-front`` flips it to measure both in one daemon (thread workers), see
#: benchmarks/README.md.
FRONT_IN_GRAPH = True


class BackendUnavailable(Exception):
    """This backend cannot serve this model here (missing package, export failure, drift)."""


@dataclass(frozen=True)
class ParityReport:
    windows: int
    max_abs_diff: float


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def candidates(backend: str, device_type: str) -> tuple[str, ...]:
    """Backends to try, in order, for ``backend`` on ``device_type``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return (backend,)
    if device_type == "cuda":
        return ("cuda-graphs", "torchscript", "eager")
    return _CPU_CHAIN


# -- runners ------------------------------------------------------------------------------------
def _probabilities(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def parity(
    reference: Callable[[Any], Any] | np.ndarray, runner: Callable[[Any], Any], waves
) -> ParityReport:
    """Max |P(fake) difference| of ``runner`` vs ``reference`` (both torch logits callables;
    ``reference`` may also be its P(fake) on ``waves``, from :func:`reference_probabilities`)."""
    expected = (
        reference
        if isinstance(reference, np.ndarray)
        else reference_probabilities(reference, waves)
    )
    got = reference_probabilities(runner, waves)
    return ParityReport(int(waves.shape[0]), float(np.abs(expected - got).max(initial=0.0)))


def reference_probabilities(model: Callable[[Any], Any], waves) -> np.ndarray:
    """P(fake) of a torch logits callable on ``waves``, in batches of 8."""
    import torch

    out = []
    with torch.inference_mode():
        for i in range(0, waves.shape[0], 8):
            out.append(_probabilities(model(waves[i : i + 8]).float().cpu().numpy().reshape(-1)))
    return np.concatenate(out) if out else np.zeros(0)


def _split(module: Any, in_graph_front: bool | None = None) -> tuple[Any, Any]:
    """``(front end kept in torch or None, what is exported)``: the whole module, with its
    front end in matmul form when it has one (one graph from waveform to logit).
    ``in_graph_front=False`` keeps the front end in torch (the bench's comparison)."""
    import torch

    front = getattr(module, "frontend", None)
    after = getattr(module, "logit_from_frontend", None)
    if front is None or after is None:
        return None, module
    matmul_form = getattr(front, "matmul_form", None)
    if matmul_form is not None and _front_in_graph(in_graph_front):

        class WholeGraph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.front = matmul_form()
                self.inner = module

            def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
                return self.inner.logit_from_frontend(self.front(waveforms))

        return None, WholeGraph().eval()

    class AfterFrontEnd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, features: torch.Tensor) -> torch.Tensor:
            return self.inner.logit_from_frontend(features)

    return front, AfterFrontEnd().eval()


def _export(network: Any, example: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    # Not under no_grad: there, MultiheadAttention takes its fused fast path, which has no
    # ONNX export.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            network,
            (example,),
            buffer,
            input_names=["x"],
            output_names=["logit"],
            dynamic_axes={"x": {0: "batch"}, "logit": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return buffer.getvalue()


def _quantize(model: bytes, calibration: np.ndarray) -> bytes:
    """Static int8 (QDQ, per-channel weights, uint8 activations) for every Conv but the first.

    The stem convolution sees the raw log-mel (wide range, one channel): quantizing it cost the
    starter model 0.09 of P(fake) on the demo call, everything after it 0.007.
    """
    import os
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    convs = [n.name for n in onnx.load_from_string(model).graph.node if n.op_type == "Conv"]
    if len(convs) < 2:
        raise BackendUnavailable("no convolutions to quantize")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._rows = iter(calibration[i : i + 1] for i in range(calibration.shape[0]))

        def get_next(self):
            row = next(self._rows, None)
            return None if row is None else {"x": row}

    with tempfile.TemporaryDirectory(prefix="streamguard-int8-") as tmp:
        src, pre, out = (os.path.join(tmp, n) for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        with open(src, "wb") as f:
            f.write(model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(src, pre, skip_symbolic_shape=True)
            quantize_static(
                pre,
                out,
                Reader(),
                quant_format=QuantFormat.QDQ,
                op_types_to_quantize=["Conv"],
                nodes_to_exclude=convs[:1],
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
            )
        with open(out, "rb") as f:
            return f.read()


#: ONNX Runtime graph transformers left out of every session. ``QDQPropagationTransformer``
#: moves the QuantizeLinear after koyelog's fp32 stem up through its max-pool, which then runs
#: as ONNX Runtime's uint8 NCHW MaxPool: 25 ms of a 66 ms int8 batch of 16 (1 thread, profiled;
#: the fp32 max-pool where the quantizer put it takes ~2 ms). Without it the bundled model's
#: int8 graph ran 1.26-1.64x faster with bit-identical logits (benchmarks/README.md, #20).
DISABLED_OPTIMIZERS = ("QDQPropagationTransformer",)


def _session(model: bytes, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.inter_op_num_threads = 1
    if threads:
        options.intra_op_num_threads = threads
    # Idle pool threads must not spin: on a small host they would take the event loop's core.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return ort.InferenceSession(
        model,
        options,
        providers=["CPUExecutionProvider"],
        disabled_optimizers=list(DISABLED_OPTIMIZERS),
    )


class OnnxRunner:
    """``runner(torch waveforms [B, S]) -> torch logits [B]`` through ONNX Runtime.

    With the front end in the graph (``front`` None) the waveforms reach ONNX Runtime as the
    caller's own float32 memory (``Tensor.numpy()`` and a C-contiguous array are views, not
    copies) and the logits come back as a view too: one native call, no Python in between.
    """

    def __init__(self, front: Any, session: Any) -> None:
        self.front = front
        self.session = session

    def __call__(self, waveforms):
        import torch

        features = self.front(waveforms) if self.front is not None else waveforms
        x = np.ascontiguousarray(features.detach().float().cpu().numpy())
        (logits,) = self.session.run(None, {"x": x})
        return torch.from_numpy(np.asarray(logits, dtype=np.float32).reshape(-1))


class Bf16Runner:
    """``runner(torch waveforms [B, S]) -> torch logits [B]``: a TorchScript trace of the
    module with bf16 weights and activations (oneDNN), its front end kept fp32.

    Why the front end stays fp32: squared STFT magnitudes and dB values need more than bf16's
    8 mantissa bits; every architecture casts the front end's output to its first layer's
    dtype, so the network after it runs bf16.
    """

    def __init__(self, module: Any, window_samples: int) -> None:
        import copy

        import torch

        net = copy.deepcopy(module).to(torch.bfloat16).eval()
        front = getattr(module, "frontend", None)
        if front is not None:
            net.frontend = front  # shared fp32 buffers, read-only
        example = 0.1 * torch.randn(2, window_samples, generator=torch.Generator().manual_seed(0))
        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self.net = torch.jit.trace(net, example, check_trace=False)
                self.net(example)
        except Exception as exc:
            raise BackendUnavailable(f"bf16 trace failed: {type(exc).__name__}") from None

    def __call__(self, waveforms):
        return self.net(waveforms.float()).float()


def cache_dir() -> Path:
    """Where built ONNX models are kept between starts (``STREAMGUARD_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/streamguard``, else ``~/.cache/streamguard``)."""
    explicit = os.environ.get("STREAMGUARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "streamguard"


def _front_in_graph(in_graph_front: bool | None) -> bool:
    return FRONT_IN_GRAPH if in_graph_front is None else in_graph_front


def _cache_key(
    module: Any, window_samples: int, int8: bool, in_graph_front: bool | None = None
) -> str:
    """The weights, the network's type, the window and the tool versions: what the build reads.

    v2: the graph takes waveforms (front end inside); a v1 build took log-mel features.
    """
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    digest.update(
        f"{type(module).__qualname__}|{window_samples}|{int8}|{torch.__version__}|"
        f"{onnxruntime.__version__}|{'v2' if _front_in_graph(in_graph_front) else 'v1'}".encode()
    )
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _cached(key: str, kind: str = "onnx", suffix: str = ".onnx") -> bytes | None:
    try:
        return (cache_dir() / kind / f"{key}{suffix}").read_bytes()
    except OSError:
        return None


def _store(key: str, model: bytes, kind: str = "onnx", suffix: str = ".onnx") -> None:
    """Best effort: an unwritable cache only costs the next start the build time."""
    folder = cache_dir() / kind
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(model)
        tmp.replace(folder / f"{key}{suffix}")
    except OSError as exc:
        log.info("serving_cache_unwritable", path=str(folder), error=exc.strerror)


def build_onnx_runner(
    module: Any,
    window_samples: int,
    *,
    int8: bool,
    threads: int | None = None,
    in_graph_front: bool | None = None,
) -> OnnxRunner:
    """Export ``module`` (fp32, CPU) to ONNX Runtime; ``int8`` quantizes its convolutions.

    The built model is cached on disk (:func:`cache_dir`), keyed by the weights, so only the
    first start with a model pays the export (and calibration) time. ``in_graph_front=False``
    exports only the network after the front end, which then runs in torch first (what served
    before issue #20; kept for ``streamguard bench model``'s comparison).
    """
    if not onnxruntime_available():
        raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime)")
    front, network = _split(module, in_graph_front)
    key = _cache_key(module, window_samples, int8, in_graph_front)
    model = _cached(key)
    if model is None:
        model = _build(front, network, window_samples, int8)
        _store(key, model)
    return OnnxRunner(front, _session(model, threads))


def _build(front: Any, network: Any, window_samples: int, int8: bool) -> bytes:
    import torch

    calibration = demo_windows(window_samples)
    with torch.no_grad():
        example = torch.from_numpy(calibration[:2])
        features = front(example) if front is not None else example
    try:
        model = _export(network, features)
    except Exception as exc:
        raise BackendUnavailable(f"ONNX export failed: {type(exc).__name__}") from None
    if int8:
        with torch.no_grad():
            batch = torch.from_numpy(calibration)
            calib = front(batch) if front is not None else batch
        model = _quantize(model, np.ascontiguousarray(calib.float().numpy()))
    return model


def _build_runner(module: Any, window_samples: int, name: str, threads: int | None) -> Any:
    """A runner of precision path ``name`` (a CPU candidate of the probe)."""
    if name == "torch-bf16":
        return Bf16Runner(module, window_samples)
    if name in ("onnxruntime", "onnxruntime-int8"):
        return build_onnx_runner(
            module, window_samples, int8=name.endswith("int8"), threads=threads
        )
    raise ValueError(f"not a probe candidate: {name}")


# -- the start-up probe (model/probe.py) --------------------------------------------------------
#: Windows per timed batch of the probe: the engine's default max_batch, where capacity is won.
PROBE_BATCH = 16
#: Timed rounds per candidate (interleaved); two untimed calls each first.
PROBE_ROUNDS = 5


def _probe_key(module: Any, window_samples: int, threads: int | None) -> str:
    """The weights and tool versions (as for the builds), the CPU and the thread count."""
    from streamguard.model.probe import cpu_flags, cpu_summary

    summary = json.dumps(cpu_summary(cpu_flags()), sort_keys=True)
    text = f"{_cache_key(module, window_samples, False)}|{threads}|{summary}|probe-v1"
    # (the cache key says where the log-mel runs: v1 in torch, v2 in the graph)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cached_decision(detector: Any, threads: int | None) -> Any:
    """The probe's cached :class:`~streamguard.model.probe.Decision` for this model, CPU and
    thread count, or None."""
    from streamguard.model.probe import Decision

    raw = _cached(_probe_key(detector.module, detector.window_samples, threads), "probe", ".json")
    if raw is None:
        return None
    try:
        return Decision.from_dict(json.loads(raw))
    except (ValueError, TypeError, KeyError):
        return None  # a damaged file: probe again


def probe(module: Any, window_samples: int, threads: int | None) -> Any:
    """Build, check and time every precision path this CPU can run; cache the decision.

    Parity is checked against eager fp32 on :func:`check_windows` (the same rule as serving);
    the candidates at parity are timed on batches of :data:`PROBE_BATCH` real windows with
    ``threads`` CPU threads each (torch's thread count is set for the bf16 path and restored).
    Returns the :class:`~streamguard.model.probe.Decision`.
    """
    import torch

    from streamguard.model.probe import (
        Trial,
        cpu_flags,
        cpu_summary,
        decide,
        precision_candidates,
        time_candidates,
    )

    flags = cpu_flags()
    waves = torch.from_numpy(check_windows(window_samples))
    expected = reference_probabilities(module, waves)
    runners: dict[str, Any] = {}
    parities: dict[str, float] = {}
    errors: dict[str, str] = {}
    names = precision_candidates(flags)
    for name in names:
        try:
            runner = _build_runner(module, window_samples, name, threads)
            parities[name] = parity(expected, runner, waves).max_abs_diff
        except BackendUnavailable as exc:
            errors[name] = str(exc)
            continue
        if parities[name] <= PARITY_TOLERANCE:
            runners[name] = runner
    batch = waves[np.arange(PROBE_BATCH) % waves.shape[0]].contiguous()
    saved = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            seconds = time_candidates(runners, batch, rounds=PROBE_ROUNDS)
    finally:
        torch.set_num_threads(saved)
    trials = [Trial(n, parities.get(n), seconds.get(n, ()), errors.get(n)) for n in names]
    decision = decide(trials, PARITY_TOLERANCE)
    decision = type(decision)(
        decision.choice, decision.order, decision.trials, decision.reason, cpu_summary(flags)
    )
    _store(
        _probe_key(module, window_samples, threads),
        json.dumps(decision.to_dict(), indent=1).encode(),
        "probe",
        ".json",
    )
    log.info("backend_probe", choice=decision.choice, reason=decision.reason, threads=threads)
    return decision


def _probes(detector: Any, backend: str) -> bool:
    """Whether serving ``backend`` on this detector goes through the probe."""
    return backend == "auto" and detector.device.type == "cpu" and not detector.half


def build_in_subprocess(
    detector: Any,
    backend: str = "auto",
    timeout: float = 900.0,
    *,
    cancelled: threading.Event | None = None,
    threads: int | None = None,
) -> None:
    """Export (and calibrate) ``backend``'s ONNX model into the cache from a child process;
    for ``auto`` on the CPU, run the whole probe there (every candidate built, checked, timed).

    The export and the quantizer are mostly Python: in the daemon's own process they would hold
    the GIL for tens of seconds and starve the event loop. The child only fills the cache; the
    caller then serves from it (the parity check runs here, on the real detector). Setting
    ``cancelled`` kills the child within a fraction of a second (a daemon stopping mid-build).
    ``threads`` must be what the caller will serve with: the probe's decision is keyed by it.
    """
    import copy
    import multiprocessing as mp

    # The child gets a private copy of the network, never the served one: pickling a module
    # for a child (torch's ForkingPickler reductions) moves each parameter's storage into
    # shared memory *in place*, freeing the old buffer while the daemon's own thread may be
    # scoring through it (a TorchScript trace shares those storages). That race gave NaN
    # scores or a segfault at start-up with a cold cache. Copying only reads the weights.
    module = copy.deepcopy(detector.module)
    if _probes(detector, backend):
        target, args = probe, (module, detector.window_samples, threads)
    else:
        first = candidates(backend, detector.device.type)[0]
        if not first.startswith("onnxruntime"):
            return
        target = _build_to_cache
        args = (module, detector.window_samples, first.endswith("int8"))
    ctx = mp.get_context("spawn")
    proc = ctx.Process(target=target, args=args, name="streamguard-onnx-build", daemon=True)
    proc.start()
    deadline = time.monotonic() + timeout
    while proc.is_alive() and time.monotonic() < deadline:
        if cancelled is not None and cancelled.is_set():
            break
        proc.join(0.1)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _build_to_cache(module: Any, window_samples: int, int8: bool) -> None:
    key = _cache_key(module, window_samples, int8)
    if _cached(key) is None:
        front, network = _split(module)
        _store(key, _build(front, network, window_samples, int8))


def needs_build(detector: Any, backend: str = "auto", threads: int | None = None) -> bool:
    """Whether serving ``backend`` would export, calibrate or probe first (nothing cached): the
    daemon then starts on TorchScript and switches once the build is done."""
    if detector.device.type != "cpu" or detector.half:
        return False
    try:
        if _probes(detector, backend):
            return cached_decision(detector, threads) is None
        first = candidates(backend, detector.device.type)[0]
        if not first.startswith("onnxruntime") or not onnxruntime_available():
            return False
        key = _cache_key(detector.module, detector.window_samples, first.endswith("int8"))
    except Exception:
        return False
    return _cached(key) is None


def serve(detector: Any, backend: str = "auto", *, threads: int | None = None) -> str:
    """Make ``detector`` serve through the first usable backend for ``backend``; its name.

    Every non-eager backend is checked against eager fp32 on :func:`check_windows` and skipped
    (with a log line saying why) if any P(fake) moves by more than :data:`PARITY_TOLERANCE`.
    ``auto`` on the CPU serves the probe's choice (:func:`probe`, cached per model, CPU and
    ``threads``), then the other candidates at parity, fastest first, then TorchScript, eager.
    """
    tried: list[str] = []
    chain = candidates(backend, detector.device.type)
    decision = None
    if _probes(detector, backend):
        decision = cached_decision(detector, threads) or probe(
            detector.module, detector.window_samples, threads
        )
        chain = (*decision.order, "torchscript", "eager")
    for name in chain:
        try:
            _install(detector, name, threads)
        except BackendUnavailable as exc:
            tried.append(f"{name}: {exc}")
            log.info("backend_unavailable", backend=name, reason=str(exc))
            continue
        if tried:
            log.info("backend_fallback", backend=name, skipped=tried)
        detector.backend_probe = None if decision is None else decision.to_dict()
        return name
    raise BackendUnavailable("; ".join(tried))


def _install(detector: Any, name: str, threads: int | None) -> None:
    if name == "eager":
        detector.set_runner(detector.module, "eager")
        return
    if name == "torchscript":
        if not detector.use_torchscript():
            raise BackendUnavailable("the trace differs from eager or cannot be made")
        return
    if name == "cuda-graphs":
        _install_cuda_graphs(detector)
        return
    if detector.device.type != "cpu" or detector.half:
        raise BackendUnavailable(f"{name} serves fp32 models on the CPU only")
    runner = _build_runner(detector.module, detector.window_samples, name, threads)
    import torch

    report = parity(
        detector.module, runner, torch.from_numpy(check_windows(detector.window_samples))
    )
    if not report.max_abs_diff <= PARITY_TOLERANCE:
        raise BackendUnavailable(
            f"P(fake) differs from eager by {report.max_abs_diff:.4f} > {PARITY_TOLERANCE}"
        )
    detector.set_runner(runner, name, parity=report.max_abs_diff)


def _install_cuda_graphs(detector: Any, max_batch: int = 16) -> None:
    """CUDA graphs of the detector's own module (its precision), checked against it."""
    if detector.device.type != "cuda":
        raise BackendUnavailable("CUDA graphs need a CUDA device")
    import torch

    from streamguard.model.cuda_graphs import GraphRunner

    dtype = next(detector.module.parameters()).dtype
    try:
        runner = GraphRunner(
            detector.module,
            detector.window_samples,
            max_batch=max_batch,
            dtype=dtype,
            device=detector.device,
        )
    except Exception as exc:  # an op that cannot be captured: the next backend serves
        raise BackendUnavailable(f"capture failed: {type(exc).__name__}") from None
    waves = torch.from_numpy(check_windows(detector.window_samples)).to(detector.device, dtype)
    report = parity(detector.module, runner, waves)
    if not report.max_abs_diff <= PARITY_TOLERANCE:
        raise BackendUnavailable(
            f"P(fake) differs from eager by {report.max_abs_diff:.4f} > {PARITY_TOLERANCE}"
        )
    detector.set_runner(runner, "cuda-graphs", parity=report.max_abs_diff)
