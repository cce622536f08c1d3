"""``streamguard scan`` end to end on real fixtures with the tiny model directory."""

from __future__ import annotations

import json

import matplotlib.image
import pytest

from streamguard.cli import main
from streamguard.policy import AlertPolicy, replay

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BAD = ["empty.wav", "truncated.wav", "not_audio.wav", "one_sample.wav"]


@pytest.fixture()
def scan(tiny_model_dir, capsys):
    def run(*args: str) -> tuple[int, str, str]:
        rc = main(["scan", "--model", str(tiny_model_dir), "--device", "cpu", *args])
        captured = capsys.readouterr()
        return rc, captured.out, captured.err

    return run


def _json_lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def test_ten_second_file_windows_at_0_to_6_json(scan, fixtures_dir):
    rc, out, err = scan(str(fixtures_dir / "speech_10s_8k.wav"), "--json", "--hop", "1")
    assert rc == 0, err
    (report,) = _json_lines(out)
    assert set(report) == {
        "file", "model", "threshold", "sample_rate", "channels", "duration", "verdict", "tracks",
    }  # fmt: skip
    assert report["model"] == "tiny" and report["threshold"] == 0.5
    assert (report["sample_rate"], report["channels"], report["duration"]) == (8000, 1, 10.0)
    (track,) = report["tracks"]
    assert set(track) == {
        "track", "duration", "speech_seconds", "windows", "windows_scored", "windows_skipped",
        "mean_p_fake", "max_p_fake", "verdict",
    }  # fmt: skip
    assert track["track"] == "0"
    assert [(w["start"], w["end"]) for w in track["windows"]] == [(s, s + 4.0) for s in range(7)]
    assert track["windows_scored"] == 7 and track["windows_skipped"] == 0
    assert all(set(w) == {"start", "end", "speech_ratio", "p_fake"} for w in track["windows"])
    assert all(0.0 <= w["p_fake"] <= 1.0 for w in track["windows"])
    scores = [w["p_fake"] for w in track["windows"]]
    assert track["max_p_fake"] == max(scores)
    assert track["mean_p_fake"] == pytest.approx(sum(scores) / 7, abs=1e-6)
    # The verdict is the daemon's alert policy replayed over the windows (one story with alerts).
    _, expected = replay(
        scores, AlertPolicy(report["threshold"]), speech_seconds=track["speech_seconds"]
    )
    assert track["verdict"] == report["verdict"] == expected


def test_text_table_and_verdict_line(scan, fixtures_dir):
    rc, out, _ = scan(str(fixtures_dir / "speech_10s_8k.wav"))
    assert rc == 0
    rows = [line.split() for line in out.splitlines() if line.startswith("      0 ")]
    assert [(float(r[1]), float(r[2])) for r in rows] == [(s, s + 4.0) for s in range(7)]
    last = out.strip().splitlines()[-1]
    assert last.startswith(("verdict: REAL", "verdict: FAKE")) and "speech_10s_8k.wav" in last


@pytest.mark.parametrize("name", ["speech_10s_8k.flac", "speech_10s_8k.ogg", "speech_10s_16k.mp3"])
def test_other_formats_give_the_same_windows(scan, fixtures_dir, name):
    rc, out, _ = scan(str(fixtures_dir / name), "--json")
    assert rc == 0
    (report,) = _json_lines(out)
    assert [w["start"] for w in report["tracks"][0]["windows"]] == [float(s) for s in range(7)]


def test_hop_two_and_batch_one_give_same_scores(scan, fixtures_dir):
    path = str(fixtures_dir / "speech_10s_8k.wav")
    _, out16, _ = scan(path, "--json", "--hop", "2")
    _, out1, _ = scan(path, "--json", "--hop", "2", "--batch", "1")
    w16 = _json_lines(out16)[0]["tracks"][0]["windows"]
    w1 = _json_lines(out1)[0]["tracks"][0]["windows"]
    assert [w["start"] for w in w16] == [0.0, 2.0, 4.0, 6.0]
    assert [w["p_fake"] for w in w1] == pytest.approx([w["p_fake"] for w in w16], abs=1e-5)


def test_stereo_is_two_tracks_and_mix_is_one(scan, fixtures_dir):
    path = str(fixtures_dir / "speech_stereo_16k.wav")
    _, out, _ = scan(path, "--json")
    assert [t["track"] for t in _json_lines(out)[0]["tracks"]] == ["0", "1"]
    _, out, _ = scan(path, "--json", "--mix")
    (report,) = _json_lines(out)
    assert [t["track"] for t in report["tracks"]] == ["mix"] and report["channels"] == 2


