"""`streamguard evaluate`'s scoring path: the daemon's own chain, batching and alert policy."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from streamguard.audio.track import TrackSettings
from streamguard.cli import main
from streamguard.commands.scan import scan_file
from streamguard.policy import AlertPolicy, replay
from streamguard.policy.smoothing import SmoothingSettings
from streamguard.training.data import Example, read_manifest
from streamguard.training.evaluate import (
    chain_report,
    evaluate_detector,
    score_through_chain,
)

FLAC = Path(__file__).resolve().parents[1] / "fixtures" / "training" / "flac"


def example(path: Path, label: int, **kw) -> Example:
    return Example(path=path, label=label, source="t", **kw)


def test_windows_and_scores_are_the_scanners(tiny_detector, fixtures_dir):
    """evaluate and scan share one chain: same windows, same P(fake), for a whole 10 s file."""
    path = fixtures_dir / "speech_10s_8k.wav"
    settings = TrackSettings()
    report, _ = scan_file(str(path), tiny_detector, settings, threshold=0.5)
    scanned = report.tracks[0].windows
    results, problems = score_through_chain(tiny_detector, [example(path, 0)], track=settings)
    assert not problems and len(results) == 1
    got = results[0]
    assert [(w.start, w.end) for w in scanned] == list(zip(got.starts, got.ends, strict=True))
    assert len(scanned) == 7  # 0-4 ... 6-10 s: the whole file, not one 4 s crop
    np.testing.assert_allclose([w.p_fake for w in scanned], got.scores, atol=1e-5)
    assert got.speech_seconds == pytest.approx(report.tracks[0].speech_seconds)


def test_short_clip_padded_and_silence_unscored(tiny_detector, fixtures_dir):
    results, _ = score_through_chain(
        tiny_detector,
        [example(FLAC / "LA_T_1000004.flac", 0), example(fixtures_dir / "silence_3s.wav", 0)],
    )
    short, silent = results
    assert short.scores.size == 1 and short.starts[0] == 0.0 and short.ends[0] == 1.5
    assert silent.scores.size == 0 and silent.windows_skipped == 1
    report = chain_report(results, 0.5)
    assert report["no_windows"] == 1 and report["clips"]["pooled"]["n"] == 1
    assert silent.verdict == "inconclusive"


def test_batches_span_clips_without_changing_scores(tiny_detector, fixtures_dir):
    files = [fixtures_dir / "speech_10s_8k.wav", *sorted(FLAC.glob("LA_T_*.flac"))]
    rows = [example(f, i % 2) for i, f in enumerate(files)]
    one, _ = score_through_chain(tiny_detector, rows, batch_size=1)
    many, _ = score_through_chain(tiny_detector, rows, batch_size=64)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-5)


def test_call_level_policy_and_one_story(tiny_detector, fixtures_dir):
    """Calls: alerts come from the real Smoother; the verdict is fake exactly when it alerted."""
    rows = [
        example(fixtures_dir / "speech_10s_8k.wav", 1),
        example(fixtures_dir / "speech_10s_8k.wav", 0),
    ]
    results, _ = score_through_chain(tiny_detector, rows)
    policy = SmoothingSettings(mode="ema", ema_alpha=1.0, raise_after=3)
    everything = chain_report(results, 0.0, policy)  # every window >= on
    fake, real = results
    assert fake.first_alert == pytest.approx(6.0)  # third window [2, 6] completes the run
    assert fake.verdict == real.verdict == "fake"
    calls = everything["calls"]["pooled"]
    assert calls["real_alerted"] == 1.0 and calls["fake_alerted"] == 1.0
    assert calls["delay_median_s"] == pytest.approx(6.0)
    nothing = chain_report(results, 1.0, policy)
    assert nothing["calls"]["pooled"]["real_alerted"] == 0.0
    assert {r.verdict for r in results} == {"real"}
    for r in results:  # scan replays the same policy and must agree
        _, verdict = replay(
            list(r.scores), AlertPolicy(1.0, policy), speech_seconds=r.speech_seconds
        )
        assert r.verdict == verdict


def test_family_groups_follow_the_asvspoof_convention(tiny_detector, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    rows = ["path,label,subset,speaker,attack,family,condition"]
    for i in range(1, 9):
        fam = "bonafide" if i <= 4 else ("neural" if i <= 6 else "vocoder")
        rows.append(
            f"{FLAC}/LA_T_100000{i}.flac,{'real' if i <= 4 else 'fake'},test,s{i},"
            f"{'real-x' if i <= 4 else 'fake-' + fam},{fam},{'phone' if i % 2 else 'clean'}"
        )
    manifest.write_text("\n".join(rows) + "\n")
    data = read_manifest(manifest)
    assert {e.family for e in data.examples} == {"bonafide", "neural", "vocoder"}
    report, _ = evaluate_detector(
        tiny_detector, data.examples, threshold=0.5, out_dir=tmp_path / "o"
    )
    fam = report["windows"]["groups"]["family"]
    assert set(fam) == {"neural", "vocoder"}  # bonafide is the shared real side, not a family
    assert fam["neural"]["n_real"] == 4 and fam["neural"]["n_fake"] == 2
    assert set(report["calls"]["groups"]["condition"]) == {"clean", "phone"}
    written = {p.name for p in (tmp_path / "o").iterdir()}
    assert {"metrics.json", "metrics.txt", "clips.csv", "windows.csv", "roc_det.png",
            "roc_det_clips.png", "scores.png"} <= written  # fmt: skip
    text = (tmp_path / "o" / "metrics.txt").read_text()
    assert "WINDOWS" in text and "CLIPS" in text and "CALLS" in text and "family=neural" in text
    # The written report reads back into the same results (the policy can be recalibrated
    # from it without scoring again).
    from streamguard.training.evaluate import chain_report as again
    from streamguard.training.policy import results_from_report

    back = results_from_report(tmp_path / "o")
    assert [r.example.family for r in back] == [e.family for e in data.examples]
    assert again(back, 0.5)["windows"]["pooled"]["eer"] == pytest.approx(
        report["windows"]["pooled"]["eer"], abs=1e-5
    )
    # ... and the policy search reads the report's own model and threshold, not the bundled
    # model's (which it used to load and judge these scores at)
    from streamguard.training.policy import main as policy_main

    capsys.readouterr()
    assert policy_main(["--report", str(tmp_path / "o")]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith(f"model {tiny_detector.info.name}, threshold 0.500,"), first
    (tmp_path / "o" / "metrics.json").write_text("{}")
    assert policy_main(["--report", str(tmp_path / "o")]) == 2
    assert "no readable metrics.json" in capsys.readouterr().err


def test_evaluate_cli_uses_the_daemon_config(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "daemon.toml"
    config.write_text("[track]\nhop_seconds = 2.0\n\n[smoothing]\nraise_after = 4\n")
    manifest = tmp_path / "m.csv"
    speech = Path(__file__).resolve().parents[1] / "fixtures" / "speech_10s_8k.wav"
    manifest.write_text(f"path,label\n{speech},fake\n{FLAC}/LA_T_1000001.flac,real\n")
    out = tmp_path / "eval"
    rc = main(
        ["evaluate", "--model", str(tiny_model_dir), "--data", str(manifest), "--config",
         str(config), "--out", str(out), "--no-progress", "--device", "cpu"]
    )  # fmt: skip
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads((out / "metrics.json").read_text())
    assert report["policy"]["raise_after"] == 4
    windows = [line.split(",") for line in (out / "windows.csv").read_text().splitlines()[1:]]
    starts = sorted(float(w[2]) for w in windows if w[0].endswith("speech_10s_8k.wav"))
    assert starts == [0.0, 2.0, 4.0, 6.0]  # hop 2 s from --config
    # `--out`'s help names what it writes: every file written, and every data file it names
    with pytest.raises(SystemExit):
        main(["evaluate", "--help"])
    usage = " ".join(capsys.readouterr().out.split())
    promised = set(re.findall(r"[\w]+\.(?:json|txt|csv|png)", usage.split("--out DIR", 2)[2]))
    written = {p.name for p in out.iterdir()}
    assert written <= promised, written - promised
    assert {n for n in promised if not n.endswith(".png")} <= written
    assert main(["evaluate", "--model", str(tiny_model_dir), "--data", str(manifest),
                 "--hop", "0"]) == 2  # fmt: skip
    assert "--hop" in capsys.readouterr().err


def test_policy_calibration_keeps_real_calls_quiet():
    """A real call with a 2-window burst must not alert under the chosen policy; a synthetic
    call that stays high must, as early as the quiet constraint allows."""
    from streamguard.training.evaluate import ClipResult
    from streamguard.training.policy import calibrate

    def call(label, scores):
        n = len(scores)
        return ClipResult(
            example(Path(f"/x/{label}-{n}.wav"), label),
            np.arange(n, dtype=float),
            np.arange(n, dtype=float) + 4,
            np.asarray(scores, np.float32),
            duration=n + 3,
            speech_seconds=n + 3,
        )

    real = [call(0, [0.1] * 10 + [0.9, 0.9] + [0.1] * 10) for _ in range(3)]
    fake = [call(1, [0.2, 0.9, 0.95, 0.9, 0.9, 0.92, 0.9, 0.9]) for _ in range(3)]
    best, rows = calibrate(real + fake, threshold=0.5, target=0.0)
    assert best["real_alerted"] == 0.0 and best["fake_alerted"] == 1.0
    assert best["settings"]["raise_after"] >= 2 or best["settings"]["mode"] != "ema"
    assert any(r["real_alerted"] == 1.0 for r in rows)  # e.g. raise_after=1 pages on the burst
