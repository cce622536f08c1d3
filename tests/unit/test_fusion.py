"""training/fusion.py: two leave-one-group-out runs' window reports -> per-family EER of each
and of their logit fusion fitted on the validation windows only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamguard.training.fusion import fuse, main


def _write(path: Path, labels, scores) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = ["path,label,start,end,score"]
    rows += [f"/clips/c{i}.wav,{y},0.000,4.000,{s:.6f}" for i, (y, s) in
             enumerate(zip(labels, scores, strict=True))]  # fmt: skip
    path.write_text("\n".join(rows) + "\n")


def _runs(tmp_path: Path):
    """Run A sees the held-out fakes, run B does not; the validation windows say so too (A
    separates them, B is noise), so the fusion must lean on A."""
    rng = np.random.default_rng(0)
    n = 400
    y = np.r_[np.zeros(n // 2, dtype=int), np.ones(n // 2, dtype=int)]
    good = 1 / (1 + np.exp(-(3.0 * (y - 0.5) + rng.normal(0, 1, n))))
    noise = rng.uniform(0.01, 0.99, n)
    for run, val, held in (("a", good, good), ("b", noise, noise[::-1])):
        _write(tmp_path / run / "g" / "eval" / "val" / "windows.csv", y, val)
        _write(tmp_path / run / "g" / "eval-heldout-fam" / "windows.csv", y, held)
    return tmp_path / "a", tmp_path / "b"


def test_the_fusion_is_fitted_on_validation_and_judged_on_held_out_windows(tmp_path):
    a, b = _runs(tmp_path)
    (row,) = fuse(a, b)
    assert row["family"] == "fam" and row["windows"] == 400
    assert row["eer_a"] < 0.25 and abs(row["eer_b"] - 0.5) < 0.1
    assert row["weights"][0] > 5 * abs(row["weights"][1])  # it learnt which run to trust
    assert row["eer_fused"] <= row["eer_a"] + 0.02


def test_the_cli_prints_a_table_and_refuses_unrelated_runs(tmp_path, capsys):
    a, b = _runs(tmp_path)
    assert main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "| fam | 400 |" in out and "| mean |" in out
    (tmp_path / "c").mkdir()
    assert main([str(a), str(tmp_path / "c")]) == 2
    assert "share no fold" in capsys.readouterr().err
    (a / "g" / "eval" / "val" / "windows.csv").write_text("nothing,here\n1,2\n")
    assert main([str(a), str(b)]) == 2
    assert "not a windows.csv" in capsys.readouterr().err
