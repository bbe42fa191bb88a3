"""The bilevel loop that the two-stage ISTA-NAS search and the DARTS baseline both run, read top to bottom: its
settings (the split of the images), its step (``BilevelStepper``: per training batch one Adam step on the
architecture parameters from a batch of the held-out half, then one SGD step on the weights) and its job
(``Bilevel``: the split, the epochs, the genotype held after each). A subclass names its supernet and what
follows an epoch (two-stage: the recovery; DARTS: nothing)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from ..engine.data import DeviceLoader
from ..engine.distributed import Dist, place
from ..engine.driver import EpochPlan
from ..engine.loop import cosine_lr
from ..engine.rundir import RunDir
from ..engine.splits import search_split
from ..fields import Rule, Settings, setting
from ..spaces.base import RetrainSize
from .base import SearchMethod, SearchResult, Stepper, build_supernet, clip_weight_grads, shape_of
from .budget import budget_of

if TYPE_CHECKING:
    from . import SearchConfig

log = logging.getLogger(__name__)


@dataclass
class SplitSettings(Settings):
    """The bilevel split: the weights train on one part of the images, the architecture on the rest."""

    why: ClassVar[str] = "the bilevel split of the images; the one-stage search trains on all"

    train_portion: float = setting(0.5, "share of the training images for weights; the rest trains b (paper: 0.5)",
                                   Rule(lambda v: 0 < v < 1, "strictly between 0 and 1"))


class BilevelStepper(Stepper):
    """The bilevel step: ``step`` is one architecture update (b of a sparse supernet, alpha of a dense one)
    from a held-out batch, then one weight update from a training batch.

    With several processes each rank steps on its shard of the global batch: the weight gradients are
    averaged by a DDP wrapper over the epoch's active weights (rebuilt when the supports move), the gradient
    of the architecture parameters by an all-reduce, so every rank applies the same updates.
    """

    def __init__(self, net: torch.nn.Module, cfg: "SearchConfig", ctx: Dist = Dist()):
        super().__init__(net, net.arch_parameters()[0], cfg, ctx)  # b (ISTA-NAS) or alpha (the DARTS baseline)

    def begin_epoch(self, epoch: int) -> None:
        for group in self.w_opt.param_groups:
            group["lr"] = cosine_lr(epoch, self.cfg.epochs, self.cfg.lr, self.cfg.lr_min)
        self.open_epoch(self.net.active_weight_parameters(), [])

    def eager_step(self, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor) -> dict[str, Tensor]:
        # Architecture step: gradient of the validation loss with respect to b only (no weight gradients).
        logits_val = self.net(x_val)
        loss_val = F.cross_entropy(logits_val, y_val)
        (grad,) = torch.autograd.grad(loss_val, [self.b], allow_unused=True)
        self.b.grad = grad if grad is not None else torch.zeros_like(self.b)  # no support op reached the loss
        self.ctx.average_grad_([self.b])
        self.a_opt.step()
        # Weight step on the training batch, with the updated relaxed weights.
        loss, logits = self._weight_step(x, y)
        return {
            "train_loss": loss.detach() * len(y), "train_correct": (logits.argmax(1) == y).sum(),
            "train_n": torch.tensor(len(y)),
            "valid_loss": loss_val.detach() * len(y_val), "valid_correct": (logits_val.argmax(1) == y_val).sum(),
            "valid_n": torch.tensor(len(y_val)),
        }

    def _weight_step(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """One clipped SGD step on the active weights (through the epoch's ``train_net``); returns loss and
        logits."""
        logits, _ = self.train_net(x)
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


def bilevel_means(sums: dict[str, float]) -> dict[str, float]:
    """Mean losses and accuracies (%) of the weight (train) and architecture (valid) batches of an epoch."""
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
    """A bilevel search's checkpoint entries (two-stage or DARTS)."""

    search: dict[str, Any]  # BilevelStepper.state_dict(): network, both optimisers, which weights were used
    genotype: dict[str, Any]  # the genotype the supports held (readable without the network)


class Bilevel(SearchMethod):
    """The bilevel job, over the supernet the subclass names: the data split into a weight half and an
    architecture half, per epoch the stepper's steps; a subclass's ``end_epoch`` says what follows an epoch
    and hands it to ``record_epoch``. Its result is the genotype the supernet holds at the end, retrained afterwards
    (``ista-nas train``) at the size ``RetrainSize`` sets."""

    entry = "search"
    settings: ClassVar[tuple[type[Settings], ...]] = (SplitSettings, RetrainSize)
    stepper_class = BilevelStepper

    def setup(self, ctx: Dist) -> None:
        cfg = self.cfg
        self.ctx = ctx
        data, self.train_loader, self.valid_loader = search_split(cfg, ctx)
        self.net = place(build_supernet(cfg, data, self.variant), ctx, cfg.channels_last, cfg.sync_bn)
        self.budget = budget_of(cfg, self.variant, shape_of(data))  # as build_supernet read it (cached)
        self.stepper = self.stepper_class(self.net, cfg, ctx)
        self.last_genotype: Any = None  # the genotype after the last finished epoch (computed once an epoch)

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.stepper.load_state_dict(checkpoint["search"])

    def start_line(self) -> str:
        return (f"searching on {self.ctx}: {self.cfg.dataset}, {len(self.train_loader.indices)} train / "
                f"{len(self.valid_loader.indices)} valid images, {len(self.train_loader)} steps per epoch")

    def begin_epoch(self, epoch: int) -> EpochPlan:
        self.stepper.begin_epoch(epoch)
        batches = zip(self.train_loader.epoch(epoch), _valid_batches(self.valid_loader, epoch, len(self.train_loader)))
        return EpochPlan(lambda tr, va: self.stepper.step(*tr, *va), batches, len(self.train_loader),
                         f"epoch {epoch + 1}/{self.cfg.epochs}", bilevel_means)

    def record_epoch(self, stats: dict[str, float], after: dict[str, Any]) -> dict[str, Any]:
        """The epoch's record: its ``stats``, learning rate, what followed the epoch (``after``) and the genotype
        the supernet now holds (taken once, written with the ranking) with its benchmark value."""
        self.last_genotype = self.net.genotype()
        self.write_results(self.last_genotype)
        return {**stats, "lr": self.stepper.w_opt.param_groups[0]["lr"], **after,
                "genotype": self.last_genotype.to_dict(), **self.benchmark_record(self.last_genotype),
                **self.budget_record(self.last_genotype)}

    def write_results(self, genotype: Any) -> None:
        self.run.write_json("genotype.json", genotype.to_dict())
        self.run.write_json("ranking.json", self.net.ranking())

    def genotype_now(self, stopped: bool = False) -> Any:
        """The genotype the network holds: the last finished epoch's, or (``stopped`` inside an epoch, or before
        any epoch of this process finished) computed now."""
        return self.net.genotype() if stopped or self.last_genotype is None else self.last_genotype

    def state(self, finished: int, stopped: bool = False) -> SearchState:
        return SearchState(search=self.stepper.state_dict(), genotype=self.genotype_now(stopped).to_dict())

    def log_epoch(self, record: dict[str, Any]) -> None:
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  valid loss %.4f acc %.2f%%  supports changed %s  %.1fs",
                 record["epoch"], self.cfg.epochs, record["train_loss"], record["train_acc"], record["valid_loss"],
                 record["valid_acc"], len(record["supports_changed"]) if "supports_changed" in record else "-",
                 record["seconds"])

    def result(self, run: RunDir) -> SearchResult:
        genotype = self.genotype_now()
        if genotype is not self.last_genotype:  # ended without finishing an epoch in this process: not written yet
            self.write_results(genotype)
        log.info("wrote %s", run.path / "genotype.json")
        return self.finish(run, genotype)
