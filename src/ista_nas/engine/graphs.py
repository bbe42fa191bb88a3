"""CUDA graphs for steps whose structure holds between resets.

A search step runs the same kernels on same-shaped tensors for a whole epoch: the sparse supernet's supports
change only at the recovery after an epoch, the one-stage search's frozen groups only at its end, a training
step's learning rate and drop-path probability once an epoch. At batch 64 on a large GPU such a step is bound by
kernel launches, not by arithmetic; a CUDA graph launches the whole step at once. ``CapturedStep`` captures a
step after a few eager calls and replays it until ``reset`` (the owner calls it whenever the step's structure or
a Python-side value in it changes: at the start of every epoch, after loading a checkpoint).

``use_graphs`` decides from ``--cuda-graphs`` (auto, on, off) and where the run is: graphs need one process
on a CUDA device (DDP's gradient hooks are not captured) and no fp16 loss scaling (its overflow check reads the
device from the host every step). An optimiser stepped inside a graph keeps its step counters on the device
(Adam's ``capturable``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..errors import UserError
from .distributed import Dist

log = logging.getLogger(__name__)

GRAPH_SETTINGS = ("auto", "on", "off")

# capture(fn) -> (replay, outputs, ran): a graph of fn's work, its static outputs, and whether the capture also
# ran the work once (a real capture only records it).
Capture = Callable[[Callable[[], Any]], tuple[Callable[[], None], Any, bool]]


def use_graphs(setting: str, ctx: Dist, fp16: bool = False) -> bool:
    """Whether this run's steps are captured: ``auto`` where they can be, ``on`` insists (else one UserError
    saying why, with the fix), ``off`` never."""
    why = ("this run is on the CPU" if ctx.device.type != "cuda" else
           f"this run has {ctx.world} processes (DDP's gradient hooks are not captured)" if ctx.world > 1 else
           "fp16 loss scaling reads its overflow check on the host every step" if fp16 else "")
    if setting == "on" and why:
        raise UserError(f"--cuda-graphs on: {why}; use --cuda-graphs auto (captures where it can) or off")
    return setting != "off" and not why


def cuda_capture(fn: Callable[[], Any]) -> tuple[Callable[[], None], Any, bool]:
    """A CUDA graph of ``fn``'s work (recorded, not run) and the output tensors its replays write."""
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outputs = fn()
    return graph.replay, outputs, False


def _eager(fn: Callable[..., Any], inputs: tuple[Tensor, ...]) -> Any:
    """``fn(*inputs)``; on CUDA on a side stream, as the calls before a capture must run (PyTorch's rule)."""
    if not inputs or inputs[0].device.type != "cuda":
        return fn(*inputs)
    side = torch.cuda.Stream(inputs[0].device)
    side.wait_stream(torch.cuda.current_stream(inputs[0].device))
    with torch.cuda.stream(side):
        out = fn(*inputs)
    torch.cuda.current_stream(inputs[0].device).wait_stream(side)
    return out


class CapturedStep:
    """``step(*inputs)`` replayed from a graph: ``warmup`` eager calls first (lazy state settles: momentum
    buffers, cuDNN's algorithm choices, cached masks), then a capture into static copies of the inputs, then one
    replay per call: the call copies its inputs in and returns the same output tensors every time (a caller reads
    them before its next call, as the epoch loop's sums do). A call whose inputs differ in shape, dtype or layout
    from the captured ones (an epoch's smaller last batch) runs eagerly and drops the graph. ``capture`` makes
    the graph (tests pass a stand-in); ``required``: a failed capture raises instead of going on eagerly."""

    def __init__(self, step: Callable[..., Any], warmup: int = 2, capture: Capture = cuda_capture,
                 required: bool = False):
        self.step, self.warmup, self.capture, self.required = step, warmup, capture, required
        self.failed = False
        self.captures = 0  # graphs made so far
        self.reset()

    def reset(self) -> None:
        """Drop the graph (and its memory pool): the next calls run eagerly, then capture again."""
        self.replay: Callable[[], None] | None = None
        self.inputs: list[Tensor] = []
        self.outputs: Any = None
        self.key: list[tuple[Any, ...]] | None = None
        self.eager_calls = 0

    def __call__(self, *inputs: Tensor) -> Any:
        key = [(t.shape, t.dtype, t.stride(), t.device) for t in inputs]
        if self.replay is not None and key == self.key:
            for static, given in zip(self.inputs, inputs):
                static.copy_(given)
            self.replay()
            return self.outputs
        if key != self.key:
            self.reset()
            self.key = key
        if self.failed:
            return self.step(*inputs)
        if self.eager_calls < self.warmup:
            self.eager_calls += 1
            return _eager(self.step, inputs)
        self.inputs = [t.clone() for t in inputs]  # same strides (channels-last stays channels-last)
        try:
            replay, outputs, ran = self.capture(lambda: self.step(*self.inputs))
        except RuntimeError as error:
            if self.required:
                raise
            log.warning("CUDA graph capture failed (%s); this run's steps go on eagerly", str(error)[:200])
            self.failed = True
            self.reset()
            return self.step(*inputs)
        self.replay, self.outputs, self.captures = replay, outputs, self.captures + 1
        if not ran:
            replay()
        return outputs


def captured_step(step: Callable[..., Any], setting: str, ctx: Dist, fp16: bool = False) -> CapturedStep | None:
    """``step`` as a ``CapturedStep`` where ``--cuda-graphs`` (``setting``) captures on ``ctx`` (``use_graphs``),
    else None: the owner calls ``step`` itself."""
    return CapturedStep(step, required=setting == "on") if use_graphs(setting, ctx, fp16) else None

