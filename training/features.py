"""Cached frozen-encoder features: train ``whisper-asp``'s back end on a CPU in minutes.

Why: with the encoder frozen (``trainable_layers = 0``), every epoch would run the same 20M-
parameter encoder over the same crops again; ~98% of the compute. Computed once and stored,
an epoch over the corpus is the back end alone (~0.1M parameters), which is what makes
leave-one-family-out (one model per family) feasible on two cores (docs/training.md,
"Feature cache").

What is stored: for every clip, the crops of :class:`CropPolicy` (fixed, so the cache is
deterministic) run through the module's log-mel + encoder + time pooling
(``WhisperASP.features``): ``[crops, L + 1, T', d]`` float16, one ``.npy`` per clip (no
pickle), written atomically, so an interrupted fill resumes where it stopped. The folder is
keyed by the sha256 of the encoder's weights, its layers and pooling and the crop policy:
another encoder or policy never reads these files.

    python -m streamguard.training.features --data training/corpus/v2/train.csv \\
        --data training/corpus/v2/val.csv --out /work/data/features   # whisper-base, frozen
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamguard.errors import ConfigError, StreamguardError
from streamguard.training.data import Example, Problem, crop, decode_audio

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
CROP_MODES = ("start", "center", "spread")


@dataclass(frozen=True)
class CropPolicy:
    """Which fixed segments of a clip are cached: ``crops`` windows of ``seconds``; ``start``
    and ``center`` take one, ``spread`` spaces ``crops`` evenly from start to end (a clip
    shorter than a window gives one, zero-padded at the end as training does)."""

    seconds: float = 4.0
    mode: str = "spread"
    crops: int = 2
    sample_rate: int = 16_000

    def __post_init__(self) -> None:
        if self.mode not in CROP_MODES:
            raise ConfigError(f"crop mode must be one of {', '.join(CROP_MODES)}")
        if self.crops < 1:
            raise ConfigError("crops must be >= 1")

    @property
    def samples(self) -> int:
        return round(self.seconds * self.sample_rate)

    def starts(self, length: int) -> list[int]:
        """Start samples of the crops of a clip of ``length`` samples."""
        n = self.samples
        if length <= n:
            return [0]
        if self.mode == "start":
            return [0]
        if self.mode == "center":
            return [(length - n) // 2]
        count = min(self.crops, 1 + (length - n) // (self.sample_rate // 2) or 1)
        if count == 1:
            return [0]
        return sorted({round(i * (length - n) / (count - 1)) for i in range(count)})

    def windows(self, clip: np.ndarray) -> np.ndarray:
        """``[crops, samples]`` float32."""
        n = self.samples
        return np.stack([crop(clip[s:], n, "start") for s in self.starts(len(clip))])


def encoder_digest(module: Any) -> str:
    """sha256 over the frozen part's tensors (encoder + front end settings + pooling)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(module.encoder.config.to_dict(), sort_keys=True).encode())
    digest.update(f"|blocks={len(module.encoder.blocks)}|pool={module.pool_frames}".encode())
    for name, tensor in module.encoder.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class FeatureCache:
    """Frozen-encoder features of clips, on disk under ``root/<key>/``.

    ``module`` is a :class:`streamguard.model.whisper_asp.WhisperASP` with a frozen encoder.
    """

    def __init__(self, root: str | Path, module: Any, policy: CropPolicy):
        if not getattr(module, "encoder_frozen", False):
            raise ConfigError(
                "cached features need a frozen encoder (whisper-asp with trainable_layers = 0)"
            )
        self.module = module
        self.policy = policy
        self.encoder_sha256 = encoder_digest(module)
        key = hashlib.sha256(
            f"{self.encoder_sha256}|{json.dumps(asdict(policy), sort_keys=True)}|"
            f"v{FORMAT_VERSION}".encode()
        ).hexdigest()[:20]
        self.dir = Path(root) / f"whisper-{key}"
        self.n_states = len(module.encoder.blocks) + 1
        self.meta = {
            "format_version": FORMAT_VERSION,
            "encoder_sha256": self.encoder_sha256,
            "encoder_config": module.encoder.config.to_dict(),
            "encoder_blocks": len(module.encoder.blocks),
            "pool_frames": module.pool_frames,
            "weights": module.provenance,
            "crop_policy": asdict(policy),
            "dtype": "float16",
        }

    # ---- files
    def _file(self, path: Path) -> Path:
        st = path.stat()
        name = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
        return self.dir / "clips" / f"{hashlib.sha1(name.encode()).hexdigest()}.npy"

    def has(self, path: Path) -> bool:
        """Features or a recorded decode failure exist (neither is computed again)."""
        try:
            target = self._file(path)
        except OSError:
            return False
        return target.is_file() or target.with_suffix(".err").is_file()

    def failure(self, path: Path) -> str | None:
        """Why this clip (this size and mtime) could not be decoded, when it could not."""
        try:
            return self._file(path).with_suffix(".err").read_text()
        except OSError:
            return None

    def load(self, path: Path) -> np.ndarray:
        """``[crops, L + 1, T', d]`` float16 (a ``StreamguardError`` if absent or damaged)."""
        try:
            return np.load(self._file(path), allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StreamguardError(f"no cached features for {path}: {exc}") from None

    def _store(self, path: Path, features: np.ndarray) -> None:
        target = self._file(path)
        tmp = target.with_name(f".{target.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, features.astype(np.float16), allow_pickle=False)
        os.replace(tmp, target)

    # ---- filling
    @torch.no_grad()
    def compute(self, windows: np.ndarray) -> np.ndarray:
        """Features of ``[N, samples]`` windows: ``[N, L + 1, T', d]`` float32."""
        self.module.eval()
        x = torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32))
        return self.module.features(x).float().numpy()

    def fill(
        self,
        examples: Sequence[Example],
        *,
        batch_size: int = 16,
        progress: bool = True,
        echo: Callable[[str], None] = print,
    ) -> tuple[list[Example], list[Problem]]:
        """Compute what is missing (resumable); ``(examples with features, problems)``."""
        from tqdm.auto import tqdm

        (self.dir / "clips").mkdir(parents=True, exist_ok=True)
        meta = self.dir / "meta.json"
        if not meta.exists():
            meta.write_text(json.dumps(self.meta, indent=2) + "\n")
        unique = list({e.path: e for e in examples}.values())
        todo = [e for e in unique if not self.has(e.path)]
        problems: dict[Path, Problem] = {}
        for e in unique:
            if (why := self.failure(e.path)) is not None:
                problems[e.path] = Problem(e.origin or str(e.path), why)
        if todo:
            echo(f"features: {len(unique) - len(todo)} of {len(unique)} clips cached; "
                 f"computing {len(todo)} into {self.dir}")  # fmt: skip
        pending: list[tuple[Example, int]] = []  # (example, crops)
        windows: list[np.ndarray] = []

        def flush() -> None:
            if not pending:
                return
            feats = self.compute(np.concatenate(windows))
            at = 0
            for example, count in pending:
                self._store(example.path, feats[at : at + count])
                at += count
            pending.clear()
            windows.clear()

        started = time.monotonic()
        bar = tqdm(todo, desc="features", unit="clip", disable=not progress, mininterval=5)
        for example in bar:
            try:
                clip = decode_audio(example.path, self.policy.sample_rate)
            except StreamguardError as exc:
                problems[example.path] = Problem(example.origin or str(example.path), str(exc))
                with contextlib.suppress(OSError):  # a bad file is not retried until it changes
                    self._file(example.path).with_suffix(".err").write_text(str(exc))
                continue
            crops = self.policy.windows(clip)
            pending.append((example, len(crops)))
            windows.append(crops)
            if sum(len(w) for w in windows) >= batch_size:
                flush()
        flush()
        bar.close()
        if todo:
            echo(f"features: {len(todo)} clips in {time.monotonic() - started:.0f} s")
        kept = [e for e in examples if e.path not in problems]
        return kept, list(problems.values())

    def size_bytes(self) -> int:
        return sum(f.stat().st_size for f in (self.dir / "clips").glob("*.npy"))