def test_bad_files_one_line_each_good_file_still_reported(scan, fixtures_dir):
    files = [str(fixtures_dir / n) for n in ["speech_10s_8k.wav", *BAD]]
    rc, out, err = scan(*files)
    assert rc == 1
    assert "verdict:" in out and "speech_10s_8k.wav" in out
    errors = [line for line in err.splitlines() if line.startswith("streamguard: error:")]
    assert len(errors) == len(BAD)
    for name, line in zip(BAD, errors, strict=True):
        assert name in line


def test_bad_files_in_json_mode_get_error_objects(scan, fixtures_dir):
    files = [str(fixtures_dir / n) for n in [*BAD, "speech_10s_8k.wav"]]
    rc, out, _ = scan(*files, "--json")
    assert rc == 1
    lines = _json_lines(out)
    assert len(lines) == len(files)
    assert [set(x) for x in lines[:-1]] == [{"file", "error"}] * len(BAD)
    assert lines[-1]["verdict"] in {"fake", "real"}


def test_silence_is_inconclusive_with_a_warning_not_a_failure(scan, fixtures_dir):
    rc, out, err = scan(str(fixtures_dir / "silence_3s.wav"), "--json")
    assert rc == 0
    (report,) = _json_lines(out)
    assert report["verdict"] == "inconclusive"
    track = report["tracks"][0]
    assert track["windows"] == [] and track["mean_p_fake"] is None and track["max_p_fake"] is None
    assert err.strip().splitlines() == [
        f"streamguard: warning: {fixtures_dir / 'silence_3s.wav'}: no speech found; "
        "verdict inconclusive"
    ]


def test_short_file_gets_one_padded_window_but_is_inconclusive(scan, fixtures_dir):
    rc, out, err = scan(str(fixtures_dir / "short_speech_1s.wav"), "--json")
    assert rc == 0 and "only" in err
    track = _json_lines(out)[0]["tracks"][0]
    assert [(w["start"], w["end"]) for w in track["windows"]] == [(0.0, 1.0)]
    assert track["verdict"] == "inconclusive"


def _assert_png(path) -> None:
    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 600


def test_plot_single_file(scan, fixtures_dir, tmp_path):
    target = tmp_path / "out.png"
    rc, out, _ = scan(str(fixtures_dir / "speech_10s_8k.wav"), "--plot", str(target))
    assert rc == 0 and f"plot: {target}" in out
    _assert_png(target)


def test_plot_several_files_inserts_stems_or_uses_directory(scan, fixtures_dir, tmp_path):
    files = [str(fixtures_dir / n) for n in ["speech_stereo_16k.wav", "silence_3s.wav"]]
    rc, _, _ = scan(*files, "--json", "--plot", str(tmp_path / "report.png"))
    assert rc == 0
    _assert_png(tmp_path / "report-speech_stereo_16k.png")
    _assert_png(tmp_path / "report-silence_3s.png")
    outdir = tmp_path / "plots"
    outdir.mkdir()
    rc, _, _ = scan(files[0], "--json", "--plot", str(outdir))
    assert rc == 0
    _assert_png(outdir / "speech_stereo_16k.png")


def test_bad_option_and_missing_model_exit_2(tiny_model_dir, fixtures_dir, capsys, tmp_path):
    path = str(fixtures_dir / "speech_10s_8k.wav")
    assert main(["scan", "--model", str(tiny_model_dir), "--hop", "0", path]) == 2
    assert "--hop" in capsys.readouterr().err  # the flag the operator typed
    assert main(["scan", "--model", str(tmp_path / "missing"), path]) == 2
    err = capsys.readouterr().err
    assert err.startswith("streamguard: error:") and len(err.strip().splitlines()) == 1


def test_threshold_help_says_a_verdict_needs_raise_after_windows_in_a_row(capsys):
    """Two starred windows and a REAL verdict surprised a user: --help must say why."""
    from streamguard.policy.smoothing import SmoothingSettings

    with pytest.raises(SystemExit):
        main(["scan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    option = text.split("--threshold P ", 1)[1]
    assert f"raise_after (default {SmoothingSettings().raise_after}) windows in a row" in option
