"""Two-stage ISTA-NAS search (Yang et al., NeurIPS 2020, Sec. 3.2), read top to bottom.

Per epoch: the supernet is fixed to the current supports; every training batch gives one Adam step on the
compressed architecture parameters b (loss on a batch of the held-out half) and one SGD step on the network
weights (loss on a batch of the training half); after the epoch z is recovered from b and the supports move.
The result is the genotype of the final supports; stage two (retraining it) is ``ista-nas train``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.data import DeviceLoader
from ..engine.distributed import Dist, place, wrap
from ..engine.driver import EpochPlan
from ..engine.loop import cosine_lr
from ..engine.rundir import RunDir
from ..engine.splits import search_split
from ..spaces import SPACES
from .base import SearchMethod, SearchResult, build_supernet
from .budget import recover_within_budget

if TYPE_CHECKING:
    from ..config import SearchConfig

log = logging.getLogger(__name__)


def keep_zero_grads(weights: list[torch.nn.Parameter], active: list[torch.nn.Parameter]) -> None:
    """Once per epoch, before the supports' ops train: every weight that has a gradient keeps a zero one, so a
    weight whose op left the support goes on getting SGD's weight decay and momentum, as in the official code
    (PyTorch 1.x zero_grad kept zeros); the active weights get one if they have none yet. A weight never used
    has none and does not move."""
    for p in weights:
        if p.grad is not None:
            p.grad.zero_()
    for p in active:
        if p.grad is None:
            p.grad = torch.zeros_like(p)


def weights_used(weights: list[torch.nn.Parameter]) -> list[bool]:
    """Which weights hold a gradient (ever active, so keep_zero_grads keeps them moving): for a checkpoint."""
    return [p.grad is not None for p in weights]


def restore_used(weights: list[torch.nn.Parameter], used: list[bool]) -> None:
    """After a resume: a zero gradient for every weight ``weights_used`` recorded, none for the others."""
    for p, was in zip(weights, used, strict=True):
        p.grad = torch.zeros_like(p) if was else None


def clip_weight_grads(weights: list[torch.nn.Parameter], max_norm: float, also: Tensor | None = None) -> None:
    """``clip_grad_norm_`` of the weights' gradients, with the norm also counting ``also`` (b's gradient, which
    is not clipped) when given."""
    grads = [p.grad for p in weights if p.grad is not None] + ([also] if also is not None else [])
    torch.nn.utils.clip_grads_with_norm_(weights, max_norm, torch.nn.utils.get_total_norm(grads))


class Stepper:
    """What every stepper checkpoints: its network, the weights' SGD (``w_opt``), the architecture's Adam
    (``a_opt``) and which weights were ever used (they keep a zero gradient: ``keep_zero_grads``)."""

    net: torch.nn.Module
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "weights_used": weights_used(self.w_opt.param_groups[0]["params"])}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        restore_used(self.w_opt.param_groups[0]["params"], self.used(state))

    def used(self, state: dict[str, Any]) -> list[bool]:
        """The checkpoint's record of the weights ever used."""
        return state["weights_used"]


