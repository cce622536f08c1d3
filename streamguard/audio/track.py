"""One track's chain, shared by the file scanner and the live daemon (one code path).

decode (caller) -> :class:`StreamResampler` (to 16 kHz) -> int16 -> :class:`RingBuffer`
(bounded) and :class:`SpeechGate` (webrtcvad) -> :class:`Windower` -> :class:`Window` objects.

Why coalesce: feeds deliver 20 ms frames (Twilio, RTP, most forks), and every step of the chain
has a fixed cost per call (a soxr call, numpy temporaries, a list of VAD decisions). Input is
held until ``coalesce_ms`` of it has arrived and the chain runs once per chunk: ~5x fewer
calls per second of audio, for at most ``coalesce_ms`` of added latency. The resampled audio is
converted to int16 once; the ring stores that (half the memory of float32) and the VAD reads
the same array.

Input is processed in slices of at most ``_SLICE_SECONDS`` so that one huge ``push`` (a whole
file, a long gap) can never overwrite audio in the ring before the windower has read it.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from streamguard.audio.resample import StreamResampler
from streamguard.audio.ringbuffer import RingBuffer
from streamguard.audio.vad import SpeechGate, float_to_pcm16
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
        6.0,
        gt=0,
        description="Audio kept per track (int16 at 16 kHz: 32 KB per second, 192 KB for 6 s); "
        "raised automatically to the model's window + 1 hop + 1 s when shorter.",
    )
    adaptive_stride: int = Field(
        1,
        ge=1,
        le=4,
        description="While a track is confidently real, score only every Nth window; back to "
        "every window as soon as a score rises. 1 = score every window (see "
        "streamguard/policy/adaptive.py).",
    )
    adaptive_below: float = Field(
        0.5,
        gt=0,
        le=1,
        description="Confidently real = P(fake) below this fraction of the model's threshold.",
    )
    coalesce_ms: int = Field(
        100,
        ge=0,
        le=1000,
        description="Input is held until this much has arrived, then resampled, VAD-gated and "
        "windowed in one go (fewer calls per second of audio; adds at most this much "
        "latency). 0 = process every push at once.",
    )

    @model_validator(mode="after")
    def _check(self) -> TrackSettings:
        if self.vad_frame_ms not in (10, 20, 30):
            raise ValueError(f"vad_frame_ms must be 10, 20 or 30, got {self.vad_frame_ms}")
        return self

    def ring_seconds_for(self, window_seconds: float) -> float:
        """The ring length a track with this window gets: never too short to cut a window."""
        return max(self.ring_seconds, window_seconds + self.hop_seconds + 1.0)


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
        self.ring = RingBuffer(
            round(settings.ring_seconds_for(window_seconds) * SAMPLE_RATE), dtype=np.int16
        )
        self.gate = SpeechGate(SAMPLE_RATE, settings.vad_frame_ms, settings.vad_aggressiveness)
        self.windower = Windower(
            self.ring,
            self.window_samples,
            self.hop_samples,
            round(settings.min_speech_seconds * SAMPLE_RATE),
        )
        self.samples_in = 0
        self._slice = max(1, int(self.input_rate * _SLICE_SECONDS))
        self._coalesce = round(self.input_rate * settings.coalesce_ms / 1000)
        self._held: list[np.ndarray] = []  # input not yet run through the chain
        self._held_samples = 0
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
        if not y.size:
            return []
        pcm = float_to_pcm16(y)
        self.ring.write(pcm)
        return self.windower.push(self.gate.push_pcm16(pcm))

    def _run_chain(self, x: np.ndarray) -> list[Window]:
        out: list[Window] = []
        for i in range(0, x.size, self._slice):
            out.extend(self._feed16k(self.resampler.push(x[i : i + self._slice])))
        return out

    def _release_held(self) -> list[Window]:
        if not self._held:
            return []
        x = self._held[0] if len(self._held) == 1 else np.concatenate(self._held)
        self._held, self._held_samples = [], 0
        return self._run_chain(x)

    def push(self, samples: np.ndarray) -> list[Window]:
        """Push mono float32 samples at ``input_rate``; returns windows that became ready.

        Input is held until ``coalesce_ms`` of it has arrived (see the module docstring).
        """
        if self._finished:
            raise RuntimeError("push() after finish()")
        x = np.asarray(samples, dtype=np.float32).reshape(-1)
        if not x.size:
            return []
        self.samples_in += x.size
        if self._held_samples + x.size < self._coalesce:
            # Callers may reuse their buffer: hold a copy.
            self._held.append(x.copy())
            self._held_samples += x.size
            return []
        if self._held:
            self._held.append(x)
            return self._release_held()
        return self._run_chain(x)

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
        out = self._release_held()
        self._finished = True
        out.extend(self._feed16k(self.resampler.flush()))
        out.extend(self.windower.push(self.gate.flush()))
        out.extend(self.windower.finish())
        return out
