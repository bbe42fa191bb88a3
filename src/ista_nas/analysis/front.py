"""What a user could pick without a search under a budget, and the best they could have picked: every cell of
an op set with its cost (``hardware``'s models) beside its table value.

- the front: the best table value among the cells within each budget (accuracy against cost, the true Pareto
  front of the table);
- the largest cell within budget (by parameters at the benchmark's size; tied counts averaged), the random draw
  within budget (the mean over those cells) and the training-free picks (``pick``: the cell a score ranks first
  among those within budget: exact over every cell for params and flops, over a uniform sample of them for the
  scores that need a network run);
- a run's margin to the front at its budget, and the hypervolume of a budget sweep's found cells as a fraction
  of the front's.
"""

from __future__ import annotations

import functools
import itertools
import logging
import random
import statistics
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import hardware
from ..benchmark import Table, builtin_table, load_table
from ..costs import within
from ..errors import UserError
from ..fields import fits
from ..methods.budget import KINDS, Budget, BudgetSettings, budget_of
from ..spaces import SPACES, space_of
from .baselines import largest_cell

log = logging.getLogger(__name__)

PICKS = ("params", "flops", "synflow", "naswot")


@dataclass(frozen=True)
class Cells:
    """Every cell of an op set (the ISTA-NAS search's, or with ``dense`` the DARTS baseline's) with its cost."""

    space: str
    kind: str
    unit: str
    source: str
    archs: list[Any]
    costs: np.ndarray

    def within(self, limit: float) -> np.ndarray:
        return np.array([within(c, limit) for c in self.costs])


@functools.lru_cache(maxsize=8)
def cells(space_name: str, kind: str, latency: str = "", dense: bool = False) -> Cells:
    """Every cell of the op set with its cost by ``hardware.cost_model`` (a space of one candidate per group)."""
    space = SPACES[space_name]
    model = hardware.cost_model(space_name, kind, latency)
    choices = list(itertools.product(space.cost_columns(dense), repeat=len(model.costs)))
    archs = [space.from_choice(c) for c in choices]
    return Cells(space_name, kind, model.unit, model.source, archs, np.array([model.of(c) for c in choices]))


@dataclass(frozen=True)
class Within:
    """The baselines within one budget: the front's value (the best cell), the largest cell's (parameters, ties
    averaged), the random draw's mean and the number of cells."""

    limit: float
    cells: int
    best: float
    best_arch: str
    largest: float
    largest_arch: str
    mean: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def within_budget(found: Cells, table: Table, limit: float) -> Within:
    """The table's baselines among ``found``'s cells within ``limit``."""
    space = SPACES[found.space]
    keep = [(a, c) for a, c, ok in zip(found.archs, found.costs, found.within(limit)) if ok]
    if not keep:
        raise UserError(f"no cell costs at most {limit:g} {found.unit}; the cheapest costs {found.costs.min():.4g}")
    values = {space.short(a): table.values[space.short(a)] for a, _ in keep}
    best = max(values, key=values.get)
    largest = largest_cell(space, values, True, *space.default_size)
    return Within(limit, len(keep), values[best], best, largest.value, largest.archs[0],
                  statistics.fmean(values.values()))


def front(found: Cells, table: Table) -> list[tuple[float, float, str]]:
    """The Pareto front of (cost, table value): ascending cost, each point better than every cheaper cell."""
    space = SPACES[found.space]
    points = sorted(((c, table.values[space.short(a)], space.short(a)) for a, c in zip(found.archs, found.costs)),
                    key=lambda p: (p[0], -p[1]))
    out: list[tuple[float, float, str]] = []
    for point in points:
        if not out or point[1] > out[-1][1]:
            out.append(point)
    return out


def front_value(points: list[tuple[float, float, str]], limit: float) -> float | None:
    """The front's value at ``limit``: the best cell costing at most it (None: none does)."""
    fits = [v for c, v, _ in points if within(c, limit)]
    return max(fits) if fits else None


def hypervolume(points: list[tuple[float, float]], reference: tuple[float, float]) -> float:
    """The area dominated by ``points`` (cost to minimise, value to maximise) up to ``reference`` (the
    largest cost, the lowest value)."""
    area, best = 0.0, reference[1]
    ordered = sorted(p for p in points if p[0] <= reference[0] and p[1] > reference[1])
    edges = [c for c, _ in ordered] + [reference[0]]
    for (cost, value), nxt in zip(ordered, edges[1:]):
        best = max(best, value)
        area += (nxt - cost) * (best - reference[1])
    return area


def budget_from(space: str, dense: bool, **given: Any) -> Budget:
    """The one budget of ``given`` (max_params, max_flops, max_latency with latency), checked as a search checks
    it (a budget nothing meets is refused, naming the cheapest)."""
    settings = BudgetSettings(**given)
    for ok, message in settings.own_checks():
        if not ok:
            raise UserError(message)
    budget = budget_of(SimpleNamespace(space=space, **given), "dense" if dense else "sparse")
    if budget is None:
        raise UserError("give a budget: --max-latency MS with --latency DEVICE, FILE:COLUMN or FILE.json, "
                        "--max-flops M or --max-params M")
    return budget


