"""Shared fixtures: a tiny koyelog-resnet detector (fast on CPU) and the fixtures directory."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

#: A wav2vec2 encoder small enough for CPU tests (no dropout or masking: deterministic losses).
TINY_WAV2VEC2_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32, 32],
    "conv_kernel": [10, 8],
    "conv_stride": [10, 8],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
}

TINY_MODEL_PARAMS = {
    "widths": [8, 16, 32],
    "gru_hidden": 16,
    "attention_heads": 2,
    "classifier_hidden": [32, 16],
}


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def tiny_model_params() -> dict:
    return dict(TINY_MODEL_PARAMS)


@pytest.fixture(scope="session")
def tiny_detector(tiny_model_params):
    """koyelog-resnet with tiny widths and seeded random weights (deterministic scores)."""
    import torch

    from streamguard.model import Detector, ModelInfo, build_module

    torch.manual_seed(0)
    module = build_module("koyelog-resnet", tiny_model_params)
    return Detector(module, ModelInfo(name="tiny", architecture="koyelog-resnet"), device="cpu")


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_detector, tiny_model_params, tmp_path_factory) -> Path:
    """``tiny_detector`` saved in streamguard's model directory format."""
    from streamguard.model import save_model_dir

    directory = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(directory, tiny_detector.module, tiny_detector.info, tiny_model_params)
    return directory
