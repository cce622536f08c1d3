"""Training-time augmentation: speed, gain, RawBoost, noise, the telephone channel, VoIP codecs,
packet loss, jitter, low-pass.

Why these: the daemon hears calls, so the detector must not mistake a phone line's band limit,
G.711 quantisation, level changes, background noise or a lost packet for "synthetic". Each op
fires independently with its probability from
:class:`streamguard.training.config.AugmentConfig`, in the
order a call would apply them (talker -> room -> channel -> network):
speed -> gain -> RawBoost -> noise -> telephone band + 8 kHz G.711 round trip -> 3-4 kHz
low-pass -> a VoIP codec round trip (G.711, G.722, G.726, GSM, AMR-NB, Opus, Speex through
ffmpeg/sox pipes) -> packet loss (gaps, or a 1-10% frame loss rate) -> jitter-buffer slips.

RawBoost (Tak et al., ICASSP 2022) is data boosting for raw-waveform anti-spoofing: (1) linear
and non-linear convolutive noise (random multi-band FIR filters applied to powers of the
signal), (2) impulsive signal-dependent noise (a few percent of samples scaled at random),
(3) stationary signal-independent coloured noise at 10-40 dB SNR. It makes a detector stop
relying on one channel's or one generator's exact spectrum.

Every random draw comes from the ``torch.Generator`` passed in, so the same seed gives the same
output on any machine and in any DataLoader worker (the dataset seeds it per (seed, epoch, clip)).
The ops are plain functions of a 1-D float32 tensor; the output has the input's length.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
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


# --------------------------------------------------------------------------- RawBoost


def _multiband_fir(gen: torch.Generator, sample_rate: int, bands: int, order: int) -> torch.Tensor:
    """A random multi-band FIR (sum of windowed-sinc band-passes), ``order + 1`` taps."""
    taps = order + 1
    n = torch.arange(taps, dtype=torch.float32) - order / 2
    window = torch.hamming_window(taps, periodic=False)
    kernel = torch.zeros(taps)
    nyquist = sample_rate / 2
    for _ in range(bands):
        centre = _uniform(gen, 20.0, nyquist - 100.0)
        width = _uniform(gen, 100.0, 1000.0)
        low, high = max(1.0, centre - width / 2) / sample_rate, min(nyquist - 1, centre + width / 2)
        high /= sample_rate
        band = 2 * high * torch.sinc(2 * high * n) - 2 * low * torch.sinc(2 * low * n)
        kernel += band * window
    return kernel


def _fir(wave: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    return AF.fftconvolve(wave, kernel)[
        kernel.shape[0] // 2 : kernel.shape[0] // 2 + wave.shape[-1]
    ]


def _peak_normalise(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    peak = float(x.abs().max())
    return x if peak <= 0 else x * (float(like.abs().max()) / peak)


def rawboost_lnl(
    wave: torch.Tensor, gen: torch.Generator, sample_rate: int = 16_000
) -> torch.Tensor:
    """RawBoost 1: linear and non-linear convolutive noise (orders 1-5, 1-5 bands each)."""
    out = torch.zeros_like(wave)
    orders = int(torch.randint(1, 6, (), generator=gen))
    for power in range(1, orders + 1):
        kernel = _multiband_fir(
            gen, sample_rate, int(torch.randint(1, 6, (), generator=gen)),
            int(torch.randint(10, 101, (), generator=gen)),
        )  # fmt: skip
        gain = 10 ** (_uniform(gen, -5.0, 5.0) / 20) if power > 1 else 1.0
        out = out + gain * _fir(wave**power, kernel)
    return _peak_normalise(out - out.mean(), wave)


def rawboost_isd(
    wave: torch.Tensor, gen: torch.Generator, max_percent: float = 10.0
) -> torch.Tensor:
    """RawBoost 2: impulsive signal-dependent noise on up to ``max_percent``% of the samples."""
    n = wave.shape[-1]
    count = int(n * _uniform(gen, 0.0, max_percent) / 100)
    if count == 0:
        return wave
    out = wave.clone()
    index = torch.randperm(n, generator=gen)[:count]
    noise = 2 * torch.rand(count, generator=gen) - 1
    out[index] = out[index] + 2.0 * out[index] * noise
    return out


def rawboost_ssi(
    wave: torch.Tensor, gen: torch.Generator, sample_rate: int = 16_000
) -> torch.Tensor:
    """RawBoost 3: stationary coloured noise (filtered white noise) at 10-40 dB SNR."""
    kernel = _multiband_fir(
        gen, sample_rate, int(torch.randint(1, 6, (), generator=gen)),
        int(torch.randint(10, 101, (), generator=gen)),
    )  # fmt: skip
    noise = _fir(torch.randn(wave.shape[-1], generator=gen), kernel)
    return add_noise(wave, noise, _uniform(gen, 10.0, 40.0))


RAWBOOST = {1: rawboost_lnl, 2: rawboost_isd, 3: rawboost_ssi}


def rawboost(wave: torch.Tensor, gen: torch.Generator, algo: int, sample_rate: int = 16_000):
    """One RawBoost algorithm (1, 2, 3), or 4 = 1 then 2 then 3 (the paper's series)."""
    if algo == 4:
        return rawboost_ssi(
            rawboost_isd(rawboost_lnl(wave, gen, sample_rate), gen), gen, sample_rate
        )
    if algo == 2:
        return rawboost_isd(wave, gen)
    return RAWBOOST[algo](wave, gen, sample_rate)


# --------------------------------------------------------------------------- VoIP


#: Codec -> (narrow-band rate of the round trip, tool). G.711 uses streamguard's own codecs.
VOIP_CODECS: dict[str, tuple[int, str]] = {
    "mulaw": (8_000, "streamguard"),
    "alaw": (8_000, "streamguard"),
    "g722": (16_000, "ffmpeg"),
    "g726": (8_000, "ffmpeg"),
    "gsm": (8_000, "ffmpeg"),
    "opus": (8_000, "ffmpeg"),
    "speex": (8_000, "ffmpeg"),
    "amr-nb": (8_000, "sox"),
}


def missing_codec_tools(codecs_: list[str]) -> list[str]:
    """Codecs whose command-line tool (ffmpeg / sox) is not installed."""
    return [c for c in codecs_ if VOIP_CODECS[c][1] != "streamguard"
            and shutil.which(VOIP_CODECS[c][1]) is None]  # fmt: skip


def _pipe(cmd: list[str], data: bytes) -> bytes:
    done = subprocess.run(cmd, input=data, capture_output=True, timeout=60, check=False)
    if done.returncode != 0:
        tail = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise RuntimeError(f"{cmd[0]} failed: {tail[0]}")
    return done.stdout


def _raw_args(rate: int) -> list[str]:
    return ["-f", "s16le", "-ar", str(rate), "-ac", "1"]


def codec_round_trip(
    wave: torch.Tensor, sample_rate: int, codec: str, gen: torch.Generator
) -> torch.Tensor:
    """Encode and decode with a real VoIP codec at its own rate and back; same length.

    Bit rates are drawn where the codec has a choice (Opus 6-16 kb/s voip mode, G.726
    16-40 kb/s, AMR-NB modes 0-7). The round trip goes through pipes, no temporary files.
    """
    rate, tool = VOIP_CODECS[codec]
    narrow = AF.resample(wave, sample_rate, rate) if rate != sample_rate else wave
    narrow = narrow.clamp(-1.0, 1.0)
    if tool == "streamguard":
        decoded = codecs.decode(codec, codecs.encode(codec, narrow.numpy())).copy()
    else:
        pcm = codecs.encode("pcm_s16le", narrow.numpy())
        ff = ["ffmpeg", "-v", "error", "-nostdin"]
        if codec == "amr-nb":
            mode = int(torch.randint(0, 8, (), generator=gen))
            raw = ["-t", "raw", "-r", str(rate), "-e", "signed", "-b", "16", "-c", "1"]
            coded = _pipe(["sox", *raw, "-", "-C", str(mode), "-t", "amr-nb", "-"], pcm)
            out = _pipe(["sox", "-t", "amr-nb", "-", *raw, "-"], coded)
        else:
            encoder = {
                "g722": ["-c:a", "g722", "-f", "g722"],
                "g726": ["-c:a", "g726", "-b:a",
                         f"{[16, 24, 32, 40][int(torch.randint(0, 4, (), generator=gen))]}k",
                         "-f", "wav"],
                "gsm": ["-c:a", "libgsm", "-f", "gsm"],
                "opus": ["-c:a", "libopus", "-b:a",
                         f"{int(torch.randint(6, 17, (), generator=gen))}k",
                         "-application", "voip", "-f", "ogg"],
                "speex": ["-c:a", "libspeex", "-f", "ogg"],
            }[codec]  # fmt: skip
            coded = _pipe([*ff, *_raw_args(rate), "-i", "pipe:0", *encoder, "pipe:1"], pcm)
            fmt_in = ["-f", "g722"] if codec == "g722" else ["-f", "gsm"] if codec == "gsm" else []
            out = _pipe([*ff, *fmt_in, "-i", "pipe:0", *_raw_args(rate), "pipe:1"], coded)
        decoded = codecs.decode("pcm_s16le", out[: len(out) // 2 * 2]).copy()
    back = torch.from_numpy(np.asarray(decoded, dtype=np.float32))
    if rate != sample_rate:
        back = AF.resample(back, rate, sample_rate)
    return fit_length(back, wave.shape[-1])


def packet_loss_rate(
    wave: torch.Tensor, sample_rate: int, rate: float, gen: torch.Generator,
    frame_ms: float = 20.0, conceal: bool = False,
) -> torch.Tensor:  # fmt: skip
    """Lose each ``frame_ms`` packet with probability ``rate``: zeroed, or (``conceal``) the
    previous packet repeated, as a jitter buffer with basic loss concealment does."""
    frame = max(1, round(sample_rate * frame_ms / 1000.0))
    frames = wave.shape[-1] // frame
    lost = torch.rand(frames, generator=gen) < rate
    out = wave.clone()
    for i in torch.nonzero(lost).flatten().tolist():
        seg = slice(i * frame, (i + 1) * frame)
        out[seg] = out[(i - 1) * frame : i * frame] if conceal and i > 0 else 0.0
    return out


def jitter(
    wave: torch.Tensor, sample_rate: int, events: int, gen: torch.Generator,
    ms: tuple[float, float] = (5.0, 20.0),
) -> torch.Tensor:  # fmt: skip
    """Jitter-buffer slips: at ``events`` random points a few ms are dropped or repeated
    (the buffer shrinking or stretching), then the length is restored."""
    x = wave
    for _ in range(events):
        size = max(1, round(_uniform(gen, *ms) * sample_rate / 1000))
        if x.shape[-1] <= 2 * size:
            break
        at = int(torch.randint(size, x.shape[-1] - size, (), generator=gen))
        if _chance(gen, 0.5):
            x = torch.cat([x[:at], x[at + size :]])
        else:
            x = torch.cat([x[:at], x[at - size : at], x[at:]])
    return fit_length(x, wave.shape[-1])


def lowpass(wave: torch.Tensor, sample_rate: int, cutoff: float) -> torch.Tensor:
    """Two cascaded biquads (12 dB/octave each): a 3-4 kHz narrow-band channel edge."""
    return AF.lowpass_biquad(AF.lowpass_biquad(wave, sample_rate, cutoff), sample_rate, cutoff)


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
        if getattr(config, "codec_p", 0) > 0:
            missing = missing_codec_tools(list(config.codecs))
            if missing:
                from streamguard.errors import ConfigError

                raise ConfigError(
                    f"augment.codecs {', '.join(missing)} need ffmpeg/sox, which is not "
                    "installed (scripts/system-deps.sh), or drop them from augment.codecs"
                )

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
        # Issue #17's ops decide after the original five, and draw nothing when disabled, so
        # a recipe without them gives exactly the augmentations it gave before.
        do_boost, do_low, do_codec, do_jitter = (
            _chance(gen, p) for p in (cfg.rawboost_p, cfg.lowpass_p, cfg.codec_p, cfg.jitter_p)
        )
        if do_speed:
            index = int(torch.randint(len(cfg.speed_factors), (), generator=gen))
            x = speed_perturb(x, sr, cfg.speed_factors[index])
        if do_gain:
            x = apply_gain(x, _uniform(gen, *cfg.gain_db))
        if do_boost:
            pick = int(torch.randint(len(cfg.rawboost_algos), (), generator=gen))
            x = rawboost(x, gen, cfg.rawboost_algos[pick], sr).clamp(-1.0, 1.0)
        if do_noise:
            x = add_noise(x, self._noise(x.shape[-1], gen), _uniform(gen, *cfg.noise_snr_db))
        if do_tel:
            index = int(torch.randint(len(cfg.telephone_codecs), (), generator=gen))
            x = telephone(x, sr, cfg.telephone_codecs[index])
        if do_low:
            x = lowpass(x, sr, _uniform(gen, *cfg.lowpass_hz))
        if do_codec:
            codec = cfg.codecs[int(torch.randint(len(cfg.codecs), (), generator=gen))]
            x = codec_round_trip(x, sr, codec, gen)
        if do_loss:
            if cfg.packet_loss_rate is not None:
                rate = _uniform(gen, *cfg.packet_loss_rate)
                x = packet_loss_rate(x, sr, rate, gen, cfg.packet_ms, _chance(gen, 0.5))
            else:
                gaps = int(torch.randint(1, cfg.packet_loss_max_gaps + 1, (), generator=gen))
                x = packet_loss(x, sr, gaps, gen, cfg.packet_ms)
        if do_jitter:
            x = jitter(x, sr, int(torch.randint(1, cfg.jitter_events + 1, (), generator=gen)), gen)
        return x.contiguous()
