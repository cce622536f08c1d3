"""The engine's inference runners, built the same way for the daemon and for ``bench``.

One runner per engine worker: the detector itself, serving through the chosen backend
(``worker = "thread"``), or one :class:`~streamguard.scoring.worker.ProcessDetector` per worker
(``worker = "process"``). See ``[model]`` in configs/streamguard.toml.
"""

from __future__ import annotations

import os
from typing import Any


def threads_per_worker(threads: int | None, workers: int) -> int | None:
    """CPU threads each worker may use: ``threads``, else the cores split between workers
    (None = the library's default when there is one worker)."""
    if threads is not None:
        return threads
    if workers > 1:
        return max(1, (os.cpu_count() or 1) // workers)
    return None


def build_runners(
    detector: Any,
    *,
    backend: str = "auto",
    worker: str = "thread",
    workers: int = 1,
    threads: int | None = None,
    max_batch: int = 16,
    torchscript: bool = True,
) -> list[Any]:
    """Runners for ``workers`` engine workers.

    ``backend = "auto"`` with ``torchscript = False`` serves the module as it is (eager). A
    detector handed in already serving through a backend (the benchmarks) keeps it.
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
        serve(detector, backend, threads=per_worker)
    return [detector] * workers


def close_runners(runners: list[Any]) -> None:
    """Stop worker processes (in-process runners need nothing)."""
    for runner in {id(r): r for r in runners}.values():
        close = getattr(runner, "close", None)
        if close is not None:
            close()
