"""Two-stage ISTA-NAS search (Yang et al., NeurIPS 2020, Sec. 3.2), read top to bottom.

Per epoch: the supernet is fixed to the current supports; every training batch gives one Adam step on the
compressed architecture parameters b (loss on a batch of the held-out half) and one SGD step on the network
weights (loss on a batch of the training half); after the epoch z is recovered from b and the supports move.
The result is the genotype of the final supports; stage two (retraining it) is ``ista-nas train``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import SearchConfig
from ..diagram import write_diagrams
from ..engine.data import Augment, DeviceLoader, ImageData, epoch_seed, load_dataset, seeded_subset
from ..engine.distributed import Dist, place, wrap
from ..engine.loop import EpochInterrupted, cosine_lr, graceful_stop, resume_point, run_epoch
from ..engine.rundir import RunDir
from ..report import write_run_report
from ..errors import UserError
from ..genotype import AnyGenotype
from ..spaces import SPACES
from .budget import recover_within_budget

log = logging.getLogger(__name__)



@dataclass
class SearchResult:
    genotype: AnyGenotype
    run_dir: Path
    metrics: list[dict[str, Any]]


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


def clip_weight_grads(weights: list[torch.nn.Parameter], max_norm: float, also: Tensor | None = None) -> None:
    """``clip_grad_norm_`` of the weights' gradients, with the norm also counting ``also`` (b's gradient, which
    is not clipped) when given."""
    grads = [p.grad for p in weights if p.grad is not None] + ([also] if also is not None else [])
    torch.nn.utils.clip_grads_with_norm_(weights, max_norm, torch.nn.utils.get_total_norm(grads))


class TwoStageSearch:
    """The network and its two optimisers; ``step`` is one architecture update plus one weight update.

    With several processes each rank steps on its shard of the global batch: the weight gradients are
    averaged by a DDP wrapper over the epoch's active weights (rebuilt when the supports move), the gradient
    of b by an all-reduce, so every rank applies the same updates.
    """

    def __init__(self, net: torch.nn.Module, cfg: SearchConfig, ctx: Dist = Dist()):
        self.net, self.cfg, self.ctx = net, cfg, ctx
        self.b = net.arch_parameters()[0]  # b (ISTA-NAS) or alpha (the DARTS baseline)
        self.w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam([self.b], lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.active: list[torch.nn.Parameter] = []
        self.train_net: torch.nn.Module | None = None  # forward_with_aux, gradients averaged over the ranks
        # Warm-up (--weight-warmup-epochs): b stays; the sparse supernet trains a random support every step.
        self.sampler: torch.Generator | None = None
        if cfg.weight_warmup_epochs and ctx.world > 1:
            raise UserError("--weight-warmup-epochs is not offered under torchrun yet (every rank would need the same "
                            "random supports in its DDP wrapper); run the warm-up in one process or drop the flag")

    def warming_up(self, epoch: int) -> bool:
        return epoch < self.cfg.weight_warmup_epochs

    def skip_steps(self, steps: int) -> None:
        """Advance the warm-up's support draws past ``steps`` steps (resuming inside a warm-up epoch)."""
        if self.sampler is not None:
            for _ in range(steps):
                self.net.arch.sample_support(self.sampler)
            self.net.arch.cache_support()

    def begin_epoch(self, epoch: int) -> None:
        for group in self.w_opt.param_groups:
            group["lr"] = cosine_lr(epoch, self.cfg.epochs, self.cfg.lr, self.cfg.lr_min)
        self.active = self.net.active_weight_parameters()
        keep_zero_grads(self.w_opt.param_groups[0]["params"], self.active)
        self.train_net = None  # drop the previous DDP wrapper (and its gradient hooks) before building the next
        self.train_net = wrap(self.net, self.active, self.ctx)
        self.net.train()
        sparse = hasattr(self.net.arch, "sample_support")
        self.sampler = (torch.Generator().manual_seed(epoch_seed(self.cfg.seed, epoch, 7))
                        if self.warming_up(epoch) and sparse else None)

    def warmup_step(self, x: Tensor, y: Tensor, x_val: Tensor, y_val: Tensor) -> dict[str, Tensor]:
        """A weight step without the architecture step; the sparse supernet runs a freshly drawn support with
        unit weights (the discrete network of a random architecture), so every candidate op is trained before
        b starts to compare them. The held-out batch is only scored."""
        if self.sampler is not None:
            for p in self.active:
                if p.grad is not None:
                    p.grad.zero_()  # last step's support keeps exactly zero, as ops that left the support do
            self.net.arch.sample_support(self.sampler)
            self.active = self.net.active_weight_parameters()
        with torch.no_grad():
            logits_val = self.net(x_val)
            loss_val = F.cross_entropy(logits_val, y_val)
        loss, logits = self._weight_step(self.net.forward_with_aux, x, y)  # one process: no DDP wrapper needed
        if self.sampler is not None:
            self.net.arch.cache_support()  # the recovered support again between steps (checkpoints, genotype)
        return self._stats(loss, logits, y, loss_val, logits_val, y_val)

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

    def state_dict(self) -> dict[str, Any]:
        used = [p.grad is not None for p in self.w_opt.param_groups[0]["params"]]
        return {"model": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "weights_used": used}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        for p, used in zip(self.w_opt.param_groups[0]["params"], state["weights_used"], strict=True):
            p.grad = torch.zeros_like(p) if used else None


