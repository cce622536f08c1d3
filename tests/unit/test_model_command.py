"""``streamguard model info`` / ``model export`` through the real CLI entry point."""

from __future__ import annotations

import json
import shutil

import numpy as np
import torch

from streamguard.cli import main
from streamguard.model import load_detector


def test_info_on_a_model_dir(tiny_model_dir, tmp_path, capsys):
    assert main(["model", "info", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert "architecture:         koyelog-resnet" in out
    assert "window:               4 s (64000 samples)" in out
    assert "published checkpoint: no" in out
    assert "score map:            none (P(fake) = sigmoid(logit))" in out

    assert main(["model", "info", str(tiny_model_dir), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["name"] == "tiny" and facts["architecture"] == "koyelog-resnet"
    assert facts["parameters"] == sum(
        p.numel() for p in load_detector(str(tiny_model_dir), device="cpu").module.parameters()
    )
    assert facts["sample_rate"] == 16_000 and facts["threshold"] == 0.5
    assert len(facts["weights_sha256"]) == 64 and facts["published_checkpoint"] is False
    assert (facts["logit_scale"], facts["logit_bias"]) == (1.0, 0.0)
    # a model with a score map says it (in the units its threshold is in)
    mapped = shutil.copytree(tiny_model_dir, tmp_path / "mapped")
    config = json.loads((mapped / "config.json").read_text())
    config.update(logit_scale=0.5, logit_bias=-1.25)
    (mapped / "config.json").write_text(json.dumps(config))
    assert main(["model", "info", str(mapped)]) == 0
    out = capsys.readouterr().out
    assert "score map:            P(fake) = sigmoid(0.5 * logit - 1.25)" in out


def test_info_and_export_of_a_pth(tmp_path, capsys):
    # A bare state dict of the default (published-size) architecture, like the koyelog file.
    from streamguard.model import build_module

    torch.manual_seed(1)
    pth = tmp_path / "pytorch_model.pth"
    module = build_module("koyelog-resnet", {})
    torch.save({"model_state_dict": module.state_dict(), "epoch": 3}, pth)
    assert main(["model", "info", str(pth), "--json"]) == 0
    facts = json.loads(capsys.readouterr().out)
    assert facts["parameters"] == 6_129_089 and facts["format"] == "pth"
    assert facts["provenance"]["checkpoint_epoch"] == 3
    assert facts["weights_sha256"] == facts["provenance"]["sha256"]

    out = tmp_path / "exported"
    assert main(["model", "export", str(pth), str(out), "--name", "seed", "--half"]) == 0
    exported = load_detector(str(out), device="cpu")
    assert exported.info.name == "seed"
    assert exported.info.provenance["sha256"] == facts["weights_sha256"]
    waves = np.random.default_rng(3).standard_normal((1, 64_000)).astype(np.float32) * 0.1
    original = load_detector(str(pth), device="cpu")
    np.testing.assert_allclose(exported(waves), original(waves), atol=2e-3)


def test_missing_spec_exits_2_with_one_line(tmp_path, capsys):
    assert main(["model", "info", str(tmp_path / "nope.pth")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamguard: error: no such model file or directory")
    assert err.count("\n") == 1
