"""Evidence clips on disk: WAV files, their JSON sidecars, retention and deletion.

Layout under the store's root (``[evidence] path``)::

    <root>/                      0700
      <call key>/                0700, one per call: sha256 of the call id, 32 hex digits
        <clip>.wav               0600, PCM 16-bit mono at the clip's rate
        <clip>.json              0600, the sidecar: call_id, track, source, rate, start, end,
                                 bytes, created, closed (null while the clip is written)

Why sidecars and no database: each clip describes itself, so the index survives restarts,
a crash can corrupt at most the clip being written, :meth:`EvidenceStore.clips` reads what is
on disk (a ``streamguard evidence`` process beside the daemon sees the same thing), and there
is nothing to rebuild: :meth:`EvidenceStore.recover` only closes the clips a crash left open.
Call ids come from the feed (strangers): they never reach a path, only their hash does; clip
ids are checked against their format before any file is touched.

The store does blocking file I/O; the daemon runs it off the event loop. It is not
thread-safe: one thread uses one store. Operations return event drafts
(``evidence_saved``, ``evidence_deleted``) for the caller to publish.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import struct
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from streamguard.alerts.events import EvidenceDeleted, EvidenceSaved, Source
from streamguard.errors import StreamguardError
from streamguard.evidence.recorder import ClipOp, CloseClip, OpenClip, WriteClip

__all__ = ["ClipInfo", "EvidenceError", "EvidenceStore", "call_key", "valid_clip_id"]

SIDECAR_VERSION = 1
_CLIP_ID = re.compile(r"^[0-9a-f]{16}$")
_DAY = 86_400.0


class EvidenceError(StreamguardError):
    """The evidence store cannot be used (one line for the CLI)."""


def call_key(call_id: str) -> str:
    """The folder name of a call: a call id is feed data, never a path."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def valid_clip_id(clip: str) -> bool:
    return bool(_CLIP_ID.match(clip))


@dataclass(frozen=True)
class ClipInfo:
    """One clip, as its sidecar describes it (times in call seconds, ``created``/``closed``
    in epoch seconds)."""

    clip: str
    call_id: str
    track: str
    source: str | None
    rate: int
    start: float
    end: float | None  # None while the clip is being written
    bytes: int
    created: float
    closed: float | None

    @property
    def complete(self) -> bool:
        return self.closed is not None


def _private_dir(path: Path) -> None:
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(path, 0o700)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically (a temporary file renamed over it), 0600."""
    tmp = path.with_suffix(".json.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, separators=(",", ":"))
    os.replace(tmp, path)


class _OpenClip:
    """A clip being written: its WAV file and its sidecar's fields."""

    def __init__(self, info: ClipInfo, wav: Path, fh: BinaryIO, sound: Any) -> None:
        self.info = info
        self.wav = wav
        self.fh = fh
        self.sound = sound
        self.frames = 0


