"""Training losses: BCE on the logit (the seed card's) and one-class OC-Softmax.

Why OC-Softmax (Zhang, Jiang & Duan, "One-class learning towards synthetic voice spoofing
detection", 2021): BCE draws a boundary between the fakes seen in training and real speech, and
an unseen generator can land on the real side of it. OC-Softmax instead makes *real* speech
compact (cosine to a learned direction ``w`` above ``m_real``) and only pushes fakes away
(cosine below ``m_fake``), so anything unlike real speech scores as fake, seen or not.

With ``output = "cosine"`` (streamguard.model.heads.CosineOutput) the model's logit is
``z = scale * (center - cos)``, so the cosine is ``center - z / scale`` and the OC-Softmax loss
``softplus(alpha * (m_real - cos))`` (real), ``softplus(alpha * (cos - m_fake))`` (fake) is a
function of the one logit the trainer, validation and serving all use. ``alpha`` (20, the
paper's) sharpens the loss only; the served ``scale`` stays small (5) so that P(fake) =
sigmoid(z) does not saturate to exactly 1.0 in float32, where thresholds could not tell windows
apart.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

LOSSES = ("bce", "ocsoftmax")


class OCSoftmaxLoss(nn.Module):
    """OC-Softmax on the logits of a cosine-output model (labels 1 = fake)."""

    def __init__(
        self, *, scale: float = 5.0, center: float = 0.55, m_real: float = 0.9,
        m_fake: float = 0.2, alpha: float = 20.0,
    ):  # fmt: skip
        super().__init__()
        if not m_fake < m_real:
            raise ValueError("OC-Softmax needs m_fake < m_real")
        self.scale, self.center = scale, center
        self.m_real, self.m_fake, self.alpha = m_real, m_fake, alpha

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.float()
        cos = self.center - logits.float() / self.scale
        real = F.softplus(self.alpha * (self.m_real - cos))
        fake = F.softplus(self.alpha * (cos - self.m_fake))
        return (labels * fake + (1 - labels) * real).mean()


def make_loss(optim_cfg, model_params: dict, device: torch.device) -> nn.Module:
    """The criterion ``optim.loss`` names, matched to the model's output layer."""
    if optim_cfg.loss == "ocsoftmax":
        return OCSoftmaxLoss(
            alpha=optim_cfg.oc_alpha,
            scale=float(model_params.get("output_scale", 5.0)),
            center=float(model_params.get("output_center", 0.55)),
            m_real=optim_cfg.oc_margins[0],
            m_fake=optim_cfg.oc_margins[1],
        )
    pos_weight = (
        torch.tensor([optim_cfg.pos_weight], device=device) if optim_cfg.pos_weight else None
    )
    return nn.BCEWithLogitsLoss(pos_weight=pos_weight)
