"""Ingest cost: CPU per track for decode -> resample -> VAD -> windowing, without the model.

Pre-encoded frames (the exact wire format of each protocol, from
:mod:`streamguard.sources.senders`) are pushed through the real protocol core
(:class:`~streamguard.sources.twilio.MediaStreamProtocol` or
:class:`~streamguard.sources.native.IngestProtocol`) and the real
:class:`~streamguard.calls.CallSession` (resampler, ring, VAD gate, windower), interleaved
across ``tracks`` concurrent calls frame by frame as the daemon would see them. The windows
that come out are read (as the engine would) and thrown away: no model, no sockets.

The figure is **CPU per track as a share of one core**: process CPU seconds spent / seconds
of audio pushed per track, x 100. A share of 0.5 % means one core carries 200 such tracks.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from streamguard.bench.loadgen import call_audio

#: Wire formats measured by default: (protocol, frame milliseconds).
DEFAULT_FORMATS: tuple[tuple[str, int], ...] = (("native", 100), ("native", 20), ("twilio", 20))


@dataclass(frozen=True)
class IngestResult:
    protocol: str
    frame_ms: int
    input_rate: int
    tracks: int
    audio_seconds_per_track: float
    cpu_seconds: float
    wall_seconds: float
    windows: int
    windows_skipped: int
    frames: int
    mix: bool = True

    @property
    def core_percent_per_track(self) -> float:
        """CPU per track as a share of one core (100 = a whole core)."""
        return 100.0 * self.cpu_seconds / (self.tracks * self.audio_seconds_per_track)

    @property
    def microseconds_per_frame(self) -> float:
        return 1e6 * self.cpu_seconds / self.frames if self.frames else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "core_percent_per_track": self.core_percent_per_track,
            "microseconds_per_frame": self.microseconds_per_frame,
        }


def _core(protocol: str):
    from streamguard.sources.native import IngestProtocol
    from streamguard.sources.twilio import MediaStreamProtocol

    return MediaStreamProtocol() if protocol == "twilio" else IngestProtocol()


def run_ingest_bench(
    file: str,
    *,
    protocol: str = "native",
    frame_ms: int = 100,
    calls: int = 16,
    seconds: float = 30.0,
    rate: int = 8000,
    hop_seconds: float = 1.0,
    window_seconds: float = 4.0,
    mix: bool = True,
) -> IngestResult:
    """Push ``calls`` calls of ``seconds`` of ``file`` (resampled to ``rate``) through the cores.

    Every call sends the same bytes (the content does not change the cost much, and encoding
    them once keeps the measurement about the daemon's side only). ``mix``: the file's
    channels as one track (continuous speech); else one track per channel.
    """
    from streamguard.audio.resample import StreamResampler
    from streamguard.audio.track import TrackSettings
    from streamguard.calls import CallPolicy, CallSession
    from streamguard.model.base import ModelInfo
    from streamguard.sources.base import CallStart
    from streamguard.sources.senders import frames_for

    file_rate, audio = call_audio(file, seconds, mix=mix)
    if file_rate != rate:
        resampled = []
        for channel in audio:
            stream = StreamResampler(file_rate, rate)
            resampled.append(np.concatenate([stream.push(channel), stream.flush()]))
        n = min(len(c) for c in resampled)
        audio = np.stack([c[:n] for c in resampled])
    if protocol == "twilio":
        audio = audio[:2]
    frames = [f for _, f in frames_for(protocol, audio, rate, call_id="bench", chunk_ms=frame_ms)]
    info = ModelInfo(name="none", architecture="none", window_seconds=window_seconds)
    policy = CallPolicy(track=TrackSettings(hop_seconds=hop_seconds))
    cores = [_core(protocol) for _ in range(calls)]
    sessions: list[CallSession | None] = [None] * calls
    windows = 0
    batch = np.empty((1, info.window_samples), dtype=np.float32)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for frame in frames:
        text = isinstance(frame, str)
        for i, core in enumerate(cores):
            events = core.receive_text(frame) if text else core.receive_bytes(frame)
            session = sessions[i]
            for event in events:
                if session is None:
                    if isinstance(event, CallStart):
                        session = sessions[i] = CallSession(event, info=info, policy=policy)
                    continue
                session.handle(event)
            if session is not None:
                for pending in session.windows_to_score():
                    batch[0] = pending.window.samples  # the engine copies each window into a batch
                    windows += 1
                session.events_to_publish()
    for i, core in enumerate(cores):
        session = sessions[i]
        if session is not None:
            session.handle_all(core.close())
            windows += len(session.windows_to_score())
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    skipped = sum(
        t.pipeline.windows_skipped for s in sessions if s is not None for t in s.tracks.values()
    )
    return IngestResult(
        protocol=protocol,
        frame_ms=frame_ms,
        input_rate=rate,
        tracks=calls * audio.shape[0],
        audio_seconds_per_track=audio.shape[1] / rate,
        cpu_seconds=cpu,
        wall_seconds=wall,
        windows=windows,
        windows_skipped=skipped,
        frames=len(frames) * calls,
        mix=mix,
    )
