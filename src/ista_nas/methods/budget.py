"""Budgets on the architecture a search holds: parameters, FLOPs or latency.

In a space whose costs add up per candidate (its ``exact_budgets``: ``SearchSpace.cost_model``, latency fitted
or measured by ``hardware``), a budget is a constraint on the choice itself: after every recovery the supports
hold the architecture within the budget that keeps the most of the recovered |z| (``costs.best_within``, exact),
so the architecture is within budget from the first epoch (the random start is chosen the same way) to the last;
the DARTS baseline derives its genotype from softmax(alpha) the same way. A benchmark space counts its
benchmark's network; the DARTS cell the network its cell becomes (``SearchSpace.cost_size``: two-stage and DARTS
the retrained one, one-stage its own).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..costs import AdditiveCost, best_within, within
from ..engine.data import DATASET_SHAPES
from ..engine.distributed import Dist
from ..errors import UserError
from ..fields import NONNEGATIVE, Settings, setting
from ..hardware import cost_model
from ..solver import LassoResult
from ..spaces import SPACES
from ..spaces.base import SearchSpace

log = logging.getLogger(__name__)

KINDS = {"max_params": "params", "max_flops": "flops", "max_latency": "latency"}
EXACT = {kind: ", ".join(name for name, space in SPACES.items() if kind in space.exact_budgets) for kind in KINDS.values()}
DEVICES = ", ".join(f"{device} ({name})" for name, space in SPACES.items() if space.builtin_latency
                    for device in space.builtin_latency[1])


@dataclass
class BudgetSettings(Settings):
    """A budget on the architecture a search holds: a setting of every method (two-stage, one-stage; DARTS at its
    discretisation)."""

    why: ClassVar[str] = "a budget on the architecture the search holds"

    max_params: float = setting(0.0, "hold no architecture over this many million parameters, 0 = no budget "
                                     f"(--space {EXACT['params']}; counted on the network the space evaluates: "
                                     "a benchmark's own, or the DARTS cell's: two-stage and DARTS the network the "
                                     "cell is retrained at, --budget-channels x --budget-layers, one-stage its own)",
                                NONNEGATIVE)
    max_flops: float = setting(0.0, "hold no architecture over this many million FLOPs (torch's count: a "
                                    "multiply-add is 2) of one image, counted as --max-params is; 0 = no "
                                    f"budget (--space {EXACT['flops']})", NONNEGATIVE)
    max_latency: float = setting(0.0, "hold no architecture slower than this many ms by --latency's cost model, "
                                      f"0 = no budget (--space {EXACT['latency']})", NONNEGATIVE)
    latency: str = setting("", f"the latency --max-latency counts: DEVICE, a column of a built-in table ({DEVICES}), "
                               "FILE:COLUMN, a table of whole architectures in ms (one latency per candidate is "
                               "fitted to it), or FILE.json, a table ista-nas latency measured (the only kind the "
                               "DARTS cell reads)")

    def own_checks(self) -> list[tuple[bool, str]]:
        given = [f"--{name.replace('_', '-')}" for name in KINDS if getattr(self, name)]
        return [(len(given) <= 1, f"give one budget, not {' and '.join(given)}"),
                (bool(self.max_latency) == bool(self.latency),
                 "--max-latency MS needs --latency DEVICE, FILE:COLUMN or FILE.json (the latency it counts), and "
                 "--latency is read only with --max-latency")]


@dataclass(frozen=True)
class Budget:
    """A budget of a space with additive costs: ``model`` counts an architecture's ``choice``, ``limit`` bounds
    it."""

    kind: str
    limit: float
    model: AdditiveCost  # over the space's candidates (``SearchSpace.choice``)
    searched: AdditiveCost  # over the supernet's candidates (``SearchSpace.cost_columns``)
    picks: int = 1  # candidates the architecture holds per decision group
    options: list[list[tuple[int, ...]]] | None = None  # the sets it may hold per group; None: any ``picks``

    def cost(self, genotype: Any, space: SearchSpace) -> float:
        return self.model.of(space.choice(genotype))

    def record(self, genotype: Any, space: SearchSpace) -> dict[str, Any]:
        """An epoch's record of the budget: what it counts, its limit and the held architecture's cost."""
        return {"budget": {"kind": self.kind, "unit": self.model.unit, "limit": self.limit,
                           "cost": self.cost(genotype, space), "source": self.model.source}}


def budget_of(cfg: Any, variant: str, shape: tuple[int, int, int] | None = None) -> Budget | None:
    """The budget of a search of the supernet ``variant`` (sparse, dense or target) on data of ``shape``
    (classes, channels, side; by default the named dataset's), or None without one. A budget no architecture the
    search chooses among meets is refused, naming the cheapest: checked before any data is read (for a folder of
    images in a space whose costs depend on the data, once it is read, before anything is built). Also None
    there before the data is read."""
    given = [(name, getattr(cfg, name)) for name in KINDS if getattr(cfg, name, 0)]
    if not given:
        return None
    name, limit = given[0]
    space, kind = SPACES[cfg.space], KINDS[name]
    if kind not in space.exact_budgets:
        raise UserError(f"--{name.replace('_', '-')} is offered for --space {EXACT[kind]}, whose costs add up per "
                        f"candidate; --space {cfg.space} has no such budget yet")
    shape = shape or DATASET_SHAPES.get(getattr(cfg, "dataset", "cifar10"))
    if shape is None and space.sized_costs:
        return None
    size = space.cost_size(cfg, variant, shape) if space.sized_costs else None
    model = cost_model(cfg.space, kind, cfg.latency, size)
    columns = space.cost_columns(variant == "dense")
    searched = model if columns is None else model.columns(columns)
    picks, options = space.budget_picks(cfg, variant == "dense")
    cheapest = searched.cheapest(picks, options)
    if not within(cheapest, limit):
        raise UserError(f"--{name.replace('_', '-')} {limit:g} is below every architecture the search chooses "
                        f"among: the cheapest costs {cheapest:.4g} {model.unit} ({model.source}); raise the budget")
    return Budget(kind, limit, model, searched, picks, options)


def constrain(net: torch.nn.Module, budget: Budget, dense: bool) -> None:
    """Make ``net`` (a supernet whose groups hold ``budget.picks`` candidates each) hold only architectures
    within ``budget``: its supports (sparse: chosen again now from the current z, the random start) or its
    derived genotype (dense). The budget's model counts the supernet's candidates (``Budget.searched``)."""
    model, picks = budget.searched, budget.picks

    def choose(values: np.ndarray, fixed: dict[int, tuple[int, ...]], top: list[tuple[int, ...]]
               ) -> list[tuple[int, ...]]:
        if within(model.of(top), budget.limit):  # the unconstrained choice fits: taken as it is
            return top
        choice = best_within(values, model, budget.limit, picks, fixed, budget.options)
        if choice is None:  # the previous choice fits and frozen groups keep theirs: only a resumed checkpoint
            raise UserError("the frozen decisions of this search already exceed the budget (a checkpoint written "
                            "before budgets were exact?); resume it without the budget, or start it again")
        return choice

    if dense:  # the network derives its genotype by its own rule (``top``) and asks the budget when it is over
        net.chooser = lambda scores, top: choose(scores.double().numpy(), {}, top)
        return

    def sparse(z_abs: Tensor, frozen: Tensor, lead: Tensor, support: Tensor) -> Tensor:
        types, groups = z_abs.shape[:2]
        values = z_abs.flatten(0, 1).double().cpu().numpy()  # (T x G, n): the model's groups, type by type
        held = (lead.unsqueeze(-1) if picks == 1 else support).flatten(0, 1).tolist()
        fixed = {g: tuple(held[g]) for g in frozen.flatten().nonzero().flatten().tolist()}
        top = [fixed[g] if g in fixed else
               tuple(sorted(np.argsort(-values[g][: len(row)], kind="stable")[:picks].tolist()))
               for g, row in enumerate(model.costs)]
        return torch.tensor(choose(values, fixed, top), dtype=torch.long).view(types, groups, picks)

    net.arch.chooser = sparse
    net.arch.select()
    if hasattr(net, "forget_kept"):
        net.forget_kept()


def recover(net: torch.nn.Module, ctx: Dist = Dist()) -> tuple[LassoResult, Tensor]:
    """Recover z and move the supports (within the budget where ``constrain`` set one). With several processes
    every rank ends with rank 0's outcome (architecture buffers are broadcast), so the supports agree.

    Returns (the solver's result, the (T, G) mask of supports that changed)."""
    previous_support = net.arch.support.clone()
    result, changed = net.arch.recover()
    if not result.converged:
        log.warning("recovery did not certify optimality (KKT violation %.2e); supports may be approximate",
                    float(result.kkt_violation.max()))
    if ctx.world > 1:
        ctx.broadcast_buffers_(net.arch)
        net.arch.cache_support()
        changed = (net.arch.support != previous_support).any(-1)
    return result, changed
