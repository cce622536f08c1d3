"""Enrolled voices on disk and the match rule (pure apart from the files).

Layout under ``[allowlist] path`` (0700)::

    <NAME>.json    0600: {"version", "name", "encoder", "dim", "created", "clips": [names],
                          "embeddings": [[float, ...], ...]}   one embedding per enrolled clip

JSON, not pickle: the file is data the daemon reads at start, and an embedding is a list of
floats. A voice's names are checked (letters, digits, ``-_.``) before they reach a path.

**The rule.** An embedding (unit length) matches a voice when its cosine similarity to the
voice's *centroid* (the normalised mean of its clips' embeddings) is at least ``threshold``;
the best-matching voice wins. GE2E embeddings of one speaker cluster tightly around the
centroid, so a centroid is more stable than any single enrolment clip
(benchmarks/README.md, "Allow-list", has the measured accept and false-accept rates).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamguard.errors import StreamguardError

__all__ = ["AllowList", "AllowListError", "Match", "Voice", "cosine", "valid_name"]

VERSION = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class AllowListError(StreamguardError):
    """A bad voice name, a missing voice, an unreadable allow-list (one line)."""


def valid_name(name: str) -> bool:
    return bool(_NAME.match(name)) and not name.endswith(".json")


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(x))
    return x / norm if norm > 0 else x


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(_unit(a), _unit(b)))


@dataclass(frozen=True)
class Voice:
    """One enrolled voice: its clips' embeddings and their centroid."""

    name: str
    encoder: str
    embeddings: np.ndarray  # [clips, dim], unit rows
    clips: tuple[str, ...]
    created: float

    @property
    def centroid(self) -> np.ndarray:
        return _unit(self.embeddings.mean(axis=0))


@dataclass(frozen=True)
class Match:
    name: str
    similarity: float


class AllowList:
    """The enrolled voices under ``root``; :meth:`match` is the rule (module docstring)."""

    def __init__(self, root: Path | str, *, threshold: float = 0.8, encoder: str = "") -> None:
        self.root = Path(root)
        self.threshold = float(threshold)
        self.encoder = encoder
        self.voices: dict[str, Voice] = {}
        self._centroids = np.zeros((0, 0), np.float32)
        self.reload()

    # -- reading ---------------------------------------------------------------------------
    def reload(self) -> None:
        """Read every voice file (a missing folder: no voices)."""
        voices = {}
        with contextlib.suppress(FileNotFoundError):
            for path in sorted(self.root.glob("*.json")):
                voice = self._read(path)
                if self.encoder and voice.encoder != self.encoder:
                    raise AllowListError(
                        f"{path}: enrolled with encoder {voice.encoder!r}, this daemon embeds "
                        f"with {self.encoder!r}: enrol the voice again"
                    )
                voices[voice.name] = voice
        self.voices = voices
        self._centroids = (
            np.stack([v.centroid for v in voices.values()]) if voices else np.zeros((0, 0))
        )

    @staticmethod
    def _read(path: Path) -> Voice:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            embeddings = np.asarray(data["embeddings"], dtype=np.float32)
            name = str(data["name"])
            if embeddings.ndim != 2 or not len(embeddings) or not np.all(np.isfinite(embeddings)):
                raise ValueError("embeddings must be a non-empty list of equal-length lists")
            if name != path.stem or not valid_name(name):
                raise ValueError(f"name {name!r} does not match the file")
            return Voice(
                name=name,
                encoder=str(data["encoder"]),
                embeddings=np.stack([_unit(e) for e in embeddings]),
                clips=tuple(str(c) for c in data.get("clips", ())),
                created=float(data.get("created", 0.0)),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AllowListError(f"allow-list voice {path} is unreadable: {exc}") from None

    # -- the rule ----------------------------------------------------------------------------
    def match(self, embedding: np.ndarray) -> Match | None:
        """The best enrolled voice at or above ``threshold``, else None."""
        if not self.voices:
            return None
        sims = self._centroids @ _unit(embedding)
        best = int(np.argmax(sims))
        if float(sims[best]) < self.threshold:
            return None
        return Match(list(self.voices)[best], round(float(sims[best]), 4))

    def similarities(self, embedding: np.ndarray) -> dict[str, float]:
        """Similarity to every voice (``allowlist check``, the measurement)."""
        if not self.voices:
            return {}
        sims = self._centroids @ _unit(embedding)
        return {name: float(s) for name, s in zip(self.voices, sims, strict=True)}

    # -- writing -----------------------------------------------------------------------------
    def add(self, name: str, embeddings: list[np.ndarray], clips: list[str]) -> Voice:
        """Enrol (or add clips to) ``name``; written atomically, 0600."""
        if not valid_name(name):
            raise AllowListError(
                f"voice name {name[:64]!r}: letters, digits and -_. only (1-64 characters)"
            )
        if not embeddings:
            raise AllowListError("no clips to enrol")
        old = self.voices.get(name)
        rows = [_unit(e) for e in embeddings]
        if old is not None:
            rows = [*old.embeddings, *rows]
            clips = [*old.clips, *clips]
        voice = Voice(
            name=name,
            encoder=self.encoder,
            embeddings=np.stack(rows),
            clips=tuple(clips),
            created=old.created if old else time.time(),
        )
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.root / f".{name}.json.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "version": VERSION,
                    "name": name,
                    "encoder": voice.encoder,
                    "dim": int(voice.embeddings.shape[1]),
                    "created": voice.created,
                    "clips": list(voice.clips),
                    "embeddings": [[round(float(v), 6) for v in e] for e in voice.embeddings],
                },
                fh,
            )
        os.replace(tmp, self.root / f"{name}.json")
        self.reload()
        return voice

    def remove(self, name: str) -> None:
        if not valid_name(name) or name not in self.voices:
            raise AllowListError(f"no enrolled voice {name[:64]!r}")
        (self.root / f"{name}.json").unlink()
        self.reload()
