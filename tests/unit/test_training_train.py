"""The trainer: the loss drops on a fixed real batch for every architecture; config checking;
a whole tiny run (checkpoints, logs, export that loads with identical scores, resume, limits)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from streamguard.errors import ConfigError
from streamguard.model import Detector, ModelInfo, build_module, load_detector
from streamguard.training.config import OptimConfig, load_config, parse_config, parse_override
from streamguard.training.data import crop, decode_audio
from streamguard.training.export import export_model
from streamguard.training.train import Trainer, train
from tests.conftest import TINY_WAV2VEC2_ENCODER, TINY_WHISPER_ENCODER
from tests.unit.test_model_rawnet import TINY_RAWNET

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "training"
SEGMENT = 8_000  # 0.5 s keeps every architecture fast on two CPU cores

NO_DROPOUT = {"gru_dropout": 0.0, "attention_dropout": 0.0, "classifier_dropouts": [0.0, 0.0]}
TINY_ENCODER = TINY_WAV2VEC2_ENCODER
TINY = {
    "koyelog-resnet": {
        "widths": [8, 16, 32],
        "gru_hidden": 16,
        "attention_heads": 2,
        "classifier_hidden": [32, 16],
        **NO_DROPOUT,
    },
    "wav2vec2-bigru": {
        "encoder_config": TINY_ENCODER,
        "gru_hidden": 16,
        "attention_heads": 2,
        "classifier_hidden": [32, 16],
        **NO_DROPOUT,
    },
    "rawnet2": TINY_RAWNET,
    "whisper-asp": {
        "weights": None,
        "encoder_config": TINY_WHISPER_ENCODER,
        "trainable_layers": 1,
        "proj_dim": 16,
        "attention_hidden": 8,
        "classifier_hidden": 16,
        "dropout": 0.0,
    },
    "hf-audio-classification": {
        "config": {
            "model_type": "wav2vec2",
            **TINY_ENCODER,
            "final_dropout": 0.0,
            "classifier_proj_size": 16,
            "num_labels": 2,
            "id2label": {"0": "bonafide", "1": "spoof"},
            "label2id": {"bonafide": 0, "spoof": 1},
        }
    },
}

#: Learning rates for the two-step test where 1e-2 makes the output bias overshoot, and the
#: smallest drop expected (a random tiny encoder's windows start out nearly alike).
LR = {"whisper-asp": 3e-3}
DROP = {"whisper-asp": 0.005}


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Eight real clips (four "real", four "fake" voices), first 0.5 s of each."""
    files = sorted((HERE / "flac").glob("LA_T_*.flac"))
    waves = np.stack([crop(decode_audio(f), SEGMENT, "start") for f in files])
    return torch.from_numpy(waves), torch.tensor([0.0] * 4 + [1.0] * 4)


@pytest.mark.parametrize("architecture", list(TINY))
def test_two_steps_lower_the_loss_on_a_fixed_batch(architecture, batch):
    waves, labels = batch
    torch.manual_seed(0)
    module = build_module(architecture, TINY[architecture])
    lr = LR.get(architecture, 1e-2)
    trainer = Trainer(module, OptimConfig(lr=lr, batch_size=8, grad_accum=1), steps_per_epoch=10)

    def loss_now() -> float:
        with torch.no_grad():  # train mode: BatchNorm uses this batch, as during the steps
            return float(trainer.loss(trainer.logits(waves), labels))

    before = loss_now()
    steps = [trainer.step(waves, labels) for _ in range(2)]
    after = loss_now()
    assert all(took for _, took in steps) and trainer.global_step == 2
    assert after < before - DROP.get(architecture, 0.01), (before, after)
    assert trainer.lr < lr  # the cosine schedule moved


