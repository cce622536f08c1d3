"""The voice-switch attack (issue #17): calls built real-then-synthetic, and `streamguard
evaluate`'s delay-after-switch / early-alarm report, through the daemon's chain with a tiny
model."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from streamguard.cli import main
from streamguard.training.data import Example, read_manifest
from streamguard.training.evaluate import ClipResult
from streamguard.training.switch import switch_report, switch_row

CORPUS = Path(__file__).resolve().parents[2] / "training" / "corpus"
sys.path.insert(0, str(CORPUS))

import build_switch  # noqa: E402

SPEECH = Path(__file__).resolve().parents[1] / "fixtures" / "speech_10s_8k.wav"


def test_evaluate_reports_delay_after_the_switch_and_early_alarms(tiny_model_dir, tmp_path):
    """Threshold 0, no smoothing, raise after 3: the 10 s call alerts at 6 s (window 2-6 s).
    Switch at 2 s: caught 4 s after it. Switch at 7 s: the alert came before it (early alarm;
    the raised alert never clears, so nothing is raised after the switch)."""
    config = tmp_path / "daemon.toml"
    config.write_text("[smoothing]\nema_alpha = 1.0\nraise_after = 3\n")
    manifest = tmp_path / "switch.csv"
    manifest.write_text(
        "path,label,family,condition,switch_at\n"
        f"{SPEECH},fake,neural,clean,2.0\n{SPEECH},fake,neural,phone,7\n{SPEECH},real,,clean,\n"
    )
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(tiny_model_dir), "--data", str(manifest),
               "--config", str(config), "--threshold", "0", "--out", str(out),
               "--no-progress", "--device", "cpu"])  # fmt: skip
    assert rc == 0
    report = json.loads((out / "metrics.json").read_text())["switch"]
    calls = report["calls"]
    assert [c["switch_at"] for c in calls] == [2.0, 7.0]  # the real call is no switch call
    first, second = calls
    assert first["delay_s"] == pytest.approx(4.0) and first["early_alarm_s"] is None
    assert first["in_time"]
    assert second["early_alarm_s"] == pytest.approx(6.0) and second["delay_s"] is None
    assert not second["in_time"]
    pooled = report["pooled"]
    assert pooled["n"] == 2 and pooled["early_alarm"] == 0.5 and pooled["in_time"] == 0.5
    assert pooled["delay_median_s"] == pytest.approx(4.0)
    assert set(report["groups"]["condition"]) == {"clean", "phone"}
    text = (out / "metrics.txt").read_text()
    assert "VOICE SWITCH" in text and "in time (<= 6 s)" in text


def test_a_cleared_alert_before_the_switch_still_counts_as_early():
    example = Example(path=SPEECH, label=1, source="t", switch_at=10.0)
    result = ClipResult(example, np.zeros(0), np.zeros(0), np.zeros(0), duration=20.0,
                        alerts=[("raised", 3.0), ("cleared", 5.0), ("raised", 12.5)])  # fmt: skip
    row = switch_row(result)
    assert row["early_alarm_s"] == 3.0 and row["delay_s"] == pytest.approx(2.5)
    assert not row["in_time"]  # caught soon, but a real voice was flagged first
    plain = ClipResult(Example(path=SPEECH, label=1, source="t"), *[np.zeros(0)] * 3)
    assert switch_report([plain]) is None  # no switch_at column: no section


def test_switch_at_must_be_call_seconds(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,label,switch_at\n{SPEECH},fake,-1\n{SPEECH},fake,1.5\n")
    got = read_manifest(manifest)
    assert [e.switch_at for e in got.examples] == [1.5]
    assert len(got.problems) == 1 and "switch_at" in got.problems[0].reason


def _tone(path: Path, hz: float, seconds: float) -> None:
    t = np.arange(int(seconds * build_switch.SR)) / build_switch.SR
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), build_switch.SR)


def test_switch_call_is_the_real_voice_then_the_synthetic_one(tmp_path):
    """Real speaker (300 Hz tones) then synthetic voice (3 kHz tones): ``switch_at`` is where
    the synthetic audio starts; the manifest row is the fake voice's with the switch time."""
    rows = []
    for i in range(3):  # 27 s of one real speaker, 18 s of one synthetic voice
        _tone(tmp_path / f"real{i}.wav", 300, 9.0)
        rows.append({"path": f"real{i}.wav", "label": "real", "speaker": "alice"})
    for i in range(2):
        _tone(tmp_path / f"fake{i}.wav", 3000, 9.0)
        rows.append({"path": f"fake{i}.wav", "label": "fake", "speaker": "v1", "family": "neural"})
    for r in rows:
        r.update(subset="test", condition="clean", processing="none", duration="9.0", lang="en",
                 abs=str(tmp_path / r["path"]), family=r.get("family", "bonafide"))  # fmt: skip
    out = tmp_path / "out"
    calls = build_switch.build_switch_calls(rows, out, "test", seed=0, per_family=1, tmp=tmp_path)
    assert len(calls) == 1
    call = calls[0]
    assert call["family"] == "neural" and call["label"] == "fake" and call["condition"] == "clean"
    assert call["derived_from"] == "switch:alice"
    x, rate = sf.read(out / call["path"], dtype="float32")
    at = float(call["switch_at"])
    assert build_switch.REAL_SECONDS[0] <= at <= build_switch.REAL_SECONDS[1] + 9.0 + 1.5

    def crossings_per_s(seg: np.ndarray) -> float:
        return np.count_nonzero(np.diff(np.signbit(seg))) / (len(seg) / rate)

    assert crossings_per_s(x[: rate // 2]) == pytest.approx(600, rel=0.05)  # real opening
    after = x[round(at * rate) : round(at * rate) + rate // 2]
    assert crossings_per_s(after) == pytest.approx(6000, rel=0.05)  # synthetic from switch_at
    # just before switch_at (written to 0.01 s) is a pause (noise floor), not either voice
    end = round((at - 0.005) * rate)
    assert np.abs(x[end - rate // 10 : end]).max() < 0.05  # -48 dBFS floor at most
    manifest = tmp_path / "switch.csv"
    build_switch.v2.write_manifest(manifest, calls, "out/", build_switch.COLUMNS)
    row = next(csv.DictReader(manifest.open()))
    assert row["switch_at"] == call["switch_at"] and row["path"] == "out/" + call["path"]


def test_policy_calibration_refuses_alerts_before_the_switch(tmp_path):
    """A switch call with a 2-window burst in its real opening: a policy that alerts there flags
    a real voice, so calibration counts it against the quiet target; switch_at survives the
    evaluate folder that `policy --report` replays."""
    from streamguard.training.evaluate import chain_report, write_chain_report
    from streamguard.training.policy import calibrate, results_from_report

    scores = [0.1, 0.1, 0.1, 0.9, 0.9, 0.1, 0.1, 0.1, 0.1, 0.1] + [0.9] * 10  # switch at 14 s
    n = len(scores)
    calls = [
        ClipResult(Example(path=tmp_path / f"s{i}.wav", label=1, source="t", switch_at=14.0),
                   np.arange(n, dtype=float), np.arange(n, dtype=float) + 4,
                   np.asarray(scores, np.float32), duration=n + 3, speech_seconds=n + 3)
        for i in range(2)
    ]  # fmt: skip
    write_chain_report(tmp_path / "eval", chain_report(calls, 0.5), calls)
    again = results_from_report(tmp_path / "eval")
    assert [r.example.switch_at for r in again] == [14.0, 14.0]
    best, rows = calibrate(again, threshold=0.5, target=0.0)
    assert any(r["switch_early"] == 1.0 for r in rows)  # raise_after=1 pages on the burst
    assert best["switch_early"] == 0.0 and best["fake_alerted"] == 1.0
    assert best["switch_in_time"] == 1.0  # the first window past 14 s is already synthetic
