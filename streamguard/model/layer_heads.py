"""Light back ends over a pretrained encoder's layers: learned layer weights + attentive
statistics pooling -> one logit.

Why this shape: anti-spoofing systems built on self-supervised encoders (XLS-R, WavLM) find the
artefacts of synthesis in the lower and middle layers rather than the last one, which is tuned
to words; a softmax-weighted sum of all layers (each layer-normed first, so their very different
scales do not decide the weights) lets training pick them. Attentive statistics pooling
(ECAPA-TDNN's, channel-wise) then summarises the frames by an attention-weighted mean and
standard deviation, so a few frames with artefacts can dominate a window of mostly clean ones.

The head takes the encoder's states ``[B, L, T, d]`` (batch first: that is what the feature
cache stores) and is also the whole trainable model when training from cached features
(training/features.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pool_time(states: torch.Tensor, frames: int) -> torch.Tensor:
    """``[..., T, d]`` averaged over groups of ``frames`` frames (T rounded down)."""
    if frames <= 1:
        return states
    t = states.shape[-2] // frames * frames
    x = states[..., :t, :]
    return x.reshape(*x.shape[:-2], t // frames, frames, x.shape[-1]).mean(dim=-2)


class AttentiveStatsPool(nn.Module):
    """``[B, C, T]`` -> ``[B, 2C]``: attention-weighted mean and std per channel."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.attention = nn.Sequential(
            nn.Conv1d(channels, hidden, 1), nn.Tanh(), nn.Conv1d(hidden, channels, 1)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = torch.softmax(self.attention(x), dim=-1)
        mean = (weights * x).sum(dim=-1)
        var = (weights * x * x).sum(dim=-1) - mean * mean
        return torch.cat([mean, var.clamp(min=1e-6).sqrt()], dim=-1)


class LayerASPHead(nn.Module):
    """States ``[B, L, T, d]`` -> logits ``[B]``."""

    def __init__(
        self,
        n_states: int,
        dim: int,
        *,
        proj_dim: int = 128,
        attention_hidden: int = 64,
        hidden: int = 128,
        dropout: float = 0.2,
    ):
        super().__init__()
        self.dim = dim
        self.layer_logits = nn.Parameter(torch.zeros(n_states))
        self.proj = nn.Linear(dim, proj_dim)
        self.pool = AttentiveStatsPool(proj_dim, attention_hidden)
        self.classifier = nn.Sequential(
            nn.LayerNorm(2 * proj_dim),
            nn.Linear(2 * proj_dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 1),
        )

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(states, (self.dim,))
        mixed = torch.einsum("l,bltd->btd", self.layer_weights(), x)
        h = F.gelu(self.proj(mixed)).transpose(1, 2)  # [B, p, T]
        return self.classifier(self.pool(h)).squeeze(-1)


class GraphAttention(nn.Module):
    """AASIST's graph attention layer over fully connected nodes ``[B, N, C]``: pair weights
    from ``tanh(W (x_i * x_j))``, softmax over neighbours, plus a skip projection."""

    def __init__(self, cin: int, cout: int, temperature: float = 2.0):
        super().__init__()
        self.pair = nn.Linear(cin, cout)
        self.score = nn.Linear(cout, 1, bias=False)
        self.with_att = nn.Linear(cin, cout)
        self.without_att = nn.Linear(cin, cout)
        self.norm = nn.LayerNorm(cout)
        self.temperature = temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pairs = torch.tanh(self.pair(x.unsqueeze(2) * x.unsqueeze(1)))  # [B, N, N, C']
        weights = torch.softmax(self.score(pairs).squeeze(-1) / self.temperature, dim=-1)
        out = self.with_att(weights @ x) + self.without_att(x)
        return F.selu(self.norm(out))


class GraphPool(nn.Module):
    """AASIST's graph pooling: keep the ``ratio`` best-scored nodes, scaled by their score."""

    def __init__(self, dim: int, ratio: float):
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.ratio = ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = torch.sigmoid(self.score(x))  # [B, N, 1]
        k = max(1, int(x.shape[1] * self.ratio))
        index = torch.topk(scores.squeeze(-1), k, dim=1).indices
        kept = torch.gather(x * scores, 1, index.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
        return kept


class LayerGraphHead(nn.Module):
    """States ``[B, L, T, d]`` -> logits ``[B]``: the same learned layer weights, then an
    AASIST-style temporal graph (frames as nodes): graph attention, graph pooling, graph
    attention, and a max + mean readout (AASIST's) into an MLP."""

    def __init__(
        self, n_states: int, dim: int, *, proj_dim: int = 64, hidden: int = 128,
        dropout: float = 0.2, pool_ratio: float = 0.5,
    ):  # fmt: skip
        super().__init__()
        self.dim = dim
        self.layer_logits = nn.Parameter(torch.zeros(n_states))
        self.proj = nn.Linear(dim, proj_dim)
        self.gat1 = GraphAttention(proj_dim, proj_dim)
        self.pool = GraphPool(proj_dim, pool_ratio)
        self.gat2 = GraphAttention(proj_dim, proj_dim)
        self.classifier = nn.Sequential(
            nn.Linear(2 * proj_dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, 1)
        )

    def layer_weights(self) -> torch.Tensor:
        return torch.softmax(self.layer_logits, dim=0)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = F.layer_norm(states, (self.dim,))
        nodes = F.gelu(self.proj(torch.einsum("l,bltd->btd", self.layer_weights(), x)))
        nodes = self.gat2(self.pool(self.gat1(nodes)))
        readout = torch.cat([nodes.amax(dim=1), nodes.mean(dim=1)], dim=-1)
        return self.classifier(readout).squeeze(-1)