class TwoStageStepper(Stepper):
    """The step (the job, ``TwoStage``, runs it): the network and its two optimisers; ``step`` is one
    architecture update plus one weight update.

    With several processes each rank steps on its shard of the global batch: the weight gradients are
    averaged by a DDP wrapper over the epoch's active weights (rebuilt when the supports move), the gradient
    of b by an all-reduce, so every rank applies the same updates.
    """

    def __init__(self, net: torch.nn.Module, cfg: "SearchConfig", ctx: Dist = Dist()):
        self.net, self.cfg, self.ctx = net, cfg, ctx
        self.b = net.arch_parameters()[0]  # b (ISTA-NAS) or alpha (the DARTS baseline)
        self.w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam([self.b], lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.active: list[torch.nn.Parameter] = []
        self.train_net: torch.nn.Module | None = None  # forward_with_aux, gradients averaged over the ranks

    def begin_epoch(self, epoch: int) -> None:
        for group in self.w_opt.param_groups:
            group["lr"] = cosine_lr(epoch, self.cfg.epochs, self.cfg.lr, self.cfg.lr_min)
        self.active = self.net.active_weight_parameters()
        keep_zero_grads(self.w_opt.param_groups[0]["params"], self.active)
        self.train_net = None  # drop the previous DDP wrapper (and its gradient hooks) before building the next
        self.train_net = wrap(self.net, self.active, self.ctx)
        self.net.train()

    def step(self, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor) -> dict[str, Tensor]:
        # Architecture step: gradient of the validation loss with respect to b only (no weight gradients).
        logits_val = self.net(x_val)
        loss_val = F.cross_entropy(logits_val, y_val)
        (grad,) = torch.autograd.grad(loss_val, [self.b], allow_unused=True)
        self.b.grad = grad if grad is not None else torch.zeros_like(self.b)  # no support op reached the loss
        self.ctx.average_grad_([self.b])
        self.a_opt.step()
        # Weight step on the training batch, with the updated relaxed weights.
        loss, logits = self._weight_step(self.train_net, x, y)
        return self._stats(loss, logits, y, loss_val, logits_val, y_val)

    def _weight_step(self, forward, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One clipped SGD step on the active weights from ``forward(x)`` (logits, aux); returns loss and logits."""
        logits, _ = forward(x)
        loss = F.cross_entropy(logits, y)
        # Fresh gradients for the active weights; the used-but-inactive ones keep their zero gradients untouched
        # (no fill over every used weight each step).
        for p in self.active:
            p.grad = None
        # --clip-with-b, the official rule: b's gradient, the architecture step's plus this batch's (accumulated,
        # as only the weights' gradients are zeroed there), enlarges the norm that clips the weight step.
        with_b = self.cfg.clip_with_b and self.b.grad is not None
        loss.backward(inputs=self.active + [self.b] if with_b else self.active)
        if with_b:
            self.ctx.average_grad_([self.b])  # the ranks' shares of this batch's part (the other part is shared)
        clip_weight_grads(self.active, self.cfg.grad_clip, self.b.grad if with_b else None)
        self.w_opt.step()
        return loss, logits

    @staticmethod
    def _stats(loss: Tensor, logits: Tensor, y: Tensor, loss_val: Tensor, logits_val: Tensor, y_val: Tensor
               ) -> dict[str, Tensor]:
        return {
            "train_loss": loss.detach() * len(y), "train_correct": (logits.argmax(1) == y).sum(),
            "train_n": torch.tensor(len(y)),
            "valid_loss": loss_val.detach() * len(y_val), "valid_correct": (logits_val.argmax(1) == y_val).sum(),
            "valid_n": torch.tensor(len(y_val)),
        }


def summarize(sums: dict[str, float]) -> dict[str, float]:
    """Mean losses and accuracies (%) of the weight (train) and architecture (valid) batches."""
    out = {}
    for part in ("train", "valid"):
        n = max(sums[f"{part}_n"], 1.0)
        out[f"{part}_loss"] = sums[f"{part}_loss"] / n
        out[f"{part}_acc"] = 100.0 * sums[f"{part}_correct"] / n
    return out


def _valid_batches(loader: DeviceLoader, epoch: int, count: int) -> Iterator[tuple[Tensor, Tensor]]:
    """``count`` architecture batches, cycling the held-out half when it is the shorter one."""
    cycle = 0
    while count > 0:
        for batch in loader.epoch(epoch * 1_000 + cycle):
            if count == 0:
                return
            count -= 1
            yield batch
        cycle += 1


class SearchState(TypedDict):
    """A two-stage (or DARTS) checkpoint's own entries."""

    search: dict[str, Any]  # TwoStageStepper.state_dict(): network, both optimisers, which weights were used
    genotype: dict[str, Any]  # the genotype the supports held (readable without the network)


class TwoStage(SearchMethod):
    """The job (registered as ``two-stage``; the driver runs it): per epoch the stepper's steps, then the
    recovery."""

    kind = "search"
    stepper_class = TwoStageStepper

    def setup(self, ctx: Dist) -> None:
        cfg = self.cfg
        self.ctx = ctx
        data, self.train_loader, self.valid_loader = search_split(cfg, ctx)
        self.net = place(build_supernet(cfg, data, self.dense), ctx, cfg.channels_last, cfg.sync_bn)
        self.stepper = self.stepper_class(self.net, cfg, ctx)
        self.held: Any = None  # the genotype after the last finished epoch (computed once an epoch)

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.stepper.load_state_dict(checkpoint["search"])

    def describe(self) -> str:
        return (f"searching on {self.ctx}: {self.cfg.dataset}, {len(self.train_loader.indices)} train / "
                f"{len(self.valid_loader.indices)} valid images, {len(self.train_loader)} steps per epoch")

    def begin_epoch(self, epoch: int) -> EpochPlan:
        stepper = self.stepper
        stepper.begin_epoch(epoch)
        step = stepper.step
        batches = zip(self.train_loader.epoch(epoch), _valid_batches(self.valid_loader, epoch, len(self.train_loader)))
        return EpochPlan(lambda tr, va: step(*tr, *va), batches, len(self.train_loader),
                         f"epoch {epoch + 1}/{self.cfg.epochs}", summarize)

    def end_epoch(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        record: dict[str, Any] = {**stats, "lr": self.stepper.w_opt.param_groups[0]["lr"]}
        record.update(self.recover())
        self.held = self.net.genotype()
        self.write_results(self.held)
        record["genotype"] = self.held.to_dict()
        record.update(self.benchmark_record(self.held))
        return record

    def recover(self) -> dict[str, Any]:
        """ISTA-NAS: recover z from b, move the supports; what changed, for the record."""
        cfg, net = self.cfg, self.net
        recovery, _, changed, rejected = recover_within_budget(net, SPACES[cfg.space], cfg.max_params,
                                                               cfg.budget_channels, cfg.budget_layers, self.ctx)
        return {"supports_changed": [net.group_name(t, g) for t, g in changed.nonzero().tolist()],
                "recovery_iterations": recovery.iterations,
                "recovery_kkt_violation": float(recovery.kkt_violation.max()), "rejected_params_m": rejected}

    def write_results(self, genotype: Any) -> None:
        self.run.write_json("genotype.json", genotype.to_dict())
        self.run.write_json("ranking.json", self.net.ranking())

    def holds(self, stopped: bool = False) -> Any:
        """The genotype the network holds: the last finished epoch's, or (``stopped`` inside an epoch, or before
        any epoch of this process finished) computed now."""
        return self.net.genotype() if stopped or self.held is None else self.held

    def state(self, finished: int, stopped: bool = False) -> SearchState:
        return SearchState(search=self.stepper.state_dict(), genotype=self.holds(stopped).to_dict())

    def log_epoch(self, record: dict[str, Any]) -> None:
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  valid loss %.4f acc %.2f%%  supports changed %s  %.1fs",
                 record["epoch"], self.cfg.epochs, record["train_loss"], record["train_acc"], record["valid_loss"],
                 record["valid_acc"], len(record["supports_changed"]) if "supports_changed" in record else "-",
                 record["seconds"])

    def result(self, run: RunDir) -> SearchResult:
        genotype = self.holds()
        self.write_results(genotype)
        log.info("wrote %s", run.path / "genotype.json")
        return self.finish(run, genotype)
