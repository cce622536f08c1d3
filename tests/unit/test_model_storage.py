"""streamguard's model directory: save/load round trips give the same scores, for every
architecture, in float32 and float16."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamguard.errors import ModelError
from streamguard.model import (
    Detector,
    ModelInfo,
    build_module,
    default_params,
    fit_window,
    load_detector,
    load_model,
    save_model_dir,
)
from tests.conftest import TINY_WAV2VEC2_ENCODER

TINY_W2V = {
    "encoder_config": TINY_WAV2VEC2_ENCODER,
    "gru_hidden": 16,
    "attention_heads": 2,
    "classifier_hidden": [32, 16],
}


@pytest.fixture(scope="module")
def waves() -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.standard_normal((3, 64_000)) * 0.1).astype(np.float32)


def test_tiny_detector_scores_are_probabilities(tiny_detector, waves):
    scores = tiny_detector(waves)
    assert scores.shape == (3,) and scores.dtype == np.float32
    assert np.all((scores >= 0) & (scores <= 1))
    np.testing.assert_array_equal(scores, tiny_detector(waves))  # eval mode: deterministic
    with pytest.raises(ValueError, match="expected waveforms of shape"):
        tiny_detector(waves[:, :1000])


def test_koyelog_dir_round_trip_is_identical(tiny_detector, tiny_model_dir, waves):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    assert config["format"] == "streamguard-model" and config["format_version"] == 1
    assert config["architecture"] == "koyelog-resnet" and config["dtype"] == "float32"
    assert config["params"]["widths"] == [8, 16, 32]
    assert {"name", "params", "sample_rate", "window_seconds", "threshold", "provenance"} <= set(
        config
    )
    loaded = load_detector(str(tiny_model_dir), device="cpu")
    assert loaded.info == tiny_detector.info
    np.testing.assert_array_equal(loaded(waves), tiny_detector(waves))


def test_half_storage_upcasts_on_load(tiny_detector, tmp_path, waves):
    out = save_model_dir(
        tmp_path / "half",
        tiny_detector.module,
        tiny_detector.info,
        tiny_detector.module.streamguard_params,
        half=True,
        model_card="# tiny\n",
    )
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    assert (out / "MODEL_CARD.md").read_text() == "# tiny\n"
    full = tmp_path / "full"
    save_model_dir(full, tiny_detector.module, tiny_detector.info, {})  # params from the module
    np.testing.assert_array_equal(
        load_detector(str(full), device="cpu")(waves), tiny_detector(waves)
    )
    assert (out / "model.safetensors").stat().st_size < 0.6 * (
        full / "model.safetensors"
    ).stat().st_size
    loaded = load_detector(str(out), device="cpu")
    assert all(p.dtype == torch.float32 for p in loaded.module.parameters())
    np.testing.assert_allclose(loaded(waves), tiny_detector(waves), atol=2e-3)


@pytest.mark.slow
def test_wav2vec2_bigru_forward_and_round_trip(tmp_path, waves):
    torch.manual_seed(0)
    module = build_module("wav2vec2-bigru", TINY_W2V)
    frozen = [p.requires_grad for p in module.encoder.feature_extractor.parameters()]
    assert frozen and not any(frozen)
    assert module.attention.embed_dim == 32 and module.gru.hidden_size == 16
    det = Detector(module, ModelInfo(name="w2v", architecture="wav2vec2-bigru"))
    scores = det(waves)
    assert scores.shape == (3,)
    save_model_dir(tmp_path / "w2v", module, det.info, TINY_W2V)
    params = json.loads((tmp_path / "w2v" / "config.json").read_text())["params"]
    assert params["pretrained"] is False and params["encoder_config"]["hidden_size"] == 32
    np.testing.assert_array_equal(load_detector(str(tmp_path / "w2v"), device="cpu")(waves), scores)


def test_unknown_params_and_architecture_are_refused():
    with pytest.raises(ModelError, match=r"unknown parameter.*widht"):
        build_module("koyelog-resnet", {"widht": [8, 8, 8]})
    with pytest.raises(ModelError, match="unknown architecture 'resnet'"):
        build_module("resnet", {})
    with pytest.raises(ModelError, match="freq_reduce"):
        build_module("koyelog-resnet", {"freq_reduce": "max"})


def test_defaults_are_the_published_values_and_copies():
    params = default_params("koyelog-resnet")
    assert params["widths"] == [64, 128, 256] and params["maxpool"] is True
    assert params["freq_reduce"] == "mean" and params["db_ref"] == "max"
    assert (params["n_fft"], params["hop_length"], params["n_mels"]) == (1024, 512, 128)
    params["widths"].append(1)
    assert default_params("koyelog-resnet")["widths"] == [64, 128, 256]


def test_corrupt_directory_is_a_model_error(tiny_model_dir, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match=r"has no model.safetensors"):
        load_model(str(bad), device="cpu")
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(ModelError, match="cannot read"):
        load_model(str(bad), device="cpu")
    (bad / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(ModelError, match="format_version 99"):
        load_model(str(bad), device="cpu")


def test_fit_window_pads_and_truncates():
    assert fit_window(np.ones(3), 5).tolist() == [1, 1, 1, 0, 0]
    assert fit_window(np.arange(10), 4).tolist() == [0, 1, 2, 3]
    assert fit_window(np.ones(4, dtype=np.float64), 4).dtype == np.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_device_runs_half_on_cuda_close_to_cpu(tiny_model_dir, waves):
    cpu = load_detector(str(tiny_model_dir), device="cpu")
    gpu = load_detector(str(tiny_model_dir), device="auto")
    assert gpu.device.type == "cuda" and gpu.half
    np.testing.assert_allclose(gpu(waves), cpu(waves), atol=5e-3)


def test_torchscript_serving_gives_the_same_scores(tiny_model_dir):
    """The daemon serves through a trace; it must score exactly like the eager module."""
    import numpy as np

    from streamguard.model import load_detector

    eager = load_detector(str(tiny_model_dir), device="cpu")
    traced = load_detector(str(tiny_model_dir), device="cpu")
    assert traced.use_torchscript() and traced.torchscript
    waves = (0.1 * np.random.default_rng(1).standard_normal((5, eager.window_samples))).astype(
        np.float32
    )
    np.testing.assert_allclose(traced(waves), eager(waves), atol=1e-5)


def test_torchscript_is_refused_when_the_trace_would_differ():
    """A forward with data-dependent Python control flow cannot be traced faithfully."""
    import torch

    from streamguard.model import Detector, ModelInfo

    class BranchesOnBatch(torch.nn.Module):
        def forward(self, x):
            if x.shape[0] > 2:  # baked in by the tracer at the trace's batch size
                return x.mean(dim=1)
            return -x.mean(dim=1)

    detector = Detector(BranchesOnBatch(), ModelInfo(name="branchy", architecture="test"))
    assert detector.use_torchscript() is False
    assert detector.torchscript is False
