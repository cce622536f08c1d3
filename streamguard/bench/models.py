"""Which detector a benchmark runs: a model spec, the bundled starter, or a random-weight build.

Benchmarks must run offline on a fresh checkout, so when no spec is given and no starter model
is bundled, the detector is built from an architecture with random weights: speed does not
depend on the weights, only on the network's shape (the published shape by default).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from streamguard.errors import ConfigError

#: ``--tiny``: the same shrunken koyelog-resnet the test-suite uses, to show the floor set by
#: everything around the network (front end, Python, the daemon) rather than the network itself.
TINY_KOYELOG_PARAMS: dict[str, Any] = {
    "widths": [8, 16, 32],
    "gru_hidden": 16,
    "attention_heads": 2,
    "classifier_hidden": [32, 16],
}


@dataclass(frozen=True)
class ModelChoice:
    """What ``--model/--arch/--params/--tiny/--device/--half`` asked for."""

    spec: str | None = None
    architecture: str = "koyelog-resnet"
    params: dict[str, Any] | None = None
    device: str = "auto"
    half: bool | None = None  # None: as the daemon would (fp16 on CUDA, fp32 on CPU)
    precision: str | None = None  # fp32 | fp16 | bf16 (CUDA); overrides half

    @classmethod
    def from_args(cls, args: Any) -> ModelChoice:
        params: dict[str, Any] | None = None
        if getattr(args, "params", None):
            try:
                params = json.loads(args.params)
            except ValueError as exc:
                raise ConfigError(f"--params is not JSON: {exc}") from None
            if not isinstance(params, dict):
                raise ConfigError("--params must be a JSON object")
        if getattr(args, "tiny", False):
            params = {**TINY_KOYELOG_PARAMS, **(params or {})}
        return cls(
            spec=args.model,
            architecture=args.arch,
            params=params,
            device=args.device,
            half=args.half,
            precision=getattr(args, "precision", None),
        )


def load_bench_detector(choice: ModelChoice) -> tuple[Any, str]:
    """``(detector, description)`` for ``choice``; random weights unless a model is found.

    An explicit ``--arch``/``--params``/``--tiny`` always builds (so a bundled starter model
    does not silently replace the network you asked to measure).
    """
    import torch

    from streamguard.model import (
        Detector,
        ModelInfo,
        build_module,
        count_parameters,
        load_model,
        resolve_device,
    )
    from streamguard.model.loading import STARTER_DIR
    from streamguard.model.storage import is_model_dir

    device, auto_half = resolve_device(choice.device)
    half = auto_half if choice.half is None else choice.half
    if choice.spec is not None or (choice.params is None and is_model_dir(STARTER_DIR)):
        loaded = load_model(choice.spec, device=device)
        module, info = loaded.detector.module, loaded.detector.info
        where = choice.spec or f"the bundled default tier ({info.name})"
    else:
        torch.manual_seed(0)
        module = build_module(choice.architecture, choice.params)
        info = ModelInfo(name="random-" + choice.architecture, architecture=choice.architecture)
        shape = "custom params" if choice.params else "published size"
        where = f"{choice.architecture} ({shape}, random weights)"
    precision = choice.precision or ("fp16" if half else "fp32")
    detector = Detector(module.float(), info, device=device, precision=precision)
    description = (
        f"{where}: {count_parameters(detector.module):,} params, device {detector.device}, "
        f"{detector.precision}"
    )
    return detector, description
