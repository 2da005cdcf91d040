"""A training step replayed as CUDA graphs: one launch per step instead of hundreds.

At small batches a GPU training step is bound by the host: every PyTorch call costs microseconds of
Python and a kernel launch, and the GPU waits between kernels. A CUDA graph records the step's
kernels once and replays them with one call
(`CUDA graphs in PyTorch <https://pytorch.org/docs/stable/notes/cuda.html#cuda-graphs>`_). The eager
step's GPU-busy time against its wall-clock time: ``benchmarks/results/overhead_cuda.md``; the same
steps replayed as graphs: ``benchmarks/results/overhead_cuda_graph.md``.

What a replay cannot change is what the host decided while the graph was captured, so the step is
captured once per *key*: the caller's description of those decisions — which mixer runs (ConfMix's
ERM warm-up has none), its α (a schedule changes it every epoch), and the mixer's host-side choice
for the step (:meth:`multimix.mixers.base.Mixer.decide`: manifold mixup's layer, CutMix or mixup,
MultiMix's p). Everything random inside the step is drawn on the GPU from generators registered with
every graph, so each replay draws afresh, as the eager step would.

Requirements the trainer checks before it starts (:mod:`multimix.train.preflight`): one process,
CUDA, no fp16 gradient scaler, and a learning rate held in a tensor (a scheduler changing a Python
float would not reach a captured optimiser step).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Sequence

import torch
from torch import Tensor

log = logging.getLogger(__name__)


class GraphedStep:
    """Run ``step(batch) -> loss`` as CUDA graph replays, capturing one graph per key.

    Args:
        step: one training step on the index tensor ``batch`` (forward, loss, backward, optimiser),
            returning the detached loss; it must not synchronise with the host.
        generators: the CUDA generators the step draws from (registered with every graph).
        device: the CUDA device.
        warmup: eager steps before the first capture (lazy initialisation — optimiser state, library
            workspaces — must not happen inside a capture). They are real steps, run on a side
            stream as CUDA graphs require.
        keep: graphs kept; the least recently captured beyond it are dropped (each holds its own
            activation memory).

    Call it as ``loss = graphed(batch, key)``: every batch must have the shape of the first captured
    one (the trainer's batches all do); ``key`` is any hashable summary of the host's decisions.
    """

    def __init__(
        self,
        step: Callable[[Tensor], Tensor],
        *,
        generators: Sequence[torch.Generator],
        device: torch.device,
        warmup: int = 3,
        keep: int = 8,
    ) -> None:
        if device.type != "cuda":
            raise ValueError(f"device must be a CUDA device for CUDA graphs, got {device}")
        self.step = step
        self.generators = [g for g in generators if g is not None and g.device.type == "cuda"]
        self.device = device
        self.warmup = warmup
        self.keep = keep
        self.graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, Tensor, Tensor]] = {}

    def __call__(self, batch: Tensor, key: Hashable) -> Tensor:
        if self.warmup > 0:
            self.warmup -= 1
            return self._on_side_stream(batch)
        entry = self.graphs.get(key)
        if entry is None:
            entry = self._capture(batch, key)
        graph, static_batch, loss = entry
        static_batch.copy_(batch)
        graph.replay()
        return loss

    def _on_side_stream(self, batch: Tensor) -> Tensor:
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            loss = self.step(batch)
        torch.cuda.current_stream(self.device).wait_stream(side)
        return loss

    def _capture(self, batch: Tensor, key: Hashable) -> tuple[torch.cuda.CUDAGraph, Tensor, Tensor]:
        if len(self.graphs) >= self.keep:
            del self.graphs[next(iter(self.graphs))]
        static_batch = batch.clone()
        graph = torch.cuda.CUDAGraph()
        for generator in self.generators:
            graph.register_generator_state(generator)
        try:
            with torch.cuda.graph(graph):
                loss = self.step(static_batch)
        except RuntimeError as exc:
            raise RuntimeError(
                f"the training step could not be captured in a CUDA graph ({str(exc).splitlines()[0]}); "
                "train without --cuda-graph"
            ) from exc
        log.debug(
            "captured a CUDA graph of the training step for %r (%d kept)", key, len(self.graphs) + 1
        )
        self.graphs[key] = (graph, static_batch, loss)
        return self.graphs[key]


__all__ = ["GraphedStep"]
