"""Training steps replayed as CUDA graphs: one launch per step instead of hundreds.

A Conv4 training step on few-shot episodes is a few hundred small kernels; on a GPU their launch
cost, not their arithmetic, sets the pace. :class:`GraphedStep` runs a step function eagerly for a
few warm-up calls (real training steps, on a side stream, as CUDA graph capture requires), then
captures it once and replays the graph for every later call. The step reads its inputs from one
static device tensor (e.g. an episode's image indices) that each call overwrites, and must do all
its work on the device without host synchronisation: gather, forward, backward and an optimizer
built with ``capturable=True`` (learning rate as a device tensor; see :func:`capturable_adam`).

Replaying computes exactly what the eager step computes on the same inputs; the result of a run
says which path ran (``fit.notes``). On the CPU, :class:`GraphedStep` just calls the step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


def capturable_adam(params: Iterable[Tensor], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam that a CUDA graph can replay (its step count and learning rate live on the device) on CUDA;
    plain Adam elsewhere. Change the learning rate with :func:`set_lr`."""
    if device.type != "cuda":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.Adam(params, lr=torch.tensor(lr, device=device), capturable=True)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set every group's learning rate, in place when it is a device tensor (read by replayed graphs)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], Tensor):
            group["lr"].fill_(lr)
        else:
            group["lr"] = lr


class GraphedStep:
    """Call ``step(inputs)`` eagerly ``warmup`` times, then as a captured CUDA graph.

    Args:
        step: one training step reading ``inputs`` (the static tensor passed to it), returning nothing.
        device: where it runs; anything but CUDA runs ``step`` eagerly on every call.
        warmup: eager calls before capture (they initialise optimizer state, cuDNN plans, allocator).
        enabled: ``False`` runs eagerly on CUDA too.

    Call it with each step's inputs (same shape and dtype every time); they are copied into the
    static tensor the graph reads.
    """

    def __init__(self, step: Callable[[Tensor], None], device: torch.device, warmup: int = 3,
                 enabled: bool = True) -> None:
        self.step, self.device, self.warmup = step, device, warmup
        self.graphed = enabled and device.type == "cuda"
        self.calls = 0
        self.static: Tensor | None = None
        self.graph: torch.cuda.CUDAGraph | None = None
        self.stream = torch.cuda.Stream(device) if self.graphed else None

    @property
    def mode(self) -> str:
        """How the steps ran: ``CUDA graph`` once a graph was captured and replayed, else ``eager``."""
        return "CUDA graph" if self.graph is not None else "eager"

    def __call__(self, inputs: Tensor) -> None:
        if not self.graphed:
            self.step(inputs.to(self.device, non_blocking=True))
            return
        if self.static is None:
            self.static = torch.empty_like(inputs, device=self.device)
        self.static.copy_(inputs, non_blocking=True)
        self.calls += 1
        if self.calls <= self.warmup:
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self.stream):
                self.step(self.static)
            torch.cuda.current_stream(self.device).wait_stream(self.stream)
            return
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # records, does not run
                self.step(self.static)
        self.graph.replay()
