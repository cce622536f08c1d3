"""``streamguard model``: inspect a model spec, or convert one into streamguard's directory format.

``model info SPEC`` answers "what exactly would the daemon load?" -- architecture, size, threshold,
window, the weights' sha256 and whether they are the published koyelog checkpoint -- before anyone
trusts its scores. ``model export SPEC DIR`` turns a ``.pth`` or a hub checkpoint into a
``config.json`` + ``model.safetensors`` directory (no pickle left to trust).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "inspect a detector model (info) or convert it to a model directory (export)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    info = sub.add_parser("info", help="show what a model spec resolves to")
    info.add_argument("spec", nargs="?", default=None, help="model spec (default: bundled model)")
    info.add_argument("--json", action="store_true", help="print one JSON object")
    export = sub.add_parser("export", help="write a model as config.json + model.safetensors")
    export.add_argument("spec", help="model spec: directory, .pth file or owner/name[@rev]")
    export.add_argument("directory", help="output directory (created)")
    export.add_argument("--name", help="model name to record (default: the source's)")
    export.add_argument("--half", action="store_true", help="store float16 weights")
    export.add_argument(
        "--force", action="store_true", help="overwrite a model already in DIRECTORY"
    )
    for action in (info, export):
        action.add_argument(
            "--device", default="cpu", help="where to load it: cpu, cuda, auto (default: cpu)"
        )


def describe(loaded: Any) -> dict[str, Any]:
    """The facts ``model info`` reports, as a JSON-ready dict."""
    from streamguard.model import count_parameters
    from streamguard.model.checkpoint import PUBLISHED_SHA256
    from streamguard.model.weights import sha256_file

    info = loaded.detector.info
    sha = sha256_file(loaded.weights_path) if loaded.weights_path else None
    return {
        "name": info.name,
        "architecture": info.architecture,
        "parameters": count_parameters(loaded.detector.module),
        "threshold": info.threshold,
        "logit_scale": info.logit_scale,
        "logit_bias": info.logit_bias,
        "window_seconds": info.window_seconds,
        "window_samples": info.window_samples,
        "sample_rate": info.sample_rate,
        "format": loaded.kind,
        "weights": str(loaded.weights_path) if loaded.weights_path else None,
        "weights_sha256": sha,
        "published_checkpoint": sha == PUBLISHED_SHA256,
        "device": str(loaded.detector.device),
        "params": loaded.params,
        "provenance": info.provenance,
    }


def _score_map(scale: float, bias: float) -> str:
    if (scale, bias) == (1.0, 0.0):
        return "none (P(fake) = sigmoid(logit))"
    return f"P(fake) = sigmoid({scale:.4g} * logit {'-' if bias < 0 else '+'} {abs(bias):.4g})"


def _print_text(facts: dict[str, Any]) -> None:
    from streamguard.policy.verdict import format_threshold

    published = "yes" if facts["published_checkpoint"] else "no"
    rows = [
        ("name", facts["name"]),
        ("architecture", facts["architecture"]),
        ("parameters", f"{facts['parameters']:,}"),
        ("threshold", format_threshold(facts["threshold"])),
        ("score map", _score_map(facts["logit_scale"], facts["logit_bias"])),
        ("window", f"{facts['window_seconds']:g} s ({facts['window_samples']} samples)"),
        ("sample rate", f"{facts['sample_rate']} Hz"),
        ("format", facts["format"]),
        ("weights", facts["weights"]),
        ("sha256", facts["weights_sha256"]),
        ("published checkpoint", published),
    ]
    for key, value in rows:
        print(f"{key + ':':<22}{value}")
    print("provenance:")
    for key, value in facts["provenance"].items():
        shown = json.dumps(value) if isinstance(value, dict | list) else value
        print(f"  {key}: {shown}")


def run(args: argparse.Namespace) -> int:
    from streamguard.errors import StreamguardError
    from streamguard.model import load_model, save_model_dir

    if args.model_command == "export" and not args.force:
        from pathlib import Path

        existing = [
            n for n in ("config.json", "model.safetensors") if (Path(args.directory) / n).exists()
        ]
        if existing:
            raise StreamguardError(
                f"{args.directory} already holds a model ({', '.join(existing)}); "
                "pass --force to overwrite it"
            )
    loaded = load_model(args.spec, device=args.device)
    if args.model_command == "info":
        facts = describe(loaded)
        if args.json:
            print(json.dumps(facts, indent=2, default=str))
        else:
            _print_text(facts)
        return 0
    info = loaded.detector.info
    if args.name:
        info = info.replace(name=args.name)
    try:
        out = save_model_dir(
            args.directory, loaded.detector.module, info, loaded.params, half=args.half
        )
    except OSError as exc:  # a file in the way, no permission: one line, not a traceback
        raise StreamguardError(
            f"cannot write a model to {args.directory}: {exc.strerror or exc}"
        ) from None
    print(f"wrote {info.architecture} model {info.name!r} to {out}")
    return 0
