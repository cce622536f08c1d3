"""Labelled audio for training and evaluation: readers, decoding cache, segment datasets.

Every reader returns a :class:`ReadResult`: the good rows as :class:`Example` (which keep source,
subset, speaker, attack and condition for per-subset metrics) and the bad rows as
:class:`Problem` (file:line and why), so one broken row never stops a run and is never silent.

Formats (documented in docs/training.md, "Data formats"):

* **manifest** CSV ``path,label[,subset][,speaker]`` (optional header; by name it may also carry
  ``attack``, ``condition``, ``source``). Labels ``0``/``1`` or words (see :data:`LABEL_WORDS`);
  relative paths resolve against the manifest's folder.
* **asvspoof2019** LA CM protocol, 5 columns ``SPEAKER FILE - ATTACK KEY`` (ATTACK is ``-`` for
  bona fide, KEY ``bonafide``/``spoof``); audio at ``<audio_root>/flac/<FILE>.flac``.
* **asvspoof2021** LA/DF keys (``keys/{LA,DF}/CM/trial_metadata.txt``). LA has 8 columns
  ``SPEAKER FILE CODEC TRANSMISSION ATTACK KEY TRIM SUBSET``; DF has 13: ``SPEAKER FILE
  COMPRESSION SOURCE ATTACK KEY TRIM SUBSET VOCODER TASK TEAM GENDER-PAIR LANGUAGE`` (layout of the
  organisers' eval-package config.py). ``condition`` = CODEC (LA) / COMPRESSION (DF), ``attack`` =
  ATTACK; SUBSET (eval/progress/hidden) can be filtered with ``phases``.
* **itw** In-the-Wild ``meta.csv`` ``file,speaker,label`` (label ``spoof``/``bona-fide``), audio
  beside it.
* **folder**: every audio file below a folder, labelled by keyword *tokens* of its path relative
  to the folder (see :func:`label_from_path`); a path matching both classes or neither is a
  problem, never a guess.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import itertools
import logging
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from streamguard.audio.pcm import fit_length, float_to_int16, int16_to_float
from streamguard.errors import AudioError, ConfigError, StreamguardError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".mp3", ".aiff", ".aif", ".au", ".opus"})

# Words (lower case) that name a class. Path tokens use the same vocabulary as the seed card.
REAL_WORDS = frozenset({"bonafide", "real", "genuine", "human", "authentic", "original"})
FAKE_WORDS = frozenset({"spoof", "fake", "deepfake", "synthetic", "generated", "ai"})
LABEL_WORDS: dict[str, int] = {
    **dict.fromkeys(REAL_WORDS, 0),
    **dict.fromkeys(FAKE_WORDS, 1),
    "0": 0,
    "1": 1,
    "bona-fide": 0,
    "bona_fide": 0,
    "bona fide": 0,
    "spoofed": 1,
}
SUBSET_ALIASES = {
    "train": "train",
    "training": "train",
    "trn": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "dev": "val",
    "development": "val",
    "test": "test",
    "eval": "test",
    "evaluation": "test",
}


@dataclass(frozen=True)
class Example:
    """One labelled clip. ``label``: 0 = real (bona fide), 1 = fake."""

    path: Path
    label: int
    source: str
    subset: str | None = None  # "train" | "val" | "test" | None (decided by the split)
    speaker: str | None = None
    attack: str | None = None
    condition: str | None = None
    origin: str = ""  # "file:line" of the row it came from
    stream: int = 0  # index of the configured source it came from (for sampling weights)
    family: str | None = None  # generator family (formant, neural, vocoder, ...; "bonafide")
    switch_at: float | None = None  # voice-switch calls: call seconds where the fake voice starts


@dataclass(frozen=True)
class Problem:
    """A row (or file) that was skipped, and why."""

    origin: str  # "file:line" or the audio path
    reason: str

    def __str__(self) -> str:
        return f"{self.origin}: {self.reason}"


@dataclass
class ReadResult:
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def extend(self, other: ReadResult) -> None:
        self.examples.extend(other.examples)
        self.problems.extend(other.problems)

    def summary(self) -> str:
        counts = Counter(e.label for e in self.examples)
        return (
            f"{len(self.examples)} clips ({counts.get(0, 0)} real, {counts.get(1, 0)} fake), "
            f"{len(self.problems)} skipped"
        )


# --------------------------------------------------------------------------- labels


def parse_label(text: str) -> int | None:
    """``0``/``1`` or a class word (case-insensitive); None when it names no class."""
    return LABEL_WORDS.get(text.strip().lower())


def normalise_subset(text: str | None) -> str | None:
    """Map split names (dev, eval, validation ...) onto train/val/test; '' -> None.

    Raises ValueError for a word that names no split, so the row is reported, not misfiled.
    """
    if text is None or not text.strip():
        return None
    try:
        return SUBSET_ALIASES[text.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown subset {text.strip()!r} (use train, val or test)") from None


_TOKEN = re.compile(r"[^a-z0-9]+")


def path_tokens(relative: str | Path) -> set[str]:
    """Lower-case alphanumeric tokens of every path component (extension dropped), plus the
    joins of neighbouring tokens so ``bona-fide`` and ``deep_fake`` still read as one word.

    Whole tokens only: ``train`` does not contain the token ``ai``, ``fakes`` is not ``fake``.
    """
    parts = list(Path(relative).parts)
    if parts:
        parts[-1] = Path(parts[-1]).stem if Path(parts[-1]).suffix else parts[-1]
    tokens: set[str] = set()
    for part in parts:
        words = [w for w in _TOKEN.split(part.lower()) if w]
        tokens.update(words)
        tokens.update(a + b for a, b in itertools.pairwise(words))
    return tokens


def label_from_path(relative: str | Path) -> tuple[int | None, str]:
    """Label a path by keyword tokens: (0 | 1, matched words) or (None, why not)."""
    tokens = path_tokens(relative)
    real, fake = sorted(tokens & REAL_WORDS), sorted(tokens & FAKE_WORDS)
    if real and fake:
        return None, f"path names both classes (real: {', '.join(real)}; fake: {', '.join(fake)})"
    if real:
        return 0, ", ".join(real)
    if fake:
        return 1, ", ".join(fake)
    return None, "path names neither class (no real/fake keyword in any folder or file name)"


# --------------------------------------------------------------------------- readers


def _origin(path: Path, line: int) -> str:
    return f"{path}:{line}"


def _read_lines(path: Path) -> Iterator[tuple[int, str]]:
    """Non-blank, non-comment lines with 1-based numbers; ConfigError if the file is absent."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"data file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read data file {path}: {exc}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield number, line


