"""Corpus v2 builder pieces that run without the Debian game data: RNC, the phone channel,
the bandwidth balance and the split audit."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

CORPUS = Path(__file__).resolve().parents[2] / "training" / "corpus"
sys.path.insert(0, str(CORPUS))

import build_v2  # noqa: E402
import rnc  # noqa: E402
from build import Job  # noqa: E402


def test_crc16_is_crc16_arc():
    assert rnc.crc16(b"123456789") == 0xBB3D  # the catalogue check value of CRC-16/ARC


def test_rnc_refuses_what_it_cannot_check():
    with pytest.raises(ValueError, match="not RNC"):
        rnc.rnc_unpack(b"RIFF" + bytes(20))
    body = b"\x00" * 8
    header = b"RNC\x01" + (8).to_bytes(4, "big") + len(body).to_bytes(4, "big") + bytes(4)
    with pytest.raises(ValueError, match="CRC"):
        rnc.rnc_unpack(header + b"\x00\x01" + body)


@pytest.mark.parametrize("codec", build_v2.PHONE_CODECS)
def test_phone_channel_every_codec(codec, tmp_path):
    sr = build_v2.SR
    t = np.arange(2 * sr) / sr
    x = (0.3 * np.sin(2 * np.pi * 440 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    x += 0.05 * np.sin(2 * np.pi * 6000 * t).astype(np.float32)  # must not survive the line
    rng = np.random.default_rng(0)
    y, tag = build_v2.phone_channel(x, rng, tmp_path, codec=codec)
    assert tag.split("+")[0] == codec and y.shape == x.shape and np.isfinite(y).all()
    spectrum = np.abs(np.fft.rfft(y[sr // 2 : -sr // 2]))
    freqs = np.fft.rfftfreq(sr, 1 / sr)
    assert spectrum[freqs > 4200].sum() < 0.02 * spectrum.sum()  # 8 kHz sampled: nothing above
    assert np.corrcoef(y[: sr // 10], x[: sr // 10])[0, 1] != 0  # something of x came through


def test_bandwidth_share_is_balanced_between_classes():
    def job(label, kind, split="train"):
        return Job("a", "s", "n", label, split, kind, {})

    jobs = [job("real", "fotaq")] * 30 + [job("real", "file")] * 70 + [job("fake", "espeak")] * 100
    p = build_v2.narrow_probabilities(jobs)
    real_share = 30 / 100 + 70 / 100 * p[("train", "real")]
    assert real_share == pytest.approx(build_v2.NARROW_SHARE)
    assert p[("train", "fake")] == pytest.approx(build_v2.NARROW_SHARE)


def test_audit_flags_a_voice_in_train_and_test():
    row = {"label": "real", "lang": "en", "family": "bonafide", "text_key": "k"}
    rows = [dict(row, subset="train", speaker="x"), dict(row, subset="test", speaker="x")]
    assert build_v2.audit(rows)["leaks"]
    rows[1]["speaker"] = "y"
    assert not build_v2.audit(rows)["leaks"]
    rows.append(dict(row, subset="val", speaker="z", family="parametric", label="fake"))
    assert any("held-out family" in leak for leak in build_v2.audit(rows)["leaks"])
