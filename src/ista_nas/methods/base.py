"""What the search methods share: the ``SearchMethod`` interface (a driver ``Job`` whose result is a
genotype), the supernet a method names, the benchmark record of an epoch's architecture and the result
files; the steppers' common state and gradient rules; and the bilevel loop that the two-stage ISTA-NAS
search and the DARTS baseline both run (``Bilevel``, stepped by ``BilevelStepper``): per training batch one
Adam step on the architecture parameters from a held-out batch, then one SGD step on the weights."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from ..benchmark import Table, table_for
from ..engine.data import DeviceLoader
from ..engine.distributed import Dist, place, wrap
from ..engine.driver import EpochPlan, Job
from ..engine.graphs import CapturedStep, captured_step
from ..engine.loop import cosine_lr
from ..engine.rundir import RunDir
from ..engine.splits import search_split
from ..errors import UserError
from ..networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet
from ..report import write_run_report
from ..spaces import SPACES, check_activations, write_diagrams
from ..spaces.base import Checks, SearchSpace

if TYPE_CHECKING:
    from ..config import SearchConfig

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    genotype: Any
    run_dir: Path
    metrics: list[dict[str, Any]]


class SearchMethod(Job):
    """A search method: a ``Job`` whose result is a genotype. What the method requires of a config is declared
    here, beside its code (``checks``, ``validate_parts``), and which settings it alone reads beside their
    fields (``config``: a field's ``methods``); ``methods.validate`` applies both."""

    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # its settings per preset, over the search's and the space's
    # The space's supernet it searches: sparse (ISTA-NAS, the support only), dense (every candidate runs) or
    # target (the target network itself; the space's target group applies: SearchSpace.target).
    supernet: ClassVar[str] = "sparse"

    @staticmethod
    def checks(cfg: "SearchConfig", space: SearchSpace) -> Checks:
        """(ok, message) pairs for this method's constraints on ``cfg``."""
        return []

    @staticmethod
    def validate_parts(cfg: "SearchConfig") -> None:
        """Once every check passed: validate what the method derives from ``cfg`` (raise a UserError)."""

    def __init__(self, cfg: "SearchConfig"):
        super().__init__(cfg)
        self.table: Table | None = table_of(cfg)  # read once, when validate checked it (before the data loads)
        self.missing: set[str] = set()

    def benchmark_record(self, genotype: Any) -> dict[str, Any]:
        """With ``--benchmark``: the table's metric and rank of ``genotype`` (None, and one warning, for an
        architecture the table lacks), for the epoch's record."""
        if self.table is None:
            return {}
        entry = self.table.get(genotype)
        if entry is None:
            key = self.table.key(genotype)
            if key not in self.missing:
                self.missing.add(key)
                log.warning("architecture %s is not in the benchmark table %s; recorded as null", key,
                            self.table.path)
            return {"benchmark": None, "benchmark_rank": None}
        return {"benchmark": entry.value, "benchmark_rank": entry.rank}

    def finish(self, run: RunDir, genotype: Any) -> SearchResult:
        """The searched cell's diagrams and the run's report beside its genotype.json."""
        if run.writes:
            write_diagrams(genotype, run.path, run_owned=True)
        log.info("genotype: %s", genotype.to_dict())
        if self.table is not None and run.writes:
            entry = self.table.get(genotype)
            run.write_json("benchmark.json", {"table": str(self.table.path), "builtin": self.table.builtin,
                                              "metric": self.table.metric, "dense": self.supernet == "dense",
                                              **(entry.to_dict() if entry else {"arch": self.table.key(genotype),
                                                                                "value": None})})
            if entry:
                log.info("benchmark %s of the found architecture: %.2f, rank %d of %d (best %.2f, mean %.2f)",
                         self.table.metric, entry.value, entry.rank, entry.size, entry.best, entry.mean)
        write_run_report(run)
        return SearchResult(genotype, run.path, run.read_metrics())


def build_supernet(cfg: "SearchConfig", data: Any, kind: str = "sparse"
                   ) -> SparseSupernet | DenseSupernet | TargetSupernet:
    """The supernet of the configured space a method searches, its weights drawn from ``cfg.seed``: ``kind``
    sparse (ISTA-NAS two-stage), dense (every candidate runs: the DARTS baseline) or target (one-stage)."""
    check_activations(cfg.space, cfg.channels, cfg.layers, cfg.batch_size, data, cfg.device, cfg.stem)
    torch.manual_seed(cfg.seed)
    space = SPACES[cfg.space]
    return {"sparse": space.supernet, "dense": space.dense_supernet, "target": space.target_supernet}[kind](cfg, data)


def table_of(cfg: "SearchConfig") -> Table | None:
    """The benchmark table the search records (``--benchmark`` FILE, checked: of the run's space; by default the
    space's built-in table where one ships), or None (``--benchmark none``, or no table for the space)."""
    table = table_for(SPACES[cfg.space], cfg.benchmark, cfg.arch_column, cfg.metric)
    if table is None:
        return None
    if table.space.name != cfg.space:
        raise UserError(f"--benchmark {cfg.benchmark} lists architectures of --space {table.space.name}, the search "
                        f"is of --space {cfg.space}; give a table of its space")
    return table


# --- what every stepper shares -------------------------------------------------------------------------------


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


class Stepper:
    """What every stepper checkpoints: its network, the weights' SGD (``w_opt``), the architecture's Adam
    (``a_opt``) and which weights were ever used (they keep a zero gradient: ``keep_zero_grads``; a resume
    gives them one again). ``step`` runs ``eager_step``, or replays it from a CUDA graph where the run captures
    (``engine.graphs``: captured again every epoch, as the supports move only between epochs)."""

    net: torch.nn.Module
    w_opt: torch.optim.Optimizer
    a_opt: torch.optim.Optimizer
    captured: CapturedStep | None = None

    def use_graphs(self, cfg: "SearchConfig", ctx: Dist) -> bool:
        """Whether this run captures its steps (then Adam keeps its step counter on the device)."""
        self.captured = captured_step(self.eager_step, cfg.cuda_graphs, ctx)
        return self.captured is not None

    def eager_step(self, *batch: Tensor) -> dict[str, Tensor]:
        raise NotImplementedError

    def step(self, *batch: Tensor) -> dict[str, Tensor]:
        return (self.captured or self.eager_step)(*batch)

    def recapture(self) -> None:
        """The step changed (a new epoch's supports, frozen groups or learning rate; loaded state): capture anew."""
        if self.captured is not None:
            self.captured.reset()

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.net.state_dict(), "w_opt": self.w_opt.state_dict(), "a_opt": self.a_opt.state_dict(),
                "weights_used": [p.grad is not None for p in self.w_opt.param_groups[0]["params"]]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.net.load_state_dict(state["model"])
        self.w_opt.load_state_dict(state["w_opt"])
        self.a_opt.load_state_dict(state["a_opt"])
        for p, used in zip(self.w_opt.param_groups[0]["params"], state["weights_used"], strict=True):
            p.grad = torch.zeros_like(p) if used else None
        self.recapture()


# --- the bilevel loop: two-stage ISTA-NAS and the DARTS baseline --------------------------------------------


class BilevelStepper(Stepper):
    """The bilevel step: ``step`` is one architecture update (b of a sparse supernet, alpha of a dense one)
    from a held-out batch, then one weight update from a training batch.

    With several processes each rank steps on its shard of the global batch: the weight gradients are
    averaged by a DDP wrapper over the epoch's active weights (rebuilt when the supports move), the gradient
    of the architecture parameters by an all-reduce, so every rank applies the same updates.
    """

    def __init__(self, net: torch.nn.Module, cfg: "SearchConfig", ctx: Dist = Dist()):
        self.net, self.cfg, self.ctx = net, cfg, ctx
        self.b = net.arch_parameters()[0]  # b (ISTA-NAS) or alpha (the DARTS baseline)
        self.w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam([self.b], lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay, capturable=self.use_graphs(cfg, ctx))
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
        self.recapture()

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
    and hands it to ``hold``. Its result is the genotype the supernet holds at the end."""

    kind = "search"
    stepper_class = BilevelStepper

    def setup(self, ctx: Dist) -> None:
        cfg = self.cfg
        self.ctx = ctx
        data, self.train_loader, self.valid_loader = search_split(cfg, ctx)
        self.net = place(build_supernet(cfg, data, self.supernet), ctx, cfg.channels_last, cfg.sync_bn)
        self.stepper = self.stepper_class(self.net, cfg, ctx)
        self.held: Any = None  # the genotype after the last finished epoch (computed once an epoch)

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.stepper.load_state_dict(checkpoint["search"])

    def describe(self) -> str:
        return (f"searching on {self.ctx}: {self.cfg.dataset}, {len(self.train_loader.indices)} train / "
                f"{len(self.valid_loader.indices)} valid images, {len(self.train_loader)} steps per epoch")

    def begin_epoch(self, epoch: int) -> EpochPlan:
        self.stepper.begin_epoch(epoch)
        batches = zip(self.train_loader.epoch(epoch), _valid_batches(self.valid_loader, epoch, len(self.train_loader)))
        return EpochPlan(lambda tr, va: self.stepper.step(*tr, *va), batches, len(self.train_loader),
                         f"epoch {epoch + 1}/{self.cfg.epochs}", bilevel_means)

    def hold(self, stats: dict[str, float], after: dict[str, Any]) -> dict[str, Any]:
        """The epoch's record: its ``stats``, learning rate, what followed the epoch (``after``) and the genotype
        the supernet now holds (taken once, written with the ranking) with its benchmark value."""
        self.held = self.net.genotype()
        self.write_results(self.held)
        return {**stats, "lr": self.stepper.w_opt.param_groups[0]["lr"], **after, "genotype": self.held.to_dict(),
                **self.benchmark_record(self.held)}

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
        if genotype is not self.held:  # ended without finishing an epoch in this process: not written yet
            self.write_results(genotype)
        log.info("wrote %s", run.path / "genotype.json")
        return self.finish(run, genotype)
