"""Model spec resolution: paths, the bundled default, and Hugging Face repo ids (cache only)."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from streamguard.errors import ModelError
from streamguard.model import load_detector, load_model, loading


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty, offline Hugging Face home: nothing can be downloaded."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    return tmp_path / "hf-home" / "hub"


def test_offline_uncached_repo_id_says_how_to_fetch(offline_hub):
    with pytest.raises(ModelError) as err:
        load_detector("koyelog/deepfake-voice-detector-sota", device="cpu")
    message = str(err.value)
    assert "\n" not in message
    assert "'koyelog/deepfake-voice-detector-sota' is not in the Hugging Face cache" in message
    assert "hf download koyelog/deepfake-voice-detector-sota" in message
    assert "HF_HOME" in message and str(offline_hub) in message


def test_revision_is_part_of_the_fetch_hint(offline_hub):
    with pytest.raises(ModelError, match="hf download owner/model --revision v2"):
        load_detector("owner/model@v2", device="cpu")


def _cache_snapshot(hub: object, repo: str, files: dict) -> None:
    """Lay out a repo in the hub cache as huggingface_hub does (refs/main -> snapshot)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = hub / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    for name, source in files.items():
        shutil.copy(source, snapshot / name)


def test_cached_repo_id_loads_offline(offline_hub, tiny_detector, tiny_model_dir):
    _cache_snapshot(
        offline_hub,
        "acme/tiny-detector",
        {n: tiny_model_dir / n for n in ("config.json", "model.safetensors")},
    )
    loaded = load_model("acme/tiny-detector", device="cpu")
    assert loaded.kind == "streamguard-dir"
    assert loaded.weights_path.parent.name == "0123456789abcdef0123456789abcdef01234567"
    waves = np.random.default_rng(2).standard_normal((1, 64_000)).astype(np.float32) * 0.1
    np.testing.assert_array_equal(loaded.detector(waves), tiny_detector(waves))


def test_nonexistent_paths_are_clear(tmp_path):
    with pytest.raises(ModelError, match=r"no such model file or directory: ./nope"):
        load_detector("./nope", device="cpu")
    with pytest.raises(ModelError, match="no such model file or directory"):
        load_detector(str(tmp_path / "missing.pth"), device="cpu")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelError, match="is not a model"):
        load_detector(str(tmp_path / "weights.bin"), device="cpu")
    with pytest.raises(ModelError, match="is not a model directory"):
        load_detector(str(tmp_path), device="cpu")


def test_default_spec_falls_back_to_the_bundled_starter(monkeypatch, tmp_path, tiny_model_dir):
    """No accurate tier here (or no encoder for it: tests/integration/test_bundled.py): the
    starter; neither: one line naming --model."""
    monkeypatch.setattr(loading, "ACCURATE_DIR", tmp_path / "absent-accurate")
    monkeypatch.setattr(loading, "STARTER_DIR", tmp_path / "absent")
    with pytest.raises(ModelError, match=r"no default model is bundled.*--model SPEC"):
        load_detector(None, device="cpu")
    monkeypatch.setattr(loading, "STARTER_DIR", tiny_model_dir)
    assert load_detector(None, device="cpu").info.name == "tiny"
    assert loading.default_tier()[1].startswith("the fallback: the accurate tier is not bundled")


def test_device_resolution():
    import torch

    device, half = loading.resolve_device("auto")
    assert device == ("cuda" if torch.cuda.is_available() else "cpu")
    assert half == (device == "cuda")
    assert loading.resolve_device("cpu") == ("cpu", False)
    with pytest.raises(ModelError, match="invalid device"):
        loading.resolve_device("tpu9")
