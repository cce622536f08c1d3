"""Leave-one-family-out on a tiny manifest: a fold per family, each trained without it (its run
records that), judged through the daemon's chain on that family + the real test clips and calls,
one table with the mean and the worst family; a finished fold is not trained again."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from streamguard.cli import main
from streamguard.errors import ConfigError
from streamguard.training.config import parse_config
from streamguard.training.lofo import run_lofo, summary_rows
from tests.unit.test_training_train import TINY

FLAC = Path(__file__).resolve().parents[1] / "fixtures" / "training" / "flac"
HEADER = "path,label,subset,speaker,attack,condition,family"
ROWS = [  # (file, label, subset, speaker, condition, family)
    ("LA_T_1000001", 0, "train", "alice", "clean", "bonafide"),
    ("LA_T_1000002", 0, "train", "bob", "phone", "bonafide"),
    ("LA_T_1000003", 0, "val", "carol", "clean", "bonafide"),
    ("LA_T_1000004", 0, "test", "dave", "phone", "bonafide"),
    ("LA_T_1000001", 0, "test", "erin", "clean", "bonafide"),
    ("LA_T_1000005", 1, "train", "alice", "clean", "formant"),
    ("LA_T_1000006", 1, "train", "bob", "phone", "neural"),
    ("LA_T_1000007", 1, "val", "carol", "clean", "formant"),
    ("LA_T_1000008", 1, "val", "dave", "phone", "neural"),
    ("LA_T_1000007", 1, "test", "erin", "clean", "formant"),
    ("LA_T_1000008", 1, "test", "erin", "phone", "neural"),
    ("LA_T_1000005", 1, "test", "frank", "phone", "neural"),
]


def _manifest(path: Path, rows) -> Path:
    lines = [HEADER] + [
        f"{FLAC / (f + '.flac')},{lab},{sub},{spk},{fam if lab else 'bonafide'},{cond},{fam}"
        for f, lab, sub, spk, cond, fam in rows
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _config(tmp_path: Path) -> dict:
    manifest = str(_manifest(tmp_path / "m.csv", ROWS))
    return {
        "model": {"architecture": "koyelog-resnet", "name": "t", "params": TINY["koyelog-resnet"]},
        "data": {"sources": [{"type": "manifest", "path": manifest}]},
        "segment": {"seconds": 0.5},
        "optim": {"lr": 3e-3, "batch_size": 4, "grad_accum": 1, "epochs": 1},
        "run": {"out_dir": str(tmp_path / "unused"), "progress": False, "seed": 1},
    }  # fmt: skip


@pytest.mark.slow
def test_a_fold_per_family_and_one_table(tmp_path):
    calls = _manifest(tmp_path / "calls.csv", [r for r in ROWS if r[2] == "test"])
    out = tmp_path / "lofo"
    lines: list[str] = []
    rows = run_lofo(parse_config(_config(tmp_path)), out=out, calls=calls, echo=lines.append)
    assert [r["family"] for r in rows] == ["formant", "neural"]
    for row in rows:
        saved = json.loads((out / row["family"] / "config.json").read_text())
        assert saved["data"]["leave_out"] == [row["family"]]
        assert saved["export"]["target_far"] == 0.01
        assert row["n_fake_windows"] > 0 and row["n_real_windows"] > 0
        assert 0.0 <= row["eer"] <= 1.0 and row["n_fake_calls"] >= 1
        assert row["calls_alerted"] is not None and row["real_calls_alerted"] is not None
    # the neural fold's held-out set is the neural test clips + every real test clip
    clips = list(csv.DictReader((out / "neural" / "eval-heldout" / "clips.csv").open()))
    assert {c["family"] for c in clips} == {"neural", "bonafide"} and len(clips) == 4
    table = (out / "lofo.md").read_text()
    assert "| mean |" in table and "| worst |" in table and "| formant |" in table
    data = json.loads((out / "lofo.json").read_text())
    assert [r["family"] for r in data["rows"]] == ["formant", "neural", "mean", "worst"]
    assert (out / "lofo.csv").read_text().startswith("family,n_fake_windows")
    # a finished fold is evaluated again, not retrained
    lines.clear()
    run_lofo(parse_config(_config(tmp_path)), out=out, families=["neural"], echo=lines.append)
    assert not any("training without it" in line for line in lines)


@pytest.mark.slow
def test_a_group_fold_judges_each_family_on_the_group_model(tmp_path):
    # "parametric" is test-only: judged with the group, never left out (nothing to leave out)
    rows = [*ROWS, ("LA_T_1000006", 1, "test", "gina", "clean", "parametric")]
    data = _config(tmp_path)
    data["data"]["sources"][0]["path"] = str(_manifest(tmp_path / "g.csv", rows))
    heldout = tmp_path / "heldout"
    heldout.mkdir()  # neural's held-out set: every neural clip, whatever its split + real test
    _manifest(heldout / "neural.csv",
              [r for r in rows if r[5] == "neural" or (r[1] == 0 and r[2] == "test")])  # fmt: skip
    out = tmp_path / "lgo"
    got = run_lofo(parse_config(data), out=out, groups=[["neural", "parametric"]],
                   heldout=heldout, echo=lambda line: None)  # fmt: skip
    assert [(r["family"], r["fold"]) for r in got] == [
        ("neural", "neural+parametric"), ("parametric", "neural+parametric")]  # fmt: skip
    saved = json.loads((out / "neural+parametric" / "config.json").read_text())
    assert saved["data"]["leave_out"] == ["neural"]
    fold = out / "neural+parametric"
    neural = list(csv.DictReader((fold / "eval-heldout-neural" / "clips.csv").open()))
    # 3 distinct neural files (train, val and test rows) + the 2 real test files
    assert sorted(c["family"] for c in neural) == ["bonafide"] * 2 + ["neural"] * 3
    para = list(csv.DictReader((fold / "eval-heldout-parametric" / "clips.csv").open()))
    assert sorted(c["family"] for c in para) == ["bonafide"] * 2 + ["parametric"]
    assert "| neural+parametric |" in (out / "lofo.md").read_text()


def test_worst_is_the_bad_end_of_each_column():
    rows = [{"family": "a", "eer": 0.1, "caught": 0.9}, {"family": "b", "eer": 0.3, "caught": 0.5}]
    mean, worst = summary_rows(rows)
    assert mean["eer"] == pytest.approx(0.2) and worst["eer"] == 0.3 and worst["caught"] == 0.5


def test_unknown_family_and_single_family_are_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match="no fake rows of vocoder"):
        run_lofo(parse_config(_config(tmp_path)), out=tmp_path / "x", families=["vocoder"])
    one = [r for r in ROWS if r[5] != "neural"]
    data = _config(tmp_path)
    data["data"]["sources"][0]["path"] = str(_manifest(tmp_path / "one.csv", one))
    with pytest.raises(ConfigError, match="at least two fake families"):
        run_lofo(parse_config(data), out=tmp_path / "y")
    toml = tmp_path / "c.toml"
    toml.write_text("[model]\narchitecture = 'koyelog-resnet'\n[[data.sources]]\n"
                    f"type = 'manifest'\npath = '{tmp_path / 'one.csv'}'\n")  # fmt: skip
    assert main(["train", "--config", str(toml), "--lofo", "--out", str(tmp_path / "z")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "at least two fake families" in err


def test_family_table_reads_an_evaluate_folder(tiny_model_dir, tmp_path):
    """A model that was not retrained per fold gets the LOFO columns from its evaluate run."""
    from streamguard.cli import main
    from streamguard.training.family_table import family_rows

    rows = [*ROWS, ("LA_T_1000006", 1, "test", "gina", "clean", "parametric")]
    manifest = _manifest(tmp_path / "m.csv", [r for r in rows if r[2] == "test"])
    out = tmp_path / "eval"
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(manifest), "--out",
                 str(out), "--no-progress", "--device", "cpu"]) == 0  # fmt: skip
    report = json.loads((out / "metrics.json").read_text())
    got = family_rows(out, threshold=0.5)
    tested = {r[5] for r in rows if r[1] == 1 and r[2] == "test"}
    assert [r["family"] for r in got] == sorted(tested)
    for row in got:  # the same figures as evaluate's own per-family group
        family = report["windows"]["groups"]["family"][row["family"]]
        assert row["eer"] == pytest.approx(family["eer"])
        assert row["real_flagged"] == pytest.approx(family["far"])
    assert family_rows(out, threshold=0.5, subset="val") == []  # every clip here is test
    assert [r["family"] for r in family_rows(out, threshold=0.5, subset="test")] == sorted(tested)
