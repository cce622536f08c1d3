"""``rawnet2``: a raw-waveform detector in the RawNet2 / AASIST-L style, with a sinc front end.

docs/models.md, "Architectures". Why a raw-waveform model beside the log-mel ones: a magnitude
log-mel throws away the phase and the fine structure between harmonics, which is where
vocoders (Griffin-Lim, WORLD, neural vocoders) leave their traces; ASVspoof systems that read
the waveform (RawNet2, AASIST) catch them.

Waveform ``[B, S]`` -> sinc band-pass filter bank (``sinc_filters`` filters of
``sinc_kernel`` taps, mel-spaced cut-offs as in SincNet; fixed by default, as AASIST found
best, or learnable) -> |.| -> max-pool 3 -> BN -> SELU -> residual blocks (BN, LeakyReLU,
3-tap convs, max-pool 3, filter-wise feature-map scaling) -> attentive statistics pooling over
time -> MLP -> one logit. RawNet2's 1024-unit GRU is replaced by the pooling: cheaper on a CPU
and exportable to ONNX as a whole (there is no front end to keep in torch).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from streamguard.model.layer_heads import AttentiveStatsPool

ARCHITECTURE = "rawnet2"

DEFAULTS: dict[str, Any] = {
    "sample_rate": 16_000,
    "sinc_filters": 70,
    "sinc_kernel": 129,  # odd: a symmetric linear-phase filter
    "sinc_learnable": False,
    "min_low_hz": 0.0,
    "min_band_hz": 0.0,
    "widths": [32, 32, 64, 64, 128, 128],  # one residual block each
    "attention_hidden": 64,
    "classifier_hidden": 128,
    "dropout": 0.2,
}


def _mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def _hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


class SincConv(nn.Module):
    """A bank of band-pass sinc filters (SincNet), mel-spaced between 0 and Nyquist."""

    def __init__(
        self,
        filters: int,
        kernel: int,
        sample_rate: int,
        *,
        learnable: bool = False,
        min_low_hz: float = 0.0,
        min_band_hz: float = 0.0,
    ):
        super().__init__()
        if kernel % 2 == 0:
            raise ValueError(f"sinc_kernel must be odd, got {kernel}")
        self.kernel = kernel
        self.sample_rate = sample_rate
        self.min_low_hz = min_low_hz
        self.min_band_hz = min_band_hz
        edges = _hz(torch.linspace(0.0, float(_mel(torch.tensor(sample_rate / 2.0))), filters + 1))
        low, band = edges[:-1], edges[1:] - edges[:-1]
        half = (kernel - 1) // 2
        self.register_buffer(
            "n", 2 * math.pi * torch.arange(-half, 0).float() / sample_rate, persistent=False
        )
        self.register_buffer(
            "window", torch.hamming_window(kernel, periodic=False)[:half], persistent=False
        )
        self.learnable = learnable
        if learnable:
            self.low_hz = nn.Parameter(low.unsqueeze(1))
            self.band_hz = nn.Parameter(band.unsqueeze(1))
        else:
            self.register_buffer("fixed", self._filters(low.unsqueeze(1), band.unsqueeze(1)),
                                 persistent=False)  # fmt: skip

    def _filters(self, low_hz: torch.Tensor, band_hz: torch.Tensor) -> torch.Tensor:
        low = self.min_low_hz + low_hz.abs()
        high = (low + self.min_band_hz + band_hz.abs()).clamp(max=self.sample_rate / 2)
        band = (high - low)[:, 0]
        f_low, f_high = low * self.n, high * self.n  # [F, half]
        left = (torch.sin(f_high) - torch.sin(f_low)) / (self.n / 2) * self.window
        center = 2 * band.unsqueeze(1)
        right = left.flip(dims=[1])
        bank = torch.cat([left, center, right], dim=1) / (2 * band.unsqueeze(1)).clamp(min=1e-6)
        return bank.unsqueeze(1)  # [F, 1, kernel]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bank = self._filters(self.low_hz, self.band_hz) if self.learnable else self.fixed
        return F.conv1d(x, bank.to(x.dtype), padding=self.kernel // 2)


class ResBlock(nn.Module):
    """RawNet2's residual block with filter-wise feature-map scaling (FMS)."""

    def __init__(self, cin: int, cout: int, first: bool = False):
        super().__init__()
        self.bn1 = nn.Identity() if first else nn.BatchNorm1d(cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        self.down = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()
        self.fms = nn.Linear(cout, cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.leaky_relu(self.bn1(x), 0.3))
        out = self.conv2(F.leaky_relu(self.bn2(out), 0.3))
        out = F.max_pool1d(out + self.down(x), 3)
        scale = torch.sigmoid(self.fms(out.mean(dim=-1))).unsqueeze(-1)
        return out * scale + scale


class RawNet2(nn.Module):
    """``forward(waveforms [B, S]) -> logits [B]``."""

    def __init__(self, params: dict[str, Any]):
        super().__init__()
        p = params
        filters = int(p["sinc_filters"])
        self.sinc = SincConv(
            filters, int(p["sinc_kernel"]), int(p["sample_rate"]),
            learnable=bool(p["sinc_learnable"]), min_low_hz=float(p["min_low_hz"]),
            min_band_hz=float(p["min_band_hz"]),
        )  # fmt: skip
        self.bn0 = nn.BatchNorm1d(filters)
        widths = [int(w) for w in p["widths"]]
        if not widths:
            raise ValueError("widths needs at least one block")
        blocks, cin = [], filters
        for i, width in enumerate(widths):
            blocks.append(ResBlock(cin, width, first=i == 0))
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.pool = AttentiveStatsPool(cin, int(p["attention_hidden"]))
        self.classifier = nn.Sequential(
            nn.BatchNorm1d(2 * cin),
            nn.Linear(2 * cin, int(p["classifier_hidden"])),
            nn.SELU(),
            nn.Dropout(float(p["dropout"])),
            nn.Linear(int(p["classifier_hidden"]), 1),
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = self.sinc(waveforms.unsqueeze(1).to(self.bn0.weight.dtype))
        x = F.selu(self.bn0(F.max_pool1d(x.abs(), 3)))
        x = self.blocks(x)
        return self.classifier(self.pool(x)).squeeze(-1)


def build(params: dict[str, Any]) -> RawNet2:
    return RawNet2(params)
