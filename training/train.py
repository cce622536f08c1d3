"""The training loop: the seed card's recipe for any streamguard architecture.

``train(config)`` builds the module with ``streamguard.model.build_module`` (the very modules the
daemon serves), mixes the configured sources with per-source weights, trains with AdamW +
CosineAnnealingWarmRestarts (stepped fractionally after every optimiser step, so T_0 counts
epochs) on BCE-with-logits, validates every epoch, keeps the epoch with the lowest validation EER
(ties: lower validation loss) and exports it with its calibrated threshold (training/export.py).

Output folder (``run.out_dir``)::

    config.json              the resolved config of this run
    metrics.jsonl / .csv     one row per epoch
    problems.txt             every skipped row/clip with file:line and why
    checkpoints/last.safetensors + last.state.pt   resume point (weights | optimiser etc.)
    checkpoints/best.safetensors                   weights of the best epoch so far
    model/                   the exported best model (config.json, model.safetensors, card)
    eval/                    per-subset metrics + plots of the best model on val (and test)

``state.pt`` holds only tensors and plain containers, so resuming uses
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamguard.errors import ConfigError
from streamguard.training.config import TrainConfig
from streamguard.training.data import (
    ClipStore,
    Example,
    Problem,
    SegmentDataset,
    class_counts,
    load_sources,
    sampling_weights,
)

log = logging.getLogger(__name__)

CSV_FIELDS = (
    "epoch",
    "global_step",
    "lr",
    "train_loss",
    "val_loss",
    "val_eer",
    "val_eer_threshold",
    "val_auc",
    "val_accuracy",
    "seconds",
    "failed_clips",
    "best",
)


# --------------------------------------------------------------------------- set-up helpers


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_train_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"invalid run.device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"run.device {device!r} asks for CUDA, which is not available")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device`` (None = plain fp32).

    ``auto`` means bf16 on CUDA cards that support it (no loss scaling needed), fp16 with a
    GradScaler on older cards, fp32 on the CPU (CPU autocast is slower than fp32 here).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device.type != "cuda":
            raise ConfigError("optim.precision fp16 needs CUDA (use bf16 or fp32 on the CPU)")
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def build_training_module(config: TrainConfig) -> tuple[nn.Module, dict[str, Any]]:
    """A fresh module from the config, or the weights of ``model.init_from`` to fine-tune."""
    from streamguard.model import build_module, load_model

    mcfg = config.model
    if mcfg.init_from:
        if mcfg.params:
            raise ConfigError("model.params cannot be combined with model.init_from")
        loaded = load_model(mcfg.init_from, device="cpu")
        if loaded.detector.info.architecture != mcfg.architecture:
            raise ConfigError(
                f"model.init_from is a {loaded.detector.info.architecture} model, "
                f"not {mcfg.architecture}"
            )
        if config.optim.loss == "ocsoftmax" and loaded.params.get("output") != "cosine":
            raise ConfigError("optim.loss ocsoftmax needs a model with output = 'cosine'")
        module = loaded.detector.module.float()
        return module.train(), dict(loaded.params)
    params = dict(mcfg.params)
    if config.optim.loss == "ocsoftmax":
        params["output"] = "cosine"  # OC-Softmax scores the cosine to the real-speech direction
    module = build_module(mcfg.architecture, params)
    return module, dict(module.streamguard_params)


# --------------------------------------------------------------------------- the optimiser loop


class Trainer:
    """AdamW + warm restarts + BCE over one module, with gradient accumulation and AMP.

    ``step(waves, labels)`` is one micro-batch; every ``grad_accum`` micro-batches it takes an
    optimiser step. Tests drive it directly on a fixed batch.
    """

    def __init__(
        self,
        module: nn.Module,
        optim_cfg,
        *,
        device: torch.device | str = "cpu",
        steps_per_epoch: int = 1,
        criterion: nn.Module | None = None,
    ):
        self.cfg = optim_cfg
        self.device = torch.device(device)
        self.module = module.to(self.device)
        self.params = [p for p in self.module.parameters() if p.requires_grad]
        if not self.params:
            raise ConfigError("the model has no trainable parameters")
        self.optimizer = torch.optim.AdamW(
            self.params, lr=optim_cfg.lr, weight_decay=optim_cfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            self.optimizer, T_0=optim_cfg.t0, T_mult=optim_cfg.t_mult, eta_min=optim_cfg.eta_min
        )
        self.amp_dtype = autocast_dtype(optim_cfg.precision, self.device)
        self.scaler = torch.amp.GradScaler(
            "cuda", enabled=self.amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        if criterion is None:
            from streamguard.training.losses import make_loss

            criterion = make_loss(optim_cfg, {}, self.device)
        self.criterion = criterion
        self.steps_per_epoch = max(1, steps_per_epoch)
        self.epoch = 0
        self.step_in_epoch = 0
        self.global_step = 0
        self.micro = 0

    def autocast(self):
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def logits(self, waves: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.module(waves.to(self.device, non_blocking=True)).float().reshape(-1)

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.criterion(logits, labels.to(self.device).float().reshape(-1))

    def start_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.step_in_epoch = 0
        self.module.train()

    def step(self, waves: torch.Tensor, labels: torch.Tensor) -> tuple[float, bool]:
        """One micro-batch: ``(loss, whether an optimiser step was taken)``."""
        loss = self.loss(self.logits(waves), labels)
        if not torch.isfinite(loss):
            self.optimizer.zero_grad(set_to_none=True)
            self.micro = 0
            log.warning("non-finite loss at step %d; batch skipped", self.global_step)
            return float("nan"), False
        self.scaler.scale(loss / self.cfg.grad_accum).backward()
        self.micro += 1
        if self.micro >= self.cfg.grad_accum:
            self.optimizer_step()
            return float(loss.detach()), True
        return float(loss.detach()), False

    def optimizer_step(self) -> None:
        """Apply the accumulated gradients (also used to flush a partial accumulation)."""
        if self.micro == 0:
            return
        if self.cfg.max_grad_norm:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.cfg.max_grad_norm)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.micro = 0
        self.step_in_epoch += 1
        self.global_step += 1
        self.scheduler.step(self.epoch + min(1.0, self.step_in_epoch / self.steps_per_epoch))

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "global_step": self.global_step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.global_step = int(state["global_step"])


@torch.no_grad()
def predict(
    module: nn.Module,
    dataset: SegmentDataset,
    *,
    batch_size: int = 32,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
    progress: bool = False,
    desc: str = "scoring",
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(logits, labels, example indices)`` for every clip of an evaluation dataset."""
    from tqdm.auto import tqdm

    device = torch.device(device)
    was_training = module.training
    module.eval()
    out_logits, out_labels, out_index = [], [], []
    batches = range(0, len(dataset), batch_size)
    try:
        for start in tqdm(batches, desc=desc, disable=not progress, leave=False, unit="batch"):
            items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
            waves = torch.stack([w for w, _, _ in items]).to(device)
            with torch.autocast(
                device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
            ):
                logits = module(waves).float().reshape(-1)
            out_logits.append(logits.cpu().numpy())
            out_labels.extend(float(lab) for _, lab, _ in items)
            out_index.extend(int(i) for _, _, i in items)
    finally:
        module.train(was_training)
    return (
        np.concatenate(out_logits) if out_logits else np.zeros(0, np.float32),
        np.asarray(out_labels, dtype=np.int64),
        np.asarray(out_index, dtype=np.int64),
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class WeightedDraws(torch.utils.data.Sampler):
    """``num_samples`` draws with replacement by weight, as ``(clip index, draw number)`` keys.

    Equivalent to WeightedRandomSampler, but each draw carries its number so a clip drawn twice
    in one epoch gets two different crops/augmentations; seeded per epoch for resumable runs.
    """

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.num_samples = num_samples
        self.seed = seed

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        gen = torch.Generator().manual_seed(self.seed)
        picks = torch.multinomial(self.weights, self.num_samples, True, generator=gen)
        yield from ((int(i), k) for k, i in enumerate(picks.tolist()))


# --------------------------------------------------------------------------- checkpoints


def _save_weights(module: nn.Module, path: Path) -> None:
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp))
    tmp.replace(path)


