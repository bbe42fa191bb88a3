"""One-stage ISTA-NAS (Yang et al., NeurIPS 2020, Sec. 3.3): search and train the target network in one run.

The supernet has the target network's size and its one-stage ops (an affine BN ends every op). While a node
searches, the BNs inside its candidate ops keep weight 1 and bias 0, so the relaxed weights alpha cannot be
absorbed by them. Every training batch updates the weights (SGD, constant learning rate) and b (Adam) with
the same loss: there is no validation split. After each epoch z is recovered; a node whose z moved by at
most ``freeze_tol`` (L2) freezes: its support and alpha are fixed, b no longer matters there, and its ops'
BN affine parameters start training. When every node is frozen (or after ``max_search_epochs``) each alpha is
folded into the BN of its op, which yields the discrete one-stage network exactly, and that network trains on
for the remaining epochs with the evaluation protocol (cosine learning rate, drop-path rising to its final
value). The final checkpoint is a training checkpoint: ``ista-nas evaluate`` and ``export`` accept it.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import SearchConfig, TrainConfig
from ..diagram import write_diagrams
from ..engine.distributed import Dist, place, wrap
from ..engine.loop import EpochInterrupted, graceful_stop, resume_point, run_epoch
from ..engine.rundir import RunDir
from ..report import write_run_report
from ..networks import SearchNetwork
from ..retrain import DataInfo, Trainer, build_model, evaluate, model_spec, prepare_data
from .budget import recover_within_budget
from .two_stage import SearchResult

log = logging.getLogger(__name__)


def train_config(cfg: SearchConfig, fixed_at: int) -> TrainConfig:
    """The evaluation protocol for the epochs after the architecture was fixed at epoch ``fixed_at``."""
    shared = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TrainConfig) if hasattr(cfg, f.name)}
    return TrainConfig(**{**shared, "genotype": "(one-stage search)", "epochs": max(cfg.epochs - fixed_at, 1)})


def op_bn_parameters(net: SearchNetwork, t: int, node: int, candidates: list[int]) -> list[nn.Parameter]:
    """The affine parameters of the BNs inside the given candidate ops of one node, in every cell of type t."""
    params = []
    for cell in net.cells:
        if int(cell.reduction) == t:
            for k in candidates:
                params += [p for m in cell.nodes[node][k].modules() if isinstance(m, nn.BatchNorm2d)
                           for p in m.parameters()]
    return params


class OneStageSearch:
    """Single-level search on the target network: one loss, one SGD step on weights and one Adam step on b
    (gradients of both averaged over the ranks by a DDP wrapper rebuilt every epoch)."""

    def __init__(self, net: SearchNetwork, cfg: SearchConfig, ctx: Dist = Dist()):
        self.net, self.cfg, self.ctx = net, cfg, ctx
        # Every candidate op's BN starts fixed at (1, 0); a node's ops' BNs train once the node freezes.
        for t in range(2):
            for node in range(net.steps):
                for p in op_bn_parameters(net, t, node, list(range(len(net.cells[0].nodes[node])))):
                    p.requires_grad_(False)
        self.w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam([net.arch.b], lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.active: list[nn.Parameter] = []
        self.train_net: nn.Module | None = None

    def unfreeze_bn(self, groups: Tensor) -> None:
        for t, node in groups.nonzero().tolist():
            for p in op_bn_parameters(self.net, t, node, self.net.arch.support_list[t][node]):
                p.requires_grad_(True)

    def begin_epoch(self) -> None:
        self.active = [p for p in self.net.active_weight_parameters() if p.requires_grad]
        self.train_net = None  # drop the previous DDP wrapper (and its gradient hooks) before building the next
        self.train_net = wrap(self.net, self.active + [self.net.arch.b], self.ctx)
        self.net.train()

    def step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        logits, aux = self.train_net(x)
        loss = F.cross_entropy(logits, y)
        total = loss if aux is None else loss + self.cfg.auxiliary_weight * F.cross_entropy(aux, y)
        self.w_opt.zero_grad(set_to_none=True)
        self.a_opt.zero_grad(set_to_none=True)
        total.backward(inputs=self.active + [self.net.arch.b])
        torch.nn.utils.clip_grad_norm_(self.active, self.cfg.grad_clip)
        self.w_opt.step()
        self.a_opt.step()
        return {"loss": loss.detach() * len(y), "correct": (logits.argmax(1) == y).sum(), "n": torch.tensor(len(y))}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        self.unfreeze_bn(self.net.arch.frozen)


def _summarize(sums: dict[str, float]) -> dict[str, float]:
    n = max(sums["n"], 1.0)
    return {"train_loss": sums["loss"] / n, "train_acc": 100 * sums["correct"] / n}


def build_supernet(cfg: SearchConfig, data: DataInfo) -> SearchNetwork:
    torch.manual_seed(cfg.seed)
    return SearchNetwork(channels=cfg.channels, layers=cfg.layers, num_classes=len(data.classes),
                         in_channels=data.channels, steps=cfg.steps, proj_dims=cfg.proj_dims, sparsity=cfg.sparsity,
                         lam=cfg.lam, matrix=cfg.matrix, seed=cfg.seed, one_stage=True,
                         auxiliary=cfg.auxiliary_weight > 0, stem=cfg.stem, arch_init=cfg.arch_init)


def search(cfg: SearchConfig, out: str | Path) -> SearchResult:
    """Run a one-stage search (search, fix, absorb, train on) into the new run directory ``out``."""
    cfg.validate()
    return _run(cfg, RunDir.prepare_new(out, cfg.to_dict()), checkpoint=None)


def resume(run_dir: str | Path, **overrides: Any) -> SearchResult:
    cfg, open_run, checkpoint = RunDir.prepare_resume(run_dir, SearchConfig, overrides, kind="phase")
    return _run(cfg, open_run, checkpoint)


def _run(cfg: SearchConfig, open_run: Callable[[], RunDir], checkpoint: dict[str, Any] | None) -> SearchResult:
    ctx = Dist.setup(cfg.device)
    tcfg = train_config(cfg, 0)
    data, train_loader, test_loader = prepare_data(tcfg, ctx)
    mean, std = train_loader.mean_std
    net = place(build_supernet(cfg, data), ctx, cfg.channels_last, cfg.sync_bn)
    searcher = OneStageSearch(net, cfg, ctx)
    run = RunDir.open_on_main(open_run, cfg.tensorboard)
    start, trainer, fixed_at, froze_at = 0, None, None, {}
    if checkpoint is not None:
        if checkpoint["phase"] == "search":
            start = run.restore(checkpoint, "search", searcher.load_state_dict, cfg.epochs)
        else:
            fixed_at = checkpoint["fixed_at"]
            model = place(build_model(checkpoint["model_spec"]), ctx, cfg.channels_last, cfg.sync_bn)
            trainer = Trainer(model, train_config(cfg, fixed_at), ctx)
            start = run.restore(checkpoint, "trainer", trainer.load_state_dict, cfg.epochs)
        froze_at = checkpoint["froze_at"]
    log.info("one-stage search on %s: %s, %d train / %d test images, run directory %s", ctx, cfg.dataset,
             len(train_loader.indices), len(test_loader.indices), run.path)
    partial, test = (checkpoint or {}).get("partial"), (checkpoint or {}).get("test", {})

    def state_at(done: int) -> dict[str, Any]:
        """The checkpoint after ``done`` epochs (or within the next one), in the current phase."""
        state: dict[str, Any] = {"epoch": done, "config": cfg.to_dict(), "froze_at": froze_at, "test": test}
        if trainer is None:
            state.update(phase="search", search=searcher.state_dict())
        else:
            spec = model_spec(train_config(cfg, fixed_at), trainer.model.genotype, data, mean, std)
            state.update(phase="train", fixed_at=fixed_at, trainer=trainer.state_dict(), model_spec=spec)
        return state

    def train_epoch(epoch: int, step: Any, desc: str) -> dict[str, float]:
        try:
            return run_epoch(step, train_loader.epoch(epoch), len(train_loader), f"{desc} {epoch + 1}/{cfg.epochs}",
                             _summarize, reduce=ctx.sum_stats, show=ctx.main, interruptible=True,
                             resume=resume_point(partial, epoch, ctx.main))
        except EpochInterrupted as stop:  # Ctrl-C: keep this very step
            run.save_checkpoint({**state_at(epoch), "partial": {"epoch": epoch, **stop.progress}})
            raise

    try:
        with graceful_stop(ctx.world == 1):
            for epoch in range(start, cfg.epochs):
                began = time.perf_counter()
                if trainer is None:
                    searcher.begin_epoch()
                    stats = train_epoch(epoch, searcher.step, "search")
                    # Monitor the network this epoch trained, before the supports move (new support ops would be
                    # judged with BN statistics they have not gathered yet).
                    test = evaluate(net, test_loader, desc=f"test {epoch + 1}/{cfg.epochs}", ctx=ctx)
                    previous = net.arch.z.clone()
                    _, recovered, _, _ = recover_within_budget(net, cfg.max_params, cfg.channels, cfg.layers, ctx)
                    moved = torch.linalg.vector_norm(recovered - previous, dim=-1)
                    freeze = (moved <= cfg.freeze_tol) & ~net.arch.frozen
                    if cfg.max_search_epochs and epoch + 1 >= cfg.max_search_epochs:
                        freeze = ~net.arch.frozen
                    for t, g in freeze.nonzero().tolist():
                        froze_at[net.group_name(t, g)] = epoch + 1
                    net.arch.freeze(freeze)
                    searcher.unfreeze_bn(freeze)
                    phase_record = {"phase": "search", "frozen": sorted(froze_at), "genotype": net.genotype().to_dict()}
                    if bool(net.arch.frozen.all()):
                        fixed_at = epoch + 1
                        model = place(net.absorb(), ctx, cfg.channels_last, cfg.sync_bn)
                        trainer = Trainer(model, train_config(cfg, fixed_at), ctx)
                        log.info("architecture fixed after epoch %d: %s", fixed_at, model.genotype.to_dict())
                else:
                    trainer.begin_epoch(epoch - fixed_at)
                    stats = train_epoch(epoch, trainer.step, "train")
                    phase_record = {"phase": "train"}
                    test = evaluate(trainer.model, test_loader, desc=f"test {epoch + 1}/{cfg.epochs}", ctx=ctx)
                record = {"epoch": epoch + 1, **phase_record, **stats, "test_loss": test["loss"],
                          "test_top1": test["top1"], "test_top5": test["top5"],
                          "seconds": round(time.perf_counter() - began, 3)}
                run.append_metrics(record)
                run.save_checkpoint(state_at(epoch + 1))
                log.info("epoch %d/%d (%s)  train loss %.4f acc %.2f%%  test top-1 %.2f%%  frozen %d/%d  %.1fs",
                         epoch + 1, cfg.epochs, record["phase"], stats["train_loss"], stats["train_acc"], test["top1"],
                         len(froze_at), 2 * cfg.steps, record["seconds"])
    except KeyboardInterrupt:
        run.report_interrupt()
        raise
    genotype = trainer.model.genotype if trainer is not None else net.genotype()
    run.write_json("genotype.json", genotype.to_dict())
    run.write_json("froze_at.json", froze_at)
    if run.writes:
        write_diagrams(genotype, run.path)
    log.info("genotype: %s", genotype.to_dict())
    write_run_report(run)
    return SearchResult(genotype, run.path, run.read_metrics())
