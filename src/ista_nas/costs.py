"""Additive cost models and the exact choice of an architecture within a budget (a leaf: numpy only).

An architecture of a space is one choice per decision group (an edge of a cell: one op; a node: two (input, op)
candidates). Its cost under an additive model is

    cost = base + sum over groups g of sum over the candidates k chosen in g of costs[g][k],

exact for parameters and FLOPs (every op is its own module, whatever the others are) and a fit for latency
(``fit_additive``: one number per (group, candidate) plus a constant, by least squares). ``best_within``
chooses, among the architectures within a budget, the one that keeps the most of a per-candidate value (the
recovered |z| of a sparse search, the softmax weights of DARTS): a multiple-choice knapsack, solved exactly by
dynamic programming over the groups on the Pareto front of (cost, value).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Budgets are compared with this relative slack so that a sum taken in another order cannot make a cost that
# equals its budget read as over it; the choice itself is checked against the budget with ``AdditiveCost.of``.
SLACK = 1e-9


@dataclass(frozen=True)
class AdditiveCost:
    """``base`` plus one cost per (group, candidate): ``costs[g][k]``. ``name`` says what is counted (params,
    flops, latency), ``unit`` in what (M, MFLOPs, ms) and ``source`` where the numbers came from."""

    name: str
    unit: str
    base: float
    costs: tuple[tuple[float, ...], ...]
    source: str = ""

    def of(self, choice: Sequence[int | Sequence[int]]) -> float:
        """The cost of one candidate (or several) chosen per group, rounded to 9 decimals (so that architectures
        of the same cost summed in another order compare equal)."""
        total = self.base
        for g, picked in enumerate(choice):
            for k in ([picked] if isinstance(picked, (int, np.integer)) else picked):
                total += self.costs[g][k]
        return round(float(total), 9)

    def columns(self, candidates: Sequence[int]) -> "AdditiveCost":
        """The same model over the ``candidates`` (indices into each group) only, in that order: a supernet
        that chooses among some of a space's ops."""
        return AdditiveCost(self.name, self.unit, self.base, tuple(tuple(row[k] for k in candidates)
                                                                    for row in self.costs), self.source)

    def cheapest(self, picks: int = 1, options: Sequence[Sequence[tuple[int, ...]]] | None = None) -> float:
        """The least cost of any architecture choosing ``picks`` distinct candidates per group (or one of each
        group's ``options``)."""
        if options is None:
            return float(self.base + sum(sum(sorted(row)[:picks]) for row in self.costs))
        return float(self.base + sum(min(sum(row[k] for k in o) for o in group)
                                     for row, group in zip(self.costs, options)))

    def most(self, picks: int = 1) -> float:
        return float(self.base + sum(sum(sorted(row)[-picks:]) for row in self.costs))


def within(cost: float, limit: float) -> bool:
    return cost <= limit + SLACK * abs(limit)


def best_within(values: Sequence[Sequence[float]], model: AdditiveCost, limit: float, picks: int = 1,
                fixed: Mapping[int, Sequence[int]] | None = None,
                options: Sequence[Sequence[tuple[int, ...]]] | None = None) -> list[tuple[int, ...]] | None:
    """Per group the ``picks`` distinct candidates (ascending; or one of the group's ``options``, each
    ascending) that maximise the sum of ``values`` of every chosen candidate subject to ``model``'s cost being
    within ``limit``; groups in ``fixed`` keep the candidates given. None if nothing fits. Exact: dynamic
    programming over the groups keeping, for every reachable cost, only the choices no other beats in both cost
    and value (the Pareto front). Among choices of equal value the
    cheaper wins; among equal value and cost the earlier in the enumeration."""
    fixed = fixed or {}
    front_cost = np.array([model.base])
    front_value = np.array([0.0])
    history: list[tuple[list[tuple[int, ...]], np.ndarray, np.ndarray]] = []
    for g, row in enumerate(model.costs):
        held = ([tuple(sorted(fixed[g]))] if g in fixed else list(options[g]) if options is not None
                else list(itertools.combinations(range(len(row)), picks)))
        o_cost = np.array([sum(row[k] for k in o) for o in held])
        o_value = np.array([sum(values[g][k] for k in o) for o in held])
        cost = (front_cost[:, None] + o_cost[None, :]).ravel()
        value = (front_value[:, None] + o_value[None, :]).ravel()
        keep = cost <= limit + SLACK * abs(limit)
        index = np.flatnonzero(keep)
        if not len(index):
            return None
        # Pareto front: sort by cost (then by value, descending), keep each entry whose value beats every cheaper one.
        order = index[np.lexsort((-value[index], cost[index]))]
        best_before = np.maximum.accumulate(np.concatenate([[-np.inf], value[order][:-1]]))
        order = order[value[order] > best_before]
        parent, option = np.divmod(order, len(held))
        history.append((held, parent, option))
        front_cost, front_value = cost[order], value[order]
    # The best value on the front (the front's values increase with cost: the last entry).
    at = len(front_value) - 1
    choice: list[tuple[int, ...]] = []
    for held, parent, option in reversed(history):
        choice.append(held[option[at]])
        at = parent[at]
    return choice[::-1]


@dataclass(frozen=True)
class Fit:
    """An additive model fitted to whole-architecture costs, with how well it predicts them."""

    model: AdditiveCost
    r2: float
    tau: float  # Kendall tau between fitted and measured
    median_relative_error: float  # median |fitted - measured| / measured
    cells: int


def fit_additive(choices: np.ndarray, measured: np.ndarray, candidates: int, name: str, unit: str,
                 source: str) -> Fit:
    """Least squares fit of ``base + sum_g costs[g][choices[:, g]]`` to ``measured`` ((cells,) costs of the
    architectures whose one candidate per group ``choices`` (cells, groups) gives). Candidates never chosen
    get cost 0. The fit is shifted so that each group's cheapest fitted candidate costs 0 (the predictions do
    not change): ``base`` is the fitted cost of the cheapest architecture."""
    from scipy.stats import kendalltau

    cells, groups = choices.shape
    design = np.zeros((cells, 1 + groups * candidates))
    design[:, 0] = 1.0
    for g in range(groups):
        design[np.arange(cells), 1 + g * candidates + choices[:, g]] = 1.0
    coef, *_ = np.linalg.lstsq(design, measured, rcond=None)
    costs = coef[1:].reshape(groups, candidates)
    seen = np.zeros_like(costs, dtype=bool)
    for g in range(groups):
        seen[g, np.unique(choices[:, g])] = True
    costs = np.where(seen, costs, np.nan)
    low = np.nanmin(costs, axis=1)
    costs = np.nan_to_num(costs - low[:, None], nan=0.0)
    base = float(coef[0] + low.sum())
    fitted = design @ coef
    residual = float(((measured - fitted) ** 2).sum())
    total = float(((measured - measured.mean()) ** 2).sum())
    tau = float(kendalltau(fitted, measured).statistic)
    error = float(np.median(np.abs(fitted - measured) / np.maximum(np.abs(measured), 1e-12)))
    model = AdditiveCost(name, unit, base, tuple(tuple(map(float, row)) for row in costs), source)
    return Fit(model, 1.0 - residual / total if total > 0 else 1.0, tau, error, cells)
