"""Training data: every reader on the committed sample files (bad rows included), keyword
labelling, decoding/caching, crops, splits and source weights."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from streamguard.training.config import DataConfig, SourceConfig
from streamguard.training.data import (
    ClipStore,
    Example,
    SegmentDataset,
    crop,
    decode_audio,
    detect_format,
    label_from_path,
    load_sources,
    read_asvspoof2019,
    read_asvspoof2021,
    read_data,
    read_folder,
    read_itw,
    read_manifest,
    sampling_weights,
    split_examples,
)

from streamguard.errors import AudioError, ConfigError

HERE = Path(__file__).resolve().parents[1] / "fixtures" / "training"
FLAC = HERE / "flac"


def _lines(problems) -> list[int]:
    return [int(p.origin.rsplit(":", 1)[1]) for p in problems]


# --------------------------------------------------------------------------- readers


def test_manifest_reads_good_rows_and_reports_bad_ones_with_lines():
    got = read_manifest(HERE / "manifest.csv")
    assert len(got.examples) == 10  # 9 good rows + broken.flac (exists; fails only to decode)
    assert _lines(got.problems) == [11, 12, 13]
    reasons = [p.reason for p in got.problems]
    assert "audio file not found" in reasons[0]
    assert "unknown label 'maybe'" in reasons[1]
    assert "unknown subset 'holdout'" in reasons[2]
    first = got.examples[0]
    assert first.path == FLAC / "LA_T_1000001.flac"  # relative to the manifest's folder
    assert (first.label, first.subset, first.speaker, first.source) == (
        0,
        "train",
        "alice",
        "manifest",
    )
    assert [e.label for e in got.examples[:9]] == [0, 0, 0, 0, 1, 1, 1, 1, 0]
    assert [e.subset for e in got.examples].count("val") == 2
    assert got.examples[0].origin.endswith("manifest.csv:2")


def test_manifest_without_header_is_positional(tmp_path):
    (tmp_path / "a.flac").write_bytes((FLAC / "LA_T_1000001.flac").read_bytes())
    manifest = tmp_path / "m.csv"
    manifest.write_text(
        "# comment lines and blank lines are ignored\n\n"
        f"a.flac,spoof\n{FLAC / 'LA_T_1000002.flac'},bona-fide,dev,spk9\n"
    )
    got = read_manifest(manifest)
    assert not got.problems
    assert [(e.label, e.subset, e.speaker) for e in got.examples] == [
        (1, None, None),
        (0, "val", "spk9"),
    ]


def test_asvspoof2019_protocol():
    got = read_asvspoof2019(HERE / "ASVspoof2019.LA.cm.sample.txt")
    assert len(got.examples) == 8
    assert _lines(got.problems) == [9, 10, 11]
    assert "not found" in got.problems[0].reason
    assert "expected 5 columns" in got.problems[1].reason
    assert "unknown key 'maybe'" in got.problems[2].reason
    e = got.examples[4]
    assert (e.path.name, e.label, e.attack, e.speaker) == ("LA_T_1000005.flac", 1, "A01", "LA_0079")
    assert got.examples[0].attack == "bonafide"


def test_asvspoof2021_la_and_df_keys():
    la = read_asvspoof2021(HERE / "trial_metadata_LA.txt")
    assert len(la.examples) == 5 and _lines(la.problems) == [6]
    assert {e.source for e in la.examples} == {"asvspoof2021-la"}
    assert [e.condition for e in la.examples] == ["none", "alaw", "alaw", "ulaw", "none"]
    assert [e.attack for e in la.examples] == ["bonafide", "bonafide", "A07", "A08", "A07"]
    assert all(e.subset == "test" for e in la.examples)
    eval_only = read_asvspoof2021(HERE / "trial_metadata_LA.txt", phases=["eval"])
    assert len(eval_only.examples) == 3
    df = read_asvspoof2021(HERE / "trial_metadata_DF.txt")
    assert len(df.examples) == 4 and not df.problems
    assert df.examples[2].source == "asvspoof2021-df"
    assert df.examples[2].condition == "low_m4a" and df.examples[2].attack == "Task1-team20"


def test_asvspoof_without_flac_folder_is_a_clear_error(tmp_path):
    protocol = tmp_path / "p.txt"
    protocol.write_text("LA_0079 LA_T_1000001 - - bonafide\n")
    with pytest.raises(ConfigError, match="no flac/ folder"):
        read_asvspoof2019(protocol)
    assert len(read_asvspoof2019(protocol, audio_root=HERE).examples) == 1


def test_in_the_wild_meta():
    got = read_itw(HERE / "meta.csv")
    assert [e.label for e in got.examples] == [0, 0, 1, 1]
    assert got.examples[3].speaker == "Barack Obama"
    assert _lines(got.problems) == [6, 7]
    assert "unknown label 'unsure'" in got.problems[1].reason


def test_itw_needs_its_header(tmp_path):
    bad = tmp_path / "meta.csv"
    bad.write_text("path,label\nx.wav,spoof\n")
    with pytest.raises(ConfigError, match="file,speaker,label"):
        read_itw(bad)


@pytest.mark.parametrize(
    ("path", "label"),
    [
        ("bonafide/x.wav", 0),
        ("data/Real/x.wav", 0),
        ("genuine_speech/clip.flac", 0),
        ("bona-fide/x.wav", 0),
        ("spoof/x.wav", 1),
        ("AI/x.wav", 1),
        ("ai_voices/x.wav", 1),
        ("clips/deep_fake_01.wav", 1),
        ("train/real/x.wav", 0),  # "train" does not contain the token "ai"
        ("generated/x.wav", 1),
    ],
)
def test_keyword_labels_match_whole_tokens(path, label):
    assert label_from_path(path)[0] == label


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("train/clips/x.wav", "neither"),  # "ai" inside "train" must not count
        ("fakes/x.wav", "neither"),  # "fakes" is not the word "fake"
        ("mountain/x.wav", "neither"),
        ("real_vs_fake/x.wav", "both"),
        ("real/spoof_01.wav", "both"),
    ],
)
def test_keyword_labels_report_both_or_neither(path, why):
    label, reason = label_from_path(path)
    assert label is None and why in reason


def test_folder_reader_labels_by_relative_path_and_reports_the_rest(tmp_path):
    root = tmp_path / "fake_or_real_corpus"  # the root's own name is not used for labels
    src = FLAC / "LA_T_1000001.flac"
    for rel in ("train/bonafide/a.flac", "train/spoof/b.flac", "val/real/c.flac",
                "misc/d.flac", "real_vs_fake/e.flac", "spoof/notes.txt"):  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / rel)
    got = read_folder(root)
    assert [(e.path.name, e.label, e.subset) for e in got.examples] == [
        ("a.flac", 0, "train"),
        ("b.flac", 1, "train"),
        ("c.flac", 0, "val"),
    ]
    assert sorted(Path(p.origin).name for p in got.problems) == ["d.flac", "e.flac"]
    assert {e.source for e in got.examples} == {"fake_or_real_corpus"}


def test_detect_format_and_read_data():
    assert detect_format(HERE / "manifest.csv") == "manifest"
    assert detect_format(HERE / "meta.csv") == "itw"
    assert detect_format(HERE) == "itw"  # a folder holding meta.csv
    assert detect_format(FLAC) == "folder"
    assert detect_format(HERE / "ASVspoof2019.LA.cm.sample.txt") == "asvspoof2019"
    assert detect_format(HERE / "trial_metadata_LA.txt") == "asvspoof2021"
    assert detect_format(HERE / "trial_metadata_DF.txt") == "asvspoof2021"
    assert len(read_data(HERE / "trial_metadata_DF.txt").examples) == 4
    with pytest.raises(ConfigError, match="not found"):
        detect_format(HERE / "nope.csv")
    with pytest.raises(ConfigError, match="unknown data format"):
        read_data(HERE / "manifest.csv", "kaggle")


# --------------------------------------------------------------------------- audio


def test_decode_resamples_to_16k_and_reports_bad_audio():
    tel = decode_audio(FLAC / "tel_8k.wav")
    assert tel.dtype == np.float32 and tel.shape == (32_000,)  # 2 s at 16 kHz
    assert 0.05 < np.abs(tel).max() <= 1.0
    with pytest.raises(AudioError, match=r"broken\.flac"):
        decode_audio(FLAC / "broken.flac")


@pytest.mark.parametrize("mode", ["memory", "dir"])
def test_clip_store_caches_decoded_audio(mode, tmp_path):
    cache = "memory" if mode == "memory" else str(tmp_path / "cache")
    store = ClipStore(16_000, cache)
    path = FLAC / "LA_T_1000004.flac"
    first = store.get(path)
    np.testing.assert_allclose(first, decode_audio(path), atol=1 / 32767)  # int16 storage
    np.testing.assert_array_equal(store.get(path), first)
    if mode == "dir":
        assert len(list((tmp_path / "cache").glob("*.npy"))) == 1
        np.testing.assert_array_equal(ClipStore(16_000, cache).get(path), first)  # next run
    examples = read_manifest(HERE / "manifest.csv").examples
    good, bad = store.preload(examples)
    assert len(good) == 9 and len(bad) == 1 and "broken.flac" in bad[0].reason


def test_crop_modes():
    clip = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop(clip, 4, "start"), [0, 1, 2, 3])
    np.testing.assert_array_equal(crop(clip, 4, "center"), [3, 4, 5, 6])
    np.testing.assert_array_equal(crop(clip[:2], 4, "start"), [0, 1, 0, 0])  # padded at the end
    a = crop(clip, 4, "random", np.random.default_rng(1))
    b = crop(clip, 4, "random", np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    assert a[0] in range(7) and np.all(np.diff(a) == 1)


def test_dataset_replaces_and_counts_an_unreadable_clip():
    examples = read_manifest(HERE / "manifest.csv").examples
    broken = next(i for i, e in enumerate(examples) if e.path.name == "broken.flac")
    ds = SegmentDataset(examples, ClipStore(16_000, "none"), 8_000, train=False)
    wave, label, used = ds[broken]
    assert wave.shape == (8_000,) and used != broken
    assert float(label) == examples[used].label
    assert list(ds.failures) == [broken] and "broken.flac" in ds.failures[broken]


def test_training_crops_are_seeded_per_epoch_and_draw():
    examples = read_manifest(HERE / "manifest.csv").examples[:2]
    ds = SegmentDataset(examples, ClipStore(16_000, "memory"), 4_000, train=True, seed=3)
    a = ds[(1, 0)][0]
    np.testing.assert_array_equal(a, ds[(1, 0)][0])
    assert not np.array_equal(a, ds[(1, 1)][0])  # second draw of the same clip in an epoch
    ds.set_epoch(1)
    assert not np.array_equal(a, ds[(1, 0)][0])


# --------------------------------------------------------------------------- splits & mixing


def _examples(n: int, label: int, speakers: int, source: str = "s", stream: int = 0):
    return [
        Example(Path(f"/x/{source}{label}_{i}.wav"), label, source, speaker=f"spk{i % speakers}",
                stream=stream)
        for i in range(n)
    ]  # fmt: skip


def test_split_is_deterministic_stratified_and_speaker_disjoint():
    rows = _examples(40, 0, 8) + _examples(40, 1, 8)
    train, val = split_examples(rows, 0.25)
    assert (train, val) == split_examples(rows, 0.25)
    assert len(train) + len(val) == 80
    for label in (0, 1):
        assert any(e.label == label for e in val) and any(e.label == label for e in train)
        tr = {e.speaker for e in train if e.label == label}
        va = {e.speaker for e in val if e.label == label}
        assert not tr & va
    assert 10 <= len(val) <= 30


def test_sampling_weights_follow_source_weights():
    rows = _examples(2, 0, 1, "a", stream=0) + _examples(6, 1, 1, "b", stream=1)
    w = sampling_weights(rows, [3.0, 1.0])
    assert w[:2].sum() == pytest.approx(0.75) and w[2:].sum() == pytest.approx(0.25)
    assert np.allclose(w[:2], w[0]) and np.allclose(w[2:], w[2])


def test_load_sources_mixes_fixed_and_pooled_rows():
    cfg = DataConfig(
        sources=[
            SourceConfig(type="manifest", path=HERE / "manifest.csv"),
            SourceConfig(type="asvspoof2021", path=HERE / "trial_metadata_DF.txt", weight=2),
            SourceConfig(type="itw", path=HERE / "meta.csv", subset="train", limit=2),
        ],
        val_fraction=0.5,
    )
    splits = load_sources(cfg)
    assert len(splits.test) == 4 and {e.stream for e in splits.test} == {1}
    assert sum(e.stream == 2 for e in splits.train) == 2
    assert len(splits.val) == 2  # the manifest's own val rows
    assert len(splits.problems) == 3 + 2
