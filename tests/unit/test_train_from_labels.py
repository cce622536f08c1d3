"""``streamguard train --from-labels`` on a tiny recipe: labelled evidence clips from a real
evidence store and event log, the base corpus replayed, base held-out figures before and after,
a new model directory with its card and the calibration it was chosen with."""

from __future__ import annotations

import json

import pytest

from streamguard.alerts.events import Label
from streamguard.alerts.store import EventStore
from streamguard.audio.file import read_audio
from streamguard.cli import main
from streamguard.evidence import EvidenceStore, TrackRecorder
from tests.unit.test_training_cli import HERE, TINY_TOML

PARAMS = {"widths": [8, 16, 32], "gru_hidden": 16, "attention_heads": 2,
          "classifier_hidden": [32, 16]}  # fmt: skip
#: (call, fixture clip, label): what the analysts said about four calls with evidence
CALLS = [
    ("CAf1", "LA_T_1000005.flac", "fake"),
    ("CAf2", "LA_T_1000006.flac", "fake"),
    ("CAr1", "LA_T_1000001.flac", "real"),
    ("CAr2", "LA_T_1000004.flac", "real"),
    ("CAu", "LA_T_1000002.flac", "unsure"),  # left out
]


@pytest.fixture
def daemon_config(tmp_path):
    """A daemon's state after some calls: evidence kept whole, labels in the log, its model."""
    import torch

    from streamguard.model import ModelInfo, build_module, save_model_dir

    store = EvidenceStore(tmp_path / "evidence")
    drafts = []
    for call, clip, label in CALLS:
        rate, audio = read_audio(HERE / "flac" / clip)
        rec = TrackRecorder(rate, keep="all", lookback_seconds=2.0)
        store.apply(rec.push(audio[0]) + rec.finish(), call_id=call, track="inbound",
                    source="native", rate=rate)  # fmt: skip
        drafts.append(Label(call_id=call, track=None, source=None, label=label, who="local"))
    log = EventStore(tmp_path / "events.db")
    log.append([d.unnumbered(ts="2026-01-01T00:00:00.000Z", model="m") for d in drafts])
    log.close()
    torch.manual_seed(0)
    model = tmp_path / "serving"
    module = build_module("koyelog-resnet", PARAMS)
    save_model_dir(model, module, ModelInfo(name="serving", architecture="koyelog-resnet"),
                   dict(module.streamguard_params))  # fmt: skip
    path = tmp_path / "streamguard.toml"
    path.write_text(
        f'[model]\nspec = "{model}"\n[events]\npath = "{tmp_path / "events.db"}"\n'
        f'[evidence]\nkeep = "all"\npath = "{tmp_path / "evidence"}"\n'
    )
    return path


@pytest.mark.slow
def test_fine_tune_on_labelled_evidence_reports_base_figures_before_and_after(
    tmp_path, daemon_config, capsys
):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_TOML)
    out = tmp_path / "run"
    rc = main(["train", "--from-labels", "--config", str(recipe), "--daemon-config",
               str(daemon_config), "--out", str(out), "--epochs", "1", "--no-progress",
               "--batch-size", "3", "--max-false-alarms", "0.5"])  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "base held-out, serving model:" in text and "base held-out, fine-tuned model:" in text
    manifest = (out / "labelled-evidence.csv").read_text().splitlines()
    assert len(manifest) == 1 + 4 and not any("CAu" in line for line in manifest)
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["init_from"].endswith("serving")
    assert [s.get("name") for s in saved["data"]["sources"]][-1] == "labelled-evidence"
    model = out / "model"
    assert (model / "MODEL_CARD.md").is_file() and (model / "model.safetensors").is_file()
    outcome = json.loads((model / "from-labels.json").read_text())
    before, after = outcome["base_heldout_before"], outcome["base_heldout_after"]
    assert before["n"] == after["n"] == 2  # the recipe's val rows (it has no test rows)
    assert outcome["labelled_calls"] == 4
    assert "[smoothing]" in (model / "calibration.toml").read_text()


def test_without_both_kinds_of_labels_it_refuses_in_one_line(tmp_path, daemon_config, capsys):
    log = EventStore(tmp_path / "events.db")
    log.db.execute("DELETE FROM events WHERE json LIKE '%\"real\"%'")
    log.db.commit()
    log.close()
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(TINY_TOML)
    rc = main(["train", "--from-labels", "--config", str(recipe), "--daemon-config",
               str(daemon_config), "--out", str(tmp_path / "run")])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "needs clips of calls labelled fake and of calls labelled real" in err
