"""Front ends: the log-mel of ``koyelog-resnet`` and wav2vec2-style waveform normalisation.

The log-mel reproduces ``librosa.feature.melspectrogram`` (librosa's defaults: Slaney mel
scale and area norm, centred frames padded with zeros, power 2.0) followed by
``librosa.power_to_db(ref=np.max, amin=1e-10, top_db=80)`` -- what the checkpoint was trained
on -- but batched and on the model's device, so the front end travels with the weights instead
of living in every caller.

The filter bank and window are non-persistent buffers: they are derived from the parameters, so
they must not appear in the state dict (the published file has no such keys and loads strict).
"""

from __future__ import annotations

import torch
import torchaudio.functional as AF
from torch import nn


class LogMel(nn.Module):
    """``[B, S]`` waveforms -> ``[B, 1, n_mels, frames]`` dB values (float32 always).

    ``db_ref="max"`` makes values relative to each example's loudest bin (librosa's
    ``ref=np.max``, so 0 dB is the maximum); a number is an absolute power reference instead.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16_000,
        n_fft: int = 1024,
        hop_length: int = 512,
        n_mels: int = 128,
        top_db: float | None = 80.0,
        db_ref: str | float = "max",
        amin: float = 1e-10,
    ):
        super().__init__()
        if not (db_ref == "max" or isinstance(db_ref, int | float)):
            raise ValueError(f"db_ref must be 'max' or a number, got {db_ref!r}")
        self.n_fft = n_fft
        self.hop_length = hop_length
        self.top_db = top_db
        self.db_ref = db_ref
        self.amin = amin
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        fbanks = AF.melscale_fbanks(
            n_fft // 2 + 1,
            f_min=0.0,
            f_max=sample_rate / 2,
            n_mels=n_mels,
            sample_rate=sample_rate,
            norm="slaney",
            mel_scale="slaney",
        )
        self.register_buffer("fbanks", fbanks, persistent=False)  # [freqs, n_mels]

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        # Always float32: squared STFT magnitudes overflow float16 (max 65504) on loud audio.
        x = waveforms.float()
        spec = AF.spectrogram(
            x,
            pad=0,
            window=self.window.float(),
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.n_fft,
            power=2.0,
            normalized=False,
            center=True,
            pad_mode="constant",
        )  # [B, freqs, frames]
        mel = torch.matmul(spec.transpose(-1, -2), self.fbanks.float()).transpose(-1, -2)
        return power_to_db(mel, ref=self.db_ref, amin=self.amin, top_db=self.top_db).unsqueeze(1)


def power_to_db(
    power: torch.Tensor, *, ref: str | float = "max", amin: float = 1e-10, top_db: float | None = 80
) -> torch.Tensor:
    """librosa's ``power_to_db`` for ``[B, F, T]``, with ``ref="max"`` taken per example."""
    db = 10.0 * torch.log10(power.clamp(min=amin))
    if ref == "max":
        reference = power.amax(dim=(-2, -1), keepdim=True)
        db = db - 10.0 * torch.log10(reference.clamp(min=amin))
    else:
        db = db - 10.0 * torch.log10(torch.tensor(max(amin, float(ref)), dtype=db.dtype))
    if top_db is not None:
        db = torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - top_db)
    return db


def normalize_waveforms(waveforms: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Per-row zero mean / unit variance, as ``Wav2Vec2FeatureExtractor(do_normalize=True)``.

    Population variance and eps 1e-7 like transformers' ``zero_mean_unit_var_norm``; float32.
    """
    x = waveforms.float()
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    return (x - mean) / torch.sqrt(var + eps)
