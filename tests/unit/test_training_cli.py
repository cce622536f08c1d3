"""`streamguard train` and `streamguard evaluate` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streamguard.cli import main

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "training"

TINY_TOML = f"""
[model]
architecture = "koyelog-resnet"
name = "cli-tiny"

[model.params]
widths = [8, 16, 32]
gru_hidden = 16
attention_heads = 2
classifier_hidden = [32, 16]

[[data.sources]]
type = "manifest"
path = "{HERE / "manifest.csv"}"

[segment]
seconds = 0.5

[optim]
lr = 3e-3
batch_size = 4
grad_accum = 1
epochs = 5

[run]
out_dir = "ignored-because-of---out"
"""


@pytest.mark.slow
def test_train_then_evaluate_from_the_cli(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "run"
    rc = main(
        ["train", "--config", str(config), "--out", str(out), "--epochs", "1", "--no-progress",
         "--set", "export.target_far=0.5"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "done (epochs): best epoch 1" in text and "rows skipped" in text
    saved = json.loads((out / "config.json").read_text())
    assert saved["optim"]["epochs"] == 1 and saved["export"]["target_far"] == 0.5
    model = out / "model"
    assert json.loads((model / "config.json").read_text())["provenance"]["calibration"][
        "method"
    ].startswith("far<=")

    report_dir = tmp_path / "eval"
    rc = main(
        ["evaluate", "--model", str(model), "--data", str(HERE / "trial_metadata_LA.txt"),
         "--out", str(report_dir), "--device", "cpu", "--no-progress", "--threshold", "0.5"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "pooled" in text and "condition=alaw" in text and "attack=A07" in text
    assert "trial_metadata_LA.txt:6" in text  # the bad row is reported
    report = json.loads((report_dir / "metrics.json").read_text())
    assert report["threshold"] == 0.5 and report["clips"]["pooled"]["n"] == 5
    assert report["windows"]["pooled"]["n"] >= 5  # every window the daemon would score
    assert {"roc_det.png", "scores.png", "clips.csv", "windows.csv", "metrics.txt"} <= {
        p.name for p in report_dir.iterdir()
    }


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["train", "--config", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamguard: error: training config not found") and err.count("\n") == 1

    config = tmp_path / "bad.toml"
    config.write_text(TINY_TOML.replace("lr = 3e-3", "learning_rate = 3e-3"))
    assert main(["train", "--config", str(config)]) == 2
    assert "optim.learning_rate" in capsys.readouterr().err

    assert main(["evaluate", "--data", str(tmp_path / "none.csv"), "--model", "x"]) == 2
    assert "data path not found" in capsys.readouterr().err

    assert main(["evaluate", "--data", str(HERE / "meta.csv"), "--threshold", "2"]) == 2
    assert "--threshold" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_uses_the_runs_own_config_and_a_mismatch_is_one_line(tmp_path, capsys):
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_TOML)
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--epochs", "1",
                 "--no-progress", "--set", "export.enabled=false"]) == 0  # fmt: skip
    capsys.readouterr()
    # The recipe changes afterwards (other data, another network): the resumed run must not
    # read it. docs/training.md's example passes --config; a different model is refused in
    # one line instead of a size-mismatch traceback.
    config.write_text(TINY_TOML.replace("widths = [8, 16, 32]", "widths = [8, 16, 64]"))
    assert main(["train", "--config", str(config), "--out", str(out), "--resume",
                 "--epochs", "2", "--no-progress"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other model params (widths" in err, err
    assert main(["train", "--out", str(out), "--resume", "--lr", "1", "--no-progress"]) == 2
    assert "cannot change optim.lr" in capsys.readouterr().err
    config.write_text(TINY_TOML.replace(str(HERE / "manifest.csv"), str(tmp_path / "gone.csv")))
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "resuming after epoch 1" in text and "best epoch" in text
    rows = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]
    # A checkpoint that does not fit the run's (hand-edited) config: one line too.
    saved = json.loads((out / "config.json").read_text())
    saved["model"]["params"]["widths"] = [8, 16, 64]
    (out / "config.json").write_text(json.dumps(saved))
    assert main(["train", "--out", str(out), "--resume", "--epochs", "3", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not fit the configured model" in err, err
