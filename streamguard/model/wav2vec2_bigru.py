"""``wav2vec2-bigru``: the seed model card's architecture (~98.5M parameters with wav2vec2-base).

Raw 16 kHz waveform -> per-window zero-mean/unit-variance normalisation (what
``Wav2Vec2FeatureExtractor`` does, eps 1e-7) -> Wav2Vec2 encoder (conv feature encoder frozen)
-> BiGRU (256 per direction, 2 layers) -> 8-head self-attention over 512 dims -> mean over time
-> the card's classifier head -> one logit. The temporal head is the one koyelog-resnet uses.

The encoder config comes from ``encoder_config`` (Wav2Vec2Config kwargs) when given, else from
the hub name in ``encoder`` (cache first; see :mod:`streamguard.model.hub`). Pretrained encoder
weights are fetched only with ``pretrained: true`` -- training sets it; loading a saved model never
needs it, because saving records the full encoder config and ``pretrained: false``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from streamguard.errors import ModelError
from streamguard.model.frontend import normalize_waveforms
from streamguard.model.heads import (
    HEAD_DEFAULTS,
    build_attention,
    build_classifier,
    build_gru,
    temporal_logit,
)
from streamguard.model.hub import fetch_hint, hub_cache_dir, hub_offline

ARCHITECTURE = "wav2vec2-bigru"

DEFAULTS: dict[str, Any] = {
    "encoder": "facebook/wav2vec2-base",
    "encoder_config": None,  # dict of Wav2Vec2Config kwargs; overrides the hub config
    "pretrained": False,  # load the encoder's pretrained weights from the hub (training)
    "freeze_feature_encoder": True,
    "normalize": True,
    **HEAD_DEFAULTS,
}


def _hub_error(what: str, name: str, exc: Exception) -> ModelError:
    return ModelError(
        f"cannot load the {what} of encoder {name!r} from the Hugging Face cache "
        f"({hub_cache_dir()}): {type(exc).__name__}; fetch it with: {fetch_hint(name)} "
        "or give params.encoder_config"
    )


def _encoder(params: dict[str, Any]) -> nn.Module:
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    name = params["encoder"]
    hub = {"cache_dir": str(hub_cache_dir()), "local_files_only": hub_offline()}
    if params["encoder_config"] is not None:
        config = Wav2Vec2Config(**params["encoder_config"])
    else:
        try:
            config = Wav2Vec2Config.from_pretrained(name, **hub)
        except OSError as exc:
            raise _hub_error("config", name, exc) from None
    if not params["pretrained"]:
        return Wav2Vec2Model(config)
    try:
        return Wav2Vec2Model.from_pretrained(name, config=config, **hub)
    except OSError as exc:
        raise _hub_error("weights", name, exc) from None


class Wav2Vec2BiGRU(nn.Module):
    """``forward(waveforms [B, S]) -> logits [B]``."""

    def __init__(self, params: dict[str, Any]):
        super().__init__()
        self.normalize = bool(params["normalize"])
        self.encoder = _encoder(params)
        if params["freeze_feature_encoder"]:
            self.encoder.freeze_feature_encoder()
        hidden = int(params["gru_hidden"])
        self.gru = build_gru(
            self.encoder.config.hidden_size,
            hidden,
            int(params["gru_layers"]),
            float(params["gru_dropout"]),
        )
        self.attention = build_attention(
            2 * hidden, int(params["attention_heads"]), float(params["attention_dropout"])
        )
        self.classifier = build_classifier(
            2 * hidden, params["classifier_hidden"], params["classifier_dropouts"]
        )

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        dtype = next(self.encoder.parameters()).dtype
        x = normalize_waveforms(waveforms) if self.normalize else waveforms.float()
        hidden = self.encoder(x.to(dtype)).last_hidden_state
        return temporal_logit(hidden, self.gru, self.attention, self.classifier)


def build(params: dict[str, Any]) -> Wav2Vec2BiGRU:
    return Wav2Vec2BiGRU(params)


def portable_params(module: Wav2Vec2BiGRU, params: dict[str, Any]) -> dict[str, Any]:
    """Record the full encoder config so a saved model rebuilds without the hub."""
    config = module.encoder.config.to_dict()
    config.pop("transformers_version", None)
    return {**params, "encoder_config": config, "pretrained": False}
