#!/bin/sh
# Runs inside the image build (Containerfile), as root: builds the streamguard wheel from the
# checkout, installs it and its runtime dependencies into /opt/streamguard/venv, checks that the
# result imports and serves the bundled model, and caches the model's built ONNX backend.
#
#   install-venv.sh VARIANT SRC_DIR        VARIANT: cpu | cuda (select_packages.py says why)
#
# pip takes its indexes from the PIP_* build arguments build.sh passes: the host's own local
# wheel store (bind-mounted read-only at the same path) before the package index, so torch comes
# from disk, never from the network.
set -eu
variant=$1
src=$2
here=$(dirname "$0")
venv=/opt/streamguard/venv

# An empty build argument is "not set" for pip, not "an empty index list".
for name in PIP_FIND_LINKS PIP_EXTRA_INDEX_URL PIP_INDEX_URL PIP_CONSTRAINT PIP_CERT; do
    eval "value=\${$name:-}"
    if [ -z "$value" ]; then unset "$name"; fi
done
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_PROGRESS_BAR=off

work=$(mktemp -d)
python3.11 -m venv "$venv"

# The wheel, from a copy (the build writes build/ and *.egg-info next to the sources). Build
# isolation fetches the backend pyproject.toml asks for (setuptools>=77).
cp -a "$src" "$work/src"
"$venv/bin/pip" wheel --quiet --no-deps --wheel-dir "$work/wheels" "$work/src"
wheel=$(ls "$work"/wheels/streamguard-*.whl)

# Resolve as a user's `pip install streamguard` would, then install the variant's selection.
"$venv/bin/pip" install --quiet --dry-run --ignore-installed --report "$work/report.json" "$wheel"
python3.11 "$here/select_packages.py" "$variant" "$work/report.json" > "$work/requirements.txt"
echo "install-venv: $(wc -l < "$work/requirements.txt") distributions ($variant)"
"$venv/bin/pip" install --quiet --no-deps --requirement "$work/requirements.txt"
rm -rf "$work"

# The check that proves the selection: torch and torchaudio import, the bundled model loads and
# is served through the daemon's own backend choice ([model] backend = "auto"). On a CPU that is
# ONNX Runtime int8, exported and calibrated here once and kept in STREAMGUARD_CACHE_DIR, so a
# container serves int8 from its first second instead of building it at every start. The probe's
# decision is cached per CPU *and threads per worker*: it is made for the threads the daemon's
# defaults give on this host (else every start probed again in a child process).
"$venv/bin/python" - <<'PY'
import torch, torchaudio  # noqa: E401  (the import is the check)
from streamguard.config import load_config
from streamguard.model.loading import load_detector
from streamguard.model.serving import serve
from streamguard.scoring.runners import threads_per_worker

model = load_config(None).model
detector = load_detector(None, device="cpu")
backend = serve(detector, "auto", threads=threads_per_worker(model.threads, model.workers))
print(f"install-venv: torch {torch.__version__}, torchaudio {torchaudio.__version__}, "
      f"cuda available: {torch.cuda.is_available()}, bundled model served by {backend}")
PY
chown -R streamguard:streamguard "${STREAMGUARD_CACHE_DIR:?}"
