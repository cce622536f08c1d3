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
from torch import nn

from streamguard.errors import ConfigError

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
        module = loaded.detector.module.float()
        return module.train(), dict(loaded.params)
    module = build_module(mcfg.architecture, mcfg.params)
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
        pos_weight = (
            torch.tensor([optim_cfg.pos_weight], device=self.device)
            if optim_cfg.pos_weight
            else None
        )
        self.criterion = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
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
    from safetensors.torch import load_file

    module.load_state_dict(load_file(str(path), device="cpu"))


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


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    echo: Callable[[str], None] = print,
) -> TrainResult:
    """Run the configured training; returns where everything went and the best epoch."""
    from streamguard.training.augment import Augmenter
    from streamguard.training.data import summarise_problems

    run = config.run
    out_dir = Path(run.out_dir)
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
    seed_everything(run.seed)
    if run.num_threads:
        torch.set_num_threads(run.num_threads)
    device = resolve_train_device(run.device)

    # ---- data
    splits = load_sources(config.data)
    store = ClipStore(config.segment.sample_rate, config.data.cache)
    problems = list(splits.problems)
    if config.data.cache != "none":
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
    echo(
        f"train: {len(splits.train)} clips {counts}; val: {len(splits.val)} clips "
        f"{class_counts(splits.val)}; test: {len(splits.test)} clips"
    )
    samples = config.segment.samples
    augmenter = Augmenter(config.augment, config.segment.sample_rate)
    train_set = SegmentDataset(
        splits.train,
        store,
        samples,
        train=True,
        augmenter=augmenter if config.augment.enabled else None,
        seed=run.seed,
    )
    val_set = (
        SegmentDataset(splits.val, store, samples, train=False, eval_crop=config.segment.eval_crop)
        if splits.val
        else None
    )
    if val_set is None:
        echo("warning: no validation clips; the last epoch is exported (threshold 0.5)")
    weights = sampling_weights(splits.train, [s.weight for s in config.data.sources])
    draws = config.data.samples_per_epoch or len(splits.train)
    batch = config.optim.batch_size
    micro_per_epoch = math.ceil(draws / batch)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / config.optim.grad_accum))

    # ---- model + optimiser
    module, params = build_training_module(config)
    trainer = Trainer(module, config.optim, device=device, steps_per_epoch=steps_per_epoch)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    start_epoch = 0
    if resume and (ckpt_dir / "last.state.pt").exists():
        _load_weights(trainer.module, ckpt_dir / "last.safetensors")
        state = torch.load(ckpt_dir / "last.state.pt", map_location=device, weights_only=True)
        trainer.load_state_dict(state["trainer"])
        history = json.loads(state["history"])
        best = json.loads(state["best"]) if state.get("best") else None
        start_epoch = int(state["epoch"]) + 1
        echo(f"resuming after epoch {start_epoch - 1} (step {trainer.global_step})")
    elif resume:
        echo(f"nothing to resume in {ckpt_dir}; starting a new run")

    # ---- epochs
    from tqdm.auto import tqdm

    started = time.monotonic()
    stopped = "epochs"
    for epoch in range(start_epoch, config.optim.epochs):
        if stopped != "epochs":
            break
        epoch_start = time.monotonic()
        trainer.start_epoch(epoch)
        train_set.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            train_set,
            batch_size=batch,
            sampler=WeightedDraws(weights, draws, seed=run.seed * 100_003 + epoch),
            num_workers=config.data.num_workers,
            pin_memory=device.type == "cuda",
            drop_last=False,
        )
        losses: list[float] = []
        bar = tqdm(
            loader, desc=f"epoch {epoch + 1}/{config.optim.epochs}", disable=not run.progress
        )
        for waves, labels, _ in bar:
            loss, stepped = trainer.step(waves, labels)
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
        stopped = _stop_reason(run, trainer.global_step, started)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "global_step": trainer.global_step,
            "lr": trainer.lr,
            "train_loss": float(np.mean(losses)) if losses else None,
        }
        record.update(_validate(trainer, val_set, run))
        record["seconds"] = round(time.monotonic() - epoch_start, 2)
        record["failed_clips"] = len(train_set.failures)
        record["best"] = _better(record, best) if val_set is not None else True
        if record["best"]:
            best = dict(record)
            _save_weights(trainer.module, ckpt_dir / "best.safetensors")
        history.append(record)
        _write_record(out_dir, record)
        _save_weights(trainer.module, ckpt_dir / "last.safetensors")
        torch.save(
            {
                "trainer": trainer.state_dict(),
                "epoch": epoch,
                "history": json.dumps(history),
                "best": json.dumps(best) if best else "",
            },
            ckpt_dir / "last.state.pt",
        )
        echo(_epoch_line(record))
    for index, reason in sorted(train_set.failures.items()):
        problems.append(Problem(splits.train[index].origin, reason))
    if train_set.failures:
        (out_dir / "problems.txt").write_text("".join(f"{p}\n" for p in problems))
        echo(f"{len(train_set.failures)} clips could not be decoded during training (skipped)")

    result = TrainResult(
        out_dir=out_dir,
        best_epoch=best["epoch"] if best else None,
        best_val_eer=best.get("val_eer") if best else None,
        history=history,
        stopped=stopped,
        problems=problems,
    )
    if best is None:
        return result
    _load_weights(trainer.module, ckpt_dir / "best.safetensors")
    if config.export.enabled:
        from streamguard.training.export import export_trained

        result.export_dir = export_trained(
            config,
            trainer.module.cpu().eval(),
            params,
            val=splits.val,
            test=splits.test,
            store=store,
            history=history,
            best=best,
            train_counts=counts,
            train_sources=examples_summary(splits.train),
            echo=echo,
        )
    return result


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