def _load_weights(module: nn.Module, path: Path) -> None:
    """Strict, with a one-line ModelError when the checkpoint is of another shape."""
    from safetensors.torch import load_file

    from streamguard.model.weights import apply_state_dict

    apply_state_dict(module, load_file(str(path), device="cpu"), source=str(path), what="run's")


@dataclass
class TrainResult:
    out_dir: Path
    best_epoch: int | None
    best_val_eer: float | None
    history: list[dict[str, Any]] = field(default_factory=list)
    export_dir: Path | None = None
    stopped: str = "epochs"  # "epochs" | "max_steps" | "max_minutes"
    problems: list[Problem] = field(default_factory=list)


def _better(record: dict[str, Any], best: dict[str, Any] | None) -> bool:
    if best is None:
        return True

    def key(r: dict[str, Any]) -> tuple[float, float]:
        eer = r.get("val_eer")
        loss = r.get("val_loss")
        return (
            eer if eer is not None else math.inf,
            loss if loss is not None and math.isfinite(loss) else math.inf,
        )

    return key(record) < key(best)


def _write_record(out_dir: Path, record: dict[str, Any]) -> None:
    with (out_dir / "metrics.jsonl").open("a") as fh:
        fh.write(json.dumps(record) + "\n")
    csv_path = out_dir / "metrics.csv"
    new = not csv_path.exists()
    with csv_path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerow(record)