def _check_audio(path: Path, origin: str, result: ReadResult) -> bool:
    if path.is_file():
        return True
    result.problems.append(Problem(origin, f"audio file not found: {path}"))
    return False


def read_manifest(
    path: str | Path, *, source: str | None = None, default_subset: str | None = None
) -> ReadResult:
    """CSV ``path,label[,subset][,speaker]``; a header row may name columns in any order."""
    path = Path(path)
    base = path.parent
    source = source or path.stem
    result = ReadResult()
    lines = list(_read_lines(path))
    rows = list(csv.reader([text for _, text in lines]))
    columns = ["path", "label", "subset", "speaker"]
    start = 0
    if rows and {"path", "label"} <= {c.strip().lower() for c in rows[0]}:
        columns = [c.strip().lower() for c in rows[0]]
        start = 1
    for (number, _), row in zip(lines[start:], rows[start:], strict=True):
        origin = _origin(path, number)
        values = {name: (row[i].strip() if i < len(row) else "") for i, name in enumerate(columns)}
        if not values.get("path"):
            result.problems.append(Problem(origin, "no audio path"))
            continue
        label = parse_label(values.get("label", ""))
        if label is None:
            result.problems.append(Problem(origin, f"unknown label {values.get('label', '')!r}"))
            continue
        try:
            subset = normalise_subset(values.get("subset")) or default_subset
        except ValueError as exc:
            result.problems.append(Problem(origin, str(exc)))
            continue
        try:
            switch_at = _seconds(values.get("switch_at"))
        except ValueError:
            result.problems.append(
                Problem(origin, f"switch_at must be call seconds >= 0, got {values['switch_at']!r}")
            )
            continue
        audio = Path(values["path"]).expanduser()
        audio = audio if audio.is_absolute() else base / audio
        if not _check_audio(audio, origin, result):
            continue
        result.examples.append(
            Example(
                path=audio,
                label=label,
                source=values.get("source") or source,
                subset=subset,
                speaker=values.get("speaker") or None,
                attack=values.get("attack") or None,
                condition=values.get("condition") or None,
                origin=origin,
                family=values.get("family") or None,
                switch_at=switch_at,
            )
        )
    return result


