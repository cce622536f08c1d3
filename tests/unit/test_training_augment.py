"""Augmentation ops: shapes, what each op does to real speech, and seed determinism."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamguard.audio import codecs
from streamguard.training.augment import (
    Augmenter,
    add_noise,
    apply_gain,
    packet_loss,
    speed_perturb,
    synthetic_noise,
    telephone,
)
from streamguard.training.config import AugmentConfig
from streamguard.training.data import crop, decode_audio

SR = 16_000
FLAC = Path(__file__).resolve().parents[1] / "fixtures" / "training" / "flac"


@pytest.fixture(scope="module")
def speech() -> torch.Tensor:
    return torch.from_numpy(crop(decode_audio(FLAC / "LA_T_1000003.flac"), SR, "start"))


def _band_energy(x: torch.Tensor, low: float, high: float) -> float:
    spec = np.abs(np.fft.rfft(x.numpy())) ** 2
    freqs = np.fft.rfftfreq(x.shape[-1], 1 / SR)
    return float(spec[(freqs >= low) & (freqs < high)].sum())


def test_speed_keeps_length_and_changes_the_signal(speech):
    for factor in (0.9, 1.1):
        out = speed_perturb(speech, SR, factor)
        assert out.shape == speech.shape and not torch.equal(out, speech)
    assert speed_perturb(speech, SR, 1.0) is speech


def test_gain_scales_and_clips(speech):
    np.testing.assert_allclose(apply_gain(speech, -6.0), speech * 10 ** (-6 / 20), rtol=1e-6)
    loud = apply_gain(speech, 40.0)
    assert loud.abs().max() == 1.0


def test_noise_is_mixed_at_the_requested_snr(speech):
    gen = torch.Generator().manual_seed(0)
    noise = synthetic_noise(speech.shape[-1], gen, "pink")
    out = add_noise(speech, noise, 10.0)
    added = out - speech
    snr = 10 * torch.log10(speech.pow(2).sum() / added.pow(2).sum())
    assert float(snr) == pytest.approx(10.0, abs=0.01)
    silent = torch.zeros(100)
    assert torch.equal(add_noise(silent, torch.ones(100), 10.0), silent)


@pytest.mark.parametrize("codec", ["mulaw", "alaw"])
def test_telephone_band_limits(codec):
    noise = synthetic_noise(SR, torch.Generator().manual_seed(1)) * 0.1
    out = telephone(noise, SR, codec)
    assert out.shape == noise.shape
    # Almost nothing survives above the 8 kHz line's Nyquist (> 23 dB down; the resampler's
    # transition band leaks a little); the 300-3400 Hz band passes; the rumble is cut.
    assert _band_energy(out, 4200, 8000) < 5e-3 * _band_energy(noise, 4200, 8000)
    assert _band_energy(out, 500, 3000) > 0.3 * _band_energy(noise, 500, 3000)
    assert _band_energy(out, 0, 100) < 0.2 * _band_energy(noise, 0, 100)


def test_telephone_runs_the_g711_codec(speech):
    mu = telephone(speech, SR, "mulaw")
    a = telephone(speech, SR, "alaw")
    assert mu.shape == a.shape == speech.shape
    # Both laws quantise the same band-limited line, differently: small, non-zero difference.
    diff = float((mu - a).pow(2).sum() / mu.pow(2).sum())
    assert 0 < diff < 0.01
    with pytest.raises(codecs.CodecError):
        telephone(speech, SR, "gsm")


def test_packet_loss_zeroes_whole_20ms_frames(speech):
    noisy = speech + 0.01  # no exact zeros before
    gen = torch.Generator().manual_seed(5)
    out = packet_loss(noisy, SR, 3, gen, 20.0)
    zero = (out == 0).numpy()
    assert zero.sum() == 3 * 320
    frames = zero[: SR // 320 * 320].reshape(-1, 320)
    assert set(frames.sum(axis=1).tolist()) <= {0, 320}  # frame-aligned, whole frames


ALL_ON = AugmentConfig(speed_p=1, gain_p=1, noise_p=1, telephone_p=1, packet_loss_p=1)


def test_augmenter_is_deterministic_under_a_seed(speech):
    aug = Augmenter(ALL_ON, SR)
    a = aug(speech, torch.Generator().manual_seed(42))
    b = aug(speech, torch.Generator().manual_seed(42))
    c = aug(speech, torch.Generator().manual_seed(43))
    assert a.shape == speech.shape and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.isfinite(a).all()


def test_augmenter_with_nothing_enabled_is_identity(speech):
    cfg = AugmentConfig()
    assert not cfg.enabled
    assert torch.equal(Augmenter(cfg, SR)(speech, torch.Generator().manual_seed(0)), speech)


def test_augmenter_noise_from_a_folder(speech, tmp_path):
    import soundfile as sf

    sf.write(tmp_path / "hum.wav", 0.1 * np.sin(np.arange(4000) / 5.0), 8000)
    aug = Augmenter(AugmentConfig(noise_p=1.0, noise_dir=tmp_path), SR)
    out = aug(speech, torch.Generator().manual_seed(0))
    assert out.shape == speech.shape and not torch.equal(out, speech)


# --------------------------------------------------------------------------- issue #17's ops


def _snr_db(clean: torch.Tensor, noisy: torch.Tensor) -> float:
    return 10 * np.log10(float(clean.pow(2).sum()) / float((noisy - clean).pow(2).sum()))


@pytest.mark.parametrize("algo", [1, 2, 3, 4])
def test_rawboost_changes_the_signal_keeps_length_and_repeats_under_a_seed(speech, algo):
    from streamguard.training.augment import rawboost

    a = rawboost(speech, torch.Generator().manual_seed(5), algo)
    b = rawboost(speech, torch.Generator().manual_seed(5), algo)
    c = rawboost(speech, torch.Generator().manual_seed(6), algo)
    assert a.shape == speech.shape and torch.isfinite(a).all()
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.allclose(a, speech, atol=1e-4)
    if algo == 3:  # stationary noise at 10-40 dB SNR: the speech is still there
        assert 9.5 <= _snr_db(speech, a) <= 40.5
    if algo == 2:  # impulsive: at most 10% of the samples change
        assert (a != speech).float().mean() <= 0.1


def test_lowpass_removes_the_band_above_the_cutoff(speech):
    from streamguard.training.augment import lowpass

    out = lowpass(speech, SR, 3_400)
    assert _band_energy(out, 5_000, 8_000) < 0.02 * _band_energy(speech, 5_000, 8_000)
    assert _band_energy(out, 300, 2_000) > 0.7 * _band_energy(speech, 300, 2_000)


@pytest.mark.parametrize("codec", ["mulaw", "alaw", "g722", "g726", "gsm", "opus", "amr-nb"])
def test_codec_round_trips_go_through_the_real_codecs(speech, codec):
    from streamguard.training.augment import codec_round_trip

    out = codec_round_trip(speech, SR, codec, torch.Generator().manual_seed(0))
    assert out.shape == speech.shape and torch.isfinite(out).all()
    assert not torch.allclose(out, speech, atol=1e-3)  # lossy
    # still the same speech: strongly correlated within the telephone band (codec delay aside)
    lag = max(range(-400, 401), key=lambda k: float((torch.roll(out, -k) * speech).sum()))
    corr = np.corrcoef(torch.roll(out, -lag).numpy(), speech.numpy())[0, 1]
    assert corr > 0.5, (codec, lag, corr)
    if codec != "g722":  # narrow-band codecs: nothing left above 4 kHz
        assert _band_energy(out, 4_300, 8_000) < 0.05 * _band_energy(speech, 4_300, 8_000)


def test_packet_loss_rate_loses_about_that_share_of_packets(speech):
    from streamguard.training.augment import packet_loss_rate

    long = speech.repeat(5)
    out = packet_loss_rate(long, SR, 0.1, torch.Generator().manual_seed(0))
    frames = out.reshape(-1, 320)
    lost = (frames.abs().sum(dim=1) == 0) & (long.reshape(-1, 320).abs().sum(dim=1) > 0)
    assert 0.04 <= float(lost.float().mean()) <= 0.18
    concealed = packet_loss_rate(long, SR, 0.1, torch.Generator().manual_seed(0), conceal=True)
    c, o = concealed.reshape(-1, 320), long.reshape(-1, 320)
    repeated = [
        torch.equal(c[i], c[i - 1]) and not torch.equal(c[i], o[i]) for i in range(1, len(c))
    ]
    assert 0.04 <= float(np.mean(repeated)) <= 0.18  # lost packets replaced by the previous one


def test_jitter_slips_keep_the_length_and_shift_the_audio(speech):
    from streamguard.training.augment import jitter

    out = jitter(speech, SR, 3, torch.Generator().manual_seed(1))
    assert out.shape == speech.shape and not torch.equal(out, speech)
    assert torch.equal(out[:80], speech[:80])  # a slip starts at least 5 ms in


def test_new_ops_leave_old_recipes_unchanged_and_repeat_under_a_seed(speech):
    old = AugmentConfig(gain_p=1.0, noise_p=1.0, packet_loss_p=1.0)
    new = AugmentConfig(gain_p=1.0, noise_p=1.0, packet_loss_p=1.0, rawboost_p=1.0,
                        codec_p=1.0, codecs=["gsm"], jitter_p=1.0, lowpass_p=1.0,
                        packet_loss_rate=(0.01, 0.1))  # fmt: skip
    a = Augmenter(old)(speech, torch.Generator().manual_seed(3))
    b = Augmenter(old)(speech, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    x = Augmenter(new)(speech, torch.Generator().manual_seed(3))
    y = Augmenter(new)(speech, torch.Generator().manual_seed(3))
    assert torch.equal(x, y) and not torch.equal(x, a) and x.abs().max() <= 1.0
    assert new.enabled


def test_a_codec_without_its_tool_is_one_line(monkeypatch):
    import streamguard.training.augment as augment
    from streamguard.errors import ConfigError

    monkeypatch.setattr(augment.shutil, "which", lambda _: None)
    with pytest.raises(ConfigError, match="amr-nb need ffmpeg/sox"):
        Augmenter(AugmentConfig(codec_p=0.5, codecs=["mulaw", "amr-nb"]))
