"""``ista-nas compare``: runs side by side, and groups of seeds of one setting as mean +- std beside the baselines
of the op set they searched (``baselines``: the random draw and the largest cell), read from each run's directory
with ``report.read_run``."""

from __future__ import annotations

import json
import logging
import math
import statistics
from pathlib import Path
from typing import Any

from ..diagram import pyplot, savefig
from ..errors import UserError
from ..files import claim_plot
from .baselines import OpSet, run_op_set, run_size, table_op_set
from .front import budget_baselines
from .plots import drawn, plain
from .report import RunInfo, read_run
from ..spaces import space_of

log = logging.getLogger(__name__)

# Settings that differ between seeds of one search, or do not change what it computes.
SEED_ONLY = ("seed", "device", "tensorboard", "benchmark", "arch_column", "metric")


def expand_runs(paths: list[str | Path]) -> list[Path]:
    """Run directories: each path that is one, and the run directories directly inside each that is not (the
    OUT of ``search --seeds``). A run reached twice (the same folder, a link to it, or a folder of seeds and one
    of its seeds) counts once."""
    found: dict[Path, Path] = {}
    for path in map(Path, paths):
        inner = [] if (path / "config.json").is_file() else sorted(p for p in path.glob("*/") if
                                                                     (p / "config.json").is_file())
        for run in inner or [path]:
            found.setdefault(run.resolve(), run)
    return list(found.values())


def group_runs(infos: list[RunInfo]) -> list[tuple[str, list[RunInfo]]]:
    """Runs of the same command and settings but their seed, in order of appearance, each group labelled by its
    kind and the settings in which the groups differ."""
    groups: dict[str, list[RunInfo]] = {}
    for info in infos:
        key = json.dumps({k: v for k, v in info.config.items() if k not in SEED_ONLY}, sort_keys=True, default=str)
        twin = next((o for o in groups.get(key, []) if o.config.get("seed") == info.config.get("seed")), None)
        if twin is not None:
            raise UserError(f"runs {twin.path} and {info.path} have the same settings and the same seed "
                            f"{info.config.get('seed')}: one sample, not two; compare one of them")
        groups.setdefault(key, []).append(info)
    configs = [json.loads(k) for k in groups]
    varying = sorted({k for c in configs for k in c if any(c.get(k) != d.get(k) for d in configs)} -
                     {"method", "genotype", "arch"})
    labels = []
    for config, members in zip(configs, groups.values()):
        settings = ", ".join(f"{k}={config.get(k)}" for k in varying)
        labels.append(members[0].name + (f" [{settings}]" if settings else ""))
    return list(zip(labels, groups.values()))


