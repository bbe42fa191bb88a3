"""Running under torchrun: the process group, each rank's device, the collectives the methods need, batch
norm over the global batch, and the DistributedDataParallel wrapper over the parameters a step trains.

A single process is the world-size-1 case of the same code: every helper here is then a no-op (no process
group is created), so the methods have one code path.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ..errors import IstaNasError, UserError
from .loop import resolve_device

log = logging.getLogger(__name__)
T = TypeVar("T")


def launched() -> bool:
    """Whether this process was started by torchrun (or another launcher) as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def launched_as_main() -> bool:
    """Whether this process is rank 0 of the launch (or alone), read from the launcher's environment before
    the process group exists (the command line sets its log level by it)."""
    return int(os.environ.get("RANK", "0")) == 0


def _join() -> None:
    """Join the process group torchrun describes (idempotent; nothing happens in a single process): only
    ``Dist.setup`` calls it.

    One group serves both devices (gloo for CPU tensors, nccl for CUDA ones), so it can be created before
    the run's device is known, e.g. before a resumed run's stored config is read.
    """
    if not launched() or dist.is_initialized():
        return
    backend = "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"
    try:
        dist.init_process_group(backend)
    except (ValueError, RuntimeError) as exc:
        raise UserError(f"cannot join the process group ({exc}); start several processes with torchrun, e.g. "
                        "'torchrun --nproc_per_node 2 --no-python ista-nas search ...'") from None


