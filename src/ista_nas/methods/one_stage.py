"""One-stage ISTA-NAS (Yang et al., NeurIPS 2020, Sec. 3.3): search and train the target network in one run.

The supernet has the target network's size and its one-stage ops (an affine BN ends every op). Two phases:

1. Search, until every node froze (or ``max_search_epochs``). While a node searches, the BNs inside its
   candidate ops keep weight 1 and bias 0, so the relaxed weights alpha cannot be absorbed by them. Every
   training batch updates the weights (SGD, constant learning rate) and b (Adam) with the same loss: there is
   no validation split. As in the official code, the gradient norm that clips the weight step counts b's
   gradient too (``clip_with_b``, on in the one-stage presets; b's own step is not clipped), and a weight whose
   op left the support keeps a zero gradient, so weight decay and momentum go on acting on it. After each epoch
   z is recovered; a node whose z moved by at most ``freeze_tol`` (L2) freezes: its support and alpha are
   fixed, b no longer matters there, and its ops' BN affine parameters start training.
2. Training, ``epochs`` epochs: the discrete one-stage network of the final supports, each op's output times
   its alpha as a fixed multiplier (as the official code trains on), with the same optimiser state, the
   training phase's schedule (``training_phase``: the train command's settings) and drop-path rising to
   its final value. Every checkpoint holds the network with alpha folded into the BN that ends each op
   (alpha * BN(x) is a BN with weight alpha * gamma and bias alpha * beta): the plain one-stage network that
   ``ista-nas evaluate`` and ``export`` read; the unfolded state beside it resumes the run.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from ..config import RunConfig, Streaming, TrainConfig, TrainingPhase
from ..engine.distributed import Dist, place
from ..engine.driver import EpochPlan
from ..engine.rundir import RunDir
from ..engine.splits import train_test
from ..engine.trainer import Trainer, evaluate, training_means
from ..fields import NONNEGATIVE, Settings, setting
from ..networks.protocols import TargetSupernet
from ..spaces import SPACES, build_model, model_spec
from ..spaces.base import Checks, SearchSpace
from ..sparse_coding import CodeSettings
from .base import ClipSettings, SearchMethod, SearchResult, Stepper, build_supernet, clip_weight_grads, shape_of
from .budget import BudgetSettings, budget_of, recover

if TYPE_CHECKING:
    from . import SearchConfig

log = logging.getLogger(__name__)


@dataclass
class FreezeSettings(Settings):
    """When the search phase fixes a decision group, and when it ends."""

    why: ClassVar[str] = "its search freezes each decision once it settles"

    freeze_tol: float = setting(1e-3, "one-stage: a decision group (a node of the DARTS cell, an edge of others) "
                                      "freezes when its z moved at most this much (L2) in an epoch", NONNEGATIVE)
    max_search_epochs: int = setting(0, "one-stage: freeze every group still searching after this many search "
                                        "epochs, 0 = search until every group froze", NONNEGATIVE)


# The one-stage method's presets: the target network's settings (official train_search_single defaults). The
# search phase holds lr; the training phase (--epochs) decays it from lr to lr_min.
ONE_STAGE_PRESETS = {
    # Official: lr 0.025 cosine to 0.001 over 600 training epochs, after a search phase of about 120 epochs (the
    # paper). The official loop has no cap of its own below 600; 200 bounds a search whose nodes do not settle at a
    # third of the training cost.
    "paper": dict(method="one-stage", clip_with_b=True, channels=36, layers=20, batch_size=96, epochs=600,
                  max_search_epochs=200, lr=0.025, lr_min=0.001, arch_lr=3e-4, cutout=16, auxiliary_weight=0.4,
                  drop_path=0.2, seed=5, max_params=3.7),
    # The mobile setting (C=48, L=14, 224x224 crops streamed from --dataset folder:PATH with train/ and val/). The
    # official code has no one-stage ImageNet search script: the training phase is the train imagenet preset
    # (250 epochs, 5 warm-up, linear decay, label smoothing 0.1). The search cap of 50 epochs is this project's
    # choice (PC-DARTS's ImageNet search ran 50 epochs).
    "imagenet": dict(method="one-stage", clip_with_b=True, dataset="folder:imagenet", stem="imagenet", channels=48,
                     layers=14, batch_size=1024, epochs=250, max_search_epochs=50, lr=0.5, lr_min=0.0, warmup_epochs=5,
                     lr_schedule="linear", label_smoothing=0.1, weight_decay=3e-5, arch_lr=3e-4, cutout=0,
                     auxiliary_weight=0.4, drop_path=0.0, stream=True),
    # Minutes on a 2-core CPU, a reduced-scale stand-in: search 3 epochs at most, then train 2. The relaxed weights
    # over their mean magnitude (weight_scale mean): with the official raw weights (about 1e-3 at b's start) the
    # first search epoch sits at chance (docs/one-stage.md).
    "quick": dict(method="one-stage", clip_with_b=True, dataset="fashion-mnist", subset=3000, channels=8, layers=5,
                  batch_size=64, epochs=2, max_search_epochs=3, lr=0.05, lr_min=0.0, arch_lr=3e-3, auxiliary_weight=0.4,
                  drop_path=0.1, weight_scale="mean"),
}
# The one-stage run's training phase, field by field: every setting a search and a training run share (the
# RunConfig fields: the same data, network, optimiser, space and run settings, same meaning in both; the training
# phase's and the streaming loader's, which this method lists) comes from the run's config; the training
# command's own settings are fixed by what it trains (the searched network).
TRAINING_PHASE_FROM_SEARCH = tuple(f.name for part in (RunConfig, TrainingPhase, Streaming)
                                   for f in dataclasses.fields(part) if f.name != "preset")
TRAINING_PHASE_FIXED = dict(genotype="(one-stage search)", arch="")


def training_phase(cfg: "SearchConfig") -> TrainConfig:
    """The TrainConfig of a one-stage run's training phase (every field named above; a test checks the list
    covers TrainConfig, so a new training setting has to be placed here)."""
    return TrainConfig(preset=cfg.preset, **TRAINING_PHASE_FIXED,
                       **{name: getattr(cfg, name) for name in TRAINING_PHASE_FROM_SEARCH})


class OneStageStepper(Stepper):
    """The step of the search phase (the job, ``OneStage``, runs it): single-level search on the target
    network: one loss, one SGD step on weights and one Adam step on b
    (gradients of both averaged over the ranks by a DDP wrapper rebuilt every epoch)."""

    def __init__(self, net: TargetSupernet, cfg: "SearchConfig", ctx: Dist = Dist()):
        # Every candidate op's BN starts fixed at (1, 0); a group's held ops' BNs train once the group freezes.
        types, groups = net.arch.frozen.shape
        for t in range(types):
            for g in range(groups):
                for p in net.op_bn_parameters(t, g):
                    p.requires_grad_(False)
        super().__init__(net, net.arch.b, cfg, ctx)

    def unfreeze_bn(self, groups: Tensor) -> None:
        for t, g in groups.nonzero().tolist():
            for p in self.net.op_bn_parameters(t, g, self.net.held_candidates(t, g)):
                p.requires_grad_(True)

    def begin_epoch(self) -> None:
        # Only the support ops run this epoch; a BN still fixed at (1, 0) has no gradient and stays as it is.
        self.open_epoch([p for p in self.net.active_weight_parameters() if p.requires_grad], [self.b])

    def eager_step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        logits, aux = self.train_net(x)
        loss = F.cross_entropy(logits, y)
        total = loss if aux is None else loss + self.cfg.auxiliary_weight * F.cross_entropy(aux, y)
        for p in self.active:
            p.grad = None  # fresh gradients for the active weights; the inactive ones keep their zeros
        self.b.grad = None
        total.backward(inputs=self.active + [self.b])
        # The official code clips over every parameter's gradient, b's included, after b's Adam step: b's
        # gradient enlarges the norm that scales the weight step, and b itself steps unclipped (--clip-with-b).
        clip_weight_grads(self.active, self.cfg.grad_clip, self.b.grad if self.cfg.clip_with_b else None)
        self.w_opt.step()
        self.a_opt.step()
        return {"loss": loss.detach() * len(y), "correct": (logits.argmax(1) == y).sum(), "n": torch.tensor(len(y))}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.unfreeze_bn(self.net.arch.frozen)


def start_training(net: TargetSupernet, stepper: OneStageStepper, tcfg: TrainConfig, ctx: Dist) -> Trainer:
    """The training phase's trainer: the discrete network with alpha as fixed multipliers, placed like the
    supernet, and the search's SGD momentum for every weight it keeps (the official code goes on with the
    same optimiser)."""
    model, sources = net.discrete()
    model = place(model, ctx, tcfg.channels_last, tcfg.sync_bn)
    trainer = Trainer(model, tcfg, ctx)
    for name, p in model.named_parameters():
        buffer = stepper.w_opt.state.get(sources[name], {}).get("momentum_buffer")
        if buffer is not None:
            trainer.optimizer.state[p]["momentum_buffer"] = buffer.clone()
    return trainer


class OneStageState(TypedDict, total=False):
    """A one-stage checkpoint's own entries, by ``phase``."""

    phase: str  # "search" or "train"
    froze_at: dict[str, int]  # decision group -> the search epoch it froze after
    test: dict[str, float]  # the last finished epoch's test loss, top-1, top-5
    min_epochs: int  # training epochs begun: the least --epochs that continues the run
    search: dict[str, Any]  # phase search: OneStageStepper.state_dict()
    fixed_at: int  # phase train: search epochs before the architecture was fixed
    train_on: dict[str, Any]  # phase train: the trainer state with alpha unfolded (what --resume reads)
    model_spec: dict[str, Any]  # phase train: as in a training checkpoint
    trainer: dict[str, Any]  # phase train: {"model": the absorbed plain network} (what evaluate and export read)


