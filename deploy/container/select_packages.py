"""Turn pip's resolution of the streamguard wheel into the image's install list.

``pip install --dry-run --report report.json streamguard-*.whl`` resolves every runtime
dependency the way a user's ``pip install`` would (the test extra is not asked for). This keeps
that list, pinned to the resolved versions, minus what the chosen variant never loads:

* ``cpu`` (default): the CUDA build of torch 2.14.1 links libcudart, libcublas(+Lt), libcudnn,
  libcufft, libcufile, libcupti, libcurand, libcusparse(+Lt), libnvJitLink, libnvrtc, libnccl and
  libnvshmem (the ELF NEEDED closure of ``torch._C`` and torchaudio's extensions), so ``import
  torch`` fails without their wheels (``ImportError: libcudnn.so.9``, then ``libcupti.so.13``:
  seen in the image build). What it never loads on a CPU is dropped: triton (the GPU compiler
  of torch.compile), cuSOLVER (linked only by libtorch_cuda_linalg, loaded for CUDA linear
  algebra), NVTX, and the cuda-toolkit / cuda-bindings / cuda-pathfinder Python packages.
  ``install-venv.sh`` then imports torch and torchaudio and serves the bundled model, so a
  torch release that needs one of these fails the build, not a container.
* ``cuda``: everything pip resolved (a GPU host; needs the NVIDIA container toolkit).

Usage: ``python3 select_packages.py cpu|cuda report.json`` -> requirement lines on stdout.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

#: Distributions the CPU image leaves out (names normalised as in PEP 503).
CPU_DROPPED = frozenset(
    {
        "triton",
        "nvidia-cusolver",
        "nvidia-nvtx",
        "cuda-toolkit",
        "cuda-bindings",
        "cuda-pathfinder",
    }
)
VARIANTS = ("cpu", "cuda")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(report: dict, variant: str) -> list[str]:
    """One line per distribution to install: ``name==version``, or the local file pip named
    for a requested wheel (the streamguard wheel itself)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    lines = []
    for item in report["install"]:
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if variant == "cpu" and normalise(name) in CPU_DROPPED:
            continue
        url = item.get("download_info", {}).get("url", "")
        if item.get("requested") and url.startswith("file://"):
            lines.append(url.removeprefix("file://"))
        else:
            lines.append(f"{name}=={version}")
    return sorted(lines, key=str.lower)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    variant, report = argv
    print("\n".join(requirements(json.loads(Path(report).read_text()), variant)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
