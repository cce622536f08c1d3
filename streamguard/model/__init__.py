"""Detector models: the contract (base), architectures, front ends, load and save.

Shared by the daemon, ``scan``, ``bench`` and the training package. Importing this package
imports torch; architectures that need transformers import it only when built.
"""

from streamguard.model.base import Detector, ModelInfo, fit_window
from streamguard.model.loading import LoadedModel, load_detector, load_model, resolve_device
from streamguard.model.registry import (
    ARCHITECTURES,
    build_module,
    count_parameters,
    default_params,
)
from streamguard.model.storage import load_model_dir, save_model_dir

__all__ = [
    "ARCHITECTURES",
    "Detector",
    "LoadedModel",
    "ModelInfo",
    "build_module",
    "count_parameters",
    "default_params",
    "fit_window",
    "load_detector",
    "load_model",
    "load_model_dir",
    "resolve_device",
    "save_model_dir",
]