def _seconds(text: str | None) -> float | None:
    """A manifest's optional seconds column (``switch_at``): empty = none; ``ValueError`` unless
    a finite number >= 0."""
    if not text:
        return None
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(text)
    return value


def _asvspoof_audio_root(protocol: Path, audio_root: Path | None) -> Path:
    root = audio_root or protocol.parent
    if not (root / "flac").is_dir():
        raise ConfigError(
            f"no flac/ folder under {root}: set audio_root (--audio-root) to the folder that "
            f"holds flac/ for {protocol.name}"
        )
    return root


def read_asvspoof2019(
    path: str | Path,
    *,
    audio_root: str | Path | None = None,
    source: str = "asvspoof2019",
    default_subset: str | None = None,
) -> ReadResult:
    """ASVspoof 2019 LA CM protocol: ``SPEAKER FILE - ATTACK KEY`` per line."""
    path = Path(path)
    root = _asvspoof_audio_root(path, Path(audio_root) if audio_root else None)
    result = ReadResult()
    for number, line in _read_lines(path):
        origin = _origin(path, number)
        cols = line.split()
        if len(cols) != 5:
            result.problems.append(
                Problem(origin, f"expected 5 columns (SPEAKER FILE - ATTACK KEY), got {len(cols)}")
            )
            continue
        speaker, name, _, attack, key = cols
        label = {"bonafide": 0, "spoof": 1}.get(key.lower())
        if label is None:
            result.problems.append(Problem(origin, f"unknown key {key!r} (bonafide/spoof)"))
            continue
        audio = root / "flac" / f"{name}.flac"
        if _check_audio(audio, origin, result):
            result.examples.append(
                Example(
                    audio,
                    label,
                    source,
                    default_subset,
                    speaker,
                    attack if attack != "-" else "bonafide",
                    None,
                    origin,
                )
            )
    return result


def read_asvspoof2021(
    path: str | Path,
    *,
    audio_root: str | Path | None = None,
    source: str | None = None,
    default_subset: str | None = "test",
    phases: Iterable[str] | None = None,
) -> ReadResult:
    """ASVspoof 2021 LA (8 columns) or DF (13 columns) ``trial_metadata.txt`` keys."""
    path = Path(path)
    root = _asvspoof_audio_root(path, Path(audio_root) if audio_root else None)
    keep = {p.lower() for p in phases} if phases else None
    result = ReadResult()
    for number, line in _read_lines(path):
        origin = _origin(path, number)
        cols = line.split()
        if len(cols) not in (8, 13):
            result.problems.append(
                Problem(origin, f"expected 8 (LA) or 13 (DF) key columns, got {len(cols)}")
            )
            continue
        speaker, name, codec, _, attack, key, _, phase = cols[:8]
        if keep is not None and phase.lower() not in keep:
            continue
        label = {"bonafide": 0, "spoof": 1}.get(key.lower())
        if label is None:
            result.problems.append(Problem(origin, f"unknown key {key!r} (bonafide/spoof)"))
            continue
        track = "df" if len(cols) == 13 else "la"
        audio = root / "flac" / f"{name}.flac"
        if _check_audio(audio, origin, result):
            result.examples.append(
                Example(
                    audio,
                    label,
                    source or f"asvspoof2021-{track}",
                    default_subset,
                    speaker,
                    attack if attack != "-" else "bonafide",
                    codec,
                    origin,
                )
            )
    return result


