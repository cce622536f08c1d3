"""The training config schema (TOML), validated strictly.

Every model sets ``extra="forbid"`` so that a misspelt key (``learning_rate`` for ``lr``) fails
loudly instead of silently training with a default. Defaults are the seed model card's recipe
(AdamW 5e-5, wd 0.01, batch 24 x accumulation 2, 20 epochs, cosine warm restarts T_0=5,
T_mult=2, BCE on logits, 4 s at 16 kHz); the CPU-friendly starter config overrides a few of them.

Relative paths in a config file resolve against the config file's folder, so a config and its
data can be moved together.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from streamguard.errors import ConfigError
from streamguard.tomlfile import read_toml

SourceType = Literal["manifest", "asvspoof2019", "asvspoof2021", "itw", "folder"]
SUBSETS = ("train", "val", "test")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Strict):
    """One labelled data source; several mix into one training set."""

    type: SourceType
    path: Path  # manifest CSV / protocol file / meta.csv / folder
    # Folder holding the audio: ASVspoof protocols read <audio_root>/flac/<FILE>.flac (default:
    # the protocol's own folder); meta.csv and manifests resolve against their own folder.
    audio_root: Path | None = None
    weight: float = Field(default=1.0, gt=0)  # share of training draws (normalised over sources)
    # Split for rows that do not name one (manifest rows may carry their own subset column).
    # None = rows go to the pool that `data.val_fraction` splits into train/val.
    subset: Literal["train", "val", "test"] | None = None
    name: str | None = None  # source name in per-source metrics (default: derived from path)
    phases: list[str] | None = None  # ASVspoof 2021 only: keep these key "subset" values
    limit: int | None = Field(default=None, gt=0)  # keep the first N good rows (quick runs)
    # Generator families (manifest column "family") kept out of train and val: the rows stay
    # in test only. Leave-one-family-out runs set one family here.
    exclude_families: list[str] = Field(default_factory=list)


class DataConfig(_Strict):
    sources: list[SourceConfig] = Field(min_length=1)
    # Fraction of the unassigned pool held out for validation (the card used 80/20).
    val_fraction: float = Field(default=0.2, ge=0.0, lt=1.0)
    # Hold out whole speakers when rows carry speaker ids (no speaker leaks into validation).
    split_by_speaker: bool = True
    # "none" decodes every time; "memory" keeps each decoded clip as int16 in RAM; any other
    # string is a folder for a persistent .npy cache (survives runs, works with workers).
    cache: str = "memory"
    num_workers: int = Field(default=0, ge=0)
    # Draws per epoch; None = the number of training rows.
    samples_per_epoch: int | None = Field(default=None, gt=0)
    # Leave-one-family-out: generator families (manifest column "family") kept out of train
    # and val of every source (their test rows stay); `streamguard train --leave-out FAMILY`.
    leave_out: list[str] = Field(default_factory=list)


class SegmentConfig(_Strict):
    sample_rate: int = 16_000
    seconds: float = Field(default=4.0, gt=0)
    # Evaluation crop of clips longer than the window: "start" matches the seed card's
    # truncation (waveform[:, :4 s]); "center" avoids leading silence.
    eval_crop: Literal["start", "center"] = "start"

    @property
    def samples(self) -> int:
        return round(self.sample_rate * self.seconds)


class AugmentConfig(_Strict):
    """Each op fires independently with its probability (0 disables it)."""

    speed_p: float = Field(default=0.0, ge=0, le=1)
    speed_factors: list[float] = Field(default_factory=lambda: [0.9, 1.1])
    gain_p: float = Field(default=0.0, ge=0, le=1)
    gain_db: tuple[float, float] = (-6.0, 6.0)
    noise_p: float = Field(default=0.0, ge=0, le=1)
    noise_snr_db: tuple[float, float] = (5.0, 30.0)
    noise_dir: Path | None = None  # folder of noise clips; None = synthetic white/pink noise
    telephone_p: float = Field(default=0.0, ge=0, le=1)
    telephone_codecs: list[Literal["mulaw", "alaw"]] = Field(
        default_factory=lambda: ["mulaw", "alaw"]
    )
    packet_loss_p: float = Field(default=0.0, ge=0, le=1)
    packet_loss_max_gaps: int = Field(default=3, ge=1)
    packet_ms: float = Field(default=20.0, gt=0)
    # Issue #17: a packet loss *rate* (each packet lost with a probability drawn from this
    # range; half the time concealed by repeating the previous packet) instead of gaps.
    packet_loss_rate: tuple[float, float] | None = None
    rawboost_p: float = Field(default=0.0, ge=0, le=1)
    rawboost_algos: list[Literal[1, 2, 3, 4]] = Field(default_factory=lambda: [1, 2, 3])
    codec_p: float = Field(default=0.0, ge=0, le=1)
    codecs: list[Literal["mulaw", "alaw", "g722", "g726", "gsm", "opus", "speex", "amr-nb"]] = (
        Field(default_factory=lambda: ["g722", "gsm", "amr-nb", "opus"])
    )
    jitter_p: float = Field(default=0.0, ge=0, le=1)
    jitter_events: int = Field(default=3, ge=1)
    lowpass_p: float = Field(default=0.0, ge=0, le=1)
    lowpass_hz: tuple[float, float] = (3000.0, 4000.0)

    @field_validator("speed_factors")
    @classmethod
    def _positive_factors(cls, value: list[float]) -> list[float]:
        if not value or any(f <= 0 for f in value):
            raise ValueError("speed_factors must be a non-empty list of positive numbers")
        return value

    @field_validator("gain_db", "noise_snr_db", "lowpass_hz", "packet_loss_rate")
    @classmethod
    def _ordered_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and value[0] > value[1]:
            raise ValueError("a range must be [low, high] with low <= high")
        return value

    @property
    def enabled(self) -> bool:
        return any(
            p > 0
            for p in (self.speed_p, self.gain_p, self.noise_p, self.telephone_p, self.packet_loss_p,
                      self.rawboost_p, self.codec_p, self.jitter_p, self.lowpass_p)
        )  # fmt: skip


class OptimConfig(_Strict):
    lr: float = Field(default=5e-5, gt=0)
    weight_decay: float = Field(default=0.01, ge=0)
    batch_size: int = Field(default=24, ge=1)
    grad_accum: int = Field(default=2, ge=1)
    epochs: int = Field(default=20, ge=1)
    t0: int = Field(default=5, ge=1)  # CosineAnnealingWarmRestarts T_0 (epochs)
    t_mult: int = Field(default=2, ge=1)
    eta_min: float = Field(default=0.0, ge=0)
    max_grad_norm: float | None = Field(default=None, gt=0)
    # "auto": bf16 autocast on CUDA when supported, else fp16 + GradScaler; fp32 on CPU.
    precision: Literal["auto", "fp32", "fp16", "bf16"] = "auto"
    pos_weight: float | None = Field(default=None, gt=0)  # BCE weight of the fake class
    # "bce" (the card's) or "ocsoftmax" (one-class: real speech compact, training/losses.py;
    # the model is built with output = "cosine").
    loss: Literal["bce", "ocsoftmax"] = "bce"
    oc_margins: tuple[float, float] = (0.9, 0.2)  # OC-Softmax m_real, m_fake (cosines)
    oc_alpha: float = Field(default=20.0, gt=0)  # OC-Softmax scale inside the loss


class RunConfig(_Strict):
    seed: int = 0
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "cuda:1"
    num_threads: int | None = Field(default=None, ge=1)  # torch intra-op threads
    max_steps: int | None = Field(default=None, ge=1)  # optimizer steps, then stop cleanly
    max_minutes: float | None = Field(default=None, gt=0)  # wall-clock budget, then stop
    eval_batch_size: int = Field(default=32, ge=1)
    progress: bool = True  # tqdm bars
    out_dir: Path = Path("runs/train")


class ModelConfig(_Strict):
    architecture: str  # a name in streamguard.model.registry.ARCHITECTURES
    name: str = "streamguard-detector"
    params: dict[str, Any] = Field(default_factory=dict)  # merged over default_params()
    init_from: str | None = None  # a model spec whose weights start the run (fine-tuning)

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, value: str) -> str:
        from streamguard.model.registry import ARCHITECTURES

        if value not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {value!r} (known: {', '.join(ARCHITECTURES)})")
        return value


class FeaturesConfig(_Strict):
    """Train whisper-asp's back end from cached frozen-encoder features (training/features.py)."""

    dir: Path | None = None  # cache root; None = train end to end on waveforms
    crop: Literal["start", "center", "spread"] = "spread"
    crops: int = Field(default=2, ge=1)  # cached crops per clip (training draws one)
    batch_size: int = Field(default=16, ge=1)  # encoder batch while filling the cache
    # Keep loaded features in RAM after the first epoch (~0.8 MB a clip for whisper-base:
    # 4.2 GB for corpus v2's train+val); false reads them from the (page-cached) files each draw.
    in_memory: bool = True


