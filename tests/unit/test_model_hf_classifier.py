"""``hf-audio-classification``: a tiny Wav2Vec2ForSequenceClassification saved with
save_pretrained, loaded as a spec, scored as the softmax probability of its fake class."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from streamguard.errors import ModelError
from streamguard.model import load_detector, load_model, save_model_dir
from streamguard.model.hf_classifier import find_fake_index

ENCODER = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32, 32),
    conv_kernel=(10, 3),
    conv_stride=(5, 2),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def _save_pretrained(directory, labels, *, do_normalize=True):
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForSequenceClassification,
    )

    torch.manual_seed(0)
    config = Wav2Vec2Config(
        **ENCODER,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    model = Wav2Vec2ForSequenceClassification(config).eval()
    model.save_pretrained(directory)
    extractor = Wav2Vec2FeatureExtractor(do_normalize=do_normalize)
    extractor.save_pretrained(directory)
    return model, extractor


@pytest.fixture(scope="module")
def waves() -> np.ndarray:
    rng = np.random.default_rng(5)
    return (rng.standard_normal((2, 64_000)) * [[0.2], [0.01]] + 0.05).astype(np.float32)


@pytest.mark.slow  # imports transformers and builds two models
@pytest.mark.parametrize("labels", [["bonafide", "spoof"], ["Fake", "noise", "Real"]])
def test_pretrained_dir_scores_softmax_of_fake_class(tmp_path, waves, labels):
    model, extractor = _save_pretrained(tmp_path / "hf", labels)
    det = load_detector(str(tmp_path / "hf"), device="cpu")
    assert det.info.architecture == "hf-audio-classification"
    fake = next(i for i, label in enumerate(labels) if label.lower() in ("spoof", "fake"))
    inputs = extractor(list(waves), sampling_rate=16_000, return_tensors="pt").input_values
    with torch.no_grad():
        expected = torch.softmax(model(inputs).logits, dim=-1)[:, fake].numpy()
    np.testing.assert_allclose(det(waves), expected, atol=1e-5)

    # Our directory format rebuilds it from the recorded config, without the checkpoint dir.
    save_model_dir(tmp_path / "ours", det.module, det.info, {})
    params = json.loads((tmp_path / "ours" / "config.json").read_text())["params"]
    assert params["checkpoint"] is None and params["fake_label"] == fake
    assert params["do_normalize"] is True
    loaded = load_model(str(tmp_path / "ours"), device="cpu")
    assert loaded.kind == "streamguard-dir"
    np.testing.assert_array_equal(loaded.detector(waves), det(waves))


def test_do_normalize_false_feeds_raw_audio(tmp_path, waves):
    model, _ = _save_pretrained(tmp_path / "hf", ["real", "fake"], do_normalize=False)
    det = load_detector(str(tmp_path / "hf"), device="cpu")
    with torch.no_grad():
        expected = torch.softmax(model(torch.from_numpy(waves)).logits, -1)[:, 1].numpy()
    np.testing.assert_allclose(det(waves), expected, atol=1e-5)


def test_spectrogram_input_model_uses_its_feature_extractor(tmp_path, waves):
    """AST reads filter banks, not samples: its own extractor must run, and survive export."""
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(0)
    config = ASTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_mel_bins=16,
        max_length=400,
        num_labels=2,
        id2label={0: "real", 1: "fake"},
        label2id={"real": 0, "fake": 1},
    )
    model = ASTForAudioClassification(config).eval()
    model.save_pretrained(tmp_path / "ast")
    extractor = ASTFeatureExtractor(num_mel_bins=16, max_length=400)
    extractor.save_pretrained(tmp_path / "ast")
    det = load_detector(str(tmp_path / "ast"), device="cpu")
    with torch.no_grad():
        inputs = extractor(list(waves), sampling_rate=16_000, return_tensors="pt")
        expected = torch.softmax(model(**inputs).logits, dim=-1)[:, 1].numpy()
    np.testing.assert_allclose(det(waves), expected, atol=1e-5)
    save_model_dir(tmp_path / "ours", det.module, det.info, {})
    np.testing.assert_array_equal(
        load_detector(str(tmp_path / "ours"), device="cpu")(waves), det(waves)
    )


def test_unrecognisable_labels_need_fake_label(tmp_path):
    _save_pretrained(tmp_path / "hf", ["cat", "dog"])
    with pytest.raises(ModelError, match=r"cannot tell which class means fake .*0=cat, 1=dog"):
        load_detector(str(tmp_path / "hf"), device="cpu")


def test_find_fake_index_rules():
    assert find_fake_index({0: "bonafide", 1: "spoof"}, None) == 1
    assert find_fake_index({"0": "REAL", "1": "DeepFake"}, None) == 1
    assert find_fake_index({0: "synthetic_speech", 1: "human_speech"}, None) == 0
    assert find_fake_index({0: "not_fake", 1: "fake"}, None) == 1
    assert find_fake_index({0: "a", 1: "b"}, "B") == 1
    assert find_fake_index({0: "a", 1: "b"}, 0) == 0
    assert find_fake_index({0: "score"}, None) == 0
    with pytest.raises(ModelError, match="not a class index"):
        find_fake_index({0: "a", 1: "b"}, 5)