def read_itw(
    path: str | Path, *, source: str = "in-the-wild", default_subset: str | None = "test"
) -> ReadResult:
    """In-the-Wild ``meta.csv`` (``file,speaker,label``); audio files sit beside it."""
    path = Path(path)
    if path.is_dir():
        path = path / "meta.csv"
    result = ReadResult()
    lines = list(_read_lines(path))
    rows = list(csv.reader([text for _, text in lines]))
    if not rows or [c.strip().lower() for c in rows[0][:3]] != ["file", "speaker", "label"]:
        raise ConfigError(f"{path}: expected an In-the-Wild header 'file,speaker,label'")
    for (number, _), row in zip(lines[1:], rows[1:], strict=True):
        origin = _origin(path, number)
        if len(row) < 3:
            result.problems.append(Problem(origin, f"expected 3 columns, got {len(row)}"))
            continue
        name, speaker, word = (c.strip() for c in row[:3])
        label = parse_label(word)
        if label is None:
            result.problems.append(Problem(origin, f"unknown label {word!r}"))
            continue
        audio = path.parent / name
        if _check_audio(audio, origin, result):
            result.examples.append(
                Example(audio, label, source, default_subset, speaker or None, None, None, origin)
            )
    return result


def read_folder(
    path: str | Path, *, source: str | None = None, default_subset: str | None = None
) -> ReadResult:
    """Every audio file below ``path``, labelled by keyword tokens of its relative path."""
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(f"data folder not found: {root}")
    result = ReadResult()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            audio = Path(dirpath) / name
            if audio.suffix.lower() not in AUDIO_EXTENSIONS:
                continue
            relative = audio.relative_to(root)
            label, why = label_from_path(relative)
            if label is None:
                result.problems.append(Problem(str(audio), why))
                continue
            subset_dirs = [
                SUBSET_ALIASES[p.lower()]
                for p in relative.parts[:-1]
                if p.lower() in SUBSET_ALIASES
            ]
            result.examples.append(
                Example(
                    audio,
                    label,
                    source or root.name,
                    subset_dirs[0] if subset_dirs else default_subset,
                    origin=str(audio),
                )
            )
    return result


def detect_format(path: str | Path) -> str:
    """Guess a data file's format: folder, itw, manifest, asvspoof2019 or asvspoof2021."""
    path = Path(path)
    if path.is_dir():
        return "itw" if (path / "meta.csv").is_file() else "folder"
    if not path.is_file():
        raise ConfigError(f"data path not found: {path}")
    first = next((line for _, line in _read_lines(path)), "")
    header = [c.strip().lower() for c in first.split(",")]
    if header[:3] == ["file", "speaker", "label"]:
        return "itw"
    if "," in first or path.suffix.lower() == ".csv":
        return "manifest"
    cols = first.split()
    if len(cols) == 5:
        return "asvspoof2019"
    if len(cols) in (8, 13):
        return "asvspoof2021"
    raise ConfigError(
        f"cannot tell the format of {path} (first line has {len(cols)} columns); pass --format"
    )