# --------------------------------------------------------------------------- train()


def _stop_reason(run: Any, global_step: int, started: float) -> str:
    """``"max_steps"`` / ``"max_minutes"`` once a budget is spent, else ``"epochs"``."""
    if run.max_steps and global_step >= run.max_steps:
        return "max_steps"
    if run.max_minutes and time.monotonic() - started >= run.max_minutes * 60:
        return "max_minutes"
    return "epochs"


@dataclass
class RunData:
    """The run's clips after reading and decoding: splits, the decode cache, skipped rows."""

    splits: Any  # streamguard.training.data.DataSplits
    store: ClipStore
    problems: list[Problem]
    counts: dict[str, int]


@dataclass
class TrainingSets:
    """What the epochs iterate: the datasets, their draw weights, and the network that trains
    (the whole module, or whisper-asp's head when training from cached features)."""

    train: Any
    val: Any | None
    weights: np.ndarray
    draws: int
    network: nn.Module
    features: Any | None = None  # the FeatureCache when training from cached features


@dataclass
class RunState:
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None
    start_epoch: int = 0


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Run the configured training; returns where everything went and the best epoch."""
    run = config.run
    out_dir, ckpt_dir = _prepare_run_dir(config, resume)
    seed_everything(run.seed)
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    device = resolve_train_device(run.device)
    data = _load_data(config, out_dir, echo)
    module, params = build_training_module(config)
    sets = _datasets(config, data, module, echo)
    steps_per_epoch = max(
        1, math.ceil(math.ceil(sets.draws / config.optim.batch_size) / config.optim.grad_accum)
    )
    from streamguard.training.losses import make_loss

    trainer = Trainer(
        sets.network, config.optim, device=device, steps_per_epoch=steps_per_epoch,
        criterion=make_loss(config.optim, params, device),
    )  # fmt: skip
    state = _restore(trainer, ckpt_dir, resume, echo)
    stopped = _run_epochs(config, trainer, sets, state, out_dir, echo)
    _record_failures(sets.train, data, out_dir, echo)
    best = state.best
    result = TrainResult(
        out_dir=out_dir,
        best_epoch=best["epoch"] if best else None,
        best_val_eer=best.get("val_eer") if best else None,
        history=state.history,
        stopped=stopped,
        problems=data.problems,
    )
    if best is None:
        return result
    _load_weights(trainer.module, ckpt_dir / "best.safetensors")
    if config.export.enabled:
        from streamguard.training.export import export_trained

        result.export_dir = export_trained(
            config,
            module.cpu().eval(),
            params,
            val=data.splits.val,
            test=data.splits.test,
            store=data.store,
            history=state.history,
            best=best,
            train_counts=data.counts,
            train_sources=examples_summary(data.splits.train),
            echo=echo,
            scorer=_cached_scorer(sets.features),
        )
    return result


def _cached_scorer(cache):
    """With a feature cache, windows are scored from cached encoder states (computed once)."""
    if cache is None:
        return None
    from streamguard.training.features import CachedWindowsDetector

    return lambda module, info: CachedWindowsDetector(module, info, cache)


def _prepare_run_dir(config: TrainConfig, resume: bool) -> tuple[Path, Path]:
    """The run folder (refusing to overwrite a run unless resuming) and its config.json."""
    out_dir = Path(config.run.out_dir)
    ckpt_dir = out_dir / "checkpoints"
    if not resume and (ckpt_dir / "last.state.pt").exists():
        raise ConfigError(
            f"{out_dir} already holds a run; pass --resume to continue it or --out for a new one"
        )
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:  # --out names a file, or a folder we may not write
        raise ConfigError(
            f"cannot use {out_dir} as the run folder: {exc.strerror or exc}"
        ) from None
    (out_dir / "config.json").write_text(config.model_dump_json(indent=2) + "\n")
    return out_dir, ckpt_dir


def _load_data(config: TrainConfig, out_dir: Path, echo: Callable[[str], None]) -> RunData:
    """Read the sources, decode (and cache) train/val, report skipped rows."""
    from streamguard.training.data import summarise_problems

    run = config.run
    splits = load_sources(config.data)
    store = ClipStore(config.segment.sample_rate, config.data.cache)
    problems = list(splits.problems)
    if config.data.cache != "none" and config.features.dir is None:
        splits.train, bad = store.preload(splits.train, progress=run.progress, desc="decode train")
        problems += bad
        splits.val, bad = store.preload(splits.val, progress=run.progress, desc="decode val")
        problems += bad
    (out_dir / "problems.txt").write_text("".join(f"{p}\n" for p in problems))
    if problems:
        echo(summarise_problems(problems) + f"\n(all in {out_dir / 'problems.txt'})")
    if not splits.train:
        raise ConfigError("no readable training clips (see problems.txt)")
    counts = class_counts(splits.train)
    if 0 in counts.values():
        raise ConfigError(f"the training set needs both classes, got {counts}")
    left_out = f"; left out: {', '.join(config.data.leave_out)}" if config.data.leave_out else ""
    echo(
        f"train: {len(splits.train)} clips {counts}; val: {len(splits.val)} clips "
        f"{class_counts(splits.val)}; test: {len(splits.test)} clips{left_out}"
    )
    return RunData(splits, store, problems, counts)


def _datasets(
    config: TrainConfig, data: RunData, module: nn.Module, echo: Callable[[str], None]
) -> TrainingSets:
    """Waveform segments (with augmentation), or cached encoder features (``[features] dir``)."""
    from streamguard.training.augment import Augmenter

    run, splits = config.run, data.splits
    weights = sampling_weights(splits.train, [s.weight for s in config.data.sources])
    draws = config.data.samples_per_epoch or len(splits.train)
    if config.features.dir is not None:
        return _feature_sets(config, data, module, weights, draws, echo)
    samples = config.segment.samples
    augmenter = Augmenter(config.augment, config.segment.sample_rate)
    train_set = SegmentDataset(
        splits.train, data.store, samples, train=True,
        augmenter=augmenter if config.augment.enabled else None, seed=run.seed,
    )  # fmt: skip
    val_set = (
        SegmentDataset(
            splits.val, data.store, samples, train=False, eval_crop=config.segment.eval_crop
        )
        if splits.val
        else None
    )
    if val_set is None:
        echo("warning: no validation clips; the last epoch is exported (threshold 0.5)")
    return TrainingSets(train_set, val_set, weights, draws, module)


def _feature_sets(config, data, module, weights, draws, echo) -> TrainingSets:
    """Fill the feature cache for train + val, then datasets of cached features; the network
    that trains is the module's head (the frozen encoder never runs in the epochs)."""
    from streamguard.training.features import CachedFeatureDataset, CropPolicy, cache_for

    if config.model.architecture != "whisper-asp":
        raise ConfigError("[features] dir trains whisper-asp only (a frozen encoder's features)")
    if config.augment.enabled:
        echo("note: [augment] does not apply to cached features (fixed crops); ignored")
    fcfg, splits = config.features, data.splits
    policy = CropPolicy(
        seconds=config.segment.seconds, mode=fcfg.crop, crops=fcfg.crops,
        sample_rate=config.segment.sample_rate,
    )  # fmt: skip
    cache = cache_for(fcfg.dir, module, policy, config.model.params)
    n_states = len(module.encoder.blocks) + 1
    splits.train, bad = cache.fill(splits.train, batch_size=fcfg.batch_size,
                                   progress=config.run.progress, echo=echo)  # fmt: skip
    data.problems += bad
    splits.val, bad = cache.fill(splits.val, batch_size=fcfg.batch_size,
                                 progress=config.run.progress, echo=echo)  # fmt: skip
    data.problems += bad
    if not splits.train:
        raise ConfigError("no training clip has features (see problems.txt)")
    weights = sampling_weights(splits.train, [s.weight for s in config.data.sources])
    memory = fcfg.in_memory
    train_set = CachedFeatureDataset(
        splits.train, cache, train=True, seed=config.run.seed, memory=memory, n_states=n_states
    )
    val_set = (
        CachedFeatureDataset(splits.val, cache, train=False, memory=memory, n_states=n_states)
        if splits.val
        else None
    )
    return TrainingSets(train_set, val_set, weights, draws, module.head, features=cache)