class OneStage(SearchMethod):
    """The job (registered as ``one-stage``; the driver runs it): search epochs until every node froze (or the
    cap), then ``epochs`` training epochs of the fixed network. Epochs are counted over both phases; ``searched`` is
    the number of search epochs once the architecture is fixed, and ``trainer`` exists from then on."""

    entry = "phase"
    presets = ONE_STAGE_PRESETS
    variant = "target"
    # b's code, clip and budget as two-stage's; when groups freeze; the training phase and its loader
    settings = (CodeSettings, ClipSettings, BudgetSettings, FreezeSettings, TrainingPhase, Streaming)

    @staticmethod
    def checks(cfg: "SearchConfig", space: SearchSpace) -> Checks:
        return [
            (space.target is not None, f"--space {cfg.space} has no one-stage supernet; search it with --method "
                                        "two-stage or darts"),
        ] + (space.target.checks(cfg) if space.target else [])

    @staticmethod
    def validate_parts(cfg: "SearchConfig") -> None:
        training_phase(cfg).validate()  # the training phase's settings, checked as the train command checks them

    def setup(self, ctx: Dist) -> None:
        cfg = self.cfg
        self.ctx, self.tcfg = ctx, training_phase(cfg)
        self.data, self.train_loader, self.test_loader = train_test(self.tcfg, ctx)
        self.net = place(build_supernet(cfg, self.data, "target"), ctx, cfg.channels_last, cfg.sync_bn)
        self.budget = budget_of(cfg, "target", shape_of(self.data))
        self.stepper = OneStageStepper(self.net, cfg, ctx)
        self.searched, self.trainer, self.froze_at, self.test = 0, None, {}, {}

    def opened(self, run: RunDir) -> None:
        super().opened(run)
        run.write_json("training_phase.json", self.tcfg.to_dict())  # the resolved settings of the training phase

    def load(self, checkpoint: dict[str, Any]) -> None:
        cfg = self.cfg
        self.froze_at, self.test = checkpoint["froze_at"], checkpoint.get("test", {})
        if checkpoint["phase"] == "search":
            self.stepper.load_state_dict(checkpoint["search"])
            return
        self.searched = checkpoint["fixed_at"]
        model = place(build_model(checkpoint["model_spec"]).hold_op_weights(), self.ctx, cfg.channels_last,
                      cfg.sync_bn)
        self.trainer = Trainer(model, self.tcfg, self.ctx)
        self.trainer.load_state_dict(checkpoint["train_on"])

    def start_line(self) -> str:
        return (f"one-stage search on {self.ctx}: {self.cfg.dataset}, {len(self.train_loader.indices)} train / "
                f"{len(self.test_loader.indices)} test images")

    def more(self, done: int) -> bool:
        return self.trainer is None or done - self.searched < self.tcfg.epochs

    def begin_epoch(self, epoch: int) -> EpochPlan:
        if self.trainer is None:
            self.stepper.begin_epoch()
            step, desc = self.stepper.step, f"search {epoch + 1}/{self.cfg.max_search_epochs or '?'}"
        else:
            e = epoch - self.searched
            self.trainer.begin_epoch(e)
            step, desc = self.trainer.step, f"train {e + 1}/{self.tcfg.epochs}"
        return EpochPlan(step, self.train_loader.epoch(epoch), len(self.train_loader), desc, training_means)

    def end_epoch(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        record = self._end_search(epoch, stats) if self.trainer is None else self._end_training(epoch, stats)
        test = self.test
        return {**record, "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"]}

    def _end_search(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        cfg, net = self.cfg, self.net
        # Monitor the network this epoch trained, before the supports move (new support ops would be judged
        # with BN statistics they have not gathered yet).
        self.test = evaluate(net, self.test_loader, desc=f"test (search {epoch + 1})", ctx=self.ctx)
        previous = net.arch.z.clone()
        recover(net, self.ctx)
        moved = torch.linalg.vector_norm(net.arch.z - previous, dim=-1)
        freeze = (moved <= cfg.freeze_tol) & ~net.arch.frozen
        if cfg.max_search_epochs and epoch + 1 >= cfg.max_search_epochs:
            freeze = ~net.arch.frozen
        for t, g in freeze.nonzero().tolist():
            self.froze_at[net.group_name(t, g)] = epoch + 1
        net.freeze(freeze)
        self.stepper.unfreeze_bn(freeze)
        if bool(net.arch.frozen.all()):
            self.searched = epoch + 1
            self.trainer = start_training(net, self.stepper, self.tcfg, self.ctx)
            log.info("architecture fixed after %d search epochs: %s", self.searched,
                     self.trainer.model.genotype.to_dict())
        genotype = net.genotype()
        return {"phase": "search", "phase_epoch": epoch + 1, **stats, "frozen": sorted(self.froze_at),
                "genotype": genotype.to_dict(), **self.benchmark_record(genotype), **self.budget_record(genotype)}

    def _end_training(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        trainer, e = self.trainer, epoch - self.searched
        self.test = evaluate(trainer.model, self.test_loader, trainer.autocast, desc=f"test (train {e + 1})",
                             ctx=self.ctx)
        return {"phase": "train", "phase_epoch": e + 1, **stats, "lr": trainer.optimizer.param_groups[0]["lr"],
                "drop_path": trainer.model.drop_path_prob, **self.benchmark_record(trainer.model.genotype)}

    def state(self, finished: int, stopped: bool = False) -> OneStageState:
        """Search phase: the stepper. Training phase: the absorbed plain network (what evaluate and export
        read) and the unfolded trainer state (what --resume reads); ``min_epochs`` counts the training epochs
        begun (a training epoch stopped halfway must be finished)."""
        if self.trainer is None:
            return OneStageState(froze_at=self.froze_at, test=self.test, phase="search",
                                 search=self.stepper.state_dict(), min_epochs=0)
        plain = self.trainer.model.absorbed()  # alpha folded into the BNs
        return OneStageState(froze_at=self.froze_at, test=self.test, phase="train", fixed_at=self.searched,
                             min_epochs=finished - self.searched + stopped, train_on=self.trainer.state_dict(),
                             model_spec=model_spec(self.tcfg, plain.genotype, self.data, *self.train_loader.mean_std,
                                                  **SPACES[self.cfg.space].target.spec),
                             trainer={"model": plain.state_dict()})

    def log_epoch(self, record: dict[str, Any]) -> None:
        log.info("epoch %d (%s %d)  train loss %.4f acc %.2f%%  test top-1 %.2f%%  frozen %d/%d  %.1fs",
                 record["epoch"], record["phase"], record["phase_epoch"], record["train_loss"], record["train_acc"],
                 record["test_top1"], len(self.froze_at), self.net.arch.frozen.numel(), record["seconds"])

    def result(self, run: RunDir) -> SearchResult:
        genotype = self.trainer.model.genotype
        run.write_json("genotype.json", genotype.to_dict())
        run.write_json("froze_at.json", self.froze_at)
        return self.finish(run, genotype)
