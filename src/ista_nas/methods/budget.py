"""Budgets on the architecture a search holds: parameters, FLOPs or latency.

In a space whose costs add up per candidate (its ``exact_budgets``: ``SearchSpace.cost_model``, latency fitted
by ``hardware``), a budget is a constraint on the choice itself: after every recovery the supports hold the
architecture within the budget that keeps the most of the recovered |z| (``costs.best_within``, exact), so the
architecture is within budget from the first epoch (the random start is chosen the same way) to the last;
the DARTS baseline derives its genotype from softmax(alpha) the same way. Elsewhere (the DARTS cell) the
parameter budget rejects a recovered architecture over it and keeps the previous supports (replacing the
official code's hard-coded 3.7 MB check).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from ..costs import AdditiveCost, best_within, within
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
                                     f"(exact in --space {EXACT['params']}: the network the space evaluates; "
                                     "elsewhere recoveries over it are rejected: two-stage counts the network the "
                                     "cell is retrained at, --budget-channels x --budget-layers, one-stage its own)",
                                NONNEGATIVE)
    max_flops: float = setting(0.0, "hold no architecture over this many million FLOPs (torch's count: a "
                                    "multiply-add is 2) of the network the space evaluates, one image; 0 = no "
                                    f"budget (--space {EXACT['flops']})", NONNEGATIVE)
    max_latency: float = setting(0.0, "hold no architecture slower than this many ms by --latency's cost model, "
                                      f"0 = no budget (--space {EXACT['latency']})", NONNEGATIVE)
    latency: str = setting("", f"the latency --max-latency counts: DEVICE, a column of a built-in table ({DEVICES}), "
                               "or FILE:COLUMN, a table of whole architectures in ms; one latency per candidate is "
                               "fitted to it")

    def own_checks(self) -> list[tuple[bool, str]]:
        given = [f"--{name.replace('_', '-')}" for name in KINDS if getattr(self, name)]
        return [(len(given) <= 1, f"give one budget, not {' and '.join(given)}"),
                (bool(self.max_latency) == bool(self.latency),
                 "--max-latency MS needs --latency DEVICE or FILE:COLUMN (the latency it counts), and --latency "
                 "is read only with --max-latency")]


@dataclass
class CostPressure(Settings):
    """Pressure toward cheap candidates in the sparse code itself: a setting of the methods that recover z."""

    why: ClassVar[str] = "a weight on the recovery's l1 term; DARTS recovers nothing"

    cost_l1: float = setting(0.0, "gamma: under a budget, each candidate's l1 weight in the recovery is 1 + gamma x "
                                  "its cost over the mean cost of its group's candidates (cheap ops are recovered "
                                  "more readily); 0 = the plain l1", NONNEGATIVE)

    def own_checks(self) -> list[tuple[bool, str]]:
        budgeted = any(getattr(self, name, 0) for name in KINDS)
        return [(not self.cost_l1 or budgeted, "--cost-l1 weighs candidates by a budget's cost: give "
                                               "--max-latency, --max-flops or --max-params with it")]


@dataclass(frozen=True)
class Budget:
    """A budget of a space with additive costs: ``model`` counts an architecture's ``choice``, ``limit`` bounds
    it."""

    kind: str
    limit: float
    model: AdditiveCost

    def cost(self, genotype: Any, space: SearchSpace) -> float:
        return self.model.of(space.choice(genotype))

    def record(self, genotype: Any, space: SearchSpace) -> dict[str, Any]:
        """An epoch's record of the budget: what it counts, its limit and the held architecture's cost."""
        return {"budget": {"kind": self.kind, "unit": self.model.unit, "limit": self.limit,
                           "cost": self.cost(genotype, space), "source": self.model.source}}


def budget_of(cfg: Any, variant: str) -> Budget | None:
    """The exact budget of a search of the supernet ``variant`` (sparse, dense or target): None without one, or
    for a parameter budget the space cannot count per candidate (the DARTS cell's rejects recoveries instead:
    ``rejection_limit``; a dense supernet recovers nothing). A budget no architecture the
    search chooses among meets is refused, naming the cheapest: checked before any data is read."""
    given = [(name, getattr(cfg, name)) for name in KINDS if getattr(cfg, name, 0)]
    if not given:
        return None
    name, limit = given[0]
    space, kind = SPACES[cfg.space], KINDS[name]
    if kind not in space.exact_budgets:
        if kind == "params" and variant != "dense":
            return None
        other = ("two-stage and one-stage reject recoveries over --max-params there" if kind == "params" else
                 "--max-params rejects recoveries over it there (two-stage, one-stage)")
        raise UserError(f"--{name.replace('_', '-')} is offered for --space {EXACT[kind]}, whose costs add up per "
                        "candidate; "
                        f"--method {cfg.method} of --space {cfg.space} has no such budget yet ({other})")
    model = cost_model(cfg.space, kind, cfg.latency)
    cheapest = model.columns(space.cost_columns(variant == "dense")).cheapest()
    if not within(cheapest, limit):
        raise UserError(f"--{name.replace('_', '-')} {limit:g} is below every architecture the search chooses "
                        f"among: the cheapest costs {cheapest:.4g} {model.unit} ({model.source}); raise the budget")
    return Budget(kind, limit, model)


def rejection_limit(cfg: Any) -> float:
    """The parameter budget a recovery is rejected over (the DARTS cell space); 0 where the budget is exact."""
    return 0.0 if "params" in SPACES[cfg.space].exact_budgets else cfg.max_params


def constrain(net: torch.nn.Module, budget: Budget, dense: bool, cfg: Any = None) -> None:
    """Make ``net`` (a supernet of one candidate per group) hold only architectures within ``budget``: its
    supports (sparse: chosen again now from the current z, the random start) or its derived genotype (dense).
    With ``cfg.cost_l1`` the sparse code's recovery weighs each candidate's l1 term by its cost
    (``CostPressure``)."""
    model = budget.model.columns(net.op_ids)  # the supernet's candidates, as indices into the space's ops

    def choose(values: np.ndarray, fixed: dict[int, tuple[int, ...]]) -> list[int]:
        top = [int(fixed[g][0]) if g in fixed else int(np.argsort(-row, kind="stable")[0])
               for g, row in enumerate(values)]
        if within(model.of(top), budget.limit):  # the unconstrained choice fits: taken as it is
            return top
        choice = best_within(values, model, budget.limit, 1, fixed)
        if choice is None:  # unreachable: the previous choice fits and frozen groups keep theirs
            raise RuntimeError("no architecture within the budget keeps the frozen groups' choices")
        return [c[0] for c in choice]

    if dense:
        net.chooser = lambda scores: choose(scores.double().numpy(), {})
        return

    def sparse(z_abs: Tensor, frozen: Tensor, lead: Tensor) -> Tensor:
        values = z_abs[0].double().cpu().numpy()
        fixed = {g: (int(lead[0, g]),) for g in frozen[0].nonzero().flatten().tolist()}
        return torch.tensor(choose(values, fixed), dtype=torch.long).view(1, -1, 1)

    net.arch.chooser = sparse
    if getattr(cfg, "cost_l1", 0):
        costs = torch.tensor(model.costs, dtype=torch.float64)
        mean = costs.mean(-1, keepdim=True)
        weights = 1 + cfg.cost_l1 * torch.where(mean > 0, costs / mean.clamp_min(1e-30), torch.zeros_like(costs))
        net.arch.l1_weights = weights.unsqueeze(0).to(net.arch.A)
    net.arch.select()
    if hasattr(net, "forget_kept"):
        net.forget_kept()


def recover_within_budget(net: torch.nn.Module, space: SearchSpace, max_params: float, channels: int, layers: int,
                          ctx: Dist = Dist()) -> tuple[LassoResult, Tensor, Tensor, float | None]:
    """Recover z; if the genotype's network (``channels`` x ``layers``, counted by its ``space``) has more than
    ``max_params`` million parameters, reject it and keep the previous z and supports. With several processes
    every rank ends with rank 0's outcome (architecture buffers and the recovered z are broadcast), so the
    supports agree.

    Returns (the solver's result, the recovered z before any rejection, the (T, G) mask of supports that
    changed, the rejected size in millions or None).
    """
    previous_z, previous_support = net.arch.z.clone(), net.arch.support.clone()
    result, recovered, changed, rejected = _recover(net, space, max_params, channels, layers, previous_z,
                                                    previous_support)
    if ctx.world > 1:
        ctx.broadcast_buffers_(net.arch)
        ctx.broadcast_(recovered)
        net.arch.cache_support()
        changed = (net.arch.support != previous_support).any(-1)
    return result, recovered, changed, rejected


def _recover(net: torch.nn.Module, space: SearchSpace, max_params: float, channels: int, layers: int,
             previous_z: Tensor, previous_support: Tensor) -> tuple[LassoResult, Tensor, Tensor, float | None]:
    result, changed = net.arch.recover()
    if not result.converged:
        log.warning("recovery did not certify optimality (KKT violation %.2e); supports may be approximate",
                    float(result.kkt_violation.max()))
    recovered = net.arch.z.clone()
    if not max_params:
        return result, recovered, changed, None
    shape = net.shape
    size = space.parameter_count(net.genotype(), channels, layers, shape["num_classes"], shape["in_channels"],
                                 shape.get("stem")) / 1e6
    if size <= max_params:
        return result, recovered, changed, None
    with torch.no_grad():
        net.arch.z.copy_(previous_z)
        net.arch.support.copy_(previous_support)
    net.arch.cache_support()
    log.info("rejected a recovered architecture of %.3fM parameters (budget %.3fM); the supports stay", size,
             max_params)
    return result, recovered, torch.zeros_like(changed), size