def read_data(
    path: str | Path,
    fmt: str | None = None,
    *,
    audio_root: str | Path | None = None,
    source: str | None = None,
    default_subset: str | None = None,
    phases: Iterable[str] | None = None,
) -> ReadResult:
    """Read one data source of any supported format (``fmt=None`` auto-detects)."""
    fmt = fmt or detect_format(path)
    if fmt == "manifest":
        return read_manifest(path, source=source, default_subset=default_subset)
    if fmt == "asvspoof2019":
        return read_asvspoof2019(
            path,
            audio_root=audio_root,
            source=source or "asvspoof2019",
            default_subset=default_subset,
        )
    if fmt == "asvspoof2021":
        return read_asvspoof2021(
            path,
            audio_root=audio_root,
            source=source,
            default_subset=default_subset or "test",
            phases=phases,
        )
    if fmt == "itw":
        return read_itw(
            path, source=source or "in-the-wild", default_subset=default_subset or "test"
        )
    if fmt == "folder":
        return read_folder(path, source=source, default_subset=default_subset)
    raise ConfigError(
        f"unknown data format {fmt!r} (manifest, asvspoof2019, asvspoof2021, itw, folder)"
    )


# --------------------------------------------------------------------------- splits & mixing


@dataclass
class DataSplits:
    train: list[Example]
    val: list[Example]
    test: list[Example]
    problems: list[Problem]


def load_sources(data_config) -> DataSplits:
    """Read every configured source, then split the unassigned rows into train/val.

    Rows with a subset keep it; the rest are split by ``val_fraction`` (whole speakers when
    ``split_by_speaker`` and the rows carry speakers), stratified so each class appears in both.
    """
    everything = ReadResult()
    families: set[str] = set()
    for index, cfg in enumerate(data_config.sources):
        got = read_data(
            cfg.path,
            cfg.type,
            audio_root=cfg.audio_root,
            source=cfg.name,
            default_subset=cfg.subset,
            phases=cfg.phases,
        )
        if cfg.limit is not None:
            got.examples = got.examples[: cfg.limit]
        got.examples = [dataclasses.replace(e, stream=index) for e in got.examples]
        families.update(e.family for e in got.examples if e.label == 1 and e.family)
        held = set(cfg.exclude_families) | set(getattr(data_config, "leave_out", ()))
        if held:
            # Leave-one-family-out: the family's fakes never reach train or val; test keeps
            # them, so the run's own test report measures the unseen family.
            got.examples = [e for e in got.examples if e.family not in held or e.subset == "test"]
        log.info("%s (%s): %s", cfg.path, cfg.type, got.summary())
        everything.extend(got)
    unknown = sorted(set(getattr(data_config, "leave_out", ())) - families)
    if unknown:
        raise ConfigError(
            f"cannot leave out {', '.join(unknown)}: no fake rows of that family "
            f"(families in the data: {', '.join(sorted(families)) or 'none'})"
        )
    fixed = {s: [e for e in everything.examples if e.subset == s] for s in ("train", "val", "test")}
    pool = [e for e in everything.examples if e.subset is None]
    train, val = split_examples(
        pool, data_config.val_fraction, seed=0, by_speaker=data_config.split_by_speaker
    )
    return DataSplits(
        train=fixed["train"] + train,
        val=fixed["val"] + val,
        test=fixed["test"],
        problems=everything.problems,
    )


def _stable_hash(text: str, seed: int) -> float:
    digest = hashlib.blake2b(f"{seed}:{text}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_examples(
    examples: Sequence[Example], val_fraction: float, *, seed: int = 0, by_speaker: bool = True
) -> tuple[list[Example], list[Example]]:
    """Deterministic train/val split, stratified by label.

    Each group (a speaker when every row of the class has one and ``by_speaker``, else a file)
    gets a stable hash in [0, 1); per class, groups are taken in hash order into validation until
    ``val_fraction`` of that class's rows are held out. Stable hashes mean adding rows later does
    not reshuffle the rows already there.
    """
    if val_fraction <= 0 or not examples:
        return list(examples), []
    train: list[Example] = []
    val: list[Example] = []
    for label in (0, 1):
        rows = [e for e in examples if e.label == label]
        use_speaker = by_speaker and rows and all(e.speaker for e in rows)
        groups: dict[str, list[Example]] = {}
        for e in rows:
            groups.setdefault(e.speaker if use_speaker else str(e.path), []).append(e)
        if use_speaker and len(groups) < 2:
            groups = {str(e.path): [e] for e in rows}
        order = sorted(groups, key=lambda g: _stable_hash(g, seed))
        target = val_fraction * len(rows)
        taken = 0
        for key in order:
            members = groups[key]
            if taken < target:
                val.extend(members)
                taken += len(members)
            else:
                train.extend(members)
        # Never leave a class without training rows.
        if rows and not any(e.label == label for e in train):
            train.append(val.pop())
    return train, val