class ExportConfig(_Strict):
    enabled: bool = True
    half: bool = False  # store fp16 weights
    # None = EER threshold on validation; else the threshold whose validation false-alarm
    # rate (real audio called fake) is at most this.
    target_far: float | None = Field(default=None, gt=0, lt=1)
    dir: Path | None = None  # default: <out_dir>/model
    limits: str | None = None  # extra text for MODEL_CARD.md's limitations section
    evaluate_test: bool = True  # score the test split after export (LOFO folds do their own)
    # Fit P(fake) = sigmoid(a * logit + b) on the validation windows (Platt scaling, classes
    # weighted equally) and store a, b with the model; false = the raw logit's sigmoid.
    calibrate_scores: bool = True


class TrainConfig(_Strict):
    model: ModelConfig
    data: DataConfig
    segment: SegmentConfig = Field(default_factory=SegmentConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    run: RunConfig = Field(default_factory=RunConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)

    @model_validator(mode="after")
    def _has_training_rows(self) -> TrainConfig:
        if all(s.subset in ("val", "test") for s in self.data.sources):
            raise ValueError("no data source can supply training rows (all are val/test)")
        return self


class _PathResolver:
    """Resolves relative paths against the config file's folder (after validation)."""

    def __init__(self, base: Path):
        self.base = base

    def __call__(self, path: Path | None) -> Path | None:
        if path is None:
            return None
        path = path.expanduser()
        return Path(os.path.normpath(path if path.is_absolute() else self.base / path))


def _format_error(exc: ValidationError, where: str) -> str:
    first = exc.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{where}: {loc}: {first['msg']}{more}"


def parse_config(data: dict[str, Any], *, base_dir: Path | None = None, where: str = "config"):
    """Validate a config dict; relative paths resolve against ``base_dir`` (default: cwd)."""
    try:
        config = TrainConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, where)) from None
    resolve = _PathResolver(base_dir or Path.cwd())
    for source in config.data.sources:
        source.path = resolve(source.path)
        source.audio_root = resolve(source.audio_root)
    config.augment.noise_dir = resolve(config.augment.noise_dir)
    config.run.out_dir = resolve(config.run.out_dir)
    config.export.dir = resolve(config.export.dir)
    config.features.dir = resolve(config.features.dir)
    cache = config.data.cache
    if cache not in ("none", "memory"):
        config.data.cache = str(resolve(Path(cache)))
    return config


def parse_override(text: str) -> tuple[str, Any]:
    """``"optim.lr=1e-4"`` -> ``("optim.lr", 1e-4)``; the value is read as a TOML value
    (numbers, booleans, ``[lists]``, ``"strings"``), else taken as a bare string."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. optim.lr=1e-4)")
    try:
        value = tomllib.loads(f"v = {raw.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set dotted keys (``run.max_minutes``) in a raw config dict before validation."""
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {dotted!r}: {part!r} is not a table")
            node = child
        node[leaf] = value
    return data


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> TrainConfig:
    """Read and validate a TOML training config (ConfigError with a one-line message).

    ``overrides`` (dotted keys) are applied before validation, so they are checked the same way.
    """
    path = Path(path)
    data = read_toml(path, "training config")
    apply_overrides(data, overrides or {})
    return parse_config(data, base_dir=path.resolve().parent, where=str(path))
