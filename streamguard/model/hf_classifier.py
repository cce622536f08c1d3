"""``hf-audio-classification``: any Hugging Face ``AutoModelForAudioClassification`` checkpoint.

The model's own head decides; streamguard only needs one number per window, the log-odds of the
"fake" class: the fake logit itself for a one-output model, else ``logit_fake -
logsumexp(other logits)`` (so ``sigmoid`` of it is exactly the softmax probability of "fake").
The fake class is ``params.fake_label`` (index or name) or found in ``id2label`` by name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from streamguard.errors import ModelError
from streamguard.model.base import ModelInfo
from streamguard.model.frontend import normalize_waveforms

ARCHITECTURE = "hf-audio-classification"
FAKE_NAMES = ("fake", "spoof", "spoofed", "deepfake", "synthetic", "generated", "ai", "tts")
REAL_HINTS = ("real", "bonafide", "bona fide", "genuine", "human", "not")

DEFAULTS: dict[str, Any] = {
    "checkpoint": None,  # a save_pretrained directory
    "config": None,  # or a model config dict (weights come from our model.safetensors)
    "fake_label": None,  # index or label name; None = find it in id2label
    "do_normalize": None,  # None = the checkpoint's preprocessor_config.json says
    "feature_extractor": None,  # preprocessor config of a model that does not take raw audio
}

RAW_EXTRACTORS = ("Wav2Vec2FeatureExtractor", None)


def find_fake_index(id2label: dict[Any, str], fake_label: int | str | None) -> int:
    """Index of the fake class; raises ModelError when it cannot be told."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()))
    if isinstance(fake_label, int) and not isinstance(fake_label, bool):
        if fake_label not in labels:
            raise ModelError(f"fake_label {fake_label} is not a class index (labels: {shown})")
        return fake_label
    if isinstance(fake_label, str):
        for index, label in labels.items():
            if label.lower() == fake_label.lower():
                return index
        raise ModelError(f"fake_label {fake_label!r} is not a label of the model ({shown})")
    if len(labels) == 1:
        return next(iter(labels))
    lowered = {i: label.lower().strip() for i, label in labels.items()}
    exact = [i for i, label in lowered.items() if label in FAKE_NAMES]
    if len(exact) == 1:
        return exact[0]
    fuzzy = [
        i
        for i, label in lowered.items()
        if any(n in label for n in FAKE_NAMES[:5]) and not any(h in label for h in REAL_HINTS)
    ]
    if len(fuzzy) == 1:
        return fuzzy[0]
    raise ModelError(f"cannot tell which class means fake (labels: {shown}); set params.fake_label")


def _preprocessor(checkpoint: Path) -> dict[str, Any]:
    path = checkpoint / "preprocessor_config.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc


def _spectral_extractor(preprocessor: dict[str, Any]) -> Any:
    """The feature extractor of a model whose input is not the raw waveform, else None.

    Wav2Vec2-family models (wav2vec2, HuBERT, WavLM, ...) read normalised samples, done in torch
    on the model's device; others (AST, Whisper, ...) need their own extractor, run on the CPU.
    """
    kind = preprocessor.get("feature_extractor_type")
    if kind in RAW_EXTRACTORS:
        return None
    import transformers

    cls = getattr(transformers, str(kind), None)
    if cls is None:
        raise ModelError(f"unknown feature extractor type {kind!r}")
    return cls.from_dict(preprocessor)


class HFAudioClassifier(nn.Module):
    """``forward(waveforms [B, S]) -> fake log-odds [B]``."""

    def __init__(self, model: nn.Module, fake_index: int, do_normalize: bool, extractor: Any):
        super().__init__()
        self.model = model
        self.fake_index = fake_index
        self.do_normalize = do_normalize
        self.extractor = extractor

    def _inputs(self, waveforms: torch.Tensor) -> dict[str, torch.Tensor]:
        dtype = next(self.model.parameters()).dtype
        if self.extractor is None:
            x = normalize_waveforms(waveforms) if self.do_normalize else waveforms.float()
            return {"input_values": x.to(dtype)}
        rows = list(waveforms.float().cpu().numpy())
        features = self.extractor(rows, sampling_rate=16_000, return_tensors="pt")
        return {
            k: v.to(waveforms.device, dtype=dtype if v.is_floating_point() else v.dtype)
            for k, v in features.items()
        }

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        logits = self.model(**self._inputs(waveforms)).logits.float()
        if logits.shape[-1] == 1:
            return logits[:, 0]
        others = torch.cat([logits[:, : self.fake_index], logits[:, self.fake_index + 1 :]], dim=-1)
        return logits[:, self.fake_index] - torch.logsumexp(others, dim=-1)


def build(params: dict[str, Any]) -> HFAudioClassifier:
    from transformers import AutoConfig, AutoModelForAudioClassification

    do_normalize = params["do_normalize"]
    preprocessor = params["feature_extractor"] or {}
    if params["config"] is not None:
        config = dict(params["config"])
        config.pop("transformers_version", None)
        model = AutoModelForAudioClassification.from_config(
            AutoConfig.for_model(config.pop("model_type"), **config)
        )
    elif params["checkpoint"] is not None:
        checkpoint = Path(params["checkpoint"])
        if not checkpoint.is_dir():
            raise ModelError(f"hf-audio-classification checkpoint is not a directory: {checkpoint}")
        try:
            model = AutoModelForAudioClassification.from_pretrained(
                str(checkpoint), local_files_only=True
            )
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ModelError(f"cannot load audio classifier from {checkpoint}: {first}") from None
        preprocessor = preprocessor or _preprocessor(checkpoint)
        if do_normalize is None:
            do_normalize = bool(preprocessor.get("do_normalize", False))
    else:
        raise ModelError("hf-audio-classification needs params.checkpoint or params.config")
    fake = find_fake_index(model.config.id2label, params["fake_label"])
    return HFAudioClassifier(model, fake, bool(do_normalize), _spectral_extractor(preprocessor))


def portable_params(module: HFAudioClassifier, params: dict[str, Any]) -> dict[str, Any]:
    """Config instead of a checkpoint path, resolved label and normalisation."""
    config = module.model.config.to_dict()
    config.pop("transformers_version", None)
    return {
        "checkpoint": None,
        "config": config,
        "fake_label": module.fake_index,
        "do_normalize": module.do_normalize,
        "feature_extractor": module.extractor.to_dict() if module.extractor else None,
    }


def load_pretrained_dir(
    directory: Path, *, provenance: dict[str, Any] | None = None
) -> tuple[nn.Module, ModelInfo, dict[str, Any]]:
    """A ``save_pretrained`` directory as ``(module in eval mode, info, params)``."""
    from streamguard.model.registry import build_module

    rate = int(_preprocessor(directory).get("sampling_rate", 16_000))
    if rate != 16_000:
        raise ModelError(f"{directory} expects {rate} Hz audio; streamguard scores 16 kHz")
    module = build_module(ARCHITECTURE, {"checkpoint": str(directory)})
    prov = {"source": str(directory.resolve()), "format": "hf-pretrained", **(provenance or {})}
    name = prov.get("hub_repo") or directory.name
    info = ModelInfo(name=name, architecture=ARCHITECTURE, provenance=prov)
    return module.eval(), info, module.streamguard_params