def cache_for(
    root: str | Path, module: Any, policy: CropPolicy, params: dict[str, Any]
) -> FeatureCache:
    """The feature cache a (possibly truncated) whisper-asp module reads.

    Why: a truncated encoder (``layers = N``) computes exactly the complete encoder's first
    ``N + 1`` states (``ln_post`` applies only to the top of a complete one), so it reads the
    complete encoder's cache and keeps the states it has, instead of a cache of its own that
    would cost the whole encoder pass again for every clip.
    """
    if module.encoder.complete:
        return FeatureCache(root, module, policy)
    return FeatureCache(root, build_frozen_module({**params, "layers": None}), policy)


class CachedFeatureDataset:
    """``(features [L + 1, T', d] float32, label, index)`` from a filled :class:`FeatureCache`.

    Training picks one of a clip's cached crops per draw, seeded per (seed, epoch, clip,
    draw) like :class:`streamguard.training.data.SegmentDataset`; evaluation takes the first.
    ``n_states`` keeps the first states (a truncated encoder's layers).
    """

    def __init__(
        self,
        examples: Sequence[Example],
        cache: FeatureCache,
        *,
        train: bool,
        seed: int = 0,
        n_states: int | None = None,
        memory: bool = True,
    ):
        if not examples:
            raise ConfigError("a dataset needs at least one clip")
        self.examples = list(examples)
        self.cache = cache
        self.train = train
        self.seed = seed
        self.epoch = 0
        self.n_states = n_states
        self.failures: dict[int, str] = {}
        self._memory: dict[int, np.ndarray] | None = {} if memory else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def _features(self, index: int) -> np.ndarray:
        if self._memory is not None and index in self._memory:
            return self._memory[index]
        feats = self.cache.load(self.examples[index].path)
        if self.n_states is not None:
            feats = feats[:, : self.n_states]
        if self._memory is not None:
            self._memory[index] = feats
        return feats

    def __getitem__(self, key: int | tuple[int, int]):
        from streamguard.training.data import item_seed

        index, draw = key if isinstance(key, tuple) else (key, 0)
        feats = self._features(index)
        pick = 0
        if self.train and feats.shape[0] > 1:
            rng = np.random.default_rng(item_seed(self.seed, self.epoch, index, draw))
            pick = int(rng.integers(feats.shape[0]))
        x = torch.from_numpy(feats[pick].astype(np.float32))
        label = torch.tensor(float(self.examples[index].label), dtype=torch.float32)
        return x, label, index


