"""Training losses: BCE on the logit (the seed card's) and one-class OC-Softmax.

Why OC-Softmax (Zhang, Jiang & Duan, "One-class learning towards synthetic voice spoofing
detection", 2021): BCE draws a boundary between the fakes seen in training and real speech, and
an unseen generator can land on the real side of it. OC-Softmax instead makes *real* speech
compact (cosine to a learned direction ``w`` above ``m_real``) and only pushes fakes away
(cosine below ``m_fake``), so anything unlike real speech scores as fake, seen or not.

With ``output = "cosine"`` (streamguard.model.heads.CosineOutput) the model's logit is
``z = scale * (center - cos)``. The OC-Softmax loss
``softplus(scale * (m_real - cos))`` for real and ``softplus(scale * (cos - m_fake))`` for fake
is then a function of ``z`` alone:
``softplus(scale * (m_real - center) + z)`` (real), ``softplus(scale * (center - m_fake) - z)``
(fake), so the trainer, validation loss and serving all use the same single logit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("bce", "ocsoftmax")


class OCSoftmaxLoss(nn.Module):
    """OC-Softmax on the logits of a cosine-output model (labels 1 = fake)."""

    def __init__(
        self, *, scale: float = 20.0, center: float = 0.55, m_real: float = 0.9,
        m_fake: float = 0.2,
    ):  # fmt: skip
        super().__init__()
        if not m_fake < center < m_real:
            raise ValueError("OC-Softmax needs m_fake < output_center < m_real")
        self.real_offset = scale * (m_real - center)
        self.fake_offset = scale * (center - m_fake)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.float()
        real = F.softplus(self.real_offset + logits)
        fake = F.softplus(self.fake_offset - logits)
        return (labels * fake + (1 - labels) * real).mean()


def make_loss(optim_cfg, model_params: dict, device: torch.device) -> nn.Module:
    """The criterion ``optim.loss`` names, matched to the model's output layer."""
    if optim_cfg.loss == "ocsoftmax":
        return OCSoftmaxLoss(
            scale=float(model_params.get("output_scale", 20.0)),
            center=float(model_params.get("output_center", 0.55)),
            m_real=optim_cfg.oc_margins[0],
            m_fake=optim_cfg.oc_margins[1],
        )
    pos_weight = (
        torch.tensor([optim_cfg.pos_weight], device=device) if optim_cfg.pos_weight else None
    )
    return nn.BCEWithLogitsLoss(pos_weight=pos_weight)
