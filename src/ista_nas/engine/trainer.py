"""The reusable training pieces: the learning-rate schedule, the SGD trainer with mixed precision, and
evaluation (loss, top-1, top-5). Model-agnostic: any module whose forward gives logits (a training forward
may add an auxiliary head's logits) and that has a ``drop_path_prob`` attribute.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from .data import DeviceLoader, epoch_seed
from .distributed import Dist, wrap
from .graphs import captured_step
from .loop import cosine_lr, run_epoch
from .stream import StreamingLoader

if TYPE_CHECKING:
    from ..config import TrainConfig

Loader = DeviceLoader | StreamingLoader


def learning_rate(epoch: int, cfg: "TrainConfig") -> float:
    """Linear warm-up reaching lr in the last of ``warmup_epochs`` (lr * (e + 1) / warmup, as the ISTA-NAS
    ImageNet code), then cosine or linear decay from lr to lr_min over the remaining epochs."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    e, span = epoch - cfg.warmup_epochs, cfg.epochs - cfg.warmup_epochs
    if cfg.lr_schedule == "linear":
        return cfg.lr_min + (cfg.lr - cfg.lr_min) * (1 - e / span)
    return cosine_lr(e, span, cfg.lr, cfg.lr_min)


def autocast_for(device: torch.device, amp: str) -> tuple[Callable[[], Any], bool]:
    """(context factory, needs a grad scaler) for the mixed-precision mode on this device."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext, False
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError("--amp bf16: this GPU has no bf16 support; use --amp fp16 or auto")
    dtype = torch.float16 if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()) \
        else torch.bfloat16
    # No cast cache: a step uses each weight once, and a CUDA graph may not keep casts made while it was captured.
    return (lambda: torch.autocast("cuda", dtype=dtype, cache_enabled=False)), dtype == torch.float16


class Trainer:
    """The model, its optimiser and the mixed-precision machinery; ``step`` is one SGD update (on this
    rank's shard, gradients averaged over the ranks by DDP)."""

    def __init__(self, model: torch.nn.Module, cfg: "TrainConfig", ctx: Dist):
        self.model, self.cfg, self.ctx = model, cfg, ctx
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        used = model.used_parameters() if hasattr(model, "used_parameters") else list(model.parameters())
        self.train_net = wrap(model, [p for p in used if p.requires_grad], ctx)
        self.autocast, scaled = autocast_for(ctx.device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaled)
        # A step replayed from a CUDA graph (engine.graphs), captured again every epoch (learning rate, drop-path).
        self.captured = captured_step(self.eager_step, cfg.cuda_graphs, ctx, fp16=scaled)

    def begin_epoch(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(epoch, self.cfg)
        self.model.drop_path_prob = self.cfg.drop_path * epoch / self.cfg.epochs
        # Drop-path masks: reproducible after a resume, and different on every rank.
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch, 2) + self.ctx.rank)
        self.model.train()
        if self.captured is not None:
            self.captured.reset()

    def step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        return (self.captured or self.eager_step)(x, y)

    def eager_step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with self.autocast():
            logits, aux = self.train_net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
            total = loss if aux is None else loss + self.cfg.auxiliary_weight * F.cross_entropy(
                aux, y, label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.detach().float() * len(y), "correct": (logits.argmax(1) == y).sum(),
                "n": torch.tensor(len(y))}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when the run trained without fp16 loss scaling: a new scaler starts fresh
            self.scaler.load_state_dict(state["scaler"])
        if self.captured is not None:
            self.captured.reset()


def training_means(sums: dict[str, float]) -> dict[str, float]:
    """Mean loss and accuracy (%) of a training epoch from the sums ``Trainer.step`` returns."""
    n = max(sums["n"], 1.0)
    return {"train_loss": sums["loss"] / n, "train_acc": 100 * sums["correct"] / n}


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Loader, autocast: Callable[[], Any] = contextlib.nullcontext,
             desc: str = "test", ctx: Dist = Dist()) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy (%) of ``model`` over one pass of ``loader`` (every rank's shard)."""
    model.eval()

    def step(x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with autocast():
            logits = model(x).float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return {"loss": F.cross_entropy(logits, y, reduction="sum"), "top1": (top5[:, 0] == y).sum(),
                "top5": (top5 == y.unsqueeze(1)).any(1).sum(), "n": torch.tensor(len(y))}

    def means(sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["n"], 1.0)
        return {"loss": sums["loss"] / n, "top1": 100 * sums["top1"] / n, "top5": 100 * sums["top5"] / n}

    return run_epoch(step, loader.epoch(0), len(loader), desc, means, reduce=ctx.sum_stats, show=ctx.main)
