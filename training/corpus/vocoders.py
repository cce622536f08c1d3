"""Small neural vocoders trained on our own real speech: new synthetic families for corpus v3.

Why: a detector that has only heard formant, diphone, unit-selection, one VITS voice and two
signal-processing vocoders misses neural vocoders it has never heard (issue #17). The
anti-spoofing literature's "vocoded spoofed data" recipe makes fakes by copy-synthesis: real
speech -> mel spectrogram -> a neural vocoder -> waveform. Speaker, words, prosody and room stay
those of the real clip, so the only difference the detector can learn is the vocoder's own
artefacts, and every vocoder architecture is a family of its own. No package ships a neural
vocoder whose licence lets us generate training data with it (see training/corpus/README.md), so
we train two small ones ourselves on the real TRAIN split, on the CPU, for about an hour each:

* :class:`TinyHiFiGAN`: HiFi-GAN-style generator, transposed-convolution upsampling (8x8x4 = the
  hop of 256) with multi-receptive-field residual blocks; artefacts of learned upsampling
  (periodic "checkerboard" components at the upsampling rates).
* :class:`TinyVocos`: Vocos-style, a ConvNeXt backbone at frame rate and an inverse-STFT head
  that predicts log-magnitude and phase; artefacts of frame-wise phase prediction.

Both read the same log-mel front end (:class:`LogMel`: 80 Slaney mel bands 0-8 kHz, n_fft 1024,
hop 256 at 16 kHz) and train with a multi-resolution STFT loss plus a mel L1 loss. There is no
discriminator: an hour of CPU cannot train a GAN, and a non-adversarial vocoder (like Parallel
WaveGAN's generator trained on STFT losses alone) is a legitimate family with its own, stronger
artefacts. Checkpoints are safetensors (no pickle) with the config in their metadata.

Train (a CPU-time budget, resumable from the checkpoint it writes every ``--save-every`` steps)::

    nice -n 19 python training/corpus/vocoders.py train --arch hifigan \\
        --manifest training/corpus/v2/train.csv --out .corpus-v3/vocoders/hifigan-tiny.safetensors
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

SR = 16_000
ARCHS = ("hifigan", "vocos")


@dataclass
class VocoderConfig:
    """Everything needed to rebuild a model from a checkpoint (kept in its metadata)."""

    arch: str = "hifigan"
    n_mels: int = 80
    n_fft: int = 1024
    hop: int = 256
    channels: int = 128  # hifigan: width after the input conv; vocos: backbone width
    layers: int = 6  # vocos: ConvNeXt blocks
    rates: tuple[int, ...] = (8, 8, 4)  # hifigan: upsampling factors, product == hop

    def __post_init__(self) -> None:
        self.rates = tuple(int(r) for r in self.rates)
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, not {self.arch!r}")
        if self.arch == "hifigan" and math.prod(self.rates) != self.hop:
            raise ValueError(f"upsampling rates {self.rates} must multiply to the hop {self.hop}")


class LogMel(nn.Module):
    """log(mel magnitude), the vocoders' input and part of their loss."""

    def __init__(self, n_mels: int = 80, n_fft: int = 1024, hop: int = 256):
        super().__init__()
        import torchaudio

        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=SR, n_fft=n_fft, hop_length=hop, n_mels=n_mels, f_min=0.0,
            f_max=SR / 2, power=1.0, norm="slaney", mel_scale="slaney", center=True,
        )  # fmt: skip

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(self.mel(wav).clamp_min(1e-5))


class _ResBlock(nn.Module):
    """Two dilated convolutions with residual connections (HiFi-GAN's ResBlock2)."""

    def __init__(self, ch: int, kernel: int, dilations: tuple[int, ...] = (1, 3)):
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(ch, ch, kernel, dilation=d, padding=d * (kernel - 1) // 2) for d in dilations
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, 0.1))
        return x


