"""Inference in a child process, fed through shared memory (``[model] worker = "process"``).

Why: in one process, the event loop's per-frame Python and the inference thread share the GIL;
torch and ONNX Runtime release it while they compute, but every operator boundary, every
pre- and post-processing step takes it back. A child process has its own interpreter, so the
loop's work never delays inference and vice versa.

How: :class:`ProcessDetector` looks like a detector to the engine (``info``, ``device``,
``window_samples``, ``__call__(waveforms) -> P(fake)``). The engine's worker thread writes a
batch straight into a shared-memory block (:meth:`ProcessDetector.input_buffer`), sends the row
count over a pipe and blocks on the answer (the GIL is released while it waits). The child
scores the rows in place and sends back the scores, or the exception's type and first line, so
the engine's fault isolation (retry rows alone, CUDA OOM halves the batch) works unchanged. A
child that dies is restarted on the next batch; the batch it died on fails (``error``).

The child is started with ``spawn`` (never ``fork``: a forked torch with live threads can
deadlock) and builds its serving backend itself; the model reaches it pickled through the
pipe, which is safe because both ends are this program.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import multiprocessing as mp
import threading
from dataclasses import dataclass
from multiprocessing import shared_memory
from typing import Any

import numpy as np
import structlog

log = structlog.get_logger(__name__)

#: Seconds a child may take to load the model and build its backend.
START_TIMEOUT = 600.0


@dataclass(frozen=True)
class WorkerSpec:
    """What a child needs to build the same detector as the parent."""

    module: Any  # torch.nn.Module (a private copy is pickled to the child: _start)
    info: Any  # ModelInfo
    device: str
    precision: str
    backend: str
    threads: int | None


class WorkerFailed(RuntimeError):
    """The child raised (its exception's type and first line are in the message)."""


def _child(conn, shm_name: str, rows: int, samples: int, spec: WorkerSpec) -> None:
    """The child's loop: build the detector, then score batches until told to stop."""
    import torch

    from streamguard.model.base import Detector
    from streamguard.model.serving import serve

    if spec.threads:
        torch.set_num_threads(spec.threads)
    shm = shared_memory.SharedMemory(name=shm_name)
    try:
        batch = np.ndarray((rows, samples), dtype=np.float32, buffer=shm.buf)
        try:
            detector = Detector(
                spec.module, spec.info, device=spec.device, precision=spec.precision
            )
            backend = serve(detector, spec.backend, threads=spec.threads)
        except Exception as exc:
            conn.send(("failed", type(exc).__name__, _first_line(exc)))
            return
        conn.send(("ready", backend, detector.backend_parity))
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if message is None:
                return
            n = int(message)
            try:
                scores = np.asarray(detector(batch[:n]), dtype=np.float32)
            except Exception as exc:
                oom = type(exc).__name__ == "OutOfMemoryError"
                conn.send(("oom" if oom else "error", type(exc).__name__, _first_line(exc)))
                continue
            conn.send(("ok", scores.tobytes()))
    finally:
        del batch
        shm.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return text[:200]


class ProcessDetector:
    """A detector whose inference runs in a child process (see the module docstring)."""

    def __init__(self, detector: Any, *, backend: str, threads: int | None, max_batch: int):
        self.info = detector.info
        self.device = detector.device
        self.window_samples = detector.window_samples
        self.max_batch = max_batch
        self.backend = backend
        self.backend_parity: float | None = None
        self._spec = WorkerSpec(
            module=detector.module,
            info=detector.info,
            device=str(detector.device),
            precision=getattr(detector, "precision", "fp16" if detector.half else "fp32"),
            backend=backend,
            threads=threads,
        )
        self._lock = threading.Lock()
        self._shm = shared_memory.SharedMemory(
            create=True, size=max(1, max_batch * self.window_samples * 4)
        )
        self._batch = np.ndarray(
            (max_batch, self.window_samples), dtype=np.float32, buffer=self._shm.buf
        )
        self._proc: Any = None
        self._conn: Any = None
        self._sent: WorkerSpec | None = None  # what the running child was given
        self.restarts = 0
        self._start()

    # -- lifecycle ---------------------------------------------------------------------------
    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        parent, child = ctx.Pipe()
        # A private copy, never the caller's module: pickling for a spawned child moves the
        # weights into shared memory in place, under any thread still scoring through them
        # (model/serving.py build_in_subprocess has the story). Kept until the child is gone:
        # CUDA tensors reach the child by IPC handle and must outlive its use of them.
        spec = dataclasses.replace(self._spec, module=copy.deepcopy(self._spec.module))
        proc = ctx.Process(
            target=_child,
            args=(child, self._shm.name, self.max_batch, self.window_samples, spec),
            name="streamguard-inference",
            daemon=True,
        )
        proc.start()
        child.close()
        if not parent.poll(START_TIMEOUT):
            proc.kill()
            raise WorkerFailed("inference worker did not start in time")
        try:
            reply = parent.recv()
        except EOFError:
            raise WorkerFailed("inference worker died while starting") from None
        if reply[0] != "ready":
            proc.join(5)
            raise WorkerFailed(f"inference worker failed to start: {reply[1]}: {reply[2]}")
        self.backend, self.backend_parity = reply[1], reply[2]
        self._proc, self._conn, self._sent = proc, parent, spec

    def close(self) -> None:
        """Stop the child and free the shared memory (idempotent)."""
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(OSError):
                    self._conn.send(None)
                self._conn.close()
                self._conn = None
            if self._proc is not None:
                self._proc.join(5)
                if self._proc.is_alive():
                    self._proc.kill()
                self._proc = None
            self._sent = None
            if self._shm is not None:
                del self._batch
                self._shm.close()
                self._shm.unlink()
                self._shm = None

    # -- detector interface ------------------------------------------------------------------
    @property
    def half(self) -> bool:
        return self._spec.precision != "fp32"

    @property
    def module(self) -> Any:
        return self._spec.module

    def input_buffer(self, rows: int) -> np.ndarray:
        """Where :func:`~streamguard.scoring.batching.score_windows` writes a batch in place."""
        return self._batch[:rows]

    def __call__(self, waveforms: np.ndarray) -> np.ndarray:
        n = int(waveforms.shape[0])
        if n > self.max_batch:
            raise ValueError(f"batch of {n} exceeds the worker's {self.max_batch} rows")
        with self._lock:
            if self._shm is None:
                raise WorkerFailed("inference worker is closed")
            if not np.shares_memory(waveforms, self._batch):
                self._batch[:n] = waveforms
            if self._proc is None or not self._proc.is_alive():
                self._restart()
            try:
                self._conn.send(n)
                reply = self._conn.recv()
            except (EOFError, OSError):
                self._proc = None  # restarted on the next batch
                raise WorkerFailed("inference worker died") from None
        kind = reply[0]
        if kind == "ok":
            return np.frombuffer(reply[1], dtype=np.float32)
        if kind == "oom":
            import torch

            raise torch.cuda.OutOfMemoryError(f"{reply[1]}: {reply[2]}")
        raise WorkerFailed(f"{reply[1]}: {reply[2]}")

    def _restart(self) -> None:
        self.restarts += 1
        log.warning("inference_worker_restart", restarts=self.restarts)
        if self._conn is not None:
            self._conn.close()
        self._start()
