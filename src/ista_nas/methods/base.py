"""What every search method shares: the settings every search has (``SearchSettings``, its presets), the
``SearchMethod`` interface (a driver ``Job`` whose result is a genotype, with the settings it lists), the
supernet a method names, the benchmark record of an epoch's architecture and the result files; and what every
stepper shares (``Stepper``: its optimisers, the opening of an epoch, its checkpoint; the gradient rules). The
bilevel loop of two-stage and DARTS is ``methods.bilevel``."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor

from ..benchmark import Table, table_for
from ..config import RunConfig
from ..engine.distributed import Dist, wrap
from ..engine.driver import Job
from ..engine.graphs import CapturedStep, captured_step
from ..engine.rundir import RunDir
from ..errors import UserError
from ..fields import POSITIVE, NONNEGATIVE, Settings, setting
from ..networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet
from ..spaces import SPACES, check_activations, write_diagrams
from ..spaces.base import Checks, SearchSpace
from .budget import Budget, budget_of, constrain

if TYPE_CHECKING:
    from . import SearchConfig

log = logging.getLogger(__name__)


@dataclass
class SearchSettings(RunConfig):
    """The settings every search has, over every run's: the method, b's (or alpha's) Adam, and the benchmark
    table it records. ``methods.SearchConfig`` adds the settings each method and space lists."""

    COMMAND: ClassVar[str] = "search"

    method: str = setting("two-stage", "two-stage (search a small supernet, retrain later), one-stage (search and "
                                       "train the target network in one run) or darts (the dense first-order DARTS "
                                       "baseline)")
    # Architecture: Adam on b (ISTA-NAS) or alpha (DARTS)
    arch_lr: float = setting(6e-4, "Adam learning rate of b (paper two-stage: 6e-4)", POSITIVE)
    arch_weight_decay: float = setting(1e-3, "Adam weight decay of b (official code: 1e-3)", NONNEGATIVE)
    # The true quality of the search trajectory (a tabular benchmark: every architecture trained)
    benchmark: str = setting("", "a benchmark table (CSV with a header, or JSON lines) of architectures and their "
                                 "trained accuracy: every epoch records the --metric of the architecture the search "
                                 "holds; empty: the space's built-in table where one ships, none: no table")
    arch_column: str = setting("arch", "the benchmark table's column of architecture strings")
    metric: str = setting("", "the benchmark table's column to record (any numeric column); empty: test_acc of a "
                              "file, the first metric of a built-in table (cifar10)")

    def own_checks(self) -> list[tuple[bool, str]]:
        return [(self.grad_clip > 0, f"--grad-clip must be positive, got {self.grad_clip}")]


# Settings of ista-nas 0.1.0 that 0.2.0 removed or renamed: a run that holds one was made by 0.1.0.
SearchSettings.RETIRED = {"explore": "removed", "weight_warmup_epochs": "removed", "steps": "renamed nodes"}
# --cost-l1 (a cost-weighted l1 in the recovery under a budget) did not help on the tuning seeds and was removed.
SearchSettings.DROPPED = {"cost_l1": (0.0, "47da30c")}
SearchSettings.PRESETS = {
    # The paper's two-stage search on CIFAR-10 (the field defaults).
    "paper": {},
    # Minutes on a 2-core CPU: a small net on 28x28 Fashion-MNIST, a subset and a few epochs. A reduced-scale
    # stand-in for the paper's setting, to try the tool and see a search converge, not to reproduce results.
    # lr 0.05 at batch 64 (above the paper's 0.1 * 64/256): with b starting at 1e-3 the relaxed weights are tiny
    # and a 10-epoch search needs the faster start.
    "quick": dict(dataset="fashion-mnist", subset=6000, epochs=10, batch_size=64, lr=0.05, channels=8, layers=5),
}


@dataclass
class ClipSettings(Settings):
    """Which gradients count in the norm that clips the weight step: a setting of the ISTA-NAS steppers."""

    why: ClassVar[str] = "b's share of the clipped norm; DARTS clips by the weights' norm"

    clip_with_b: bool = setting(False, "ISTA-NAS: b's gradient counts in the norm that clips the weight step, as in "
                                       "the official code (two-stage: the architecture step's plus the training "
                                       "batch's); one-stage presets: on; two-stage: off (measured: "
                                       "docs/one-stage.md)")


@dataclass
class SearchResult:
    genotype: Any
    run_dir: Path
    metrics: list[dict[str, Any]]


class SearchMethod(Job):
    """A search method: a ``Job`` whose result is a genotype. What it reads beyond every search's settings is
    listed beside its code (``settings``: ``fields.Settings`` groups, declared where their code is; a flag no
    chosen plug-in lists is refused), and what it requires of a config (``checks``, ``validate_parts``);
    ``methods.validate`` applies them."""

    settings: ClassVar[tuple[type[Settings], ...]] = ()  # its own settings, beyond every search's
    presets: ClassVar[dict[str, dict[str, Any]]] = {}  # its settings per preset, over the search's and the space's
    # The variant of the space's supernet it searches: sparse (ISTA-NAS, the support only), dense (every candidate
    # runs) or target (the target network itself; the space's target group applies: SearchSpace.target).
    variant: ClassVar[str] = "sparse"

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
        self.budget: Budget | None = None  # the search's budget, once its supernet is built (build_supernet)
        self.missing: set[str] = set()

    def budget_record(self, genotype: Any) -> dict[str, Any]:
        """Under an exact budget: its limit and the held ``genotype``'s cost, for the epoch's record."""
        return {} if self.budget is None else self.budget.record(genotype, SPACES[self.cfg.space])

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
        """The searched cell's diagrams and its table entry beside its genotype.json (the report is the
        command's: ``ista-nas search`` writes it once the search returns)."""
        if run.writes:
            write_diagrams(genotype, run.path, run_owned=True)
        log.info("genotype: %s", genotype.to_dict())
        if self.table is not None and run.writes:
            entry = self.table.get(genotype)
            run.write_json("benchmark.json", {"table": str(self.table.path), "builtin": self.table.builtin,
                                              "metric": self.table.metric, "dense": self.variant == "dense",
                                              **(entry.to_dict() if entry else {"arch": self.table.key(genotype),
                                                                                "value": None})})
            if entry:
                log.info("benchmark %s of the found architecture: %.2f, rank %d of %d (best %.2f, mean %.2f)",
                         self.table.metric, entry.value, entry.rank, entry.size, entry.best, entry.mean)
        return SearchResult(genotype, run.path, run.read_metrics())


def build_supernet(cfg: "SearchConfig", data: Any, variant: str = "sparse"
                   ) -> SparseSupernet | DenseSupernet | TargetSupernet:
    """The supernet of the configured space a method searches, its weights drawn from ``cfg.seed``: ``variant``
    sparse (ISTA-NAS two-stage), dense (every candidate runs: the DARTS baseline) or target (one-stage)."""
    check_activations(cfg.space, cfg.channels, cfg.layers, cfg.batch_size, data, cfg.device, cfg.stem)
    torch.manual_seed(cfg.seed)
    space = SPACES[cfg.space]
    factories = {"sparse": space.supernet, "dense": space.dense_supernet, "target": space.target_supernet}
    net = factories[variant](cfg, data)
    height, width = data.size
    if height != width and space.sized_costs and (getattr(cfg, "max_flops", 0) or getattr(cfg, "max_latency", 0)):
        raise UserError(f"--max-flops and --max-latency count square images; these are {width}x{height}: resize "
                        "them to a square, or give --max-params")
    budget = budget_of(cfg, variant, shape_of(data))
    if budget is not None:  # the architecture it holds stays within the budget, from the random start on
        constrain(net, budget, variant == "dense")
    return net


def shape_of(data: Any) -> tuple[int, int, int]:
    """(classes, channels, side) of the data a supernet is built for (its images' height: ``build_supernet``
    refuses a FLOPs or latency budget on images that are not square where the costs depend on the data)."""
    return len(data.classes), data.channels, data.size[0]


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
    """What every stepper has: its network, the weights' SGD (``w_opt``), the architecture's Adam (``a_opt``, on
    ``b``: ISTA-NAS's b or DARTS's alpha), and which weights were ever used (they keep a zero gradient:
    ``keep_zero_grads``; a resume gives them one again). ``open_epoch`` starts an epoch on its active weights;
    ``step`` runs ``eager_step``, or replays it from a CUDA graph where the run captures (``engine.graphs``:
    captured again every epoch, as the supports move only between epochs)."""

    captured: CapturedStep | None = None

    def __init__(self, net: torch.nn.Module, b: torch.nn.Parameter, cfg: "SearchConfig", ctx: Dist):
        self.net, self.b, self.cfg, self.ctx = net, b, cfg, ctx
        self.w_opt = torch.optim.SGD(net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay)
        self.a_opt = torch.optim.Adam([b], lr=cfg.arch_lr, betas=(0.5, 0.999), weight_decay=cfg.arch_weight_decay,
                                      capturable=self.use_graphs(cfg, ctx))
        self.active: list[torch.nn.Parameter] = []
        self.train_net: torch.nn.Module | None = None  # forward_with_aux, gradients averaged over the ranks

    def open_epoch(self, active: list[torch.nn.Parameter], averaged: list[torch.nn.Parameter]) -> None:
        """An epoch's start: the ``active`` weights train (the others used before keep a zero gradient), the
        network under a DDP wrapper that averages the gradients of ``active + averaged`` (rebuilt, as the
        supports move between epochs), in training mode, its step captured anew."""
        self.active = active
        keep_zero_grads(self.w_opt.param_groups[0]["params"], active)
        self.train_net = None  # drop the previous DDP wrapper (and its gradient hooks) before building the next
        self.train_net = wrap(self.net, active + averaged, self.ctx)
        self.net.train()
        self.recapture()

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
