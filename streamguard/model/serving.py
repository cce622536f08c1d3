"""Serving backends: how a loaded :class:`~streamguard.model.base.Detector` runs its network.

``[model] backend`` chooses (benchmarks/README.md has the measurements behind the default):

=====================  ==============================================================  ==========
backend                what runs the network                                           devices
=====================  ==============================================================  ==========
``eager``              the PyTorch module as it is                                     CPU, CUDA
``torchscript``        a TorchScript trace (one C++ call per batch), checked vs eager  CPU, CUDA
``onnxruntime``        ONNX Runtime (CPU), fp32, exported from the module              CPU
``onnxruntime-int8``   ONNX Runtime with int8 convolutions (static, per channel),      CPU
                       calibrated on the bundled demo call; the stem stays fp32
``cuda-graphs``        CUDA graphs captured per batch size 1, 2, 4 ... max_batch       CUDA
                       (model/cuda_graphs.py); batches padded to the next size
``auto``               CUDA: ``cuda-graphs``, then ``torchscript``, then ``eager``;    CPU, CUDA
                       CPU: ``onnxruntime-int8``, ``onnxruntime``, ``torchscript``,
                       ``eager``
=====================  ==============================================================  ==========

Score parity is a hard rule: a backend is used only if its P(fake) stays within
:data:`PARITY_TOLERANCE` of the eager fp32 module on check windows it was not calibrated on
(the demo call cut half a hop off the calibration grid, plus noise and silence). Otherwise the
next backend in line is used and the reason logged, so an exotic model never gets a silently
different detector.

Why the front end stays in PyTorch for ONNX: the log-mel's STFT does not export to ONNX
(complex tensors), and it is ~15 % of the work, so the network after it is exported instead.
Architectures without a separable front end are exported whole.
"""

from __future__ import annotations

import hashlib
import io
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

log = structlog.get_logger(__name__)

BACKENDS = ("auto", "eager", "torchscript", "onnxruntime", "onnxruntime-int8", "cuda-graphs")

#: Largest |P(fake) difference| from eager fp32 a backend may show on the check windows.
PARITY_TOLERANCE = 0.01

_CPU_CHAIN = ("onnxruntime-int8", "onnxruntime", "torchscript", "eager")


#: ``speech(window_samples, offset_seconds) -> float32 [N, window_samples]``: windows of real
#: speech, the grid shifted by ``offset_seconds``. What a backend is calibrated (offset 0) and
#: checked (offset 0.5) on; :func:`streamguard.scoring.offline.demo_windows` cuts them from the
#: bundled demo call. Passed in (a module-level function: it crosses to the build's child
#: process), so this module reads no audio files itself.
SpeechWindows = Callable[[int, float], np.ndarray]


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


# -- check audio ------------------------------------------------------------------------------
def check_windows(window_samples: int, speech: SpeechWindows) -> np.ndarray:
    """What parity is checked on: speech off the calibration grid, noise, silence."""
    rng = np.random.default_rng(1)
    speech = speech(window_samples, 0.5)
    noise = (0.05 * rng.standard_normal((2, window_samples))).astype(np.float32)
    return np.concatenate([speech, noise, np.zeros((1, window_samples), np.float32)])


# -- runners ------------------------------------------------------------------------------------
def _probabilities(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))


def parity(reference: Callable[[Any], Any], runner: Callable[[Any], Any], waves) -> ParityReport:
    """Max |P(fake) difference| of ``runner`` vs ``reference`` (both torch logits callables)."""
    import torch

    diffs = []
    with torch.inference_mode():
        for i in range(0, waves.shape[0], 8):
            x = waves[i : i + 8]
            a = _probabilities(reference(x).float().cpu().numpy())
            b = _probabilities(runner(x).float().cpu().numpy())
            diffs.append(np.abs(a - b).max(initial=0.0))
    return ParityReport(int(waves.shape[0]), float(max(diffs, default=0.0)))


def _split(module: Any) -> tuple[Any, Any]:
    """``(front_end or None, network after it)`` for export."""
    import torch

    front = getattr(module, "frontend", None)
    after = getattr(module, "logit_from_frontend", None)
    if front is None or after is None:
        return None, module

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
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class OnnxRunner:
    """``runner(torch waveforms [B, S]) -> torch logits [B]`` through ONNX Runtime."""

    def __init__(self, front: Any, session: Any) -> None:
        self.front = front
        self.session = session

    def __call__(self, waveforms):
        import torch

        features = self.front(waveforms) if self.front is not None else waveforms
        x = np.ascontiguousarray(features.detach().float().cpu().numpy())
        (logits,) = self.session.run(None, {"x": x})
        return torch.from_numpy(np.asarray(logits, dtype=np.float32).reshape(-1))


