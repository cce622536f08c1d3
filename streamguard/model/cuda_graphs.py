"""Fixed-shape serving for CUDA: batches padded to a few sizes, each replayed as a CUDA graph.

Why: on a GPU, a small network's forward pass is dominated by kernel launches (hundreds per
window for wav2vec2-bigru) and the Python between them. A CUDA graph captures one forward at a
fixed shape and replays all its kernels with one call. The engine forms batches of any size up
to ``max_batch``, so graphs are captured for sizes 1, 2, 4, ... ``max_batch`` and a batch is
padded with silent rows to the next captured size (scores of padding rows are dropped; every
architecture here scores rows independently in eval mode).

``[model] backend = "cuda-graphs"`` (CUDA only; ``auto`` on CUDA tries it first). On the CPU the
same padding path runs without capture (``capture=False``), so the shape logic is tested
everywhere; the capture itself needs a GPU and is skipped, and said so, without one.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["GraphRunner", "graph_sizes"]


def graph_sizes(max_batch: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``max_batch`` (always included)."""
    sizes, size = [], 1
    while size < max_batch:
        sizes.append(size)
        size *= 2
    sizes.append(max_batch)
    return tuple(sizes)


class GraphRunner:
    """``runner(waveforms [n, S]) -> logits [n]`` through fixed-shape forwards.

    ``capture=True`` (CUDA) records one CUDA graph per size after a few warm-up passes on a
    side stream, as torch's documentation prescribes; ``capture=False`` calls the module on
    the padded static input instead (CPU: same shapes, no graphs).
    """

    def __init__(
        self,
        module: Any,
        window_samples: int,
        *,
        max_batch: int = 16,
        dtype: Any = None,
        device: Any = "cpu",
        capture: bool = True,
        warmup: int = 3,
    ) -> None:
        import torch

        self.module = module
        self.sizes = graph_sizes(max_batch)
        self.capture = capture
        self.dtype = dtype or torch.float32
        self.device = torch.device(device)
        self._inputs: dict[int, Any] = {}
        self._outputs: dict[int, Any] = {}
        self._graphs: dict[int, Any] = {}
        # Engine workers share one runner: the static buffers are one batch's at a time.
        self._lock = threading.Lock()
        for size in self.sizes:
            static = torch.zeros(size, window_samples, dtype=self.dtype, device=self.device)
            self._inputs[size] = static
            if not capture:
                continue
            stream = torch.cuda.Stream(device=self.device)
            stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(warmup):
                    module(static)
            torch.cuda.current_stream(self.device).wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                self._outputs[size] = module(static)
            self._graphs[size] = graph

    def _size_for(self, n: int) -> int:
        return next(s for s in self.sizes if s >= n)

    def __call__(self, waveforms: Any) -> Any:
        import torch

        n = int(waveforms.shape[0])
        if n > self.sizes[-1]:  # more than the largest graph: in pieces
            step = self.sizes[-1]
            return torch.cat([self(waveforms[i : i + step]) for i in range(0, n, step)])
        size = self._size_for(n)
        with self._lock:
            static = self._inputs[size]
            static[:n].copy_(waveforms.to(device=self.device, dtype=self.dtype))
            static[n:].zero_()
            if self.capture:
                self._graphs[size].replay()
                out = self._outputs[size]
            else:
                with torch.inference_mode():
                    out = self.module(static)
            return out[:n].clone()
