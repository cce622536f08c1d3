"""Smoke tests of ``streamguard bench``: the real command, tiny sizes, figures checked for sense.

Speed itself is never asserted (it belongs to the machine); what is checked is that the
figures are internally consistent, so a broken measurement fails here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from streamguard.bench.stats import percentile
from streamguard.cli import main


def run_bench(capsys, *argv: str) -> dict:
    assert main(["bench", *argv, "--json", "--quiet"]) == 0
    return json.loads(capsys.readouterr().out)


def test_percentile_interpolates():
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)
    assert percentile([], 50) != percentile([], 50)  # NaN for no data


def test_model_suite_reports_each_batch_size(capsys):
    out = run_bench(
        capsys, "model", "--tiny", "--device", "cpu", "--batch-sizes", "1,2",
        "--warmup", "1", "--repeats", "3", "--budget", "0.1",
    )  # fmt: skip
    model = out["model"]
    assert "59,737 params" in model["model"]  # the tiny network, not the published one
    # the plain eager reference always includes batch 16 (the capacity ratio's denominator)
    assert [t["batch"] for t in model["timings"]] == [1, 2, 16]
    for t in model["timings"]:
        assert t["runs"] == 3
        assert 0 < t["median_ms"] <= t["p95_ms"]
        assert t["windows_per_second"] == pytest.approx(t["batch"] * 1000 / t["median_ms"])
    best = max(t["windows_per_second"] for t in model["timings"])
    assert model["realtime_tracks"] == pytest.approx(best * model["hop_seconds"])
    assert (
        model["reference_batch16_windows_per_second"] == model["timings"][-1]["windows_per_second"]
    )
    serving = model["serving"]
    assert [t["batch"] for t in serving["timings"]] == [1, 2]
    assert serving["best_windows_per_second"] == max(
        t["windows_per_second"] for t in serving["timings"]
    )
    assert out["machine"]["nproc"] >= 1 and out["machine"]["torch_threads"] >= 1
    # issue #20: eager vs ONNX fp32 vs int8, the log-mel in torch or inside the graph
    paths = {p["path"]: p for p in model["paths"]}
    assert paths["eager fp32"]["vs_eager"] == 1.0
    assert {p["front_in_graph"] for p in paths.values()} == {None, False, True}
    for p in paths.values():
        assert p["parity_max_abs_diff"] <= 0.01 and p["windows_per_second"] > 0
        assert p["median_ms"] == pytest.approx(16_000 / p["windows_per_second"])
    # auto on the CPU: the probe's choice serves, with its evidence
    probe = serving["probe"]
    assert probe["choice"] == serving["backend"]
    assert serving["backend"] in {t["name"] for t in probe["trials"]}


def test_ingest_suite_reports_cpu_per_track(capsys, fixtures_dir):
    out = run_bench(capsys, "ingest", "--file", str(fixtures_dir / "speech_10s_8k.wav"))
    results = out["ingest"]["results"]
    assert {(r["protocol"], r["frame_ms"]) for r in results} >= {("native", 100), ("twilio", 20)}
    for r in results:
        # 30 s of speech per track: 4 s windows every 1 s, every one of them emitted or skipped
        assert r["windows"] + r["windows_skipped"] == 27 * r["tracks"]
        assert r["cpu_seconds"] > 0
        assert r["core_percent_per_track"] == pytest.approx(
            100 * r["cpu_seconds"] / (r["tracks"] * r["audio_seconds_per_track"])
        )


def test_bad_batch_list_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["bench", "model", "--batch-sizes", "0,x"])
    assert exc.value.code == 2


@pytest.mark.slow
@pytest.mark.integration
def test_daemon_suite_scores_every_window_it_reports(capsys, fixtures_dir):
    out = run_bench(
        capsys, "daemon", "--tiny", "--device", "cpu", "--calls", "2", "--seconds", "6",
        "--file", str(fixtures_dir / "speech_10s_8k.wav"),
    )  # fmt: skip
    (level,) = out["daemon"]["levels"]
    client = level["client"]
    assert level["calls"] == 2 and client["calls_ended_events"] == 2 and not client["errors"]
    # 6 s calls, 4 s windows every 1 s: a few windows per call, each scored exactly once.
    assert level["windows_scored"] >= 4
    assert level["windows_scored"] + level["windows_dropped"] == level["windows_submitted"]
    assert sum(level["batch_sizes"].values()) > 0
    assert sum(int(b) * n for b, n in level["batch_sizes"].items()) == level["windows_scored"]
    assert client["score_events"] == level["windows_scored"]
    lag = client["lag_seconds"]
    assert lag["n"] == level["windows_scored"]
    assert 0 < lag["p50"] <= lag["p95"] <= lag["max"] < 10
    assert level["cpu_seconds"] > 0 and level["peak_rss_mib"] >= level["base_rss_mib"] > 0
    assert client["first_score_lag_seconds"]["n"] == 2  # one first score per call (mono)
    # first verdict: from the caller's first speech, so at least one 4 s window of call time
    verdict = client["first_verdict_seconds"]
    assert verdict["n"] == 2 and 3.0 < verdict["p50"] <= verdict["max"] < 10
    # Its own durable log, read back after the stop; the operator's log is never touched.
    assert level["calls_ended_in_log"] == 2
    assert not (Path(os.environ["STATE_DIRECTORY"]) / "events.db").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_capacity_suite_reports_the_largest_passing_level(capsys):
    out = run_bench(
        capsys, "capacity", "--tiny", "--device", "cpu", "--workloads", "continuous",
        "--levels", "2", "--seconds", "6", "--budget", "0.5",
    )  # fmt: skip
    cont = out["capacity"]["workloads"]["continuous"]
    assert 1 <= len(cont["levels"]) <= 2
    passing = [lv["calls"] for lv in cont["levels"] if lv["keeps_up"]]
    assert cont["max_calls"] == max(passing, default=0)
    for level in cont["levels"]:
        assert level["tracks"] == level["calls"]  # continuous speech: one mono track per call
        # ... and the load generator streams it so: the stereo demo call mixed to one track,
        # 100 ms frames (6 s = 60 audio frames and a few control frames per call)
        client = level["client"]
        assert client["first_score_lag_seconds"]["n"] <= level["calls"]
        assert client["frames_sent"] <= level["calls"] * 63
        assert level["windows_scored"] + level["windows_dropped"] <= level["windows_submitted"]
    first = out["capacity"]["first_score"]
    assert 0 < first["first_score_lag_seconds"] < 10
    assert first["first_score_lag_seconds"] < first["first_verdict_seconds"] < 10
    # the plain fp32 reference is measured in the same run (the capacity ratio's denominator)
    assert out["capacity"]["reference_batch16_windows_per_second"] > 0
    assert out["capacity"]["serving_windows_per_second"] > 0


def test_speech_onsets_are_per_track_as_the_daemon_names_them():
    """The first verdict counts from each track's first speech: on the demo call one side
    speaks at once, the other only after that first turn."""
    from streamguard.bench.loadgen import _track_onset, call_audio, speech_onsets
    from streamguard.commands.bench import default_call_file

    rate, stereo = call_audio(str(default_call_file()), 12.0)
    onsets = speech_onsets(stereo, rate)
    assert len(onsets) == 2 and onsets[0] < 0.5 and 3.0 < onsets[1] < 8.0
    assert _track_onset("inbound", onsets) == onsets[0]  # Twilio's names
    assert _track_onset("outbound", onsets) == onsets[1]
    assert _track_onset("1", onsets) == onsets[1]  # native/L16: the channel index
    assert _track_onset("caller", onsets) is None
    rate, mono = call_audio(str(default_call_file()), 12.0, mix=True)
    (onset,) = speech_onsets(mono, rate)
    assert _track_onset("0", [onset]) == onset == min(onsets)
    silence = np.zeros((1, rate), dtype=np.float32)
    assert speech_onsets(silence, rate) == [None]
