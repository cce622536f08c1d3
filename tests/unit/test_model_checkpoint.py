"""Loading koyelog-format ``.pth`` checkpoints: strict, and never running pickle code.

The reference network below is re-declared from the published checkpoint's layer table (the
project's design notes, outside this repository) on purpose (it does not import streamguard's):
a checkpoint written by *it* must load into ours strictly.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from streamguard.errors import ModelError
from streamguard.model import build_module, count_parameters, load_detector, load_model
from streamguard.model.checkpoint import PUBLISHED_SHA256, load_pth

PUBLISHED_PARAMETERS = 6_129_089


class RefBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class RefNet(nn.Module):
    """seed-checkpoint.md's table, with the widths as the only knob (for a tiny file)."""

    def __init__(self, widths=(64, 128, 256), gru=256, heads=8, hidden=(512, 128)):
        super().__init__()
        a, b, c = widths
        self.conv1 = nn.Conv2d(1, a, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(a)
        self.layer1 = nn.Sequential(RefBlock(a, a, 1), RefBlock(a, a, 1))
        self.layer2 = nn.Sequential(RefBlock(a, b, 2), RefBlock(b, b, 1))
        self.layer3 = nn.Sequential(RefBlock(b, c, 2), RefBlock(c, c, 1))
        self.gru = nn.GRU(c, gru, num_layers=2, batch_first=True, bidirectional=True, dropout=0.3)
        self.attention = nn.MultiheadAttention(2 * gru, heads, dropout=0.1, batch_first=True)
        h1, h2 = hidden
        self.classifier = nn.Sequential(
            nn.Linear(2 * gru, h1), nn.ReLU(), nn.BatchNorm1d(h1), nn.Dropout(0.4),
            nn.Linear(h1, h2), nn.ReLU(), nn.BatchNorm1d(h2), nn.Dropout(0.3),
            nn.Linear(h2, 1),
        )  # fmt: skip

    def forward(self, mel):  # [B, 1, 128, 126] dB
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(mel))), 3, 2, 1)
        x = self.layer3(self.layer2(self.layer1(x)))
        out, _ = self.gru(x.mean(dim=2).permute(0, 2, 1))
        out, _ = self.attention(out, out, out)
        return self.classifier(out.mean(dim=1))


TINY_REF = {"widths": (8, 16, 32), "gru": 16, "heads": 2, "hidden": (32, 16)}
TINY_PARAMS = {"widths": [8, 16, 32], "gru_hidden": 16, "attention_heads": 2,
               "classifier_hidden": [32, 16]}  # fmt: skip


def _randomised(ref: nn.Module) -> nn.Module:
    """Non-trivial BN running statistics, so a wrong BN mapping would change the scores."""
    gen = torch.Generator().manual_seed(1)
    for m in ref.modules():
        if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5, generator=gen)
            m.running_var.uniform_(0.5, 2.0, generator=gen)
    return ref.eval()


def _save(path, state, **extras):
    torch.save({"model_state_dict": state, **extras}, path)
    return path


@pytest.fixture(scope="module")
def full_ref():
    torch.manual_seed(3)
    return _randomised(RefNet())


@pytest.fixture(scope="module")
def tiny_ref():
    torch.manual_seed(3)
    return _randomised(RefNet(**TINY_REF))


def _librosa_mels(waves: np.ndarray) -> torch.Tensor:
    import librosa

    mels = [
        librosa.power_to_db(
            librosa.feature.melspectrogram(y=w, sr=16_000, n_fft=1024, hop_length=512, n_mels=128),
            ref=np.max,
            top_db=80,
        )
        for w in waves
    ]
    return torch.from_numpy(np.stack(mels)[:, None])


def test_default_module_has_the_published_parameter_count():
    ours = build_module("koyelog-resnet", {})
    assert count_parameters(ours) == PUBLISHED_PARAMETERS
    assert count_parameters(RefNet()) == PUBLISHED_PARAMETERS


def test_published_layout_pth_loads_strict_and_scores_like_the_reference(tmp_path, full_ref):
    path = _save(
        tmp_path / "ref.pth", full_ref.state_dict(), epoch=3, val_accuracy=np.float64(0.984)
    )
    loaded = load_model(str(path), device="cpu")
    det = loaded.detector
    assert count_parameters(det.module) == PUBLISHED_PARAMETERS
    assert det.info.architecture == "koyelog-resnet"
    assert det.info.threshold == 0.5 and det.info.window_samples == 64_000
    prov = det.info.provenance
    assert prov["source"] == str(path.resolve())
    assert len(prov["sha256"]) == 64 and prov["published_checkpoint"] is False
    assert prov["checkpoint_epoch"] == 3
    assert prov["checkpoint_val_accuracy"] == pytest.approx(0.984)
    assert loaded.kind == "pth" and loaded.weights_path == path

    waves = (np.random.default_rng(0).standard_normal((2, 64_000)) * 0.1).astype(np.float32)
    with torch.no_grad():
        expected = torch.sigmoid(full_ref(_librosa_mels(waves))).reshape(-1).numpy()
    np.testing.assert_allclose(det(waves), expected, atol=1e-4)


