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


def misbehaving_detector(inner, *, mode: str, loud: float = 0.7, name: str = "broken"):
    """A real detector broken the way real models break, on windows whose peak exceeds ``loud``.

    ``mode``: ``"nan"`` (an fp16 overflow or a bad fine-tune: NaN scores), ``"raise"`` (a
    kernel failure: the forward pass raises) or ``"oom"`` (any batch larger than 2 raises
    CUDA's out-of-memory error, whatever the input). The probe windows the daemon checks at
    start-up (silence and quiet noise) stay below ``loud``, so such a model starts; serve it
    eager (``torchscript=False``): a trace would bake the data-dependent branch away.
    """
    import torch

    from streamguard.model import Detector

    class Misbehaving(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner.module

        def forward(self, x):
            out = self.inner(x)
            hit = x.abs().amax(dim=1) > loud
            if mode == "nan":
                return torch.where(hit, torch.full_like(out, float("nan")), out)
            if mode == "raise" and bool(hit.any()):
                raise RuntimeError("simulated kernel failure")
            if mode == "oom" and x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
            return out

    return Detector(Misbehaving(), inner.info.replace(name=name), device="cpu")