def sampling_weights(examples: Sequence[Example], stream_weights: Sequence[float]) -> np.ndarray:
    """Per-example draw probabilities so that configured source ``i`` (``Example.stream``) gets
    ``w_i / sum(w)`` of the draws (over the sources present); inside a source every clip is
    equally likely (``w_i / n_i``)."""
    counts = Counter(e.stream for e in examples)
    weights = np.array(
        [stream_weights[e.stream] / counts[e.stream] for e in examples], dtype=np.float64
    )
    return weights / weights.sum()


# --------------------------------------------------------------------------- audio


def decode_audio(path: str | Path, sample_rate: int = 16_000) -> np.ndarray:
    """Decode a file to float32 mono at ``sample_rate``: :func:`streamguard.audio.file.decode_mono`
    (the scanner's reader and its soxr stream resampler; one-line AudioError for anything
    unreadable). Channels are averaged (a training clip is one voice; the scanner instead scores
    each channel as its own track)."""
    from streamguard.audio.file import decode_mono

    return decode_mono(path, sample_rate)


def _to_int16(x: np.ndarray) -> np.ndarray:
    return float_to_int16(x)


class ClipStore:
    """Decoded clips, decoded once: ``"none"`` (always decode), ``"memory"`` (int16 in RAM; lives
    in the process that filled it, so use it with ``num_workers=0``) or a folder of int16 ``.npy``
    files keyed by path, size, mtime and rate (shared by workers and later runs)."""

    def __init__(self, sample_rate: int = 16_000, cache: str = "memory"):
        self.sample_rate = sample_rate
        self.mode = cache if cache in ("none", "memory") else "dir"
        self.folder = Path(cache) if self.mode == "dir" else None
        self._memory: dict[Path, np.ndarray] = {}
        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)

    def _cache_file(self, path: Path) -> Path:
        st = path.stat()
        key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{self.sample_rate}"
        assert self.folder is not None
        return self.folder / f"{hashlib.sha1(key.encode()).hexdigest()}.npy"

    def get(self, path: Path) -> np.ndarray:
        """float32 mono samples at ``sample_rate``; AudioError if unreadable."""
        if self.mode == "memory":
            cached = self._memory.get(path)
            if cached is None:
                cached = _to_int16(decode_audio(path, self.sample_rate))
                self._memory[path] = cached
            return int16_to_float(cached)
        if self.mode == "dir":
            try:
                cache_file = self._cache_file(path)
            except OSError as exc:
                raise AudioError(f"cannot read {path}: {exc.strerror}") from None
            try:
                return int16_to_float(np.load(cache_file, allow_pickle=False))
            except (OSError, ValueError):
                clip = _to_int16(decode_audio(path, self.sample_rate))
                tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npy")
                np.save(tmp, clip, allow_pickle=False)
                os.replace(tmp, cache_file)
                return int16_to_float(clip)
        return decode_audio(path, self.sample_rate)

    def preload(
        self, examples: Sequence[Example], *, progress: bool = False, desc: str = "decoding"
    ) -> tuple[list[Example], list[Problem]]:
        """Decode every clip once (filling the cache); unreadable clips come back as problems."""
        from tqdm.auto import tqdm

        good: list[Example] = []
        problems: list[Problem] = []
        for example in tqdm(examples, desc=desc, disable=not progress, unit="clip"):
            try:
                self.get(example.path)
            except StreamguardError as exc:
                problems.append(Problem(example.origin or str(example.path), str(exc)))
                continue
            good.append(example)
        return good, problems


