"""The detector contract every part of streamguard relies on (docs/models.md, "Architectures").

``scores = detector(waveforms)``: float32 waveforms ``[B, window_samples]`` at ``sample_rate``
in, P(fake) ``[B]`` out. A :class:`Detector` wraps one architecture's ``torch.nn.Module``
(whose ``forward`` maps waveforms to one logit per row) together with its :class:`ModelInfo`,
and owns device placement, precision and inference mode, so callers (the scanner, the daemon's
scoring engine, the evaluator) never touch torch details.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ModelInfo:
    """Metadata that travels with a model (written to and read from ``config.json``)."""

    name: str
    architecture: str  # "koyelog-resnet" | "wav2vec2-bigru" | "hf-audio-classification"
    sample_rate: int = 16_000
    window_seconds: float = 4.0
    threshold: float = 0.5  # P(fake) at or above this is "fake"
    provenance: dict[str, Any] = field(default_factory=dict)  # source, sha256, training data...
    # Score calibration, P(fake) = sigmoid(logit_scale * logit + logit_bias): fitted at export
    # on validation windows (Platt scaling), so that P(fake) and the threshold sit where a
    # person can read them instead of in the last digits below 1 (a saturated network's).
    # Monotone, so which windows pass the threshold does not change. (1, 0) = the raw logit.
    logit_scale: float = 1.0
    logit_bias: float = 0.0

    def p_fake(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated P(fake) float32 for raw logits (float64 arithmetic, no overflow)."""
        z = self.logit_scale * np.asarray(logits, dtype=np.float64) + self.logit_bias
        return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)

    @property
    def window_samples(self) -> int:
        return round(self.sample_rate * self.window_seconds)

    def replace(self, **changes: Any) -> ModelInfo:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


class Detector:
    """A loaded, ready-to-score model. Load once, share everywhere (it is stateless per call).

    Thread-safety: calls are serialised by the caller (the daemon runs all inference on one
    worker thread); torch releases the GIL while it computes.
    """

    def __init__(
        self,
        module: Any,
        info: ModelInfo,
        *,
        device: str = "cpu",
        half: bool = False,
        precision: str | None = None,
    ):
        import torch

        self.info = info
        self.device = torch.device(device)
        # "fp16" / "bf16" on CUDA only (``half=True`` is "fp16"); the CPU always runs fp32.
        precision = precision or ("fp16" if half else "fp32")
        if precision not in _DTYPES:
            raise ValueError(f"precision must be one of {', '.join(_DTYPES)}, got {precision!r}")
        self.precision = precision if self.device.type == "cuda" else "fp32"
        self.half = self.precision != "fp32"
        self.dtype = getattr(torch, _DTYPES[self.precision])
        module = module.to(self.device).eval()
        if self.half:
            module = module.to(self.dtype)
        self.module = module
        self._runner = module  # what logits() calls: the module, a trace, an ONNX session
        self.torchscript = False
        self.backend = "eager"  # see streamguard.model.serving
        self.backend_parity: float | None = None  # max |dP| vs eager on the check windows
        self.backend_probe: dict[str, Any] | None = None  # model/probe.py: what was measured

    @property
    def window_samples(self) -> int:
        return self.info.window_samples

    def use_torchscript(self) -> bool:
        """Serve through a TorchScript trace of the module; True if it took.

        Why: eager PyTorch re-takes the GIL between operators, so in the daemon the inference
        thread queues behind the event loop's per-frame Python. A trace runs a whole batch as
        one C++ call; with a busy Python thread beside it, the published-size network scored a
        batch of 16 in 0.25 s instead of 0.96 s (benchmarks/README.md). A trace can silently
        bake in shapes or branches, so it is checked against eager on two other batch sizes and
        dropped (eager kept) on any difference or error.
        """
        import warnings

        import torch

        generator = torch.Generator().manual_seed(0)

        def probe(batch: int) -> torch.Tensor:
            x = 0.1 * torch.randn(batch, self.window_samples, generator=generator)
            x = x.to(self.device)
            return x.to(self.dtype) if self.half else x

        try:
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python control flow
                traced = torch.jit.trace(self.module, probe(4), check_trace=False)
                for batch in (1, 7):
                    x = probe(batch)
                    if not torch.allclose(
                        traced(x).float(), self.module(x).float(), rtol=1e-3, atol=1e-4
                    ):
                        return False
        except Exception:  # an architecture the tracer cannot follow: stay eager
            return False
        self.set_runner(traced, "torchscript")
        self.torchscript = True
        return True

    def set_runner(self, runner: Any, backend: str, *, parity: float | None = None) -> None:
        """Serve through ``runner`` (torch waveforms -> torch logits); see model/serving.py."""
        self._runner = runner
        self.backend = backend
        self.backend_parity = parity
        self.torchscript = backend == "torchscript"

    def logits(self, waveforms: np.ndarray) -> np.ndarray:
        """Raw logits ``[B]`` for float32 waveforms ``[B, window_samples]``."""
        import torch

        batch = np.asarray(waveforms, dtype=np.float32)
        if batch.ndim != 2 or batch.shape[1] != self.window_samples:
            raise ValueError(
                f"expected waveforms of shape [B, {self.window_samples}], got {batch.shape}"
            )
        with torch.inference_mode():
            x = torch.from_numpy(batch).to(self.device)
            if self.half:
                x = x.to(self.dtype)
            out = self._runner(x)
            return out.float().reshape(-1).cpu().numpy()

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        """P(fake) ``[B]`` as float32 numbers in [0, 1]."""
        return self.info.p_fake(self.logits(waveforms))


def fit_window(wave: np.ndarray, n: int) -> np.ndarray:
    """``wave`` as float32 of exactly ``n`` samples: zero-padded at the end or truncated.

    The detector only takes full windows; this is the card's "pad or truncate to 4 s" for
    callers holding a clip of another length (e.g. a short file).
    """
    from streamguard.audio.pcm import fit_length

    return np.array(fit_length(np.asarray(wave, dtype=np.float32).reshape(-1), n), copy=True)
