"""Front ends: the log-mel of ``koyelog-resnet`` and wav2vec2-style waveform normalisation.

The log-mel reproduces ``librosa.feature.melspectrogram`` (librosa's defaults: Slaney mel
scale and area norm, centred frames padded with zeros, power 2.0) followed by
``librosa.power_to_db(ref=np.max, amin=1e-10, top_db=80)`` -- what the checkpoint was trained
on -- but batched and on the model's device, so the front end travels with the weights instead
of living in every caller.

The filter bank and window are non-persistent buffers: they are derived from the parameters, so
they must not appear in the state dict (the published file has no such keys and loads strict).

Each log-mel also has a *matmul form* (:meth:`LogMel.matmul_form`): the same numbers computed
with a fixed DFT basis (:class:`DFTPower`) instead of ``torch.stft``, from ops that export to
plain ONNX (Pad, Slice, Concat, Mul, MatMul, Log, ReduceMax). Why: the served ONNX graph can
then take waveforms, so a batch is one ONNX Runtime call that releases the GIL from waveform to
logit, instead of a dozen torch calls (each re-taking the GIL beside the event loop) before it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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

    def matmul_form(self) -> MatmulLogMel:
        """This front end as exportable matmuls (same output within float32 rounding)."""
        return MatmulLogMel(self)


class MatmulLogMel(nn.Module):
    """:class:`LogMel` with the STFT as :class:`DFTPower`: exportable to ONNX as it is."""

    def __init__(self, front: LogMel):
        super().__init__()
        self.dft = DFTPower(front.n_fft, front.hop_length, front.window.float())
        self.register_buffer("fbanks", self.dft.rows(front.fbanks.float()), persistent=False)
        self.db_ref, self.amin, self.top_db = front.db_ref, front.amin, front.top_db

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.dft.scrambled(waveforms.float()), self.fbanks)  # [B, T, M]
        db = power_to_db(mel, ref=self.db_ref, amin=self.amin, top_db=self.top_db)
        return db.transpose(1, 2).unsqueeze(1)


def _factor(n: int) -> int:
    """The largest divisor of ``n`` not above its square root (1 for a prime)."""
    return max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)


class DFTPower(nn.Module):
    """Power spectrum ``|STFT|^2`` of real waveforms as two real matmul stages.

    What ``torch.stft(center=True, onesided)`` computes, from a fixed DFT basis: frames are cut
    with strided slices of the padded signal, windowed, and transformed by a two-factor
    Cooley-Tukey DFT (``n_fft = N1 * N2``: an ``N1``-point DFT over the slow index as one
    matmul, a twiddle, an ``N2``-point DFT over the fast index as another). That is ~7x fewer
    multiply-adds than one matmul with the full ``n_fft x n_fft`` basis (what a 1-D convolution
    with the DFT kernels as weights, hop as stride, would do), and every op exports to ONNX.
    Measured on the koyelog front end in ONNX Runtime (1 thread, batch 16; benchmarks/README.md,
    issue #20): the full-basis convolution took 35 ms, these two stages 18 ms (2.0x).

    :meth:`scrambled` gives the bins in the stages' own order (``[B, T, N1 * K2]``, slot
    ``k1 * K2 + k2`` = bin ``k1 + N1 * k2``, slots past Nyquist hold bins nobody reads); a
    matrix applied to the spectrum (a mel filter bank) is permuted once with :meth:`rows`, so
    no reordering runs per batch. :meth:`forward` gives the natural ``[B, freqs, frames]``.
    """

    def __init__(
        self,
        n_fft: int,
        hop_length: int,
        window: torch.Tensor,
        *,
        pad_mode: str = "constant",
        drop_last: bool = False,
    ):
        super().__init__()
        if window.shape != (n_fft,):
            raise ValueError(f"window must have n_fft={n_fft} values, got {tuple(window.shape)}")
        self.n_fft, self.hop_length = n_fft, hop_length
        self.pad_mode, self.drop_last = pad_mode, drop_last
        self.freqs = n_fft // 2 + 1
        n1 = _factor(n_fft)
        n2 = n_fft // n1
        k2 = -(-self.freqs // n1)
        self.n1, self.n2, self.k2 = n1, n2, k2
        f64 = torch.float64
        i1, i2, j2 = (torch.arange(v, dtype=f64) for v in (n1, n2, k2))
        stage1 = 2 * math.pi * torch.outer(i1, i1) / n1  # [k1, n1]
        # rows: real parts of k1 = 0..N1-1, then the imaginary parts
        self.register_buffer(
            "stage1", torch.cat([stage1.cos(), -stage1.sin()]).float(), persistent=False
        )
        twiddle = 2 * math.pi * torch.outer(i1, i2) / n_fft  # [k1, n2]
        self.register_buffer("twiddle_re", twiddle.cos().float(), persistent=False)
        self.register_buffer("twiddle_im", (-twiddle.sin()).float(), persistent=False)
        stage2 = 2 * math.pi * torch.outer(i2, j2) / n2  # [n2, k2]
        re, im = stage2.cos(), -stage2.sin()
        # [zr | zi] @ [[re, im], [-im, re]] = [real | imaginary] of the complex product
        self.register_buffer(
            "stage2", torch.cat([torch.cat([re, im], 1), torch.cat([-im, re], 1)]).float(),
            persistent=False,
        )  # fmt: skip
        self.register_buffer("window", window.detach().float().clone(), persistent=False)
        slots = torch.arange(n1 * k2)
        self.register_buffer("bins", (slots // k2) + n1 * (slots % k2), persistent=False)

    def rows(self, matrix: torch.Tensor) -> torch.Tensor:
        """``matrix`` ``[freqs, M]`` with its rows in :meth:`scrambled`'s order (zeros past
        Nyquist): ``scrambled(x) @ rows(m)`` equals the natural power spectrum ``@ m``."""
        if matrix.shape[0] != self.freqs:
            raise ValueError(f"expected {self.freqs} rows, got {matrix.shape[0]}")
        out = matrix.new_zeros(self.bins.shape[0], matrix.shape[1])
        valid = self.bins < self.freqs
        out[valid] = matrix[self.bins[valid]]
        return out

    def frames(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Centred, padded, windowed frames ``[B, T, n_fft]`` (strided slices: no gather)."""
        half = self.n_fft // 2
        x = F.pad(waveforms.unsqueeze(1), (half, half), mode=self.pad_mode).squeeze(1)
        length = int(x.shape[-1])  # fixed per export: the detector's window
        count = 1 + (length - self.n_fft) // self.hop_length
        if self.drop_last:
            count -= 1
        # Cut the signal into blocks of g = gcd(n_fft, hop) samples: frame t is blocks
        # t*s .. t*s + r - 1, i.e. r strided slices of the block tensor side by side.
        g = math.gcd(self.n_fft, self.hop_length)
        r, s = self.n_fft // g, self.hop_length // g
        blocks = x[:, : (length // g) * g].reshape(x.shape[0], -1, g)
        parts = [blocks[:, i : i + (count - 1) * s + 1 : s] for i in range(r)]
        return torch.cat(parts, dim=-1) * self.window

    def scrambled(self, waveforms: torch.Tensor) -> torch.Tensor:
        """Power in the stages' slot order ``[B, T, N1 * K2]`` (see :meth:`rows`)."""
        f = self.frames(waveforms)
        b, t = f.shape[0], f.shape[1]
        n1 = self.n1
        # stage 1: N1-point DFT over the slow index (sample n = N2 * n1 + n2)
        y = torch.matmul(self.stage1, f.reshape(b, t, n1, self.n2))  # [B, T, 2*N1, N2]
        yr, yi = y[:, :, :n1], y[:, :, n1:]
        wr, wi = self.twiddle_re, self.twiddle_im
        z = torch.cat([yr * wr - yi * wi, yr * wi + yi * wr], dim=-1)  # [B, T, N1, 2*N2]
        spec = torch.matmul(z, self.stage2)  # [B, T, N1, 2*K2]: bin k1 + N1 * k2
        re, im = spec[..., : self.k2], spec[..., self.k2 :]
        return (re * re + im * im).reshape(b, t, n1 * self.k2)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        """The natural power spectrum ``[B, freqs, frames]``, like ``AF.spectrogram``."""
        power = self.scrambled(waveforms.float())
        order = torch.argsort(self.bins)[: self.freqs]
        return power[..., order].transpose(1, 2)


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