def pick(space_name: str, kind: str, latency: str, limit: float, by: str, sample: int = 100, seed: int = 0,
         dense: bool = False, batch: tuple[Any, Any] | None = None, classes: int = 10) -> dict[str, Any]:
    """The cell ``by`` ranks first among those within ``limit`` (the largest score; params and flops over every
    cell, synflow and naswot over ``sample`` cells drawn uniformly with ``seed`` among them, scored on the
    space's evaluation network from ``batch``), with its cost and the seconds it took."""
    start = time.perf_counter()
    found = cells(space_name, kind, latency, dense)
    fits = [a for a, ok in zip(found.archs, found.within(limit)) if ok]
    if not fits:
        raise UserError(f"no cell costs at most {limit:g} {found.unit} ({found.source}); the cheapest costs "
                        f"{found.costs.min():.4g}: raise the budget")
    space = SPACES[space_name]
    scored = len(fits)
    if by in ("params", "flops"):
        model = hardware.cost_model(space_name, by)
        score = [model.of(space.choice(a)) for a in fits]
    else:
        from .proxies import score_cell

        if len(fits) > sample:
            fits = random.Random(seed).sample(fits, sample)
        score = [score_cell(a, *space.default_size, batch, classes, seed, (by,))[by] for a in fits]
    best = int(np.argmax(score))
    arch = fits[best]
    return {"arch": space.short(arch), "by": by, "score": score[best], "cost": hardware.cost_of(space_name, kind,
                                                                                                   arch, latency),
            "unit": found.unit, "limit": limit, "source": found.source, "within": scored, "scored": len(fits),
            "seconds": time.perf_counter() - start, **fit_of(kind, space_name, latency)}


def fit_of(kind: str, space: str, latency: str) -> dict[str, Any]:
    """How well the latency model predicts whole architectures, for a result."""
    return {"latency_model": hardware.latency_model(space, latency)[1]} if kind == "latency" else {}


def format_pick(result: dict[str, Any]) -> str:
    among = (f"all {result['within']:,} cells within budget" if result["scored"] == result["within"] else
             f"{result['scored']} of the {result['within']:,} cells within budget, drawn at random")
    fit = f"\nlatency: {result['latency_model']}" if "latency_model" in result else ""
    return (f"{result['arch']}\n{result['by']} ranks it first among {among}; cost {result['cost']:.4g} "
            f"{result['unit']} (budget {result['limit']:g}, {result['source']}); {result['seconds']:.1f} s{fit}")


def budget_baselines(bench: dict[str, Any] | None, record: Any, config: dict[str, Any], genotype: Any
                     ) -> dict[str, Any] | None:
    """Where a search run held a budget on costs its space counts per candidate: the budget, the found cell's
    cost and value, and the baselines within that budget by the same cost model (the front, the largest cell,
    the random draw) with the margins, from the table it recorded with (benchmark.json). None otherwise, or
    (with a warning) when the table or the latency model cannot be read again."""
    if not isinstance(bench, dict) or bench.get("value") is None or genotype is None or record.space not in SPACES:
        return None
    given = [(KINDS[name], config.get(name)) for name in KINDS if fits(config.get(name), float) and config.get(name)]
    if len(given) != 1 or given[0][0] not in SPACES[record.space].exact_budgets:
        return None
    kind, limit = given[0]
    latency = str(config.get("latency") or "")
    try:
        table = (builtin_table(SPACES[record.space], bench["metric"]) if bench.get("builtin") else
                 load_table(str(bench.get("table")), config.get("arch_column", "arch"), bench["metric"]))
        found = cells(record.space, kind, latency, bool(bench.get("dense")))
        base = within_budget(found, table, float(limit))
        cost = hardware.cost_of(record.space, kind, genotype, latency)
    except UserError as exc:
        log.warning("cannot count the run's budget again (%s); the baselines within it are left out", exc)
        return None
    value = float(bench["value"])
    return {"kind": kind, "unit": found.unit, "source": found.source, "limit": float(limit), "cost": cost,
            "value": value, **base.to_dict(), "margin_front": value - base.best, "margin_largest": value - base.largest}


def budget_line(b: dict[str, Any]) -> str:
    return (f"{b['kind']} budget {b['limit']:g} {b['unit']} ({b['source']}): the found cell costs {b['cost']:.4g}; "
            f"within budget ({b['cells']:,} cells) the front {b['best']:.2f} (margin {b['margin_front']:+.2f}), "
            f"the largest cell {b['largest']:.2f} (margin {b['margin_largest']:+.2f}), a random draw {b['mean']:.2f}")


def run_budget(config: dict[str, Any], kind: str, latency: str) -> float | None:
    """The budget a run's ``config`` set on ``kind`` (latency: counted from the same ``latency`` table), or None."""
    limit = config.get({v: k for k, v in KINDS.items()}[kind]) or None
    if limit is not None and kind == "latency" and config.get("latency") != latency:
        return None
    return limit


