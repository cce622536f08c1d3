"""The serving backends a detector can run through, by name: one list for the config schema
(``[model] backend``), ``streamguard bench --backend`` and the serving code (model/serving.py,
which says what each one is). A module of its own, importing nothing, so that the config schema
names them without loading the model package."""

from __future__ import annotations

BACKENDS = (
    "auto",
    "eager",
    "torchscript",
    "onnxruntime",
    "onnxruntime-int8",
    "torch-bf16",
    "cuda-graphs",
)
