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
    assert candidates("auto", "cuda") == ("cuda-graphs", "torchscript", "eager")
    assert candidates("onnxruntime", "cpu") == ("onnxruntime",)
    with pytest.raises(ValueError):
        candidates("tensorrt", "cpu")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnxruntime", "onnxruntime-int8"])
def test_onnx_backends_score_within_tolerance_of_eager(backend):
    seed = 7 if backend == "onnxruntime" else 8  # weights no other test built in this run
    detector = fresh_tiny(seed)
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
    assert not needs_build(fresh_tiny(seed), backend)
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


def test_fixed_shape_runner_pads_to_the_next_size_and_drops_the_padding(tiny_detector):
    """The CUDA-graph path's shape logic, on the CPU (no capture: that needs a GPU)."""
    from streamguard.model.cuda_graphs import GraphRunner, graph_sizes

    assert graph_sizes(16) == (1, 2, 4, 8, 16) and graph_sizes(12) == (1, 2, 4, 8, 12)
    runner = GraphRunner(tiny_detector.module, tiny_detector.window_samples, max_batch=4,
                         capture=False)  # fmt: skip
    waves = torch.from_numpy(check_windows(tiny_detector.window_samples)[:7])
    with torch.inference_mode():
        expected = tiny_detector.module(waves)
        for n in (1, 3, 4, 7):  # 3 -> padded to 4; 7 -> 4 + 3 (padded to 4)
            got = runner(waves[:n])
            assert got.shape == (n,)
            torch.testing.assert_close(got, expected[:n], atol=1e-5, rtol=1e-4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_cuda_graphs_are_refused_without_a_gpu():
    with pytest.raises(BackendUnavailable, match="CUDA"):
        serve(fresh_tiny(), "cuda-graphs")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_graphs_match_eager_on_a_gpu():
    torch.manual_seed(0)
    module = build_module("koyelog-resnet", TINY_MODEL_PARAMS)
    detector = Detector(module, ModelInfo(name="t", architecture="koyelog-resnet"), device="cuda")
    assert serve(detector, "cuda-graphs") == "cuda-graphs"
    assert detector.backend_parity <= PARITY_TOLERANCE


@pytest.mark.slow
def test_the_daemon_switches_to_the_built_backend_in_the_background():
    from streamguard.scoring.runners import build_runners, close_runners, upgrade_of

    detector = fresh_tiny(11)  # weights no other test built
    runners = build_runners(detector, backend="auto", workers=2, build_in_background=True)
    assert runners[0] is runners[1] and runners[0] is not detector  # one shared served copy
    upgrade = upgrade_of(runners[0])
    assert upgrade is not None and runners[0].backend == "torchscript"  # serving at once
    upgrade.wait(300)
    # the start-up probe's choice on this CPU
    assert runners[0].backend in ("onnxruntime-int8", "onnxruntime", "torch-bf16")
    assert detector.backend == "eager"  # the caller's detector never changes under it
    close_runners(runners)
    assert upgrade_of(runners[0]) is None


@pytest.mark.slow
def test_stopping_during_the_build_kills_it_and_never_switches():
    """A daemon stopped mid-build must not leave ONNX Runtime threads running at exit (abort)."""
    import multiprocessing

    from streamguard.scoring.runners import build_runners, close_runners, upgrade_of

    runners = build_runners(fresh_tiny(12), backend="auto", build_in_background=True)
    upgrade = upgrade_of(runners[0])
    assert upgrade is not None and upgrade.running
    close_runners(runners)
    assert not upgrade.running
    assert runners[0].backend == "torchscript"
    assert not [p for p in multiprocessing.active_children() if p.name == "streamguard-onnx-build"]


def _fixture_windows(fixtures_dir, window_samples: int) -> np.ndarray:
    """Windows of real speech from the committed fixtures (not the demo call the int8 build
    is calibrated on), plus one 40 dB down: ``[N, window]`` float32 at 16 kHz."""
    from streamguard.training.data import crop, decode_audio

    out = []
    for name in ("speech_10s_8k.wav", "speech_stereo_16k.wav", "speech_10s_16k.mp3"):
        audio = decode_audio(fixtures_dir / name)
        for start in range(0, max(1, audio.shape[-1] - window_samples), window_samples // 4):
            out.append(crop(audio[start:], window_samples, "start"))
    out.append(0.01 * out[0])
    return np.stack(out).astype(np.float32)


@pytest.mark.slow
def test_the_onnx_graph_takes_waveforms_and_keeps_parity_on_fixture_speech(fixtures_dir):
    """Issue #20: the log-mel is inside the exported graph (one ONNX Runtime call per batch,
    no torch before it), and the bundled model's P(fake) stays within 0.01 of eager fp32 on
    real speech it was never calibrated on, in fp32 and int8."""
    from streamguard.model import load_detector
    from streamguard.model.serving import build_onnx_runner, parity, reference_probabilities

    detector = load_detector("starter", device="cpu")  # the bundled starter model
    waves = torch.from_numpy(_fixture_windows(fixtures_dir, detector.window_samples))
    assert waves.shape[0] >= 8
    expected = reference_probabilities(detector.module, waves)
    assert expected.max() - expected.min() > 0.01  # windows the model tells apart
    for int8, tolerance in ((False, 1e-4), (True, PARITY_TOLERANCE)):
        runner = build_onnx_runner(detector.module, detector.window_samples, int8=int8)
        assert runner.front is None  # nothing runs in torch before the graph
        (graph_input,) = runner.session.get_inputs()
        assert graph_input.shape[-1] == detector.window_samples  # waveforms, not log-mels
        assert parity(expected, runner, waves).max_abs_diff <= tolerance
    # the old split (log-mel in torch, network in the graph) scores the same
    split = build_onnx_runner(
        detector.module, detector.window_samples, int8=False, in_graph_front=False
    )
    assert split.front is not None
    assert parity(expected, split, waves).max_abs_diff <= 1e-4


def test_building_in_a_child_never_moves_the_served_weights():
    """Handing the network to the build's child must not touch the served weights: pickling a
    module for a spawned child moves its storages into shared memory in place, under a thread
    that may be scoring through them (NaN scores or a segfault at a cold start, seen in CI)."""
    from streamguard.model.serving import build_in_subprocess

    detector = fresh_tiny(13)  # weights no other test built: the child really builds
    before = {name: p.data_ptr() for name, p in detector.module.named_parameters()}
    build_in_subprocess(detector, "onnxruntime", timeout=300)
    assert not needs_build(detector, "onnxruntime")  # the child did build into the cache
    after = {name: p.data_ptr() for name, p in detector.module.named_parameters()}
    assert after == before
    assert not any(p.is_shared() for p in detector.module.parameters())
