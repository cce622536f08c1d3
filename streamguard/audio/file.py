"""Decode audio files for ``streamguard scan``, ``feed``, ``evaluate`` and training, block by block.

The one audio-file reader of streamguard: everything that opens a file comes through here.

soundfile (libsndfile >= 1.1) reads WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF and more at any rate.
For containers it cannot read (m4a/AAC, webm, ...) we fall back to the ``ffmpeg`` binary when it
is on PATH, streaming raw float32 from its stdout. Files are read in blocks so a long recording
never has to fit in memory: the scanner pushes each block through the track pipeline.

Every problem a user can fix becomes one :class:`~streamguard.errors.AudioError` line:
missing, empty (0 bytes), not audio, truncated (a WAV whose header promises more data than the
file holds), too short (less than :data:`MIN_SECONDS`, e.g. a single sample), or a decoder
failure part-way.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from streamguard.errors import AudioError

__all__ = ["MIN_SECONDS", "AudioReader", "decode_mono", "open_audio", "read_audio"]

#: Shortest file worth decoding: one 10 ms VAD frame. Anything shorter cannot be analysed.
MIN_SECONDS = 0.010
DEFAULT_BLOCK_FRAMES = 65_536


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _riff_truncation(path: Path, size: int) -> str | None:
    """For a RIFF/WAVE file: a message if its data chunk claims more bytes than the file holds.

    libsndfile silently reads what is there; a cut-off recording should be reported instead.
    Size fields of 0 or 0xFFFFFFFF (written by recorders that never finalised the header) mean
    "unknown length" and are accepted.
    """
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        offset = 12
        while offset + 8 <= size:
            fh.seek(offset)
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, csize = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                available = size - (offset + 8)
                if csize not in (0, 0xFFFFFFFF) and csize > available:
                    return (
                        f"truncated: the WAV header declares {csize} bytes of audio but only "
                        f"{available} are present"
                    )
                return None
            offset += 8 + csize + (csize & 1)
    return None


class AudioReader:
    """An open audio file: ``sample_rate``, ``channels``, ``frames`` (None if unknown until the
    end, with ffmpeg), and :meth:`blocks` yielding float32 ``[channels, n]`` arrays.

    Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.decoder = "soundfile"
        self._sf = None
        self._proc: subprocess.Popen[bytes] | None = None
        name = str(self.path)
        if not self.path.exists():
            raise AudioError(f"{name}: no such file")
        if not self.path.is_file():
            raise AudioError(f"{name}: not a regular file")
        size = self.path.stat().st_size
        if size == 0:
            raise AudioError(f"{name}: empty file (0 bytes)")
        problem = _riff_truncation(self.path, size)
        if problem:
            raise AudioError(f"{name}: {problem}")
        import soundfile as sf

        try:
            self._sf = sf.SoundFile(name)
        except (sf.SoundFileError, RuntimeError, OSError) as exc:
            sf_error = str(getattr(exc, "error_string", "") or _one_line(exc)).rstrip(".")
            if shutil.which("ffmpeg") and shutil.which("ffprobe"):
                self._probe_ffmpeg(sf_error)
            else:
                raise AudioError(f"{name}: not a recognised audio file ({sf_error})") from None
        else:
            self.sample_rate = int(self._sf.samplerate)
            self.channels = int(self._sf.channels)
            self.frames: int | None = int(self._sf.frames)
            self.format = str(self._sf.format)
            self._check_length(self.frames)

    # -- ffmpeg fallback ---------------------------------------------------------------------
    def _probe_ffmpeg(self, sf_error: str) -> None:
        cmd = [
            "ffprobe", "-v", "error", "-select_streams", "a:0",
            "-show_entries", "stream=sample_rate,channels,codec_name", "-of", "json",
            str(self.path),
        ]  # fmt: skip
        try:
            proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
            streams = json.loads(proc.stdout or b"{}").get("streams") or []
        except (OSError, subprocess.TimeoutExpired, ValueError):
            streams = []
        if not streams or not int(streams[0].get("sample_rate") or 0):
            raise AudioError(f"{self.path}: not a recognised audio file ({sf_error})")
        self.decoder = "ffmpeg"
        self.sample_rate = int(streams[0]["sample_rate"])
        self.channels = int(streams[0].get("channels") or 1)
        self.frames = None
        self.format = str(streams[0].get("codec_name", "?")).upper()

    def _ffmpeg_blocks(self, block_frames: int) -> Iterator[np.ndarray]:
        cmd = [
            "ffmpeg", "-v", "error", "-nostdin", "-i", str(self.path), "-map", "0:a:0",
            "-f", "f32le", "-acodec", "pcm_f32le", "-",
        ]  # fmt: skip
        self._proc = proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
        )
        assert proc.stdout is not None and proc.stderr is not None
        frame_bytes = 4 * self.channels
        total = 0
        leftover = b""
        while True:
            data = proc.stdout.read(block_frames * frame_bytes)
            if not data:
                break
            data = leftover + data
            usable = len(data) - len(data) % frame_bytes
            leftover = data[usable:]
            if usable:
                block = np.frombuffer(data[:usable], dtype="<f4").reshape(-1, self.channels)
                total += block.shape[0]
                yield np.ascontiguousarray(block.T, dtype=np.float32)
        err = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
        if proc.wait() != 0:
            detail = err[-1] if err else f"ffmpeg exited with {proc.returncode}"
            raise AudioError(f"{self.path}: decoding failed: {detail}")
        self.frames = total
        self._check_length(total)

    # -- common ------------------------------------------------------------------------------
    def _check_length(self, frames: int) -> None:
        if frames < max(1, round(MIN_SECONDS * self.sample_rate)):
            unit = "sample" if frames == 1 else "samples"
            raise AudioError(
                f"{self.path}: too short to analyse: {frames} {unit} "
                f"(need at least {MIN_SECONDS * 1000:.0f} ms)"
            )

    @property
    def duration(self) -> float | None:
        return None if self.frames is None else self.frames / self.sample_rate

    def blocks(self, block_frames: int = DEFAULT_BLOCK_FRAMES) -> Iterator[np.ndarray]:
        """Yield float32 ``[channels, n]`` blocks in file order (n <= ``block_frames``; MP3 reads
        at least 60 s at a time, see below)."""
        if self._sf is None:
            yield from self._ffmpeg_blocks(block_frames)
            return
        done = 0
        if self.format == "MP3":
            # libmpg123 (inside libsndfile) prints bit-reservoir complaints on stderr at some
            # read boundaries (python-soundfile#402); the samples are right. Fewer, larger
            # reads (60 s, a few MB) keep that noise rare.
            block_frames = max(block_frames, 60 * self.sample_rate)
        try:
            # Read until the decoder runs dry: the declared length of an MP3 can be off
            # (libsndfile#1001), so ``frames`` is corrected to what was really decoded.
            while True:
                block = self._sf.read(block_frames, dtype="float32", always_2d=True)
                if block.shape[0] == 0:
                    break
                done += block.shape[0]
                yield np.ascontiguousarray(block.T)
            self.frames = done
        except AudioError:
            raise
        except Exception as exc:  # libsndfile errors part-way: corrupt or cut-off data
            raise AudioError(
                f"{self.path}: decoding failed after {done / self.sample_rate:.2f} s "
                f"(corrupt or truncated?): {_one_line(exc)}"
            ) from None

    def close(self) -> None:
        if self._sf is not None:
            self._sf.close()
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_audio(path: str | os.PathLike[str]) -> AudioReader:
    """Open ``path`` for block reading; raises :class:`AudioError` with a one-line reason."""
    return AudioReader(path)


def read_audio(path: str | os.PathLike[str]) -> tuple[int, np.ndarray]:
    """Whole file at once: ``(sample_rate, float32 [channels, n])``. For short files/tests;
    the scanner streams with :func:`open_audio` instead."""
    with open_audio(path) as reader:
        blocks = list(reader.blocks())
        data = (
            np.concatenate(blocks, axis=1)
            if blocks
            else np.zeros((reader.channels, 0), dtype=np.float32)
        )
        return reader.sample_rate, data


def decode_mono(path: str | os.PathLike[str], sample_rate: int = 16_000) -> np.ndarray:
    """Whole file as float32 mono at ``sample_rate``: channels averaged, then the per-track soxr
    stream resampler the daemon uses (so a file decodes to the very samples a call would)."""
    from streamguard.audio.resample import StreamResampler

    rate, data = read_audio(path)
    mono = data.mean(axis=0) if data.shape[0] > 1 else data[0]
    if rate != sample_rate:
        resampler = StreamResampler(rate, sample_rate)
        mono = np.concatenate([resampler.push(mono), resampler.flush()])
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if not np.all(np.isfinite(mono)):
        raise AudioError(f"{path}: non-finite samples")
    return mono