class TinyHiFiGAN(nn.Module):
    """mel (B, n_mels, T) -> waveform (B, T * hop): transposed-conv upsampling + MRF blocks."""

    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        ch = cfg.channels
        self.pre = nn.Conv1d(cfg.n_mels, ch, 7, padding=3)
        self.ups = nn.ModuleList()
        self.mrfs = nn.ModuleList()
        for i, rate in enumerate(cfg.rates):
            cin, cout = ch >> i, ch >> (i + 1)
            k = 2 * rate
            self.ups.append(nn.ConvTranspose1d(cin, cout, k, rate, padding=(k - rate) // 2))
            self.mrfs.append(nn.ModuleList(_ResBlock(cout, kr) for kr in (3, 7)))
        self.post = nn.Conv1d(ch >> len(cfg.rates), 1, 7, padding=3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.pre(mel)
        for up, mrf in zip(self.ups, self.mrfs, strict=True):
            x = up(F.leaky_relu(x, 0.1))
            x = sum(block(x) for block in mrf) / len(mrf)
        return torch.tanh(self.post(F.leaky_relu(x, 0.1))).squeeze(1)


class _ConvNeXtBlock(nn.Module):
    def __init__(self, dim: int, scale: float):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, 3 * dim)
        self.pw2 = nn.Linear(3 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm(self.dw(x).transpose(1, 2))
        y = self.gamma * self.pw2(F.gelu(self.pw1(y)))
        return x + y.transpose(1, 2)


class TinyVocos(nn.Module):
    """mel (B, n_mels, T) -> waveform (B, (T - 1) * hop): ConvNeXt + magnitude/phase iSTFT head."""

    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        dim = cfg.channels
        self.n_fft, self.hop = cfg.n_fft, cfg.hop
        self.embed = nn.Conv1d(cfg.n_mels, dim, 7, padding=3)
        self.norm = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(_ConvNeXtBlock(dim, 1 / cfg.layers) for _ in range(cfg.layers))
        self.final_norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, cfg.n_fft + 2)
        self.register_buffer("window", torch.hann_window(cfg.n_fft), persistent=False)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.embed(mel).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        h = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2)
        log_mag, phase = h.chunk(2, dim=1)
        mag = torch.exp(log_mag.clamp(max=math.log(100.0)))
        spec = torch.complex(mag * torch.cos(phase), mag * torch.sin(phase))
        return torch.istft(spec, self.n_fft, self.hop, self.n_fft, window=self.window, center=True)


def build_model(cfg: VocoderConfig) -> nn.Module:
    return TinyHiFiGAN(cfg) if cfg.arch == "hifigan" else TinyVocos(cfg)


# ----------------------------------------------------------------------------- loss


class MultiResolutionSTFTLoss(nn.Module):
    """Spectral convergence + log-magnitude L1 at three STFT resolutions (Parallel WaveGAN)."""

    RESOLUTIONS = ((256, 64), (512, 128), (1024, 256))

    def __init__(self):
        super().__init__()
        for n_fft, _ in self.RESOLUTIONS:
            self.register_buffer(f"win{n_fft}", torch.hann_window(n_fft), persistent=False)

    def forward(self, y: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        total = y.new_zeros(())
        for n_fft, hop in self.RESOLUTIONS:
            window = getattr(self, f"win{n_fft}")
            a = torch.stft(y, n_fft, hop, window=window, return_complex=True).abs() + 1e-7
            b = torch.stft(target, n_fft, hop, window=window, return_complex=True).abs() + 1e-7
            sc = torch.linalg.norm(b - a) / torch.linalg.norm(b)
            total = total + sc + F.l1_loss(torch.log(a), torch.log(b))
        return total / len(self.RESOLUTIONS)


def vocoder_loss(model: nn.Module, logmel: LogMel, mrstft: nn.Module, wav: torch.Tensor):
    """(loss, mel L1) of one batch of real segments (B, N), N a multiple of the hop."""
    mel = logmel(wav)
    y = model(mel)[..., : wav.shape[-1]]
    y = F.pad(y, (0, wav.shape[-1] - y.shape[-1]))
    mel_l1 = F.l1_loss(logmel(y), mel)
    return mrstft(y, wav) + mel_l1, mel_l1


# ----------------------------------------------------------------------------- checkpoints


def save(model: nn.Module, cfg: VocoderConfig, path: Path, **info) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"config": json.dumps(asdict(cfg)), **{k: str(v) for k, v in info.items()}}
    tmp = path.with_suffix(".tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp), metadata=meta)
    os.replace(tmp, path)


def load(path: Path) -> tuple[nn.Module, VocoderConfig, dict]:
    """A model from a safetensors checkpoint (no pickle), in eval mode, and its metadata."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as fh:
        meta = dict(fh.metadata() or {})
    cfg = VocoderConfig(**json.loads(meta["config"]))
    model = build_model(cfg)
    model.load_state_dict(load_file(str(path)))
    return model.eval(), cfg, meta


@torch.no_grad()
def copy_synthesis(model: nn.Module, cfg: VocoderConfig, x: np.ndarray) -> np.ndarray:
    """Real 16 kHz speech -> log-mel -> the vocoder -> 16 kHz speech of the same length."""
    logmel = LogMel(cfg.n_mels, cfg.n_fft, cfg.hop)
    wav = torch.from_numpy(np.asarray(x, np.float32))[None]
    y = model(logmel(wav))[0, : wav.shape[-1]]
    y = F.pad(y, (0, wav.shape[-1] - y.shape[-1]))
    return y.numpy().astype(np.float32)


# ----------------------------------------------------------------------------- training


def read_training_audio(manifest: Path, limit_s: float = 4 * 3600) -> list[np.ndarray]:
    """The real, clean, train-split clips of a manifest (paths relative to it), as int16."""
    import soundfile as sf

    clips, seconds = [], 0.0
    with manifest.open(newline="", encoding="utf-8") as fh:
        rows = [
            r for r in csv.DictReader(fh)
            if r["label"] == "real" and r["subset"] == "train" and r["condition"] == "clean"
            and r.get("processing", "none") in ("", "none")
        ]  # fmt: skip
    for row in rows:
        path = Path(row["path"])
        path = path if path.is_absolute() else manifest.parent / path
        x, sr = sf.read(str(path), dtype="int16")
        if sr != SR or x.ndim != 1:
            raise ValueError(f"{path}: expected 16 kHz mono, got {sr} Hz {x.shape}")
        clips.append(x)
        seconds += len(x) / SR
        if seconds >= limit_s:
            break
    return clips


def random_batch(clips: list[np.ndarray], rng: np.random.Generator, batch: int, n: int):
    """``batch`` random ``n``-sample segments (clips shorter than ``n`` are zero-padded)."""
    out = np.zeros((batch, n), np.float32)
    for i in range(batch):
        x = clips[int(rng.integers(len(clips)))]
        start = int(rng.integers(0, max(1, len(x) - n + 1)))
        seg = x[start : start + n].astype(np.float32) / 32768.0
        out[i, : len(seg)] = seg
    return torch.from_numpy(out)


def train(
    clips: list[np.ndarray],
    cfg: VocoderConfig,
    out: Path,
    *,
    max_steps: int = 100_000,
    cpu_seconds: float = 3600.0,
    batch: int = 16,
    segment: int = 8192,
    lr: float = 2e-3,
    seed: int = 0,
    save_every: int = 200,
    log_every: int = 50,
) -> dict:
    """Train until ``max_steps`` or ``cpu_seconds`` of this process's CPU time; resumes from
    ``out`` if it exists (weights and step count; the optimiser starts afresh)."""
    torch.manual_seed(seed)
    model = build_model(cfg)
    step = 0
    if out.is_file():
        model, cfg, meta = load(out)
        model.train()
        step = int(meta.get("step", 0))
        log(f"resuming {out} at step {step}")
    logmel, mrstft = LogMel(cfg.n_mels, cfg.n_fft, cfg.hop), MultiResolutionSTFTLoss()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.8, 0.99), weight_decay=0.0)
    rng = np.random.default_rng(seed + step)
    cpu0, wall0 = time.process_time(), time.time()
    history: list[float] = []
    loss = mel_l1 = torch.zeros(())
    first_step = step
    while step < max_steps and time.process_time() - cpu0 < cpu_seconds:
        # Cosine decay over the budget's steps is unknown in advance: decay by CPU time used.
        frac = min(1.0, (time.process_time() - cpu0) / max(cpu_seconds, 1e-9))
        for group in opt.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
        wav = random_batch(clips, rng, batch, segment)
        loss, mel_l1 = vocoder_loss(model, logmel, mrstft, wav)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        step += 1
        history.append(mel_l1.item())
        if step % log_every == 0:
            recent = np.mean(history[-log_every:])
            log(
                f"{cfg.arch} step {step} loss {loss.item():.3f} mel-L1 {recent:.3f} "
                f"cpu {time.process_time() - cpu0:.0f}s wall {time.time() - wall0:.0f}s"
            )
        if step % save_every == 0:
            save(model, cfg, out, step=step, mel_l1=f"{np.mean(history[-log_every:]):.4f}")
    summary = {
        "arch": cfg.arch, "steps": step, "steps_this_run": step - first_step,
        "cpu_s": round(time.process_time() - cpu0, 1), "wall_s": round(time.time() - wall0, 1),
        "final_loss": loss.item(), "mel_l1_last": float(np.mean(history[-log_every:]))
        if history else float("nan"),
        "params": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip
    save(model, cfg, out, step=step, mel_l1=f"{summary['mel_l1_last']:.4f}")
    return summary


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one vocoder on a manifest's real clean train clips")
    t.add_argument("--arch", choices=ARCHS, required=True)
    t.add_argument("--manifest", type=Path, required=True, action="append",
                   help="manifest(s) with paths relative to them (repeatable)")  # fmt: skip
    t.add_argument("--out", type=Path, required=True, help="checkpoint (.safetensors)")
    t.add_argument("--cpu-seconds", type=float, default=3600.0)
    t.add_argument("--max-steps", type=int, default=100_000)
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    clips = [c for m in args.manifest for c in read_training_audio(m)]
    if not clips:
        log("no real clean train clips in the manifest(s)")
        return 1
    log(f"{len(clips)} clips, {sum(len(c) for c in clips) / SR / 3600:.2f} h of real train speech")
    cfg = VocoderConfig(arch=args.arch, channels=128 if args.arch == "hifigan" else 192)
    summary = train(clips, cfg, args.out, max_steps=args.max_steps, cpu_seconds=args.cpu_seconds,
                    batch=args.batch, seed=args.seed)  # fmt: skip
    summary["train_hours"] = round(sum(len(c) for c in clips) / SR / 3600, 3)
    args.out.with_suffix(".json").write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