def _restore(trainer: Trainer, ckpt_dir: Path, resume: bool, echo) -> RunState:
    """The last checkpoint's weights, optimiser state and history (``--resume``)."""
    if not resume:
        return RunState()
    if not (ckpt_dir / "last.state.pt").exists():
        echo(f"nothing to resume in {ckpt_dir}; starting a new run")
        return RunState()
    from streamguard.errors import ModelError

    try:
        _load_weights(trainer.module, ckpt_dir / "last.safetensors")
    except ModelError as exc:
        raise ConfigError(
            f"cannot resume {ckpt_dir.parent}: its checkpoint does not fit the configured model "
            f"({exc}); resume with the run's own config or start a new run with --out"
        ) from None
    state = torch.load(ckpt_dir / "last.state.pt", map_location=trainer.device, weights_only=True)
    trainer.load_state_dict(state["trainer"])
    start = int(state["epoch"]) + 1
    echo(f"resuming after epoch {start} (step {trainer.global_step})")
    return RunState(
        history=json.loads(state["history"]),
        best=json.loads(state["best"]) if state.get("best") else None,
        start_epoch=start,
    )


def _run_epochs(
    config: TrainConfig, trainer: Trainer, sets: TrainingSets, state: RunState, out_dir: Path,
    echo: Callable[[str], None],
) -> str:  # fmt: skip
    """Train epoch by epoch until the epochs or a budget run out; returns why it stopped."""
    run = config.run
    started = time.monotonic()
    stopped = "epochs"
    for epoch in range(state.start_epoch, config.optim.epochs):
        if stopped != "epochs":
            break
        epoch_start = time.monotonic()
        losses, stopped = _train_one_epoch(config, trainer, sets, epoch, started)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": trainer.global_step,
            "lr": trainer.lr,
            "train_loss": float(np.mean(losses)) if losses else None,
        }
        record.update(_validate(trainer, sets.val, run))
        record["seconds"] = round(time.monotonic() - epoch_start, 2)
        record["failed_clips"] = len(sets.train.failures)
        record["best"] = _better(record, state.best) if sets.val is not None else True
        _checkpoint(trainer, state, record, epoch, out_dir)
        echo(_epoch_line(record))
    return stopped


