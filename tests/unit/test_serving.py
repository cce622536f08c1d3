"""Serving backends: ONNX Runtime (fp32, int8) at score parity with eager, or not at all."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamguard.model import Detector, ModelInfo, build_module
from streamguard.model.serving import (
    PARITY_TOLERANCE,
    BackendUnavailable,
    cache_dir,
    candidates,
    check_windows,
    needs_build,
    serve,
)
from tests.conftest import TINY_MODEL_PARAMS


def fresh_tiny(seed: int = 0) -> Detector:
    torch.manual_seed(seed)
    module = build_module("koyelog-resnet", TINY_MODEL_PARAMS)
    return Detector(module, ModelInfo(name="tiny", architecture="koyelog-resnet"), device="cpu")


def test_auto_prefers_int8_then_fp32_then_torch_on_cpu():
    assert candidates("auto", "cpu") == ("onnxruntime-int8", "onnxruntime", "torchscript", "eager")
    assert candidates("auto", "cuda") == ("torchscript", "eager")
    assert candidates("onnxruntime", "cpu") == ("onnxruntime",)
    with pytest.raises(ValueError):
        candidates("tensorrt", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_onnx_backends_score_within_tolerance_of_eager(backend):
    detector = fresh_tiny()
    waves = check_windows(detector.window_samples)[:6]
    eager = detector(waves)
    assert needs_build(detector, backend)
    assert serve(detector, backend) == backend
    assert detector.backend == backend and detector.backend_parity <= PARITY_TOLERANCE
    got = detector(waves)
    assert got.shape == eager.shape and np.all(np.isfinite(got))
    assert np.abs(got - eager).max() <= PARITY_TOLERANCE
    if backend == "onnxruntime":
        assert np.abs(got - eager).max() < 1e-4  # fp32: the same numbers, not just close
    # the build is cached: the next start with these weights does not export again
    assert not needs_build(fresh_tiny(), backend)
    assert any((cache_dir() / "onnx").glob("*.onnx"))


@pytest.mark.slow
def test_a_backend_that_drifts_is_refused_and_the_next_one_serves(monkeypatch):
    import streamguard.model.serving as serving

    monkeypatch.setattr(serving, "PARITY_TOLERANCE", -1.0)  # nothing can be at parity
    detector = fresh_tiny(1)
    assert serve(detector, "auto") == "torchscript"
    assert detector.backend == "torchscript"
    with pytest.raises(BackendUnavailable, match="differs from eager"):
        serve(fresh_tiny(1), "onnxruntime")
