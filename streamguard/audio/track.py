"""One track's chain, shared by the file scanner and the live daemon (one code path).

decode (caller) -> :class:`StreamResampler` (to 16 kHz) -> :class:`RingBuffer` (bounded) ->
:class:`SpeechGate` (webrtcvad) -> :class:`Windower` -> :class:`Window` objects to score.

Input is processed in slices of at most ``_SLICE_SECONDS`` so that one huge ``push`` (a whole
file, a long gap) can never overwrite audio in the ring before the windower has read it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamguard.audio.resample import StreamResampler
from streamguard.audio.ringbuffer import RingBuffer
from streamguard.audio.vad import SpeechGate
from streamguard.audio.windows import SAMPLE_RATE, Window, Windower

__all__ = ["DEFAULT_WINDOW_SECONDS", "TrackPipeline", "TrackSettings"]

_SLICE_SECONDS = 0.5


#: The window length when none is given: the published models' 4 s.
DEFAULT_WINDOW_SECONDS = 4.0


class TrackSettings(BaseModel):
    """Per-track audio settings (the ``[track]`` table of the daemon config; scan flags).

    The window length is not here: it belongs to the model (``ModelInfo.window_seconds``,
    ``streamguard model info``), and the pipeline is given it.
    """

    model_config = ConfigDict(extra="forbid")

    hop_seconds: float = Field(1.0, gt=0, description="A window is cut every hop of call time.")
    min_speech_seconds: float = Field(
        0.5, ge=0, description="A window needs at least this much VAD speech to be scored."
    )
    vad_aggressiveness: int = Field(
        2, ge=0, le=3, description="webrtcvad mode: 0 keeps most audio, 3 is the strictest."
    )
    vad_frame_ms: int = Field(30, description="webrtcvad frame: 10, 20 or 30 ms.")
    ring_seconds: float = Field(
        10.0,
        gt=0,
        description="Audio kept per track (float32 at 16 kHz: 64 KB per second, 0.64 MB per "
        "10 s); raised automatically to the model's window + 2 hops + 1 s when shorter.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrackSettings:
        if self.vad_frame_ms not in (10, 20, 30):
            raise ValueError(f"vad_frame_ms must be 10, 20 or 30, got {self.vad_frame_ms}")
        return self

    def ring_seconds_for(self, window_seconds: float) -> float:
        """The ring length a track with this window gets: never too short to cut a window."""
        return max(self.ring_seconds, window_seconds + 2 * self.hop_seconds + 1.0)


class TrackPipeline:
    """Per-track audio chain: ``push`` samples at ``input_rate``, get windows to score.

    ``window_seconds`` is the model's window. Counters: ``samples_in`` (at the input rate),
    ``duration_seconds`` (call time pushed), ``speech_seconds``, ``windows_emitted``,
    ``windows_skipped``.
    """

    def __init__(
        self,
        input_rate: int,
        settings: TrackSettings | None = None,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
    ) -> None:
        settings = settings or TrackSettings()
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be > 0, got {window_seconds}")
        if settings.min_speech_seconds > window_seconds:
            raise ValueError(
                f"min_speech_seconds ({settings.min_speech_seconds:g}) cannot exceed the "
                f"{window_seconds:g} s window"
            )
        self.settings = settings
        self.window_seconds = float(window_seconds)
        self.input_rate = int(input_rate)
        self.window_samples = round(window_seconds * SAMPLE_RATE)
        self.hop_samples = max(1, round(settings.hop_seconds * SAMPLE_RATE))
        self.resampler = StreamResampler(self.input_rate, SAMPLE_RATE)
        self.ring = RingBuffer(round(settings.ring_seconds_for(window_seconds) * SAMPLE_RATE))
        self.gate = SpeechGate(SAMPLE_RATE, settings.vad_frame_ms, settings.vad_aggressiveness)
        self.windower = Windower(
            self.ring,
            self.window_samples,
            self.hop_samples,
            round(settings.min_speech_seconds * SAMPLE_RATE),
        )
        self.samples_in = 0
        self._slice = max(1, int(self.input_rate * _SLICE_SECONDS))
        self._finished = False

    # -- counters ----------------------------------------------------------------------------
    @property
    def duration_seconds(self) -> float:
        return self.samples_in / self.input_rate

    @property
    def speech_seconds(self) -> float:
        return self.gate.speech_samples / SAMPLE_RATE

    @property
    def windows_emitted(self) -> int:
        return self.windower.windows_emitted

    @property
    def windows_skipped(self) -> int:
        return self.windower.windows_skipped

    # -- chain -------------------------------------------------------------------------------
    def _feed16k(self, y: np.ndarray) -> list[Window]:
        self.ring.write(y)
        return self.windower.push(self.gate.push(y))

    def push(self, samples: np.ndarray) -> list[Window]:
        """Push mono float32 samples at ``input_rate``; returns windows that became ready."""
        if self._finished:
            raise RuntimeError("push() after finish()")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        out: list[Window] = []
        for i in range(0, x.size, self._slice):
            piece = x[i : i + self._slice]
            self.samples_in += piece.size
            out.extend(self._feed16k(self.resampler.push(piece)))
        return out

    def push_silence(self, n_samples: int) -> list[Window]:
        """Insert ``n_samples`` (at ``input_rate``) of silence: a gap in a live feed."""
        out: list[Window] = []
        remaining = int(n_samples)
        zeros = np.zeros(min(max(remaining, 0), self._slice), dtype=np.float32)
        while remaining > 0:
            n = min(remaining, zeros.size)
            out.extend(self.push(zeros[:n]))
            remaining -= n
        return out

    def finish(self) -> list[Window]:
        """End of the track: flush the resampler and VAD, return the last windows."""
        if self._finished:
            return []
        self._finished = True
        out = self._feed16k(self.resampler.flush())
        out.extend(self.windower.push(self.gate.flush()))
        out.extend(self.windower.finish())
        return out