def crop(
    clip: np.ndarray, samples: int, mode: str, rng: np.random.Generator | None = None
) -> np.ndarray:
    """Exactly ``samples`` samples (:func:`streamguard.audio.pcm.fit_length`): zero-padded at
    the end when short; when long, a random crop (``mode="random"``, needs ``rng``), the first
    ``samples`` (``"start"``) or the middle (``"center"``)."""
    return fit_length(np.asarray(clip, dtype=np.float32), samples, mode, rng)  # type: ignore[arg-type]


def item_seed(seed: int, epoch: int, index: int, draw: int = 0) -> int:
    """A per-(seed, epoch, clip, draw) seed: crops and augmentation do not depend on worker
    order, and a clip drawn twice in an epoch gets two different segments."""
    key = f"{seed}/{epoch}/{index}/{draw}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") & (2**63 - 1)


class SegmentDataset:
    """Fixed-length segments of examples as ``(waveform[S], label, used index)``.

    Training (``train=True``): a random crop per draw, then augmentation; evaluation: the fixed
    ``eval_crop``. A clip that fails to decode here is logged once, counted in ``failures`` and
    replaced by the next readable clip, so a run never dies halfway on one bad file.
    """

    def __init__(
        self,
        examples: Sequence[Example],
        store: ClipStore,
        samples: int,
        *,
        train: bool,
        eval_crop: str = "start",
        augmenter=None,
        seed: int = 0,
    ):
        if not examples:
            raise ConfigError("a dataset needs at least one readable clip")
        self.examples = list(examples)
        self.store = store
        self.samples = samples
        self.train = train
        self.eval_crop = eval_crop
        self.augmenter = augmenter
        self.seed = seed
        self.epoch = 0
        self.failures: dict[int, str] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.examples)

    def _load(self, index: int) -> np.ndarray | None:
        if index in self.failures:
            return None
        try:
            return self.store.get(self.examples[index].path)
        except StreamguardError as exc:
            self.failures[index] = str(exc)
            log.warning("skipping unreadable clip (%s): %s", self.examples[index].origin, exc)
            return None

    def __getitem__(self, key: int | tuple[int, int]):
        """``key`` is a clip index, or ``(clip index, draw number)`` from WeightedDraws."""
        import torch

        index, draw = key if isinstance(key, tuple) else (key, 0)
        n = len(self.examples)
        for offset in range(n):
            used = (index + offset) % n
            clip = self._load(used)
            if clip is not None:
                break
        else:
            raise AudioError("no clip in the dataset could be decoded")
        if self.train:
            seed = item_seed(self.seed, self.epoch, index, draw)
            rng = np.random.default_rng(seed)
            segment = crop(clip, self.samples, "random", rng)
            wave = torch.from_numpy(segment)
            if self.augmenter is not None:
                gen = torch.Generator().manual_seed(seed)
                wave = self.augmenter(wave, gen)
        else:
            wave = torch.from_numpy(crop(clip, self.samples, self.eval_crop))
        label = torch.tensor(float(self.examples[used].label), dtype=torch.float32)
        return wave.contiguous(), label, used


def summarise_problems(problems: Sequence[Problem], limit: int = 10) -> str:
    """A short report: the count, then the first ``limit`` problems one per line."""
    if not problems:
        return "no rows skipped"
    lines = [f"{len(problems)} rows skipped:"]
    lines += [f"  {p}" for p in problems[:limit]]
    if len(problems) > limit:
        lines.append(f"  ... and {len(problems) - limit} more")
    return "\n".join(lines)


def class_counts(examples: Iterable[Example]) -> dict[str, int]:
    counts = Counter(e.label for e in examples)
    return {"real": counts.get(0, 0), "fake": counts.get(1, 0)}
