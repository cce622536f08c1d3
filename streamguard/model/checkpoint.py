"""Reading ``.pth`` checkpoints (the published koyelog file) without running pickle code.

``torch.load(weights_only=True)`` only rebuilds tensors, containers and the globals we allowlist:
here numpy scalars and dtypes, because the published file stores ``val_accuracy`` as a numpy
float. Anything else in the pickle -- ``os.system``, arbitrary classes -- is refused before it can
run, and reported as a :class:`ModelError` naming the global it wanted.
"""

from __future__ import annotations

import inspect
import json
import pickle
import re
import warnings
from pathlib import Path
from typing import Any

from streamguard.errors import ModelError
from streamguard.model.base import ModelInfo
from streamguard.model.registry import build_module
from streamguard.model.weights import apply_state_dict, sha256_file

PUBLISHED_REPO = "koyelog/deepfake-voice-detector-sota"
PUBLISHED_SHA256 = "01ee807d4efeabd20799feedf94182ee948ab2a7b5f0838f928770c9f49b4bc4"
PTH_FILE = "pytorch_model.pth"

# config.json keys of the koyelog repo (and close spellings) -> our params / ModelInfo fields.
_CONFIG_KEYS = {
    "sr": "sample_rate",
    "sample_rate": "sample_rate",
    "sampling_rate": "sample_rate",
    "n_mels": "n_mels",
    "n_fft": "n_fft",
    "hop_length": "hop_length",
    "duration": "window_seconds",
    "max_duration": "window_seconds",
}


def _numpy_globals() -> list[Any]:
    """numpy scalar reconstruction + dtypes, under both numpy 1 and numpy 2 module names."""
    import numpy as np

    try:
        scalar = np._core.multiarray.scalar  # numpy 2
    except AttributeError:  # pragma: no cover - numpy 1
        scalar = np.core.multiarray.scalar
    dtype_classes = [
        c for c in vars(np.dtypes).values() if inspect.isclass(c) and issubclass(c, np.dtype)
    ]
    names = ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar")
    return [np.dtype, *dtype_classes, *((scalar, name) for name in names)]


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with numpy allowlisted."""
    import torch

    try:
        # torch warns about pickle protocols on stderr; the outcome is reported as one line.
        with warnings.catch_warnings(), torch.serialization.safe_globals(_numpy_globals()):
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(str(path), weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as exc:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise ModelError(
            f"refusing to load {path}: it contains Python objects{what} that could run code "
            "when unpickled; only plain weights are accepted"
        ) from None
    except OSError as exc:
        raise ModelError(f"cannot read {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # garbage input makes the unpickler fail in many ways
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        detail = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
        raise ModelError(f"{path} is not a readable PyTorch checkpoint ({detail})") from None


def extract_state_dict(obj: Any, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(state_dict, extras)`` from a ``{"model_state_dict": ...}`` container or a bare dict."""
    import torch

    if not isinstance(obj, dict):
        raise ModelError(f"{source}: expected a dict of weights, found {type(obj).__name__}")
    for key in ("model_state_dict", "state_dict"):
        if isinstance(obj.get(key), dict):
            extras = {
                k: _plain(v)
                for k, v in obj.items()
                if k != key and (isinstance(v, int | float | str | bool) or _is_np_scalar(v))
            }
            return obj[key], extras
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj, {}
    raise ModelError(f"{source}: no 'model_state_dict' in the checkpoint and not a bare state dict")


def _is_np_scalar(value: Any) -> bool:
    import numpy as np

    return isinstance(value, np.generic)


def _plain(value: Any) -> Any:
    return value.item() if _is_np_scalar(value) else value


def read_side_config(pth: Path) -> dict[str, Any]:
    """The koyelog ``config.json`` beside the ``.pth``, if any (ignored if it is not JSON)."""
    path = pth.with_name("config.json")
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"cannot read {path}: {exc}") from exc
    return data if isinstance(data, dict) else {}


def load_pth(
    path: str | Path,
    *,
    name: str | None = None,
    params: dict[str, Any] | None = None,
    extra_provenance: dict[str, Any] | None = None,
) -> tuple[Any, ModelInfo, dict[str, Any]]:
    """Load a koyelog-format ``.pth`` strictly: ``(module in eval mode, info, params)``.

    The architecture is koyelog-resnet with the published sizes, the front-end values of a
    ``config.json`` beside the file, then ``params`` (e.g. the two unproven switches) on top.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no such checkpoint file: {path}")
    sha = sha256_file(path)
    state, extras = extract_state_dict(safe_torch_load(path), str(path))
    side = read_side_config(path)
    merged: dict[str, Any] = {}
    window_seconds = 4.0
    for key, value in side.items():
        target = _CONFIG_KEYS.get(key)
        if target == "window_seconds":
            window_seconds = float(value)
        elif target is not None:
            merged[target] = int(value)
    merged.update(params or {})
    module = build_module("koyelog-resnet", merged)
    apply_state_dict(module, state, source=str(path), what="koyelog-resnet")
    provenance: dict[str, Any] = {
        "source": str(path.resolve()),
        "format": "pth",
        "sha256": sha,
        "published_checkpoint": sha == PUBLISHED_SHA256,
        **{f"checkpoint_{k}": v for k, v in extras.items()},
    }
    if side:
        provenance["side_config"] = side
    provenance.update(extra_provenance or {})
    info = ModelInfo(
        name=name or path.stem,
        architecture="koyelog-resnet",
        sample_rate=int(merged.get("sample_rate", 16_000)),
        window_seconds=window_seconds,
        threshold=0.5,
        provenance=provenance,
    )
    return module.eval(), info, module.streamguard_params
