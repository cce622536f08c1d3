"""Training-time augmentation: speed, gain, additive noise, the telephone channel, packet loss.

Why these: the daemon hears calls, so the detector must not mistake a phone line's band limit,
G.711 quantisation, level changes, background noise or a lost packet for "synthetic". Each op
fires independently with its probability from
:class:`streamguard.training.config.AugmentConfig`, in the
order a call would apply them (talker -> room -> channel -> network):
speed -> gain -> noise -> telephone band + 8 kHz G.711 round trip -> packet-loss gaps.

Every random draw comes from the ``torch.Generator`` passed in, so the same seed gives the same
output on any machine and in any DataLoader worker (the dataset seeds it per (seed, epoch, clip)).
The ops are plain functions of a 1-D float32 tensor; the output has the input's length.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torchaudio.functional as AF

from streamguard.audio import codecs
from streamguard.audio.pcm import fit_length

log = logging.getLogger(__name__)

TELEPHONE_RATE = 8_000
TELEPHONE_BAND = (300.0, 3400.0)


def _uniform(gen: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=gen))


def _chance(gen: torch.Generator, p: float) -> bool:
    return p > 0 and float(torch.rand((), generator=gen)) < p


def speed_perturb(wave: torch.Tensor, sample_rate: int, factor: float) -> torch.Tensor:
    """Play ``factor`` times faster (pitch moves with it, as in Kaldi-style speed perturbation);
    the result is cut or zero-padded back to the input length."""
    if factor == 1.0:
        return wave
    out, _ = AF.speed(wave.unsqueeze(0), sample_rate, factor)
    return fit_length(out.squeeze(0), wave.shape[-1])


def apply_gain(wave: torch.Tensor, gain_db: float) -> torch.Tensor:
    """Scale by ``gain_db`` decibels and hard-clip to [-1, 1] (a hot input clips on a real line)."""
    return torch.clamp(wave * (10.0 ** (gain_db / 20.0)), -1.0, 1.0)


def synthetic_noise(n: int, gen: torch.Generator, kind: str = "white") -> torch.Tensor:
    """Unit-variance white or pink (1/f power) noise of ``n`` samples."""
    white = torch.randn(n, generator=gen)
    if kind == "pink":
        spectrum = torch.fft.rfft(white)
        freqs = torch.arange(spectrum.shape[0], dtype=torch.float32)
        freqs[0] = 1.0
        white = torch.fft.irfft(spectrum / freqs.sqrt(), n=n)
    return white / white.std().clamp_min(1e-8)


def add_noise(wave: torch.Tensor, noise: torch.Tensor, snr_db: float) -> torch.Tensor:
    """Mix ``noise`` (same length) in at ``snr_db`` with torchaudio's add_noise.

    Silent input or silent noise is returned unchanged (the SNR is undefined there and
    torchaudio would divide by zero).
    """
    if float(noise.pow(2).sum()) <= 0.0 or float(wave.pow(2).sum()) <= 0.0:
        return wave
    out = AF.add_noise(wave.unsqueeze(0), noise.unsqueeze(0), torch.tensor([snr_db]))
    return out.squeeze(0)


def telephone(wave: torch.Tensor, sample_rate: int, codec: str = "mulaw") -> torch.Tensor:
    """A narrow-band phone line: 300-3400 Hz band, down to 8 kHz, a G.711 (``mulaw``/``alaw``)
    encode/decode with streamguard's own codecs (the ones the daemon decodes feeds with), and
    back up to ``sample_rate``."""
    x = AF.highpass_biquad(wave, sample_rate, TELEPHONE_BAND[0])
    x = AF.lowpass_biquad(x, sample_rate, TELEPHONE_BAND[1])
    narrow = AF.resample(x, sample_rate, TELEPHONE_RATE)
    payload = codecs.encode(codec, narrow.clamp(-1.0, 1.0).numpy())
    decoded = torch.from_numpy(codecs.decode(codec, payload).copy())
    return fit_length(AF.resample(decoded, TELEPHONE_RATE, sample_rate), wave.shape[-1])


def packet_loss(
    wave: torch.Tensor, sample_rate: int, gaps: int, gen: torch.Generator, frame_ms: float = 20.0
) -> torch.Tensor:
    """Zero ``gaps`` whole packet frames (``frame_ms`` each, frame-aligned, as a jitter buffer
    without concealment would)."""
    frame = max(1, round(sample_rate * frame_ms / 1000.0))
    frames = wave.shape[-1] // frame
    if frames == 0 or gaps <= 0:
        return wave
    out = wave.clone()
    chosen = torch.randperm(frames, generator=gen)[: min(gaps, frames)]
    for index in chosen.tolist():
        out[index * frame : (index + 1) * frame] = 0.0
    return out


class NoiseBank:
    """Noise clips from a folder, decoded once (lazily) and drawn at random offsets."""

    def __init__(self, folder: Path, sample_rate: int):
        from streamguard.training.data import AUDIO_EXTENSIONS, decode_audio

        self.clips: list[np.ndarray] = []
        files = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS)
        for path in files:
            try:
                clip = decode_audio(path, sample_rate)
            except Exception as exc:  # a bad noise file must not stop training
                log.warning("skipping noise file %s: %s", path, exc)
                continue
            if clip.size:
                self.clips.append(clip)
        if not self.clips:
            from streamguard.errors import ConfigError

            raise ConfigError(f"no readable noise clips in {folder}")

    def draw(self, n: int, gen: torch.Generator) -> torch.Tensor:
        clip = self.clips[int(torch.randint(len(self.clips), (), generator=gen))]
        if clip.size < n:
            clip = np.tile(clip, n // clip.size + 1)
        start = int(torch.randint(clip.size - n + 1, (), generator=gen))
        return torch.from_numpy(clip[start : start + n].copy())


class Augmenter:
    """Applies the configured chain to one 1-D waveform: ``augmenter(wave, generator)``."""

    def __init__(self, config, sample_rate: int = 16_000):
        self.config = config
        self.sample_rate = sample_rate
        self._noise_bank: NoiseBank | None = None

    def _noise(self, n: int, gen: torch.Generator) -> torch.Tensor:
        if self.config.noise_dir is not None:
            if self._noise_bank is None:
                self._noise_bank = NoiseBank(self.config.noise_dir, self.sample_rate)
            return self._noise_bank.draw(n, gen)
        return synthetic_noise(n, gen, "pink" if _chance(gen, 0.5) else "white")

    def __call__(self, wave: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        cfg = self.config
        sr = self.sample_rate
        x = wave.float()
        # Draw every decision in a fixed order so one op's probability does not shift the
        # random stream of the others (changing speed_p leaves the noise draws alone).
        do_speed, do_gain, do_noise, do_tel, do_loss = (
            _chance(gen, p)
            for p in (cfg.speed_p, cfg.gain_p, cfg.noise_p, cfg.telephone_p, cfg.packet_loss_p)
        )
        if do_speed:
            index = int(torch.randint(len(cfg.speed_factors), (), generator=gen))
            x = speed_perturb(x, sr, cfg.speed_factors[index])
        if do_gain:
            x = apply_gain(x, _uniform(gen, *cfg.gain_db))
        if do_noise:
            x = add_noise(x, self._noise(x.shape[-1], gen), _uniform(gen, *cfg.noise_snr_db))
        if do_tel:
            index = int(torch.randint(len(cfg.telephone_codecs), (), generator=gen))
            x = telephone(x, sr, cfg.telephone_codecs[index])
        if do_loss:
            gaps = int(torch.randint(1, cfg.packet_loss_max_gaps + 1, (), generator=gen))
            x = packet_loss(x, sr, gaps, gen, cfg.packet_ms)
        return x.contiguous()