class CachedWindowsDetector:
    """A whisper-asp detector whose encoder states are cached per window (by content hash).

    Why: leave-one-family-out scores the same validation, real test and call windows with one
    model per family; the frozen encoder's states of a window never change, so they are
    computed once (under ``<cache>/windows/``) and every fold runs only its back end. Scores
    differ from the plain module's only by the float16 rounding of the stored states.
    """

    def __init__(self, module: Any, info: Any, cache: FeatureCache, *, batch_size: int = 16):
        self.module = module.eval()
        self.info = info
        self.cache = cache
        self.batch_size = batch_size
        self.dir = cache.dir / "windows"
        self.dir.mkdir(parents=True, exist_ok=True)

    @property
    def window_samples(self) -> int:
        return self.info.window_samples

    def _path(self, window: np.ndarray) -> Path:
        return self.dir / f"{hashlib.sha1(window.tobytes()).hexdigest()}.npy"

    def states(self, waveforms: np.ndarray) -> np.ndarray:
        """The frozen encoder's ``[B, L + 1, T', d]`` float16 states of each window (cached)."""
        waves = np.ascontiguousarray(waveforms, dtype=np.float32)
        paths = [self._path(w) for w in waves]
        feats: list[np.ndarray | None] = []
        for path in paths:
            try:
                feats.append(np.load(path, allow_pickle=False))
            except (OSError, ValueError):
                feats.append(None)
        missing = [i for i, f in enumerate(feats) if f is None]
        for start in range(0, len(missing), self.batch_size):
            chunk = missing[start : start + self.batch_size]
            computed = self.cache.compute(waves[chunk]).astype(np.float16)
            for i, value in zip(chunk, computed, strict=True):
                tmp = paths[i].with_name(f".{paths[i].stem}.{os.getpid()}.tmp.npy")
                np.save(tmp, value, allow_pickle=False)
                os.replace(tmp, paths[i])
                feats[i] = value
        n_states = len(self.module.encoder.blocks) + 1
        return np.stack([f[:n_states] for f in feats])

    @torch.no_grad()
    def logits(self, waveforms: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(self.states(waveforms).astype(np.float32))
        return self.module.head(x).float().numpy()

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        return self.info.p_fake(self.logits(waveforms))


# --------------------------------------------------------------------------- CLI


def build_frozen_module(params: dict[str, Any]) -> Any:
    """A ``whisper-asp`` module with its pretrained encoder, frozen (features only)."""
    from streamguard.model import build_module

    module = build_module("whisper-asp", {**params, "pretrained": True, "trainable_layers": 0})
    return module.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m streamguard.training.features",
        description="fill the frozen-encoder feature cache of whisper-asp for manifest clips",
    )
    parser.add_argument("--data", action="append", required=True, help="manifest CSV (repeat)")
    parser.add_argument("--out", required=True, help="cache root folder")
    parser.add_argument("--weights", default="whisper-base", help="named encoder weights")
    parser.add_argument("--pool-frames", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--crop", choices=CROP_MODES, default="spread")
    parser.add_argument("--crops", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    parser.add_argument("--nice", type=int, default=10, help="raise the process niceness by N")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    from streamguard.training.data import read_data

    try:
        if args.nice:
            os.nice(args.nice)
        if args.threads:
            torch.set_num_threads(args.threads)
        module = build_frozen_module({"weights": args.weights, "pool_frames": args.pool_frames})
        policy = CropPolicy(seconds=args.seconds, mode=args.crop, crops=args.crops)
        cache = FeatureCache(args.out, module, policy)
        examples: list[Example] = []
        for path in args.data:
            got = read_data(path)
            examples += got.examples
            for problem in got.problems:
                print(f"skipped {problem}", file=sys.stderr)
        started = time.monotonic()
        _, problems = cache.fill(examples, batch_size=args.batch_size,
                                 progress=not args.no_progress)  # fmt: skip
    except StreamguardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"skipped {problem}", file=sys.stderr)
    size = cache.size_bytes()
    print(f"{cache.dir}: {len(examples)} clips, {size / 2**30:.2f} GiB, "
          f"{time.monotonic() - started:.0f} s this run")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
