"""``streamguard calibrate`` end to end: labelled calls from a real event log and labelled
recordings scored by a real (tiny) model through the daemon's chain; the snippet it writes is
a config the daemon loads."""

from __future__ import annotations

import json
import shutil

import pytest

from streamguard.alerts.events import Label, Score
from streamguard.alerts.store import EventStore
from streamguard.cli import main
from streamguard.config import load_config


def scores(call_id, values):
    return [
        Score(call_id=call_id, track="inbound", source="twilio", start=float(i),
              end=i + 4.0, p_fake=p, smoothed=p)
        for i, p in enumerate(values)
    ]  # fmt: skip


def write_log(path, calls):
    """``calls``: {call_id: (label, [p_fake per window])}, as a daemon plus analysts leave them."""
    drafts = []
    for call_id, (value, values) in calls.items():
        drafts += scores(call_id, values)
        drafts.append(Label(call_id=call_id, track=None, source=None, label=value, who="local"))
    store = EventStore(path)
    store.append([d.unnumbered(ts="2026-01-01T00:00:00.000Z", model="m") for d in drafts])
    store.close()


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "streamguard.toml"
    path.write_text(
        f'[events]\npath = "{tmp_path / "events.db"}"\n'
        "[smoothing]\non_threshold = 0.6\nraise_after = 2\n"
    )
    return path


def test_calibrate_silences_the_labelled_false_alarms_and_says_what_it_costs(
    tmp_path, config, capsys
):
    # Two real calls the current policy (0.6, 2 windows) alerts on: an IVR at 0.7-0.8.
    calls = {
        "ivr1": ("real", [0.7, 0.75, 0.8, 0.7]),
        "ivr2": ("real", [0.72, 0.78, 0.7]),
        "quiet": ("real", [0.1, 0.2, 0.1]),
        "fake1": ("fake", [0.9, 0.95, 0.97, 0.9]),
        "fake2": ("fake", [0.65, 0.7, 0.68]),  # only caught at a bar the IVR also passes
        "unsure": ("unsure", [0.99, 0.99]),
    }
    write_log(tmp_path / "events.db", calls)
    snippet = tmp_path / "smoothing.toml"
    assert main(["calibrate", "--config", str(config), "--max-false-alarms", "0",
                 "--write", str(snippet)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "now: on_threshold=0.6 raise_after=2" in out
    assert "false alarms 2/3 real calls" in out
    assert "false alarms 0/3 real calls" in out  # chosen
    assert "cost: 1 fake calls no longer caught; 2 false alarms silenced" in out
    assert "no promise" in out
    settings = load_config(snippet).smoothing
    assert settings.on_threshold > 0.8 and settings.on_threshold <= 0.9
    assert "# NOT A PROMISE" in snippet.read_text()

    assert main(["calibrate", "--config", str(config), "--max-false-alarms", "1%",
                 "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["needed_real_calls"] == 299 and result["promise"] is None
    assert "needs at least 299 real calls" in result["warning"]


def test_no_labelled_real_calls_is_one_line(tmp_path, config, capsys):
    write_log(tmp_path / "events.db", {"f": ("fake", [0.9, 0.9])})
    assert main(["calibrate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no labelled real calls" in err


def test_recordings_are_scored_through_the_chain_stereo_as_two_tracks(
    tmp_path, config, capsys, tiny_model_dir, fixtures_dir
):
    folder = tmp_path / "recordings"
    (folder / "real").mkdir(parents=True)
    (folder / "fake").mkdir()
    shutil.copy(fixtures_dir / "speech_10s_8k.wav", folder / "real" / "a.wav")
    shutil.copy(fixtures_dir / "speech_stereo_8k.wav", folder / "real" / "stereo.wav")
    shutil.copy(fixtures_dir / "speech_10s_8k.flac", folder / "fake" / "b.flac")
    assert main(["calibrate", "--config", str(config), "--no-log", "--recordings",
                 str(folder), "--model", str(tiny_model_dir), "--max-false-alarms", "0",
                 "--json"]) == 0  # fmt: skip
    result = json.loads(capsys.readouterr().out)
    assert result["chosen"]["real_calls"] == 2 and result["chosen"]["fake_calls"] == 1
    assert result["chosen"]["false_alarms"] == 0

    csv = tmp_path / "labels.csv"
    csv.write_text("path,label\nrecordings/real/a.wav,real\nrecordings/fake/b.flac,maybe\n")
    assert main(["calibrate", "--config", str(config), "--no-log", "--recordings", str(csv),
                 "--model", str(tiny_model_dir)]) == 2  # fmt: skip
    assert "labels.csv:3: expected path,fake|real|unsure" in capsys.readouterr().err