def _train_one_epoch(config, trainer: Trainer, sets: TrainingSets, epoch: int, started: float):
    """One pass of weighted draws; ``(losses, stop reason)``."""
    from tqdm.auto import tqdm

    run = config.run
    trainer.start_epoch(epoch)
    sets.train.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(
        sets.train,
        batch_size=config.optim.batch_size,
        sampler=WeightedDraws(sets.weights, sets.draws, seed=run.seed * 100_003 + epoch),
        num_workers=config.data.num_workers if sets.features is None else 0,
        pin_memory=trainer.device.type == "cuda",
        drop_last=False,
    )
    losses: list[float] = []
    stopped = "epochs"
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.optim.epochs}", disable=not run.progress)
    for inputs, labels, _ in bar:
        loss, stepped = trainer.step(inputs, labels)
        if math.isfinite(loss):
            losses.append(loss)
        bar.set_postfix(loss=f"{np.mean(losses[-50:]) if losses else float('nan'):.4f}")
        if stepped:
            stopped = _stop_reason(run, trainer.global_step, started)
            if stopped != "epochs":
                break
    bar.close()
    trainer.optimizer_step()  # flush a partial accumulation at the end of the epoch
    # The flush is a step too: a small set (one partial batch per epoch) only steps here.
    return losses, _stop_reason(run, trainer.global_step, started)


