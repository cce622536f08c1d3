"""Moved: the audio-file reader lives in :mod:`streamguard.audio.file` (scan, feed, demo,
bench and training all read files through it). This name stays so older imports keep working."""

from streamguard.audio.file import MIN_SECONDS, AudioReader, open_audio, read_audio

__all__ = ["MIN_SECONDS", "AudioReader", "open_audio", "read_audio"]
