"""Putting a state dict into a module, strictly, with an error a user can read.

Shared by every loader (our directories, ``.pth`` checkpoints, exports): a checkpoint that does not
match the architecture exactly is refused, naming the first offending keys, instead of silently
scoring with half-random weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from streamguard.errors import ModelError

_SHOW = 3


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOW])
    return shown + (f" (+{len(keys) - _SHOW} more)" if len(keys) > _SHOW else "")


def state_dict_mismatch(expected: Mapping[str, Any], found: Mapping[str, Any]) -> str | None:
    """One-line description of how ``found`` differs from ``expected`` (None if it does not)."""
    missing = [k for k in expected if k not in found]
    extra = [k for k in found if k not in expected]
    shapes = [
        f"{k} {list(found[k].shape)} vs {list(v.shape)} expected"
        for k, v in expected.items()
        if k in found and hasattr(found[k], "shape") and tuple(found[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"missing keys: {_names(missing)}")
    if extra:
        problems.append(f"unexpected keys: {_names(extra)}")
    if shapes:
        problems.append(f"wrong shapes: {_names(shapes)}")
    return "; ".join(problems) or None


def apply_state_dict(module: Any, state: Mapping[str, Any], *, source: str, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` or a one-line :class:`ModelError`.

    Tensors are cast to the module's dtypes (float16 files load into a float32 module).
    """
    import torch

    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise ModelError(f"{source}: not a state dict (non-tensor entries: {_names(not_tensors)})")
    problem = state_dict_mismatch(module.state_dict(), state)
    if problem:
        raise ModelError(f"{source} does not match the {what} architecture: {problem}")
    module.load_state_dict(dict(state), strict=True)


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
