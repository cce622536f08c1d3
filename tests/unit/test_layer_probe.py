"""The per-layer linear probe (training/layer_probe.py) on a tiny encoder the test writes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from streamguard.training.layer_probe import main, pooled_stats, probes

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "training"
FLAC = HERE / "flac"


def test_pooled_stats_are_mean_then_std_over_time_per_state():
    rng = np.random.default_rng(0)
    states = rng.standard_normal((3, 4, 10, 6)).astype(np.float16)  # [N, L + 1, T', d]
    got = pooled_stats(states)
    assert got.shape == (3, 4, 12) and got.dtype == np.float32
    x = states.astype(np.float32)
    np.testing.assert_allclose(got[1, 2, :6], x[1, 2].mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(got[1, 2, 6:], x[1, 2].std(axis=0), rtol=1e-6)


def test_probes_name_each_state_and_only_states_that_exist():
    named = probes(3)  # a 2-block encoder: conv + 2 blocks
    assert named["L0"] == [0] and named["L2"] == [2] and named["all"] == [0, 1, 2]
    assert "L3" not in named and "L4-6" not in named


def _manifest(rows: list[tuple[str, int, str, str]], path: Path) -> Path:
    lines = ["path,label,subset,speaker,condition,family"]
    for name, label, subset, family in rows:
        condition = "phone" if name.endswith(("2.flac", "6.flac", "7.flac")) else "clean"
        lines.append(f"{FLAC / name},{label},{subset},s{name[-6:-5]},{condition},{family}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.slow
def test_a_probe_run_judges_each_group_on_windows_it_never_trained_on(tmp_path):
    from tests.conftest import write_tiny_whisper

    paths, digests, _ = write_tiny_whisper(tmp_path / "ct2")
    real = [("LA_T_1000001.flac", 0, "train", ""), ("LA_T_1000002.flac", 0, "train", ""),
            ("LA_T_1000004.flac", 0, "train", ""), ("LA_T_1000003.flac", 0, "val", "")]  # fmt: skip
    fakes = [("LA_T_1000005.flac", 1, "train", "neural"),
             ("LA_T_1000006.flac", 1, "train", "voc"),
             ("LA_T_1000008.flac", 1, "train", "voc"),
             ("LA_T_1000007.flac", 1, "val", "neural")]  # fmt: skip
    manifest = _manifest(real + fakes, tmp_path / "train.csv")
    heldout = tmp_path / "heldout"
    heldout.mkdir()
    test_real = [(n, 0, "test", "") for n, *_ in real[:2]]
    for family in ("neural", "voc"):
        mine = [(n, 1, "test", f) for n, _, _, f in fakes if f == family]
        _manifest(test_real + mine, heldout / f"{family}.csv")
    config = tmp_path / "probe.toml"
    config.write_text(
        "[model]\narchitecture = 'whisper-asp'\nname = 'tiny'\n"
        f"params = {{ weights = 'none', weights_files = {json.dumps([str(p) for p in paths])}, "
        f"weights_sha256 = {json.dumps(digests)}, pretrained = true }}\n"
        f"[[data.sources]]\ntype = 'manifest'\npath = '{manifest}'\n"
        "[run]\nprogress = false\n"
    )
    out = tmp_path / "out"
    features = str(tmp_path / "features")
    code = main(["--config", str(config), "--features", features, "--heldout", str(heldout),
                 "--groups", "neural,voc", "--out", str(out)])  # fmt: skip
    assert code == 0
    rows = json.loads((out / "probe.json").read_text())["rows"]
    assert {r["probe"] for r in rows} == {"L0", "L1", "L2", "all"}
    assert {(r["fold"], r["family"]) for r in rows} == {("neural", "neural"), ("voc", "voc")}
    assert all(0.0 <= r["eer"] <= 1.0 and 0.0 <= r["real_flagged"] <= 1.0 for r in rows)
    assert all(r["eer_phone"] is not None for r in rows)  # real and fake phone windows both
    held = np.load(out / "heldout-stats.npz")
    train = np.load(out / "train-stats.npz")
    assert held["x"].shape[1:] == train["x"].shape[1:] == (3, 64)  # conv + 2 blocks, 2 x d=32
    # every held-out window kept its clip's label and family: fakes only of their own family
    assert set(held["family"][held["label"] == 1]) == {"neural", "voc"}
    assert set(held["family"][held["label"] == 0]) == {""}
    # one row per cached crop of each clip (the fixture clips are too short for a second crop)
    assert len(train["x"]) == 8 and set(train["subset"]) == {"train", "val"}
    assert "| L0 |" in (out / "probe.md").read_text()
