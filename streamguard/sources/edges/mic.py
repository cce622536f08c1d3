"""Microphone capture, the asyncio edge: PortAudio's input stream into :class:`MicCore` events.

``sounddevice`` is imported lazily (only when a microphone is actually opened) because on Linux
the import itself fails without the PortAudio system library; :func:`load_sounddevice` turns that,
and "no input device", into one :class:`StreamguardError` that names the fix.

PortAudio calls our callback on its real-time audio thread, where nothing may block: the callback
copies the block and hands it to the event loop with ``loop.call_soon_threadsafe``. On the loop the
block goes into a bounded deque; when the consumer falls behind, the OLDEST block is dropped and
counted (live screening prefers fresh audio). ``status.input_overflow`` (PortAudio itself lost
input) is counted too.

Usage by the daemon::

    mic = Microphone(device=None, sample_rate=16000, channels=1)
    async for event in mic.events():      # CallStart, TrackStart per channel, Audio..., ends
        route(event)
    # elsewhere, on the loop: mic.stop()  -> TrackEnd per channel + CallEnd("stop")

Tests (and other capture back-ends) inject ``stream_factory``: any callable taking sounddevice's
``InputStream`` keyword arguments and returning an object with ``start()`` and ``close()`` that
calls ``callback(indata, frames, time, status)`` from its own thread.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Final

import numpy as np
import structlog

from streamguard.errors import StreamguardError
from streamguard.sources.base import SourceEvent
from streamguard.sources.mic import MicCore

__all__ = ["MicSource", "MicStats", "Microphone", "load_sounddevice"]

log = structlog.get_logger("streamguard.daemon")

PORTAUDIO_HINT: Final = "install PortAudio: apt-get install libportaudio2"


def load_sounddevice() -> ModuleType:
    """Import sounddevice, turning a missing PortAudio/package into a StreamguardError."""
    try:
        import sounddevice
    except OSError as exc:  # the wheel does not bundle PortAudio on Linux
        raise StreamguardError(f"PortAudio library not found ({exc}); {PORTAUDIO_HINT}") from None
    except ImportError:
        raise StreamguardError(
            "the sounddevice package is not installed: pip install sounddevice"
        ) from None
    return sounddevice


def _open_error(exc: BaseException, device: Any) -> StreamguardError:
    message = str(exc)
    if "device -1" in message:
        return StreamguardError(
            "no input device found (PortAudio: Error querying device -1): connect a microphone, "
            "or choose one with the mic device setting (list them: python -m sounddevice)"
        )
    return StreamguardError(f"cannot open input device {device!r}: {message}")


@dataclass(slots=True)
class MicStats:
    blocks: int = 0  # blocks received from the audio thread
    dropped_blocks: int = 0  # oldest blocks dropped because the consumer fell behind
    input_overflows: int = 0  # callbacks reporting status.input_overflow (PortAudio lost input)


class Microphone:
    """Asyncio edge around :class:`MicCore`: opens the input stream and yields its events.

    ``device`` is a sounddevice device index or name (None = the default input).
    ``max_queue_blocks`` bounds the audio waiting for the consumer (x ``block_seconds``).
    """

    def __init__(
        self,
        *,
        device: int | str | None = None,
        sample_rate: int = 16000,
        channels: int = 1,
        block_seconds: float = 0.1,
        max_queue_blocks: int = 50,
        call_id: str | None = None,
        stream_factory: Callable[..., Any] | None = None,
    ) -> None:
        self.device = device
        self.block_frames = max(1, round(sample_rate * block_seconds))
        self.core = MicCore(sample_rate, channels, call_id=call_id, metadata={"device": device})
        self.stats = MicStats()
        self._factory = stream_factory
        self._queue: deque[np.ndarray] = deque(maxlen=max(1, max_queue_blocks))
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_reason: str | None = None
        self._stream: Any = None

    def stop(self, reason: str = "stop") -> None:
        """End capture; ``events()`` drains what is queued, then ends. Call on the loop."""
        if self._stop_reason is None:
            self._stop_reason = reason
        self._wake.set()

    @property
    def queued_blocks(self) -> int:
        """Captured blocks waiting for the consumer (at most ``max_queue_blocks``)."""
        return len(self._queue)

    def open(self) -> None:
        """Open and start the input stream now (call on the loop), so that a missing PortAudio
        or device is a :class:`StreamguardError` before the daemon says it is ready.
        :meth:`events` opens it itself when this was not called."""
        if self._stream is not None:
            return
        self._loop = asyncio.get_running_loop()
        factory = self._factory or load_sounddevice().InputStream
        try:
            stream = factory(
                device=self.device,
                samplerate=self.core.sample_rate,
                channels=self.core.channels,
                dtype="float32",
                blocksize=self.block_frames,
                callback=self._callback,
                finished_callback=self._finished,
            )
            stream.start()
        except StreamguardError:
            raise
        except Exception as exc:  # PortAudioError, ValueError (unknown device), OSError
            if type(exc).__name__ == "PortAudioError" or isinstance(exc, OSError | ValueError):
                raise _open_error(exc, self.device) from None
            raise
        self._stream = stream

    async def events(self) -> AsyncIterator[SourceEvent]:
        """Open the device (unless :meth:`open` did) and yield source events until
        :meth:`stop` or the stream ends."""
        self.open()
        stream = self._stream
        try:
            for event in self.core.start():
                yield event
            while True:
                while self._queue:
                    for event in self.core.push(self._queue.popleft()):
                        yield event
                if self._stop_reason is not None:
                    break
                self._wake.clear()
                if not self._queue and self._stop_reason is None:
                    await self._wake.wait()
        finally:
            stream.close()  # aborts: PortAudio discards pending buffers; no callbacks after
        while self._queue:  # blocks that arrived while closing
            for event in self.core.push(self._queue.popleft()):
                yield event
        for event in self.core.stop(self._stop_reason or "closed"):
            yield event

    # ----------------------------------------------------------- PortAudio's real-time thread
    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if getattr(status, "input_overflow", False):
            self.stats.input_overflows += 1
        block = np.array(indata, dtype=np.float32, copy=True)  # PortAudio reuses its buffer
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop closed: nobody is listening any more
            loop.call_soon_threadsafe(self._enqueue, block)

    def _finished(self) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self.stop, "closed")

    # ----------------------------------------------------------------------- the loop thread
    def _enqueue(self, block: np.ndarray) -> None:
        self.stats.blocks += 1
        if len(self._queue) == self._queue.maxlen:
            self.stats.dropped_blocks += 1  # deque drops the oldest on append
        self._queue.append(block)
        self._wake.set()


class MicSource:
    """The daemon's microphone source: a :class:`Microphone` whose events one ``CallFeed``
    routes, as a listener of the source table (``stop`` / ``closed``)."""

    def __init__(self, microphone: Microphone, feed: Any, metrics: Any = None) -> None:
        self.microphone = microphone
        self.feed = feed
        self.metrics = metrics
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        """Open the device now, before READY: no PortAudio or no input device stops the daemon
        with one line (docs/sources.md), rather than a "ready" daemon without its mic."""
        self.microphone.open()
        self._task = asyncio.create_task(self._capture(), name="microphone")

    async def _capture(self) -> None:
        try:
            async for event in self.microphone.events():
                self.feed.route([event])
        except StreamguardError as exc:
            # Lost after start: one clear line; the other sources keep running.
            log.error("microphone_unavailable", error=str(exc))
        finally:
            if self.metrics is not None:
                self.metrics.mic_overflows_total.inc(self.microphone.stats.input_overflows)

    async def stop(self) -> None:
        """End the microphone's call (reason ``shutdown``; its buffered audio is scored)."""
        if self._task is not None:
            self.microphone.stop("shutdown")
            await self._task

    async def closed(self) -> None:
        """Nothing is left after :meth:`stop`."""
