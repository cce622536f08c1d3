"""``koyelog-resnet``: the network actually published as ``koyelog/deepfake-voice-detector-sota``.

docs/models.md, "Architectures": log-mel front end -> ResNet-style 2-D CNN -> BiGRU ->
self-attention -> mean over time -> MLP -> one logit. Attribute names are the published
state-dict names (``conv1``, ``bn1``, ``layer1..3``, ``gru``, ``attention``, ``classifier.0..8``),
so the real ``pytorch_model.pth`` loads with ``strict=True``.

Two choices are not proven by the weights and are therefore switches (defaults = best public
reading, the one two independent projects loaded strict):

- ``maxpool`` (default ``True``): 3x3/2 max-pool after the stem; one public loader omits it.
- ``freq_reduce`` (default ``"mean"``): ``"mean"`` averages the frequency axis, giving a sequence
  of T' steps of C features; ``"flatten"`` is the other public reading, which reshapes
  ``[B, C, F', T'] -> [B, F'*T', C]`` (frequency folded into the sequence). Both feed C features
  to the GRU, so both load the same weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from streamguard.model.frontend import LogMel
from streamguard.model.heads import (
    HEAD_DEFAULTS,
    build_attention,
    build_classifier,
    build_gru,
    temporal_logit,
)

ARCHITECTURE = "koyelog-resnet"

DEFAULTS: dict[str, Any] = {
    # front end (the HF repo's config.json may override sample_rate/n_fft/hop_length/n_mels)
    "sample_rate": 16_000,
    "n_fft": 1024,
    "hop_length": 512,
    "n_mels": 128,
    "top_db": 80.0,
    "db_ref": "max",
    "amin": 1e-10,
    # CNN
    "widths": [64, 128, 256],
    "blocks_per_layer": 2,
    "maxpool": True,
    "freq_reduce": "mean",
    # temporal head (the seed card's sizes)
    **HEAD_DEFAULTS,
}

FREQ_REDUCE = ("mean", "flatten")


class Block(nn.Module):
    """Basic residual block: two 3x3 convs with BN, 1x1 conv+BN shortcut when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class KoyelogResNet(nn.Module):
    """``forward(waveforms [B, S]) -> logits [B]``; the mel front end is part of the module."""

    def __init__(self, params: dict[str, Any]):
        super().__init__()
        p = params
        if p["freq_reduce"] not in FREQ_REDUCE:
            raise ValueError(f"freq_reduce must be one of {FREQ_REDUCE}, got {p['freq_reduce']!r}")
        widths = [int(w) for w in p["widths"]]
        self.maxpool = bool(p["maxpool"])
        self.freq_reduce = p["freq_reduce"]
        self.frontend = LogMel(
            sample_rate=int(p["sample_rate"]),
            n_fft=int(p["n_fft"]),
            hop_length=int(p["hop_length"]),
            n_mels=int(p["n_mels"]),
            top_db=p["top_db"],
            db_ref=p["db_ref"],
            amin=float(p["amin"]),
        )
        self.conv1 = nn.Conv2d(1, widths[0], 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        cin = widths[0]
        for i, width in enumerate(widths, start=1):
            blocks = [Block(cin, width, 1 if i == 1 else 2)]
            blocks += [Block(width, width, 1) for _ in range(int(p["blocks_per_layer"]) - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            cin = width
        self.num_layers = len(widths)
        hidden = int(p["gru_hidden"])
        self.gru = build_gru(cin, hidden, int(p["gru_layers"]), float(p["gru_dropout"]))
        self.attention = build_attention(
            2 * hidden, int(p["attention_heads"]), float(p["attention_dropout"])
        )
        self.classifier = build_classifier(
            2 * hidden, p["classifier_hidden"], p["classifier_dropouts"]
        )

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Waveforms -> the ``[B, T, C]`` sequence the GRU reads."""
        return self.features_from_frontend(self.frontend(waveforms))

    def features_from_frontend(self, logmel: torch.Tensor) -> torch.Tensor:
        """The front end's ``[B, 1, n_mels, frames]`` -> the ``[B, T, C]`` GRU input."""
        x = logmel.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))
        if self.maxpool:
            x = F.max_pool2d(x, kernel_size=3, stride=2, padding=1)
        for i in range(1, self.num_layers + 1):
            x = getattr(self, f"layer{i}")(x)
        if self.freq_reduce == "mean":
            return x.mean(dim=2).transpose(1, 2)  # [B, C, F, T] -> [B, T, C]
        return x.flatten(2).transpose(1, 2)  # [B, C, F*T] -> [B, F*T, C]

    def logit_from_frontend(self, logmel: torch.Tensor) -> torch.Tensor:
        """Everything after the front end (what an ONNX export holds: the STFT does not export)."""
        return temporal_logit(
            self.features_from_frontend(logmel), self.gru, self.attention, self.classifier
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.logit_from_frontend(self.frontend(waveforms))


def build(params: dict[str, Any]) -> KoyelogResNet:
    return KoyelogResNet(params)