def pareto(runs: list[Any], space_name: str, kind: str, latency: str, metric: str | None, dense: bool,
           plot: Any = None) -> dict[str, Any]:
    """The table's front of ``metric`` against ``kind``'s cost over the op set, and each run's found cell beside
    it: its cost, its budget (where it set one on ``kind``), the front's value there and the margin, the largest
    cell and the random draw within that budget; with two or more runs, their hypervolume as a fraction of the
    front's (reference: the op set's largest cost and lowest value). ``runs`` are ``report.read_run`` results;
    ``plot``: a path to draw to."""
    table = builtin_table(SPACES[space_name], metric or None)
    found = cells(space_name, kind, latency, dense)
    points = front(found, table)
    rows = []
    for run in runs:
        if run.genotype is None or space_of(run.genotype).name != space_name:
            raise UserError(f"{run.path} holds no finished search of --space {space_name}; give runs of that space")
        key = SPACES[space_name].short(run.genotype)
        cost = hardware.cost_of(space_name, kind, run.genotype, latency)
        limit = run_budget(run.config, kind, latency)
        row = {"run": str(run.path), "arch": key, "value": table.values.get(key), "cost": cost, "budget": limit}
        if limit is not None:
            base = within_budget(found, table, limit)
            row.update(front=base.best, margin=None if row["value"] is None else row["value"] - base.best,
                       largest=base.largest, random=base.mean, cells=base.cells)
        rows.append(row)
    reference = (float(found.costs.max()), min(table.values[SPACES[space_name].short(a)] for a in found.archs))
    out = {"space": space_name, "kind": kind, "unit": found.unit, "source": found.source, "metric": table.metric,
           "front": [{"cost": c, "value": v, "arch": a} for c, v, a in points], "runs": rows,
           **fit_of(kind, space_name, latency)}
    if len(rows) >= 2:
        mine = hypervolume([(r["cost"], r["value"]) for r in rows if r["value"] is not None], reference)
        out["hypervolume_fraction"] = mine / hypervolume([(c, v) for c, v, _ in points], reference)
    if plot is not None:
        draw_front(found, table, points, rows, plot)
    return out


def draw_front(found: Cells, table: Table, points: list[tuple[float, float, str]], rows: list[dict[str, Any]],
               path: Any) -> None:
    """Every cell (grey), the front (a step line), each run's found cell (red) and the largest cell within its
    budget (blue), the budgets as dashed lines."""
    from ..diagram import pyplot, savefig

    plt = pyplot()
    space = SPACES[found.space]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(found.costs, [table.values[space.short(a)] for a in found.archs], s=3, c="#bbbbbb", label="cells")
    ax.step([c for c, _, _ in points], [v for _, v, _ in points], where="post", c="black", label="front")
    for i, row in enumerate(rows):
        if row["budget"] is not None:
            ax.axvline(row["budget"], ls="--", c="#888888", lw=0.8)
            ax.scatter([row["budget"]], [row["largest"]], marker="s", c="tab:blue",
                       label="largest cell within budget" if i == 0 else None)
        if row["value"] is not None:
            ax.scatter([row["cost"]], [row["value"]], marker="x", c="tab:red", s=50, label="found" if i == 0 else None)
    low = min(v for _, v, _ in points[len(points) // 4:]) - 3 if len(points) > 3 else None
    ax.set_ylim(bottom=low)
    ax.set_xlabel(f"{found.kind} ({found.unit}; {found.source})")
    ax.set_ylabel(f"{table.metric} (table)")
    ax.legend(loc="lower right", fontsize=8)
    savefig(fig, path, dpi=120, bbox_inches="tight")


def format_pareto(result: dict[str, Any]) -> str:
    unit = result["unit"]
    lines = [f"front of {result['metric']} against {result['kind']} ({unit}; {result['source']}): "
             f"{len(result['front'])} points, best {result['front'][-1]['value']:.2f} at "
             f"{result['front'][-1]['cost']:.4g}"] + ([f"latency: {result['latency_model']}"] if "latency_model" in result else [])
    for row in result["runs"]:
        value = "not in the table" if row["value"] is None else f"{row['value']:.2f}"
        line = f"{row['run']}: {row['arch']} {value}, cost {row['cost']:.4g}"
        if row["budget"] is not None:
            margin = "" if row["margin"] is None else f", margin {row['margin']:+.2f}"
            line += (f" (budget {row['budget']:g}); front there {row['front']:.2f}{margin}; largest cell within "
                     f"budget {row['largest']:.2f}, random draw {row['random']:.2f} ({row['cells']:,} cells)")
        lines.append(line)
    if "hypervolume_fraction" in result:
        lines.append(f"hypervolume of the found cells: {100 * result['hypervolume_fraction']:.1f}% of the front's")
    return "\n".join(lines)