class EvidenceStore:
    """Clips on disk under ``root``; see the module docstring.

    ``retention_days`` and ``max_bytes`` are ``[evidence]``'s; ``clock`` (epoch seconds)
    stamps ``created``/``closed``.
    """

    def __init__(
        self,
        root: Path | str,
        *,
        retention_days: float = 30.0,
        max_bytes: int = 10 * 1024**3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = Path(root)
        self.retention_days = float(retention_days)
        self.max_bytes = int(max_bytes)
        self._clock = clock
        self._open: dict[str, _OpenClip] = {}
        self._dropped: set[str] = set()  # deleted while being written: later ops are ignored
        try:
            _private_dir(self.root)
        except OSError as exc:
            raise EvidenceError(
                f"cannot create the evidence folder {self.root}: {exc.strerror or exc}"
            ) from None

    # -- writing ---------------------------------------------------------------------------
    def apply(
        self,
        ops: Iterable[ClipOp],
        *,
        call_id: str,
        track: str,
        source: Source | None,
        rate: int,
    ) -> list[EvidenceSaved]:
        """Carry out a :class:`~streamguard.evidence.recorder.TrackRecorder`'s operations
        for one track; returns an ``evidence_saved`` draft per clip closed."""
        saved: list[EvidenceSaved] = []
        for op in ops:
            if isinstance(op, OpenClip):
                self.open_clip(
                    op.clip, call_id=call_id, track=track, source=source, rate=rate,
                    start=op.start / rate,
                )  # fmt: skip
            elif isinstance(op, WriteClip):
                self.write(op.clip, op.samples)
            elif isinstance(op, CloseClip):
                event = self.close_clip(op.clip, op.end / rate)
                if event is not None:
                    saved.append(event)
        return saved

    def open_clip(
        self,
        clip: str,
        *,
        call_id: str,
        track: str,
        source: Source | None,
        rate: int,
        start: float,
    ) -> None:
        """Create the clip's WAV (0600) and its sidecar (``closed`` null)."""
        import soundfile as sf

        if not valid_clip_id(clip):
            raise ValueError(f"bad clip id {clip!r}")
        folder = self.root / call_key(call_id)
        _private_dir(folder)
        wav = folder / f"{clip}.wav"
        fd = os.open(wav, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fh = os.fdopen(fd, "w+b")
        try:
            sound = sf.SoundFile(
                fh, mode="w", samplerate=int(rate), channels=1, format="WAV", subtype="PCM_16"
            )
        except Exception:
            fh.close()
            wav.unlink(missing_ok=True)
            raise
        info = ClipInfo(
            clip=clip, call_id=call_id, track=track, source=source, rate=int(rate),
            start=float(start), end=None, bytes=0, created=self._clock(), closed=None,
        )  # fmt: skip
        self._open[clip] = _OpenClip(info, wav, fh, sound)
        _write_json(folder / f"{clip}.json", self._sidecar(info))

    def write(self, clip: str, samples: np.ndarray) -> None:
        """Append int16 samples to an open clip."""
        if clip in self._dropped:
            return
        entry = self._open[clip]
        pcm = np.asarray(samples, dtype=np.int16).reshape(-1)
        entry.sound.write(pcm)
        entry.frames += pcm.size

    def close_clip(self, clip: str, end: float) -> EvidenceSaved | None:
        """Finish the WAV, mark the sidecar closed; the ``evidence_saved`` draft (None for a
        clip deleted while it was written)."""
        if clip in self._dropped:
            self._dropped.discard(clip)
            return None
        entry = self._open.pop(clip)
        entry.sound.close()
        entry.fh.close()
        size = entry.wav.stat().st_size
        end = max(entry.info.start, float(end))
        info = _replace(entry.info, end=end, bytes=size, closed=self._clock())
        _write_json(entry.wav.with_suffix(".json"), self._sidecar(info))
        return EvidenceSaved(
            call_id=info.call_id, track=info.track, source=info.source,  # type: ignore[arg-type]
            clip=info.clip, start=info.start, end=end, bytes=size,
        )  # fmt: skip

    def close(self) -> list[EvidenceSaved]:
        """Close every open clip where it is (shutdown without the calls' ends)."""
        saved = []
        for clip, entry in list(self._open.items()):
            event = self.close_clip(clip, entry.info.start + entry.frames / entry.info.rate)
            if event is not None:
                saved.append(event)
        return saved

    # -- reading ---------------------------------------------------------------------------
    def clips(self, call_id: str) -> list[ClipInfo]:
        """The call's clips, complete and being written, by start (empty when none)."""
        folder = self.root / call_key(call_id)
        found = [c for c in self._read_folder(folder) if c.call_id == call_id]
        return sorted(found, key=lambda c: (c.start, c.track, c.clip))

    def wav_path(self, call_id: str, clip: str) -> Path | None:
        """The WAV of a complete clip of this call, or None (unknown, or still written)."""
        if not valid_clip_id(clip):
            return None
        folder = self.root / call_key(call_id)
        info = self._read_sidecar(folder / f"{clip}.json")
        if info is None or info.call_id != call_id or not info.complete:
            return None
        wav = folder / f"{clip}.wav"
        return wav if wav.is_file() else None

    def all_clips(self) -> Iterator[ClipInfo]:
        """Every clip of every call (a scan of the folders)."""
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.scandir(self.root), key=lambda e: e.name):
                if entry.is_dir(follow_symlinks=False) and re.fullmatch(
                    r"[0-9a-f]{32}", entry.name
                ):
                    yield from self._read_folder(Path(entry.path))

    def used_bytes(self) -> int:
        return sum(c.bytes if c.complete else self._open_size(c) for c in self.all_clips())

    # -- deleting --------------------------------------------------------------------------
    def delete_call(self, call_id: str) -> EvidenceDeleted | None:
        """Delete every clip of the call (reason ``request``); None when it had none. A clip
        still being written is dropped: the rest of it is not recorded."""
        clips = self.clips(call_id)
        if not clips:
            return None
        for info in clips:
            entry = self._open.pop(info.clip, None)
            if entry is not None:
                entry.sound.close()
                entry.fh.close()
                self._dropped.add(info.clip)
        freed = self._remove(clips)
        folder = self.root / call_key(call_id)
        with contextlib.suppress(OSError):
            folder.rmdir()
        return EvidenceDeleted(
            call_id=call_id, track=None, source=clips[0].source,  # type: ignore[arg-type]
            clips=[c.clip for c in clips], bytes=freed, reason="request",
        )  # fmt: skip

    def sweep(self, now: float) -> list[EvidenceDeleted]:
        """Retention at wall time ``now``: complete clips closed more than ``retention_days``
        ago, then the oldest complete clips while all clips exceed ``max_bytes``. One
        ``evidence_deleted`` per call and reason. Clips being written are never deleted
        (they count towards the size)."""
        clips = list(self.all_clips())
        complete = sorted((c for c in clips if c.complete), key=lambda c: (c.closed, c.clip))
        cutoff = now - self.retention_days * _DAY
        by_age = [c for c in complete if c.closed is not None and c.closed < cutoff]
        kept = complete[len(by_age) :]  # sorted by closed: the aged ones are the first
        total = sum(c.bytes for c in kept)
        total += sum(self._open_size(c) for c in clips if not c.complete)
        by_size: list[ClipInfo] = []
        for c in kept:
            if total <= self.max_bytes:
                break
            by_size.append(c)
            total -= c.bytes
        events: list[EvidenceDeleted] = []
        for reason, chosen in (("retention", by_age), ("size", by_size)):
            per_call: dict[str, list[ClipInfo]] = {}
            for c in chosen:
                per_call.setdefault(c.call_id, []).append(c)
            for call_id, group in per_call.items():
                freed = self._remove(group)
                with contextlib.suppress(OSError):
                    (self.root / call_key(call_id)).rmdir()
                events.append(
                    EvidenceDeleted(
                        call_id=call_id, track=None, source=group[0].source,  # type: ignore[arg-type]
                        clips=[c.clip for c in group], bytes=freed, reason=reason,  # type: ignore[arg-type]
                    )
                )  # fmt: skip
        return events

    # -- crash recovery ----------------------------------------------------------------------
    def recover(self) -> list[EvidenceSaved]:
        """Close the clips a crash left open (sidecar ``closed`` null, not open here): the
        WAV's header is rewritten from the audio that reached the disk. Call it at start-up,
        before any recording; returns an ``evidence_saved`` draft per clip closed."""
        saved = []
        for info in list(self.all_clips()):
            if info.complete or info.clip in self._open:
                continue
            folder = self.root / call_key(info.call_id)
            wav = folder / f"{info.clip}.wav"
            frames = _repair_wav(wav, info.rate)
            size = wav.stat().st_size if wav.exists() else 0
            end = info.start + frames / info.rate
            fixed = _replace(info, end=end, bytes=size, closed=self._clock())
            _write_json(folder / f"{info.clip}.json", self._sidecar(fixed))
            saved.append(
                EvidenceSaved(
                    call_id=info.call_id, track=info.track, source=info.source,  # type: ignore[arg-type]
                    clip=info.clip, start=info.start, end=end, bytes=size,
                )
            )  # fmt: skip
        return saved

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _sidecar(info: ClipInfo) -> dict[str, Any]:
        return {"version": SIDECAR_VERSION, **asdict(info)}

    @staticmethod
    def _read_sidecar(path: Path) -> ClipInfo | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            data.pop("version", None)
            info = ClipInfo(**data)
        except (OSError, ValueError, TypeError):
            return None  # missing, half-written by another process, or not ours
        return info if valid_clip_id(info.clip) and path.stem == info.clip else None

    def _read_folder(self, folder: Path) -> list[ClipInfo]:
        try:
            names = sorted(p for p in os.listdir(folder) if p.endswith(".json"))
        except (FileNotFoundError, NotADirectoryError):
            return []
        out = []
        for name in names:
            info = self._read_sidecar(folder / name)
            if info is not None:
                out.append(info)
        return out

    def _open_size(self, info: ClipInfo) -> int:
        wav = self.root / call_key(info.call_id) / f"{info.clip}.wav"
        try:
            return wav.stat().st_size
        except OSError:
            return 0

    def _remove(self, clips: Iterable[ClipInfo]) -> int:
        freed = 0
        for info in clips:
            folder = self.root / call_key(info.call_id)
            wav = folder / f"{info.clip}.wav"
            with contextlib.suppress(OSError):
                freed += wav.stat().st_size
            wav.unlink(missing_ok=True)
            (folder / f"{info.clip}.json").unlink(missing_ok=True)
        return freed


def _replace(info: ClipInfo, **changes: Any) -> ClipInfo:
    return ClipInfo(**{**asdict(info), **changes})


def _repair_wav(path: Path, rate: int) -> int:
    """Rewrite a WAV whose writer died before closing it (its sizes say 0): the samples after
    the ``data`` chunk's header are kept, whole samples only. Returns the frames kept."""
    import soundfile as sf

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return 0
    offset = 12
    data_at = None
    while offset + 8 <= len(raw) and raw[:4] == b"RIFF" and raw[8:12] == b"WAVE":
        chunk, size = raw[offset : offset + 4], struct.unpack("<I", raw[offset + 4 : offset + 8])[0]
        if chunk == b"data":
            data_at = offset + 8
            break
        offset += 8 + size + (size & 1)
    pcm = np.zeros(0, np.int16)
    if data_at is not None:
        body = raw[data_at:]
        pcm = np.frombuffer(body[: len(body) - len(body) % 2], dtype="<i2")
    tmp = path.with_suffix(".wav.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w+b") as fh:
        sf.write(fh, pcm, int(rate), format="WAV", subtype="PCM_16")
    os.replace(tmp, path)
    return int(pcm.size)