def _spread(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation, computed exactly (a hand-edited run's finite 1e308 overflowed fmean's
    running sum); the deviation None where it is past the float range or a value is not finite (a sum of
    seconds), so --json stays JSON."""
    if not values:
        return {"mean": None, "std": None, "values": []}
    std = None
    if len(values) > 1 and all(map(math.isfinite, values)):
        try:
            std = statistics.stdev(values)
        except OverflowError:
            std = None
    return {"mean": float(statistics.mean(values)), "std": std, "values": values}


def benchmark_value(info: RunInfo, table: Any | None) -> float | None:
    """The benchmark value of the run's architecture: looked up in ``table``, else the run's benchmark.json."""
    if table is not None:
        entry = table.get(info.genotype) if info.genotype is not None else None
        return entry.value if entry else None
    return info.bench.get("value") if info.bench else None


def summarize_groups(infos: list[RunInfo], table: Any | None = None) -> list[dict[str, Any]]:
    """Per group of seeds: mean and sample standard deviation of best accuracy, benchmark value, the found cells'
    margin over the largest cell of the searched op set and run time, beside that op set's random draw and
    largest cell."""
    return [row for row, _ in _groups_and_op_sets(infos, table)]


def _op_set(info: RunInfo, table: Any | None) -> OpSet | None:
    """The baselines of the op set the run searched: from ``table`` when given, else from its benchmark.json."""
    bench = info.bench
    if table is None:
        return run_op_set(bench, info.record, info.config)
    dense = bench.get("dense", True) if isinstance(bench, dict) else True  # unknown: every cell of the space
    return table_op_set(table, bool(dense), *run_size(info.record, info.config))


def _budget(members: list[RunInfo]) -> dict[str, Any]:
    """A group under a budget (``front.budget_baselines``, the same for its seeds): the budget and the baselines
    within it, and the found cells' cost and margins to the front and to the largest cell within budget."""
    found = [b for b in (budget_baselines(i.bench, i.record, i.config, i.genotype) for i in members) if b]
    if not found:
        return {}
    first = found[0]
    return {"budget": {**{k: first[k] for k in ("kind", "unit", "source", "limit", "cells", "best", "best_arch",
                                                 "largest", "mean")},
                       "cost": _spread([b["cost"] for b in found]),
                       "margin_front": _spread([b["margin_front"] for b in found]),
                       "margin_largest": _spread([b["margin_largest"] for b in found])}}


def _groups_and_op_sets(infos: list[RunInfo], table: Any | None) -> list[tuple[dict[str, Any], OpSet | None]]:
    """``summarize_groups``'s rows, each with the baselines of its searched op set."""
    rows = []
    unfinished = [i for i in infos if i.finished is False]
    if unfinished:
        log.warning("left out of the mean +- std: %s (stopped early; finish with --resume)",
                    ", ".join(str(i.path) for i in unfinished))
    for label, members in group_runs([i for i in infos if i.finished is not False]):
        best = [info.best_accuracy() for info in members]
        bench = [benchmark_value(info, table) for info in members]
        op_set = _op_set(members[0], table)
        draw = op_set.values if op_set else None
        rows.append(({"group": label, "runs": [str(i.path) for i in members],
                     "seeds": [i.config.get("seed") for i in members],
                     "accuracy_key": best[0][0], "best_accuracy": _spread([b for _, b in best if b is not None]),
                     "benchmark": _spread([b for b in bench if b is not None]),
                     "random_draw": {"mean": statistics.fmean(draw), "std": statistics.stdev(draw),
                                     "cells": len(draw)} if draw and len(draw) > 1 else None,
                     "largest_cell": op_set.largest.to_dict() if op_set else None,
                     "margin": _spread([op_set.largest.margin(b) for b in bench if b is not None] if op_set else []),
                     "seconds": _spread([i.seconds() for i in members]), **_budget(members)}, op_set))
    return rows


def compare(run_dirs: list[str | Path], plot: str | Path | None = None, table: Any | None = None
            ) -> tuple[list[RunInfo], list[dict[str, Any]], Path | None]:
    """Read several runs (a folder of seed runs stands for its runs) and summarise their groups of seeds
    (``summarize_groups``); with ``plot``, draw their best accuracy against their parameters and, per group, the
    spread of the benchmark value (with ``table`` or the runs' benchmark.json) or else of the best accuracy."""
    if plot is not None:
        plot = claim_plot(plot, "--plot")
    infos = [read_run(p) for p in expand_runs(run_dirs)]
    summarized = _groups_and_op_sets(infos, table)
    groups = [row for row, _ in summarized]
    if plot is None:
        return infos, groups, None
    plt = pyplot()
    fig, (ax, spread_ax) = plt.subplots(1, 2, figsize=(12, 4.2))
    for info in infos:  # values past what a plot can hold (a hand-edited 1e308) are drawn at its bound (drawn)
        key, best = info.best_accuracy()
        if best is not None and info.size:
            point = (info.size["params"] / 1e6, *drawn([best], key, info.path / "metrics.jsonl"))
            ax.scatter(*point)
            ax.annotate(plain(info.path.name), point, fontsize=8, xytext=(4, 4), textcoords="offset points")
    ax.set(xlabel="parameters (M)", ylabel="best accuracy (%)", title="accuracy against parameters")
    ax.grid(alpha=0.3)
    use_bench = any(g["benchmark"]["values"] for g in groups)
    ticks = [g["group"] for g in groups]
    if use_bench:  # each distinct searched op set's table distribution (a random draw), left of the groups
        draws: dict[tuple[float, ...], str] = {}
        for _, op_set in summarized:
            if op_set and op_set.values not in draws:
                draws[op_set.values] = f"random draw ({len(op_set.values)} cells)"
                spread_ax.axhline(*drawn([op_set.largest.value], "benchmark", "the benchmark table"), ls="-.",
                                  color="darkorange", lw=1,
                                  label=f"largest cell of {len(op_set.values)} ({op_set.largest.value:.2f})")
        for j, (values, label) in enumerate(draws.items()):
            spread_ax.violinplot([drawn(list(values), "benchmark", "the benchmark table")], positions=[-1 - j],
                                 showmeans=True, widths=0.8)
        ticks = [label for label in reversed(list(draws.values()))] + ticks
        if draws:
            spread_ax.legend(fontsize=7)
    first = -len(ticks) + len(groups)
    for i, g in enumerate(groups):
        values = g["benchmark" if use_bench else "best_accuracy"]["values"]
        if values:  # each run, and the mean +- std of what is drawn
            values = drawn(values, "benchmark" if use_bench else g["accuracy_key"], f"group {g['group']}")
            spread_ax.scatter([i] * len(values), values, s=18, alpha=0.7)
            spread_ax.errorbar(i + 0.15, statistics.fmean(values), yerr=statistics.stdev(values) if len(values) > 1
                               else 0, fmt="o", color="black", capsize=4)
    spread_ax.set_xticks(range(first, len(groups)), [plain(t) for t in ticks], rotation=20, ha="right", fontsize=7)
    spread_ax.set(ylabel="benchmark value of the found architecture" if use_bench else "best accuracy (%)",
                  title="over seeds: each run, and mean +- std")
    spread_ax.grid(alpha=0.3)
    savefig(fig, plot, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return infos, groups, Path(plot)


def format_groups(rows: list[dict[str, Any]]) -> str:
    def cell(spread: dict[str, Any], unit: str = "", scale: float = 1.0) -> str:
        if spread["mean"] is None:
            return "-"
        std = f" +- {spread['std'] / scale:.2f}" if spread["std"] is not None else ""
        return f"{spread['mean'] / scale:.2f}{std}{unit}"

    table = [("group", "seeds", "best accuracy", "benchmark", "random draw", "largest cell", "margin",
              "time (min)")]
    for r in rows:
        largest = r.get("largest_cell")
        table.append((r["group"], ",".join(map(str, r["seeds"])),
                      f"{cell(r['best_accuracy'])} ({r['accuracy_key']})" if r["best_accuracy"]["mean"] is not None
                      else "-", cell(r["benchmark"]), cell(r["random_draw"]) if r.get("random_draw") else "-",
                      f"{largest['value']:.2f}" if largest else "-", _signed(r["margin"]) if largest else "-",
                      cell(r["seconds"], scale=60.0)))
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]
    for r in rows:
        if "budget" in r:
            b = r["budget"]
            lines.append(f"{r['group']}: {b['kind']} budget {b['limit']:g} {b['unit']} ({b['source']}): found cells cost "
                         f"{cell(b['cost'])}; within budget ({b['cells']:,} cells) the front {b['best']:.2f} (margin "
                         f"{_signed(b['margin_front'])}), the largest cell {b['largest']:.2f} (margin "
                         f"{_signed(b['margin_largest'])}), a random draw {b['mean']:.2f}")
    return "\n".join(lines)


def _signed(spread: dict[str, Any]) -> str:
    if spread["mean"] is None:
        return "-"
    return f"{spread['mean']:+.2f}" + (f" +- {spread['std']:.2f}" if spread["std"] is not None else "")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def format_comparison(infos: list[RunInfo]) -> str:
    header = ("run", "kind", "genotype", "params", "best accuracy", "time")
    rows = [header]
    for info in infos:
        key, best = info.best_accuracy()
        genotype = "-" if info.genotype is None else space_of(info.genotype).short(info.genotype)
        rows.append((info.path.name, info.name + (" (unfinished)" if info.finished is False else ""), genotype[:60] + ("..." if len(genotype) > 60 else ""),
                     f"{info.size['params'] / 1e6:.3f}M" if info.size else "-",
                     f"{best:.2f}% ({key})" if best is not None else "-", _duration(info.seconds())))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