def on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and hand its result (or its user error) to every rank; just ``fn()`` in a
    single process.

    For what only rank 0 may touch, the run directory (checking it, reading its checkpoint), also on nodes
    that do not share a file system. Object collectives go through gloo on the CPU.
    """
    if not dist.is_initialized():
        return fn()
    box: list[Any] = [None]
    if dist.get_rank() == 0:
        try:
            box[0] = ("ok", fn())
        except IstaNasError as exc:
            box[0] = ("error", exc)
    dist.broadcast_object_list(box, 0)
    status, value = box[0]
    if status == "error":
        value.reported_by_main = dist.get_rank() != 0  # every rank raises it; rank 0 alone needs to print it
        raise value
    return value


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclass(frozen=True)
class Dist:
    """This process's place in the run: rank, world size and compute device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def __str__(self) -> str:
        return str(self.device) if self.world == 1 else f"{self.world} processes ({self.device.type})"

    @classmethod
    def setup(cls, device_name: str | None = None) -> "Dist":
        """Join the process group if launched by torchrun (the one place that does) and, with
        ``device_name``, pick this rank's device (``on``); without it the CPU stands in until ``on`` picks
        one (a resumed run learns its device from its stored config, which rank 0 reads in the group)."""
        _join()
        ctx = cls(dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else cls()
        return ctx if device_name is None else ctx.on(device_name)

    def on(self, device_name: str) -> "Dist":
        """This place on ``device_name``: ``cuda:LOCAL_RANK`` for auto/cuda under torchrun, the CPU for cpu;
        a single process resolves ``device_name`` as usual."""
        if self.world == 1:
            return dataclasses.replace(self, device=resolve_device(device_name))
        device = resolve_device(device_name)
        if device.type == "cuda":
            if device.index is not None:
                raise UserError(f"--device {device_name}: under torchrun every process uses cuda:LOCAL_RANK; pass "
                                "--device cuda (or auto)")
            local = int(os.environ.get("LOCAL_RANK", "0"))
            if local >= torch.cuda.device_count():
                raise UserError(f"local rank {local} has no GPU (this machine has {torch.cuda.device_count()}); "
                                "lower torchrun's --nproc_per_node")
            device = torch.device("cuda", local)
            torch.cuda.set_device(device)
        return dataclasses.replace(self, device=device)

    def check_batch(self, batch_size: int) -> None:
        """The global batch must split evenly over the processes (each rank takes its slice)."""
        if batch_size % self.world:
            raise UserError(f"--batch-size {batch_size} (the global batch) does not split evenly over {self.world} "
                            f"processes; use a multiple of {self.world}")

    # --- collectives (no-ops in a single process) ---

    def average_grad_(self, params: Sequence[nn.Parameter]) -> None:
        """Average the gradients of ``params`` over the ranks (for parameters outside the DDP wrapper)."""
        if self.world > 1:
            for p in params:
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad.div_(self.world)

    def sum_stats(self, stats: dict[str, Tensor]) -> dict[str, Tensor]:
        """Per-batch statistic sums of every rank added up (one collective for the whole dict)."""
        if self.world == 1 or not stats:
            return stats
        keys = sorted(stats)
        # Counts may be CPU tensors beside CUDA sums: one device (this rank's) for the collective.
        flat = torch.stack([stats[k].detach().to(self.device, torch.float64) for k in keys])
        dist.all_reduce(flat)
        return dict(zip(keys, flat.unbind(0)))

    def broadcast_(self, tensor: Tensor) -> Tensor:
        """Rank 0's ``tensor`` on every rank, in place; returns it."""
        if self.world > 1:
            dist.broadcast(tensor, 0)
        return tensor

    def broadcast_buffers_(self, module: nn.Module) -> None:
        """Give every rank rank 0's buffers of ``module`` (e.g. the recovered architecture state)."""
        if self.world > 1:
            for buf in module.buffers():
                dist.broadcast(buf, 0)


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the global batch, i.e. every rank's shard.

    The per-channel sums (shifted by the running mean, identical on every rank, against cancellation) are
    summed across ranks with PyTorch's differentiable functional all-reduce, so the forward and
    the gradients are those of one BN over the whole batch, on CPU (gloo) as on CUDA: a run on N processes
    computes what one process computes with the same global batch. Evaluation uses the running statistics.
    """

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        from torch.distributed._functional_collectives import all_reduce  # differentiable: sums gradients too

        c = x.shape[1]
        xf = x if x.dtype in (torch.float32, torch.float64) else x.float()  # half precision: statistics in fp32
        shift = (self.running_mean.detach().to(xf.dtype).view(1, c, 1, 1) if self.track_running_stats
                 else xf.new_zeros(1, c, 1, 1))
        d = xf - shift
        local = torch.cat([d.sum((0, 2, 3)), (d * d).sum((0, 2, 3)), xf.new_full((1,), x.numel() // c)])
        total = all_reduce(local, "sum", dist.group.WORLD)
        n = total[-1]
        mean_d = total[:c] / n
        var = (total[c:2 * c] / n - mean_d * mean_d).clamp_min(0)
        mean = mean_d + shift.view(c)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        scale = torch.rsqrt(var + self.eps)
        bias = -mean * scale
        if self.affine:
            scale, bias = scale * self.weight, bias * self.weight + self.bias
        return (xf * scale.view(1, c, 1, 1) + bias.view(1, c, 1, 1)).to(x.dtype)


def sync_batchnorm(module: nn.Module) -> nn.Module:
    """Make every BatchNorm2d of ``module`` a GlobalBatchNorm2d, in place.

    The class is swapped on the existing objects (GlobalBatchNorm2d adds no state), so parameters keep their
    identity, requires_grad flags and optimiser references, and state_dict keys do not change: a checkpoint
    moves freely between world sizes.
    """
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = GlobalBatchNorm2d
    return module


def place(module: nn.Module, ctx: Dist, channels_last: bool, sync_bn: bool) -> nn.Module:
    """``module`` on this rank's device, in the channels-last format if asked, with batch norm over the global
    batch when several processes run and ``sync_bn`` is on."""
    module = module.to(ctx.device)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    if ctx.world > 1 and sync_bn:
        sync_batchnorm(module)
    return module


class WithAux(nn.Module):
    """``model.forward_with_aux`` as ``forward``: what the DDP wrapper calls, so its hooks see the step."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self.model.forward_with_aux(x)


def wrap(model: nn.Module, params: Sequence[nn.Parameter], ctx: Dist) -> nn.Module:
    """A module computing ``model.forward_with_aux`` whose backward averages the gradients of ``params``
    over the ranks (DistributedDataParallel restricted to ``params``); the bare adapter in one process.

    Only ``params`` may get gradients in the steps that follow: DDP registers exactly the parameters that
    require grad when it is built, so the others are switched off for the construction and back on after.
    Build a new wrapper when the trained set changes (the supports moved), instead of paying for
    ``find_unused_parameters=True`` on every step.
    """
    adapter = WithAux(model)
    if ctx.world == 1:
        return adapter
    keep = {id(p) for p in params}
    switched = [p for p in model.parameters() if p.requires_grad and id(p) not in keep]
    for p in switched:
        p.requires_grad_(False)
    try:
        ids = [ctx.device.index] if ctx.device.type == "cuda" else None
        ddp = nn.parallel.DistributedDataParallel(adapter, device_ids=ids, forward_sync_buffers=False)
    finally:
        for p in switched:
            p.requires_grad_(True)
    return ddp


__all__ = ["Dist", "GlobalBatchNorm2d", "WithAux", "launched", "launched_as_main", "on_main", "place",
           "shutdown", "sync_batchnorm", "wrap"]