def _summarize(sums: dict[str, float]) -> dict[str, float]:
    out = {}
    for part in ("train", "valid"):
        n = max(sums[f"{part}_n"], 1.0)
        out[f"{part}_loss"] = sums[f"{part}_loss"] / n
        out[f"{part}_acc"] = 100.0 * sums[f"{part}_correct"] / n
    return out


def prepare_data(cfg: SearchConfig, ctx: Dist) -> tuple[ImageData, DeviceLoader, DeviceLoader]:
    """Load the training split, take the seeded subset and split it into the weight and architecture halves;
    the loaders yield this rank's shard of every global batch."""
    ctx.check_batch(cfg.batch_size)
    device = ctx.device
    data = load_dataset(cfg.dataset, "train", cfg.data_dir or None)
    order = seeded_subset(len(data), cfg.subset, cfg.seed, cfg.dataset)
    split = int(len(order) * cfg.train_portion)
    train_idx, valid_idx = order[:split], order[split:]
    if min(len(train_idx), len(valid_idx)) < cfg.batch_size:
        raise UserError(f"{len(order)} images split {len(train_idx)}/{len(valid_idx)} give less than one batch of "
                        f"{cfg.batch_size}; raise --subset or lower --batch-size")
    mean, std = data.stats()
    data = ImageData(data.images.to(device), data.labels.to(device), data.classes)  # one copy on the device
    augment = Augment(crop_padding=min(data.size) // 8 if cfg.augment else 0, flip=cfg.augment, cutout=cfg.cutout)
    common = dict(batch_size=cfg.batch_size, device=device, mean=mean, std=std, augment=augment,
                  channels_last=cfg.channels_last, seed=cfg.seed, shard=(ctx.rank, ctx.world))
    return data, DeviceLoader(data, train_idx, stream=0, **common), DeviceLoader(data, valid_idx, stream=1, **common)


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


def build_network(cfg: SearchConfig, data: ImageData) -> torch.nn.Module:
    """The supernet of the configured space: sparse (ISTA-NAS) or dense (the DARTS baseline)."""
    torch.manual_seed(cfg.seed)
    return SPACES[cfg.space].supernet(cfg, data.num_classes, data.channels, cfg.method == "darts")


def _changed_names(net: torch.nn.Module, changed: Tensor) -> list[str]:
    return [net.group_name(t, g) for t, g in changed.nonzero().tolist()]


def search(cfg: SearchConfig, out: str | Path) -> SearchResult:
    """Run a two-stage search from scratch into the new run directory ``out``."""
    cfg.validate()
    return _run(cfg, RunDir.prepare_new(out, cfg.to_dict()), checkpoint=None)  # created once the data has loaded


def resume(run_dir: str | Path, **overrides: Any) -> SearchResult:
    """Continue the run in ``run_dir`` from its last checkpoint. ``overrides`` may change epochs and device."""
    cfg, open_run, checkpoint = RunDir.prepare_resume(run_dir, SearchConfig, overrides, kind="search")
    return _run(cfg, open_run, checkpoint)


def _write_results(run: RunDir, net: torch.nn.Module) -> AnyGenotype:
    genotype = net.genotype()
    run.write_json("genotype.json", genotype.to_dict())
    run.write_json("ranking.json", net.ranking())
    return genotype


def _run(cfg: SearchConfig, open_run: Callable[[], RunDir], checkpoint: dict[str, Any] | None) -> SearchResult:
    ctx = Dist.setup(cfg.device)
    data, train_loader, valid_loader = prepare_data(cfg, ctx)
    net = place(build_network(cfg, data), ctx, cfg.channels_last, cfg.sync_bn)
    searcher = TwoStageSearch(net, cfg, ctx)
    run = RunDir.open_on_main(open_run, cfg.tensorboard)
    start = run.restore(checkpoint, "search", searcher.load_state_dict, cfg.epochs)
    log.info("searching on %s: %s, %d train / %d valid images, %d steps per epoch, run directory %s",
             ctx, cfg.dataset, len(train_loader.indices), len(valid_loader.indices), len(train_loader), run.path)

    try:
        with graceful_stop(ctx.world == 1):  # several processes would have to agree on the step: not offered
            _epochs(cfg, run, net, searcher, train_loader, valid_loader, start, ctx, (checkpoint or {}).get("partial"))
    except KeyboardInterrupt:
        run.report_interrupt()
        raise
    genotype = _write_results(run, net) if start == cfg.epochs else net.genotype()  # else written above
    if run.writes:
        write_diagrams(genotype, run.path)
    log.info("genotype: %s", genotype.to_dict())
    log.info("wrote %s", run.path / "genotype.json")
    write_run_report(run)
    return SearchResult(genotype, run.path, run.read_metrics())


def _epochs(cfg: SearchConfig, run: RunDir, net: torch.nn.Module, searcher: TwoStageSearch,
            train_loader: DeviceLoader, valid_loader: DeviceLoader, start: int, ctx: Dist,
            partial: dict[str, Any] | None = None) -> None:
    for epoch in range(start, cfg.epochs):
        began = time.perf_counter()
        searcher.begin_epoch(epoch)
        resume_at = resume_point(partial, epoch, ctx.main)
        if resume_at is not None:
            searcher.skip_steps(resume_at["step"])
        step = searcher.warmup_step if searcher.warming_up(epoch) else searcher.step
        batches = zip(train_loader.epoch(epoch), _valid_batches(valid_loader, epoch, len(train_loader)))
        try:
            stats = run_epoch(lambda tr, va: step(*tr, *va), batches, len(train_loader),
                              f"epoch {epoch + 1}/{cfg.epochs}", _summarize, reduce=ctx.sum_stats, show=ctx.main,
                              interruptible=True, resume=resume_at)
        except EpochInterrupted as stop:  # Ctrl-C: keep this very step
            run.save_checkpoint({"epoch": epoch, "config": cfg.to_dict(), "search": searcher.state_dict(),
                                 "genotype": net.genotype().to_dict(), "partial": {"epoch": epoch, **stop.progress}})
            raise
        record: dict[str, Any] = {"epoch": epoch + 1, **stats, "lr": searcher.w_opt.param_groups[0]["lr"]}
        if cfg.method != "darts" and not searcher.warming_up(epoch):  # ISTA-NAS: recover z, move the supports
            recovery, _, changed, rejected = recover_within_budget(net, cfg.max_params, cfg.budget_channels,
                                                                   cfg.budget_layers, ctx)
            record.update(supports_changed=_changed_names(net, changed), recovery_iterations=recovery.iterations,
                          recovery_kkt_violation=float(recovery.kkt_violation.max()), rejected_params_m=rejected)
        genotype = _write_results(run, net)
        record.update(seconds=round(time.perf_counter() - began, 3), genotype=genotype.to_dict())
        # Metrics first, checkpoint last: a crash in between is undone by the resume trimming the metrics.
        run.append_metrics(record)
        run.save_checkpoint({"epoch": epoch + 1, "config": cfg.to_dict(), "search": searcher.state_dict(),
                             "genotype": genotype.to_dict()})
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  valid loss %.4f acc %.2f%%  supports changed %s  %.1fs",
                 epoch + 1, cfg.epochs, stats["train_loss"], stats["train_acc"], stats["valid_loss"],
                 stats["valid_acc"], len(record.get("supports_changed", [])) if cfg.method != "darts" else "-",
                 record["seconds"])