def test_switches_change_the_network_but_not_the_weights(tmp_path, tiny_ref):
    path = _save(tmp_path / "tiny.pth", tiny_ref.state_dict())
    waves = (np.random.default_rng(1).standard_normal((2, 64_000)) * 0.1).astype(np.float32)
    scores, steps = {}, {}
    for maxpool in (True, False):
        for reduce in ("mean", "flatten"):
            params = {**TINY_PARAMS, "maxpool": maxpool, "freq_reduce": reduce}
            module, _, _ = load_pth(path, params=params)
            with torch.no_grad():
                scores[maxpool, reduce] = module(torch.from_numpy(waves)).numpy()
                steps[maxpool, reduce] = module.features(torch.from_numpy(waves)).shape[1:]
    with torch.no_grad():
        reference = tiny_ref(_librosa_mels(waves)).reshape(-1).numpy()
    np.testing.assert_allclose(scores[True, "mean"], reference, atol=1e-5)
    # [B, C, F', T'] after the CNN is [B, 32, 8, 8] with the max-pool, [B, 32, 16, 16] without.
    assert steps == {
        (True, "mean"): (8, 32),
        (True, "flatten"): (64, 32),
        (False, "mean"): (16, 32),
        (False, "flatten"): (256, 32),
    }
    others = [v for k, v in scores.items() if k != (True, "mean")]
    assert all(np.abs(v - reference).max() > 1e-4 for v in others)


def test_bare_state_dict_in_repo_layout_with_side_config(tmp_path, full_ref):
    torch.save(full_ref.state_dict(), tmp_path / "pytorch_model.pth")
    side = {"sr": 16000, "n_mels": 128, "n_fft": 1024, "hop_length": 512, "duration": 4}
    (tmp_path / "config.json").write_text(json.dumps(side))
    det = load_detector(str(tmp_path), device="cpu")  # koyelog repo layout: a directory
    assert det.info.window_samples == 64_000
    assert det.info.provenance["side_config"] == side


def test_published_sha_is_the_documented_one():
    assert PUBLISHED_SHA256 == "01ee807d4efeabd20799feedf94182ee948ab2a7b5f0838f928770c9f49b4bc4"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda s: s.pop("gru.weight_hh_l1_reverse"), "missing keys: gru.weight_hh_l1_reverse"),
        (lambda s: s.update({"head.weight": torch.zeros(1)}), "unexpected keys: head.weight"),
        (lambda s: s.update({"conv1.weight": torch.zeros(8, 1, 5, 5)}), "wrong shapes: conv1"),
    ],
)
def test_mismatched_state_dict_is_refused_with_key_names(tmp_path, tiny_ref, mutate, message):
    state = dict(tiny_ref.state_dict())
    mutate(state)
    path = _save(tmp_path / "bad.pth", state, epoch=1)
    with pytest.raises(ModelError, match="does not match the koyelog-resnet") as err:
        load_pth(path, params=TINY_PARAMS)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_full_size_module_refuses_tiny_checkpoint(tmp_path, tiny_ref):
    """The default (published) sizes against a tiny file: many wrong shapes, short message."""
    path = _save(tmp_path / "tiny.pth", tiny_ref.state_dict())
    with pytest.raises(ModelError, match=r"wrong shapes: .*\(\+\d+ more\)"):
        load_detector(str(path), device="cpu")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running(tmp_path, tiny_ref):
    marker = tmp_path / "pwned"
    path = _save(tmp_path / "evil.pth", tiny_ref.state_dict(), payload=_Exploit(marker))
    with pytest.raises(ModelError, match=r"refusing to load .*could run code") as err:
        load_detector(str(path), device="cpu")
    assert "system" in str(err.value)
    assert not marker.exists()


def test_not_a_checkpoint_and_missing_file(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"this is not a torch file")
    with pytest.raises(ModelError, match="not a readable PyTorch checkpoint"):
        load_detector(str(junk), device="cpu")
    with pytest.raises(ModelError, match="no such model file or directory"):
        load_detector(str(tmp_path / "absent.pth"), device="cpu")