def _checkpoint(
    trainer: Trainer, state: RunState, record: dict[str, Any], epoch: int, out_dir: Path
) -> None:
    """Log the epoch, keep the best weights, write the resume point."""
    ckpt_dir = out_dir / "checkpoints"
    if record["best"]:
        state.best = dict(record)
        _save_weights(trainer.module, ckpt_dir / "best.safetensors")
    state.history.append(record)
    _write_record(out_dir, record)
    _save_weights(trainer.module, ckpt_dir / "last.safetensors")
    torch.save(
        {
            "trainer": trainer.state_dict(),
            "epoch": epoch,
            "history": json.dumps(state.history),
            "best": json.dumps(state.best) if state.best else "",
        },
        ckpt_dir / "last.state.pt",
    )


def _record_failures(train_set, data: RunData, out_dir: Path, echo) -> None:
    for index, reason in sorted(train_set.failures.items()):
        data.problems.append(Problem(data.splits.train[index].origin, reason))
    if train_set.failures:
        (out_dir / "problems.txt").write_text("".join(f"{p}\n" for p in data.problems))
        echo(f"{len(train_set.failures)} clips could not be decoded during training (skipped)")


def _validate(trainer: Trainer, val_set: SegmentDataset | None, run) -> dict[str, Any]:
    from streamguard.training import metrics

    if val_set is None:
        return {"val_loss": None, "val_eer": None, "val_eer_threshold": None, "val_auc": None}
    logits, labels, _ = predict(
        trainer.module,
        val_set,
        batch_size=run.eval_batch_size,
        device=trainer.device,
        amp_dtype=trainer.amp_dtype,
        progress=run.progress,
        desc="validating",
    )
    with torch.no_grad():
        val_loss = float(
            trainer.criterion(
                torch.from_numpy(logits).float().to(trainer.device),
                torch.from_numpy(labels).float().to(trainer.device),
            )
        )
    scores = sigmoid(logits)
    out: dict[str, Any] = {"val_loss": val_loss}
    if metrics.has_both_classes(labels):
        rate, threshold = metrics.eer(labels, scores)
        out.update(
            val_eer=rate, val_eer_threshold=threshold, val_auc=metrics.roc_auc(labels, scores)
        )
    else:
        out.update(val_eer=None, val_eer_threshold=None, val_auc=None)
    out["val_accuracy"] = metrics.at_threshold(labels, scores, 0.5).accuracy
    return out


def _fmt(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def _epoch_line(r: dict[str, Any]) -> str:
    return (
        f"epoch {r['epoch']}: step {r['global_step']} lr {r['lr']:.2e} "
        f"train_loss {_fmt(r['train_loss'])} val_loss {_fmt(r.get('val_loss'))} "
        f"val_eer {_fmt(r.get('val_eer'))} val_auc {_fmt(r.get('val_auc'))} "
        f"({r['seconds']:.1f} s){' *best*' if r['best'] else ''}"
    )


def examples_summary(examples: list[Example]) -> dict[str, Any]:
    """Counts per source and class (for the model card)."""
    out: dict[str, Any] = {}
    for e in examples:
        entry = out.setdefault(e.source, {"real": 0, "fake": 0})
        entry["fake" if e.label else "real"] += 1
    return out


__all__ = [
    "TrainResult",
    "Trainer",
    "WeightedDraws",
    "autocast_dtype",
    "build_training_module",
    "predict",
    "seed_everything",
    "train",
]
