"""The temporal head shared by ``koyelog-resnet`` and ``wav2vec2-bigru``.

Both architectures end the same way (the seed card's design, which the published weights also
follow): a bidirectional GRU over a feature sequence, multi-head self-attention (q = k = v), a
mean over time and an MLP classifier to one logit. The pieces are built here so the two
architectures cannot drift apart; each architecture assigns them to its own top-level attributes
(``gru``, ``attention``, ``classifier``) because the published state-dict names depend on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

#: The temporal head's params and their defaults (the seed card's sizes), shared by both
#: architectures' DEFAULTS.
HEAD_DEFAULTS: dict[str, object] = {
    "gru_hidden": 256,
    "gru_layers": 2,
    "gru_dropout": 0.3,
    "attention_heads": 8,
    "attention_dropout": 0.1,
    "classifier_hidden": [512, 128],
    "classifier_dropouts": [0.4, 0.3],
}


def build_gru(input_size: int, hidden: int, layers: int, dropout: float) -> nn.GRU:
    """Bidirectional, batch-first GRU; dropout only between layers (torch warns otherwise)."""
    return nn.GRU(
        input_size,
        hidden,
        num_layers=layers,
        batch_first=True,
        bidirectional=True,
        dropout=dropout if layers > 1 else 0.0,
    )


def build_attention(dim: int, heads: int, dropout: float) -> nn.MultiheadAttention:
    if dim % heads:
        raise ValueError(f"attention dimension {dim} is not divisible by {heads} heads")
    return nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)


def build_classifier(
    in_features: int, hidden: Sequence[int], dropouts: Sequence[float]
) -> nn.Sequential:
    """``[Linear, ReLU, BatchNorm1d, Dropout] * len(hidden) + Linear(->1)``.

    With the published sizes this yields exactly the indices ``classifier.0`` .. ``classifier.8``
    of the seed checkpoint (parameters at 0, 2, 4, 6, 8).
    """
    if len(dropouts) != len(hidden):
        raise ValueError(
            f"classifier_dropouts needs one value per hidden layer ({len(hidden)}), "
            f"got {len(dropouts)}"
        )
    layers: list[nn.Module] = []
    width = in_features
    for size, p in zip(hidden, dropouts, strict=True):
        layers += [nn.Linear(width, size), nn.ReLU(), nn.BatchNorm1d(size), nn.Dropout(p)]
        width = size
    layers.append(nn.Linear(width, 1))
    return nn.Sequential(*layers)


def temporal_logit(
    sequence: torch.Tensor, gru: nn.GRU, attention: nn.MultiheadAttention, classifier: nn.Module
) -> torch.Tensor:
    """``[B, T, F]`` features -> ``[B]`` logits: GRU, self-attention, mean over time, MLP."""
    out, _ = gru(sequence)
    attended, _ = attention(out, out, out, need_weights=False)
    return classifier(attended.mean(dim=1)).squeeze(-1)


class CosineOutput(nn.Module):
    """The last layer for one-class training (OC-Softmax, training/losses.py): the logit of
    "fake" is ``scale * (center - cos(w, h))``, where ``w`` is the learned direction real
    speech gathers around. Bounded (|logit| <= scale * (1 + center)) and monotonic in the
    cosine, so thresholds and EER work as with a linear layer.
    """

    def __init__(self, in_features: int, scale: float = 5.0, center: float = 0.55):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(1, in_features) / in_features**0.5)
        self.scale = float(scale)
        self.center = float(center)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        w = torch.nn.functional.normalize(self.weight, dim=1)
        cos = torch.nn.functional.normalize(h, dim=-1) @ w.to(h.dtype).t()
        return self.scale * (self.center - cos)


def use_cosine_output(module: nn.Module, scale: float, center: float) -> None:
    """Replace the final ``Linear(_, 1)`` of ``module.classifier`` (or ``module.head.classifier``,
    whisper-asp's) by a :class:`CosineOutput`."""
    holder = module if hasattr(module, "classifier") else getattr(module, "head", None)
    classifier = getattr(holder, "classifier", None)
    last = classifier[-1] if isinstance(classifier, nn.Sequential) else None
    if not isinstance(last, nn.Linear) or last.out_features != 1:
        raise ValueError("output 'cosine' needs a classifier ending in Linear(_, 1)")
    classifier[-1] = CosineOutput(last.in_features, scale, center)
