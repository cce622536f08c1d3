"""The engine's inference runners, built the same way for the daemon and for ``bench``.

One runner per engine worker: the detector itself, serving through the chosen backend
(``worker = "thread"``), or one :class:`~streamguard.scoring.worker.ProcessDetector` per worker
(``worker = "process"``). See ``[model]`` in configs/streamguard.toml. Also owns
:class:`ProcessTuning`, the process-wide settings inference needs while a daemon runs (GIL
switch interval, CPU threads per worker).
"""

from __future__ import annotations

import contextlib
import copy
import os
import threading
import weakref
from typing import Any

import structlog

log = structlog.get_logger(__name__)


def threads_per_worker(threads: int | None, workers: int) -> int | None:
    """CPU threads each worker may use: ``threads``, else the cores split between workers
    (None = the library's default when there is one worker)."""
    if threads is not None:
        return threads
    if workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return None


class ProcessTuning:
    """The process-wide settings a daemon's inference needs, set at start and restored at
    stop.

    Inference shares the process with the event loop: torch drops and re-takes the GIL around
    every operator, and with Python's default 5 ms switch interval the inference thread waits
    behind the loop's per-frame work, which halved engine throughput at saturation
    (benchmarks/README.md); ``switch_interval`` (0.5 ms) lets it back in promptly. Several
    workers share the cores: each gets its share of CPU threads (``[model] threads``, else
    cores / workers), so two batches in flight never fight over the same cores (torch's count
    is not restored).
    """

    def __init__(self, threads: int | None, workers: int, switch_interval: float) -> None:
        self.worker_threads = threads_per_worker(threads, workers)
        self._switch_interval = switch_interval
        self._previous: float | None = None

    def apply(self) -> None:
        import sys

        import torch

        self._previous = sys.getswitchinterval()
        sys.setswitchinterval(self._switch_interval)
        if self.worker_threads is not None:
            torch.set_num_threads(self.worker_threads)

    def restore(self) -> None:
        import sys

        if self._previous is not None:
            sys.setswitchinterval(self._previous)
            self._previous = None


def build_runners(
    detector: Any,
    *,
    backend: str = "auto",
    worker: str = "thread",
    workers: int = 1,
    threads: int | None = None,
    max_batch: int = 16,
    torchscript: bool = True,
    build_in_background: bool = False,
) -> list[Any]:
    """Runners for ``workers`` engine workers.

    ``backend = "auto"`` with ``torchscript = False`` serves the module as it is (eager). A
    detector handed in already serving through a backend (the benchmarks) keeps it; otherwise a
    shallow copy of it is served, so the caller's own detector never changes under it.
    ``build_in_background`` (the daemon, ``auto`` only): when the chosen backend has no cached
    build yet (the first start with a model: export and calibration take ~10-40 s on 2 cores),
    serve TorchScript at once and switch to the built backend from a background thread when it
    is ready, so the daemon is ready in seconds; later starts find the build cached.
    """
    from streamguard.model.serving import serve

    backend = "eager" if (backend == "auto" and not torchscript) else backend
    per_worker = threads_per_worker(threads, workers)
    if worker == "process":
        from streamguard.scoring.worker import ProcessDetector

        runners: list[Any] = []
        try:
            for _ in range(workers):
                runners.append(
                    ProcessDetector(
                        detector, backend=backend, threads=per_worker, max_batch=max_batch
                    )
                )
        except BaseException:
            for runner in runners:
                runner.close()
            raise
        return runners
    if backend != "eager" and getattr(detector, "backend", "eager") == "eager":
        from streamguard.model.serving import BackendUnavailable, needs_build

        # Serve a shallow copy (same module and weights, its own runner): the caller's detector
        # is shared (tests, the bench's reference) and must keep scoring as it did.
        detector = copy.copy(detector)

        if build_in_background and backend == "auto" and needs_build(detector, backend, per_worker):
            with contextlib.suppress(BackendUnavailable):  # else eager until the build is done
                serve(detector, "torchscript", threads=per_worker)
            _UPGRADES[detector] = BackendUpgrade(detector, backend, per_worker)
        else:
            serve(detector, backend, threads=per_worker)
    return [detector] * workers


class BackendUpgrade:
    """Build ``backend`` in a child process, then switch ``detector`` to it, from a thread.

    Why a handle: the switch creates an ONNX Runtime session, whose C++ threads must not be
    running when the interpreter exits (that aborts the process: "terminate called without an
    active exception", exit status -6). :meth:`cancel` kills a build still running, keeps a
    switch from starting, and waits for one already under way; :func:`close_runners` calls it.
    """

    def __init__(self, detector: Any, backend: str, threads: int | None) -> None:
        self.detector, self.backend, self.threads = detector, backend, threads
        self.cancelled = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="streamguard-backend-upgrade", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        from streamguard.model.serving import build_in_subprocess, serve

        log.info("backend_building", serving=self.detector.backend, target=self.backend)
        try:
            # the heavy part, off this process's GIL
            build_in_subprocess(
                self.detector, self.backend, cancelled=self.cancelled, threads=self.threads
            )
            if self.cancelled.is_set():
                return
            name = serve(self.detector, self.backend, threads=self.threads)
        except Exception as exc:  # keep serving what already works
            log.warning("backend_build_failed", error=f"{type(exc).__name__}: {exc}"[:200])
            return
        log.info("backend_switched", backend=name, parity=self.detector.backend_parity)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def cancel(self, timeout: float = 60.0) -> None:
        self.cancelled.set()
        self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> None:
        """Until the switch is done or given up (tests, benchmarks)."""
        self._thread.join(timeout)


#: Upgrades still attached to a served detector (a copy made here), until close_runners.
_UPGRADES: weakref.WeakKeyDictionary[Any, BackendUpgrade] = weakref.WeakKeyDictionary()


def upgrade_of(runner: Any) -> BackendUpgrade | None:
    """The background switch of this runner, if it has one."""
    return _UPGRADES.get(runner)


def close_runners(runners: list[Any]) -> None:
    """Stop a background backend switch and worker processes (nothing else needs closing)."""
    for runner in {id(r): r for r in runners}.values():
        upgrade = _UPGRADES.pop(runner, None)
        if upgrade is not None:
            upgrade.cancel()
        close = getattr(runner, "close", None)
        if close is not None:
            close()