def test_gradient_accumulation_steps_every_n_micro_batches(batch):
    waves, labels = batch
    module = build_module("koyelog-resnet", TINY["koyelog-resnet"])
    trainer = Trainer(module, OptimConfig(lr=1e-3, grad_accum=2), steps_per_epoch=4)
    first = [p.detach().clone() for p in trainer.params]
    assert trainer.step(waves[:4], labels[:4])[1] is False
    assert all(torch.equal(a, b) for a, b in zip(first, trainer.params, strict=True))
    assert trainer.step(waves[4:], labels[4:])[1] is True
    assert trainer.global_step == 1
    assert not all(torch.equal(a, b) for a, b in zip(first, trainer.params, strict=True))


def test_export_then_load_gives_identical_scores(tmp_path, batch):
    waves, _ = batch
    torch.manual_seed(1)
    module = build_module("koyelog-resnet", TINY["koyelog-resnet"]).eval()
    params = dict(module.streamguard_params)
    path = export_model(
        tmp_path / "m", module, params, name="t", architecture="koyelog-resnet",
        threshold=0.37, window_seconds=SEGMENT / 16_000, card="# card\n",
    )  # fmt: skip
    info = ModelInfo(name="t", architecture="koyelog-resnet", window_seconds=SEGMENT / 16_000)
    expected = Detector(module, info, device="cpu")(waves.numpy())
    loaded = load_detector(path, device="cpu")
    assert loaded.info.threshold == pytest.approx(0.37)
    np.testing.assert_array_equal(loaded(waves.numpy()), expected)
    assert (path / "MODEL_CARD.md").read_text() == "# card\n"


def test_a_score_map_travels_with_the_model_and_scores_through_it(tmp_path, batch):
    waves, _ = batch
    torch.manual_seed(1)
    module = build_module("koyelog-resnet", TINY["koyelog-resnet"]).eval()
    path = export_model(
        tmp_path / "m", module, dict(module.streamguard_params), name="t",
        architecture="koyelog-resnet", threshold=0.6, window_seconds=SEGMENT / 16_000,
        score_map=(0.25, -1.5),
    )  # fmt: skip
    loaded = load_detector(path, device="cpu")
    assert (loaded.info.logit_scale, loaded.info.logit_bias) == (0.25, -1.5)
    logits = loaded.logits(waves.numpy()).astype(np.float64)
    expected = 1.0 / (1.0 + np.exp(-(0.25 * logits - 1.5)))
    np.testing.assert_allclose(loaded(waves.numpy()), expected, rtol=1e-6)
    # a model directory written before score maps existed scores through the raw sigmoid
    config = json.loads((path / "config.json").read_text())
    del config["logit_scale"], config["logit_bias"]
    (path / "config.json").write_text(json.dumps(config))
    old = load_detector(path, device="cpu")
    np.testing.assert_allclose(old(waves.numpy()), 1.0 / (1.0 + np.exp(-logits)), rtol=1e-6)


def test_the_score_map_unsaturates_the_threshold_and_keeps_the_order():
    """Logits of a network that saturates (every window far above 0): the raw 1%-real
    threshold is a number of nines; the fitted map puts it where it can be read, and the
    windows above it are the same ones."""
    from streamguard.training.export import calibrate, fit_score_map

    rng = np.random.default_rng(0)
    labels = np.r_[np.zeros(2000, dtype=int), np.ones(2000, dtype=int)]
    logits = np.r_[rng.normal(9.0, 1.0, 2000), rng.normal(12.0, 1.5, 2000)]
    raw = 1.0 / (1.0 + np.exp(-logits))
    scale, bias = fit_score_map(labels, logits)
    assert scale > 0
    info = ModelInfo(name="t", architecture="koyelog-resnet", logit_scale=scale, logit_bias=bias)
    mapped = info.p_fake(logits).astype(np.float64)
    raw_point = calibrate(labels, raw, target_far=0.01)
    mapped_point = calibrate(labels, mapped, target_far=0.01)
    assert raw_point["threshold"] > 0.9999 and 0.5 < mapped_point["threshold"] < 0.99
    assert np.array_equal(raw >= raw_point["threshold"], mapped >= mapped_point["threshold"])
    assert fit_score_map(np.zeros(10, dtype=int), np.arange(10.0)) == (1.0, 0.0)  # one class


# --------------------------------------------------------------------------- config


