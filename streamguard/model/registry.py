"""Architecture names -> builders, with defaults and parameter checking.

Architecture modules are imported lazily: ``koyelog-resnet`` needs only torch/torchaudio, the
other two import transformers (seconds of start-up), which the daemon should not pay for unless
it serves such a model. Each module exposes ``DEFAULTS``, ``build(params) -> nn.Module`` and
optionally ``portable_params(module, params)`` (params that rebuild it without the network).
"""

from __future__ import annotations

import copy
import importlib
from types import ModuleType
from typing import Any

from streamguard.errors import ModelError

ARCHITECTURES: dict[str, str] = {
    "koyelog-resnet": "streamguard.model.koyelog",
    "wav2vec2-bigru": "streamguard.model.wav2vec2_bigru",
    "hf-audio-classification": "streamguard.model.hf_classifier",
    "whisper-asp": "streamguard.model.whisper_asp",
    "rawnet2": "streamguard.model.rawnet",
}


#: Params every architecture with a ``classifier`` head accepts: ``output = "cosine"`` swaps its
#: last Linear for :class:`streamguard.model.heads.CosineOutput` (one-class training).
COMMON_DEFAULTS: dict[str, Any] = {"output": "linear", "output_scale": 5.0, "output_center": 0.55}
OUTPUTS = ("linear", "cosine")


def _module_for(architecture: str) -> ModuleType:
    try:
        return importlib.import_module(ARCHITECTURES[architecture])
    except KeyError:
        known = ", ".join(ARCHITECTURES)
        raise ModelError(f"unknown architecture {architecture!r} (known: {known})") from None


def default_params(architecture: str) -> dict[str, Any]:
    """A fresh copy of the architecture's defaults (the published values where there are any)."""
    return {**copy.deepcopy(_module_for(architecture).DEFAULTS), **COMMON_DEFAULTS}


def resolve_params(architecture: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Defaults overlaid with ``params``; unknown keys are an error (they are usually typos)."""
    merged = default_params(architecture)
    unknown = sorted(set(params or {}) - set(merged))
    if unknown:
        raise ModelError(
            f"unknown parameter(s) for {architecture}: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(merged))})"
        )
    merged.update(copy.deepcopy(params or {}))
    return merged


def build_module(architecture: str, params: dict[str, Any] | None = None) -> Any:
    """Build a fresh (randomly initialised, train-mode) ``nn.Module`` for ``architecture``.

    ``params`` overrides the defaults; the module's ``forward`` maps waveforms ``[B, S]`` to
    logits ``[B]``. The merged params are kept on the module as ``streamguard_params`` so that
    savers and ``model info`` can report exactly what was built.
    """
    full = resolve_params(architecture, params)
    arch_params = {k: v for k, v in full.items() if k not in COMMON_DEFAULTS}
    try:
        if full["output"] not in OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(OUTPUTS)}")
        module = _module_for(architecture).build(arch_params)
        if full["output"] == "cosine":
            from streamguard.model.heads import use_cosine_output

            use_cosine_output(module, float(full["output_scale"]), float(full["output_center"]))
    except (ValueError, TypeError) as exc:
        raise ModelError(f"invalid parameters for {architecture}: {exc}") from exc
    module.streamguard_params = full
    return module


def portable_params(architecture: str, module: Any, params: dict[str, Any]) -> dict[str, Any]:
    """Params that rebuild ``module`` offline (e.g. an encoder config instead of a hub name)."""
    arch = _module_for(architecture)
    full = resolve_params(architecture, params)
    hook = getattr(arch, "portable_params", None)
    return hook(module, full) if hook else full


def count_parameters(module: Any) -> int:
    return sum(p.numel() for p in module.parameters())
