"""The built wheel works outside the checkout: installed alone, it scans a file with its bundled
model, and it installs nothing but the ``streamguard`` package (no top-level ``training``).

Offline by construction: the wheel is built from a copy of the source tree with this venv's
setuptools (``--no-build-isolation``, the ``test`` extra pins the backend's floor) and
installed with ``--no-deps --no-index --target``; the dependencies (torch, ...) come from this
venv, exactly as they would from a user's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]

#: What a user of the wheel needs besides code: the bundled model, the demo call, the page.
CARRIED = [
    "streamguard/models/starter/config.json",
    "streamguard/models/starter/model.safetensors",
    "streamguard/models/starter/MODEL_CARD.md",
    "streamguard/models/accurate/config.json",
    "streamguard/models/accurate/model.safetensors",
    "streamguard/models/accurate/MODEL_CARD.md",
    "streamguard/demo/demo_call.wav",
    "streamguard/dashboard/static/index.html",
    "streamguard/dashboard/static/app.js",
    "streamguard/training/__init__.py",
    "streamguard/training/train.py",
    "streamguard/training/corpus/manifest.csv",
]


def source_files() -> list[str]:
    """The files a commit of this checkout would hold (tracked + untracked, not ignored)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files are the source")
    out = subprocess.run(
        [git, "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def run(*args: str | Path, **kwargs) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=600, **kwargs
    )
    assert proc.returncode == 0, f"{args}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("src")
    for name in source_files():
        if name.startswith(("tests/", ".ci/")):
            continue
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("wheels")
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", out, src)
    (built,) = out.glob("streamguard-*.whl")
    return built


def test_wheel_has_one_top_level_package_and_carries_its_data(wheel):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        top_level = zf.read(f"{dist_info}/top_level.txt").decode().split()
    tops = {n.split("/")[0] for n in names if not n.startswith(dist_info)}
    assert tops == {"streamguard"}, f"the wheel installs {sorted(tops)} at the top level"
    assert top_level == ["streamguard"]
    assert not [n for n in names if n.startswith("training/")]
    missing = [n for n in CARRIED if n not in names]
    assert not missing, f"the wheel lacks {missing}"


def test_installed_wheel_scans_a_file_outside_the_checkout(wheel, tmp_path, fixtures_dir, capsys):
    target = tmp_path / "site"
    run(
        sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", target, wheel
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    audio = shutil.copy(fixtures_dir / "speech_10s_8k.wav", elsewhere / "call.wav")
    env = {
        **os.environ,
        "PYTHONPATH": str(target),
        "PYTHONNOUSERSITE": "1",
        "HF_HUB_OFFLINE": "1",
    }

    probe = run(
        sys.executable,
        "-c",
        "import json, importlib.util, streamguard, streamguard.training.train as t;"
        "print(json.dumps({'streamguard': streamguard.__file__, 'training': t.__file__,"
        " 'top_level_training': importlib.util.find_spec('training') is not None}))",
        cwd=elsewhere,
        env=env,
    )
    where = json.loads(probe.stdout)
    assert Path(where["streamguard"]).is_relative_to(target), where
    assert Path(where["training"]).is_relative_to(target / "streamguard" / "training"), where
    assert where["top_level_training"] is False, "something installs a top-level 'training'"

    scan = run(target / "bin" / "streamguard", "scan", audio, "--json", cwd=elsewhere, env=env)
    report = json.loads(scan.stdout)
    assert report["model"] == "streamguard-accurate"  # the default tier ([encoder] installed)
    # the fixture is espeak-ng speech, a synthetic voice: the default tier flags it
    assert report["verdict"] == "fake"
    windows = report["tracks"][0]["windows"]
    assert [w["start"] for w in windows] == [float(s) for s in range(7)]
    # and the installed copy scores the file exactly as the checkout does
    from streamguard.cli import main

    assert main(["scan", str(audio), "--json"]) == 0
    here = json.loads(capsys.readouterr().out)
    assert here["verdict"] == "fake"
    assert [w["p_fake"] for w in windows] == [w["p_fake"] for w in here["tracks"][0]["windows"]]