def _config_dict(out_dir: Path, **optim) -> dict:
    return {
        "model": {
            "architecture": "koyelog-resnet",
            "name": "tiny",
            "params": TINY["koyelog-resnet"],
        },
        "data": {"sources": [{"type": "manifest", "path": str(HERE / "manifest.csv")}]},
        "segment": {"seconds": SEGMENT / 16_000},
        "augment": {"telephone_p": 0.5, "noise_p": 0.5, "gain_p": 0.5},
        "optim": {"lr": 3e-3, "batch_size": 4, "grad_accum": 1, "epochs": 2, **optim},
        "run": {"out_dir": str(out_dir), "progress": False, "seed": 1},
    }


def test_config_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"optim\.learning_rate: Extra inputs"):
        parse_config({**_config_dict(tmp_path), "optim": {"learning_rate": 1}})
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[model\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("optim.lr")
    assert parse_override("model.params={widths=[1,2]}") == ("model.params", {"widths": [1, 2]})
    assert parse_override("run.device=cuda") == ("run.device", "cuda")


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[2] / "configs"
    card = load_config(root / "train-card.toml")
    assert card.model.architecture == "wav2vec2-bigru"
    assert (card.optim.lr, card.optim.batch_size, card.optim.grad_accum) == (5e-5, 24, 2)
    assert (card.optim.epochs, card.optim.t0, card.optim.t_mult) == (20, 5, 2)
    koyelog = load_config(root / "train-koyelog.toml", {"optim.epochs": 3})
    assert koyelog.model.architecture == "koyelog-resnet" and koyelog.optim.epochs == 3
    assert koyelog.data.sources[0].path.is_absolute()
    for name, arch in (("whisper-asp", "whisper-asp"), ("rawnet2", "rawnet2"),
                       ("koyelog-oc", "koyelog-resnet")):  # fmt: skip
        recipe = load_config(root / f"train-{name}.toml")
        assert recipe.model.architecture == arch
        assert all(s.path.is_file() for s in recipe.data.sources), name
    assert load_config(root / "train-koyelog-oc.toml").optim.loss == "ocsoftmax"


# --------------------------------------------------------------------------- a whole run


@pytest.mark.slow
def test_a_tiny_run_logs_exports_and_resumes(tmp_path):
    out = tmp_path / "run"
    result = train(parse_config(_config_dict(out)), echo=lambda _: None)
    assert result.best_epoch in (1, 2) and result.stopped == "epochs"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert {"train_loss", "val_eer", "val_auc", "lr"} <= set(rows[0])
    assert (out / "metrics.csv").read_text().startswith("epoch,global_step,lr")
    problems = (out / "problems.txt").read_text()
    assert "manifest.csv:11" in problems and "broken.flac" in problems
    model = load_detector(result.export_dir, device="cpu")
    config = json.loads((result.export_dir / "config.json").read_text())
    assert model.info.threshold == pytest.approx(config["threshold"])
    assert config["provenance"]["best_epoch"] == result.best_epoch
    # the score map was fitted on the validation windows and the threshold is in its units
    calibration = config["provenance"]["calibration"]
    assert (config["logit_scale"], config["logit_bias"]) == (
        calibration["logit_scale"], calibration["logit_bias"])  # fmt: skip
    assert config["logit_scale"] > 0  # (1, 0) where a tiny model's validation order is wrong
    card = (result.export_dir / "MODEL_CARD.md").read_text()
    assert "Validation metrics" in card and "koyelog-resnet" in card
    assert (out / "eval" / "val" / "metrics.json").is_file()
    # Starting again over a finished run is refused; --resume continues it.
    with pytest.raises(ConfigError, match="--resume"):
        train(parse_config(_config_dict(out)), echo=lambda _: None)
    more = train(parse_config(_config_dict(out, epochs=3)), resume=True, echo=lambda _: None)
    assert [r["epoch"] for r in more.history] == [1, 2, 3]
    assert more.history[-1]["global_step"] > rows[-1]["global_step"]


@pytest.mark.slow
def test_max_steps_stops_cleanly_and_still_exports(tmp_path):
    data = _config_dict(tmp_path / "run", epochs=5)
    data["run"]["max_steps"] = 1
    result = train(parse_config(data), echo=lambda _: None)
    assert result.stopped == "max_steps" and len(result.history) == 1
    assert result.history[0]["global_step"] == 1
    assert (result.export_dir / "model.safetensors").is_file()


@pytest.mark.slow
def test_max_steps_counts_the_end_of_epoch_flush(tmp_path):
    # A batch bigger than the train split: each epoch's only optimiser step is the flush of the
    # partial accumulation at its end; max_steps must still stop the run (it used to be ignored).
    data = _config_dict(tmp_path / "run", epochs=3, batch_size=64, grad_accum=4)
    data["run"]["max_steps"] = 1
    result = train(parse_config(data), echo=lambda _: None)
    assert result.stopped == "max_steps" and len(result.history) == 1
    assert result.history[0]["global_step"] == 1


# --------------------------------------------------------------------------- issue #17 paths


def _tiny_whisper_config(tmp_path: Path, **params) -> dict:
    """A 2-epoch whisper-asp run on the tiny CTranslate2 encoder the test writes, with the
    feature cache under ``tmp_path / "features"``."""
    from tests.conftest import write_tiny_whisper

    paths, digests, _ = write_tiny_whisper(tmp_path / "ct2")
    data = _config_dict(tmp_path / "run", epochs=2)
    data["model"] = {
        "architecture": "whisper-asp",
        "name": "tiny-whisper",
        "params": {
            "weights": None,
            "weights_files": [str(p) for p in paths],
            "weights_sha256": digests,
            "pretrained": True,
            "proj_dim": 16,
            "attention_hidden": 8,
            "classifier_hidden": 16,
            **params,
        },
    }
    data["features"] = {"dir": str(tmp_path / "features"), "crops": 2}
    return data


@pytest.mark.slow
def test_whisper_asp_trains_its_head_from_cached_features(tmp_path):
    data = _tiny_whisper_config(tmp_path)
    digests = data["model"]["params"]["weights_sha256"]
    lines: list[str] = []
    result = train(parse_config(data), echo=lines.append)
    assert result.best_epoch in (1, 2)
    assert any("computing" in line for line in lines)
    cache = next((tmp_path / "features").iterdir())
    files = list((cache / "clips").glob("*.npy"))
    assert len(files) >= 8 and np.load(files[0]).dtype == np.float16
    # the exported model is the whole detector (encoder inside), loadable without the files
    model = load_detector(result.export_dir, device="cpu")
    assert model.info.architecture == "whisper-asp"
    provenance = json.loads((result.export_dir / "config.json").read_text())["provenance"]
    assert provenance["encoder"]["sha256"] == digests  # the CTranslate2 parts it came from
    # scoring from cached window states = the model up to float16 rounding, and the second
    # call reads the states back instead of running the encoder
    from streamguard.training.features import CachedWindowsDetector, CropPolicy, FeatureCache

    cached = CachedWindowsDetector(
        model.module, model.info, FeatureCache(tmp_path / "features", model.module, CropPolicy())
    )
    waves = np.stack([crop(decode_audio(f), SEGMENT, "start")
                      for f in sorted((HERE / "flac").glob("LA_T_*.flac"))])  # fmt: skip
    first = cached(waves)
    assert len(list(cached.dir.glob("*.npy"))) == len(waves)
    np.testing.assert_allclose(first, model(waves), atol=5e-3)
    np.testing.assert_array_equal(cached(waves), first)
    # a second run with the same encoder and crops computes nothing
    data["run"]["out_dir"] = str(tmp_path / "run2")
    lines.clear()
    train(parse_config(data), echo=lines.append)
    assert not any("computing" in line for line in lines), lines


@pytest.mark.slow
def test_a_truncated_encoder_trains_and_scores_from_the_complete_encoders_cache(tmp_path):
    """layers = 1 of a 2-block encoder reads the complete encoder's cached states (its first
    two), computes no features of its own, and its cached scores match the exported model."""
    from streamguard.training.features import CachedWindowsDetector, CropPolicy, cache_for

    data = _tiny_whisper_config(tmp_path)
    train(parse_config(data), echo=lambda line: None)  # fills the complete encoder's cache
    data["model"]["params"]["layers"] = 1
    data["run"]["out_dir"] = str(tmp_path / "truncated")
    lines: list[str] = []
    result = train(parse_config(data), echo=lines.append)
    assert not any("computing" in line for line in lines), lines
    assert len(list((tmp_path / "features").iterdir())) == 1  # no second cache
    model = load_detector(result.export_dir, device="cpu")
    assert len(model.module.encoder.blocks) == 1 and not model.module.encoder.complete
    cache = cache_for(tmp_path / "features", model.module, CropPolicy(), data["model"]["params"])
    assert len(cache.module.encoder.blocks) == 2  # the complete encoder keys the cache
    cached = CachedWindowsDetector(model.module, model.info, cache)
    waves = np.stack([crop(decode_audio(f), SEGMENT, "start")
                      for f in sorted((HERE / "flac").glob("LA_T_*.flac"))])  # fmt: skip
    np.testing.assert_allclose(cached(waves), model(waves), atol=5e-3)


@pytest.mark.slow
def test_ocsoftmax_trains_a_cosine_output_and_leave_out_records_the_family(tmp_path):
    from streamguard.model.heads import CosineOutput

    manifest = tmp_path / "families.csv"
    rows = (HERE / "manifest.csv").read_text().splitlines()
    header, body = rows[0] + ",family", rows[1:]
    fams = ["vocoder" if ",1," in r or ",fake," in r or ",spoof," in r else "" for r in body]
    fams = [f if not f or i % 2 else "neural" for i, f in enumerate(fams)]
    text = "\n".join([header, *(f"{r},{f}" for r, f in zip(body, fams, strict=True))])
    manifest.write_text(text.replace("flac/", str(HERE / "flac") + "/") + "\n")
    data = _config_dict(tmp_path / "run", epochs=1)
    data["data"] = {"sources": [{"type": "manifest", "path": str(manifest)}],
                    "leave_out": ["neural"]}  # fmt: skip
    data["optim"]["loss"] = "ocsoftmax"
    result = train(parse_config(data), echo=lambda _: None)
    model = load_detector(result.export_dir, device="cpu")
    assert isinstance(model.module.classifier[-1], CosineOutput)
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["data"]["leave_out"] == ["neural"]
    exported = json.loads((result.export_dir / "config.json").read_text())
    assert exported["provenance"]["leave_out"] == ["neural"]
    assert "families left out: `neural`" in (result.export_dir / "MODEL_CARD.md").read_text()
    with pytest.raises(ConfigError, match="cannot leave out nope"):
        data["data"]["leave_out"] = ["nope"]
        data["run"]["out_dir"] = str(tmp_path / "run3")
        train(parse_config(data), echo=lambda _: None)


def test_ocsoftmax_is_the_papers_loss_on_the_cosine():
    from streamguard.model.heads import CosineOutput
    from streamguard.training.losses import OCSoftmaxLoss

    head = CosineOutput(4, scale=5.0, center=0.55)
    h = torch.randn(6, 4)
    cos = torch.nn.functional.cosine_similarity(h, head.weight.expand(6, 4), dim=1)
    logits = head(h).squeeze(-1)
    torch.testing.assert_close(logits, 5.0 * (0.55 - cos))
    labels = torch.tensor([0.0, 1, 0, 1, 0, 1])
    expected = torch.where(
        labels == 1, torch.nn.functional.softplus(20 * (cos - 0.2)),
        torch.nn.functional.softplus(20 * (0.9 - cos)),
    ).mean()  # fmt: skip
    torch.testing.assert_close(OCSoftmaxLoss(scale=5.0, center=0.55)(logits, labels), expected)
    assert float(torch.sigmoid(logits).max().detach()) < 1.0  # never saturates in float32