def cache_dir() -> Path:
    """Where built ONNX models are kept between starts (``STREAMGUARD_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/streamguard``, else ``~/.cache/streamguard``)."""
    explicit = os.environ.get("STREAMGUARD_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "streamguard"


def _cache_key(module: Any, window_samples: int, int8: bool) -> str:
    """The weights, the network's type, the window and the tool versions: what the build reads."""
    import onnxruntime
    import torch

    digest = hashlib.sha256()
    digest.update(
        f"{type(module).__qualname__}|{window_samples}|{int8}|{torch.__version__}|"
        f"{onnxruntime.__version__}|v1".encode()
    )
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def _cached(key: str) -> bytes | None:
    try:
        return (cache_dir() / "onnx" / f"{key}.onnx").read_bytes()
    except OSError:
        return None


def _store(key: str, model: bytes) -> None:
    """Best effort: an unwritable cache only costs the next start the build time."""
    folder = cache_dir() / "onnx"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_bytes(model)
        tmp.replace(folder / f"{key}.onnx")
    except OSError as exc:
        log.info("serving_cache_unwritable", path=str(folder), error=exc.strerror)


def build_onnx_runner(
    module: Any,
    window_samples: int,
    *,
    int8: bool,
    speech: SpeechWindows,
    threads: int | None = None,
) -> OnnxRunner:
    """Export ``module`` (fp32, CPU) to ONNX Runtime; ``int8`` quantizes its convolutions.

    The built model is cached on disk (:func:`cache_dir`), keyed by the weights, so only the
    first start with a model pays the export (and calibration) time.
    """
    if not onnxruntime_available():
        raise BackendUnavailable("onnxruntime is not installed (pip install onnxruntime)")
    front, network = _split(module)
    key = _cache_key(module, window_samples, int8)
    model = _cached(key)
    if model is None:
        model = _build(front, network, window_samples, int8, speech)
        _store(key, model)
    return OnnxRunner(front, _session(model, threads))


def _build(
    front: Any, network: Any, window_samples: int, int8: bool, speech: SpeechWindows
) -> bytes:
    import torch

    calibration = speech(window_samples, 0.0)
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


def build_in_subprocess(
    detector: Any,
    backend: str = "auto",
    timeout: float = 900.0,
    *,
    speech: SpeechWindows,
    cancelled: threading.Event | None = None,
) -> None:
    """Export (and calibrate) ``backend``'s ONNX model into the cache from a child process.

    The export and the quantizer are mostly Python: in the daemon's own process they would hold
    the GIL for tens of seconds and starve the event loop. The child only fills the cache; the
    caller then serves from it (the parity check runs here, on the real detector). Setting
    ``cancelled`` kills the child within a fraction of a second (a daemon stopping mid-build).
    """
    import multiprocessing as mp

    first = candidates(backend, detector.device.type)[0]
    if not first.startswith("onnxruntime"):
        return
    ctx = mp.get_context("spawn")
    proc = ctx.Process(
        target=_build_to_cache,
        args=(detector.module, detector.window_samples, first.endswith("int8"), speech),
        name="streamguard-onnx-build",
        daemon=True,
    )
    proc.start()
    deadline = time.monotonic() + timeout
    while proc.is_alive() and time.monotonic() < deadline:
        if cancelled is not None and cancelled.is_set():
            break
        proc.join(0.1)
    if proc.is_alive():
        proc.kill()
        proc.join()


def _build_to_cache(module: Any, window_samples: int, int8: bool, speech: SpeechWindows) -> None:
    key = _cache_key(module, window_samples, int8)
    if _cached(key) is None:
        front, network = _split(module)
        _store(key, _build(front, network, window_samples, int8, speech))


def needs_build(detector: Any, backend: str = "auto") -> bool:
    """Whether serving ``backend`` would export and calibrate first (no cached build): the
    daemon then starts on TorchScript and switches once the build is done."""
    first = candidates(backend, detector.device.type)[0]
    if not first.startswith("onnxruntime") or not onnxruntime_available():
        return False
    if detector.device.type != "cpu" or detector.half:
        return False
    try:
        key = _cache_key(detector.module, detector.window_samples, first.endswith("int8"))
    except Exception:
        return False
    return _cached(key) is None


def serve(
    detector: Any, backend: str = "auto", *, speech: SpeechWindows, threads: int | None = None
) -> str:
    """Make ``detector`` serve through the first usable backend for ``backend``; its name.

    Every non-eager backend is checked against eager fp32 on :func:`check_windows` (of
    ``speech``, see :data:`SpeechWindows`) and skipped
    (with a log line saying why) if any P(fake) moves by more than :data:`PARITY_TOLERANCE`.
    """
    tried: list[str] = []
    for name in candidates(backend, detector.device.type):
        try:
            _install(detector, name, threads, speech)
        except BackendUnavailable as exc:
            tried.append(f"{name}: {exc}")
            log.info("backend_unavailable", backend=name, reason=str(exc))
            continue
        if tried:
            log.info("backend_fallback", backend=name, skipped=tried)
        return name
    raise BackendUnavailable("; ".join(tried))


def _install(detector: Any, name: str, threads: int | None, speech: SpeechWindows) -> None:
    if name == "eager":
        detector.set_runner(detector.module, "eager")
        return
    if name == "torchscript":
        if not detector.use_torchscript():
            raise BackendUnavailable("the trace differs from eager or cannot be made")
        return
    if name == "cuda-graphs":
        _install_cuda_graphs(detector, speech)
        return
    if detector.device.type != "cpu" or detector.half:
        raise BackendUnavailable("ONNX Runtime serves fp32 on the CPU only")
    runner = build_onnx_runner(
        detector.module,
        detector.window_samples,
        int8=name.endswith("int8"),
        speech=speech,
        threads=threads,
    )
    import torch

    checks = check_windows(detector.window_samples, speech)
    report = parity(detector.module, runner, torch.from_numpy(checks))
    if not report.max_abs_diff <= PARITY_TOLERANCE:
        raise BackendUnavailable(
            f"P(fake) differs from eager by {report.max_abs_diff:.4f} > {PARITY_TOLERANCE}"
        )
    detector.set_runner(runner, name, parity=report.max_abs_diff)


def _install_cuda_graphs(detector: Any, speech: SpeechWindows, max_batch: int = 16) -> None:
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
    checks = check_windows(detector.window_samples, speech)
    waves = torch.from_numpy(checks).to(detector.device, dtype)
    report = parity(detector.module, runner, waves)
    if not report.max_abs_diff <= PARITY_TOLERANCE:
        raise BackendUnavailable(
            f"P(fake) differs from eager by {report.max_abs_diff:.4f} > {PARITY_TOLERANCE}"
        )
    detector.set_runner(runner, "cuda-graphs", parity=report.max_abs_diff)
