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
) -> Path:
    """Write ``module`` (its weights) and ``info``/``params`` as a model directory.

    ``half=True`` stores floating-point tensors as float16 (half the size; loading upcasts to
    float32). Integer buffers such as BatchNorm's ``num_batches_tracked`` keep their dtype.
    """
    from safetensors.torch import save_file

    # Modules from build_module remember their params; explicit ``params`` win over them.
    built = {**getattr(module, "streamguard_params", {}), **(params or {})}
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {}
    for key, value in module.state_dict().items():
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
        "params": portable_params(info.architecture, module, built),
        "sample_rate": info.sample_rate,
        "window_seconds": info.window_seconds,
        "threshold": info.threshold,
        "provenance": info.provenance,
        "dtype": "float16" if half else "float32",
    }
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, default=str) + "\n")
    if model_card is not None:
        (directory / CARD_FILE).write_text(model_card)
    return directory


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
    apply_state_dict(module, state, source=str(weights), what=config["architecture"])
    info = ModelInfo(
        name=config["name"],
        architecture=config["architecture"],
        sample_rate=int(config.get("sample_rate", 16_000)),
        window_seconds=float(config.get("window_seconds", 4.0)),
        threshold=float(config.get("threshold", 0.5)),
        provenance=dict(config.get("provenance") or {}),
    )
    return module.eval(), info, module.streamguard_params
