"""What a user could pick without a search, beside every search result: computed from the space and the benchmark
table alone (never from a search; no search reads them).

- the random draw: the table values of every cell made of the candidates the search chose among (its op set),
  the exact distribution of a uniform random draw;
- the largest cell: the table value of the cell of that op set with the most parameters at the evaluation size
  (cells tied for the most: the mean of their values), and a found cell's margin over it;
- a cell's parameter rank among the table's cells (1 = the most parameters; ties share their best rank).

Parameters are counted as ``SearchSpace.parameter_counts`` counts them (no auxiliary head), for the run's dataset
when it is one the CLI knows by name, else CIFAR-10's input (the classifier and the stem are the same for every
cell, so the ranking does not depend on it).
"""

from __future__ import annotations

import functools
import logging
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..benchmark import DEFAULT_METRIC, NO_TABLE, Table, builtin_table, load_table
from ..engine.rundir import RunDir
from ..errors import UserError
from ..files import read_json
from ..methods import RunRecord, SearchConfig, evaluation_fields, run_record
from ..spaces import SPACES, get_genotype, space_of
from .summary import DATASET_SHAPES

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Largest:
    """The largest cell(s) of an op set and their table value."""

    value: float  # the mean over the tied cells
    archs: tuple[str, ...]
    params: int
    channels: int
    layers: int

    def margin(self, found: float | None) -> float | None:
        return None if found is None else found - self.value

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "archs": list(self.archs), "cells": len(self.archs), "params": self.params,
                "channels": self.channels, "layers": self.layers}

    def describe(self) -> str:
        cells = self.archs[0] if len(self.archs) == 1 else f"the mean of {len(self.archs)} tied cells"
        return f"{self.value:.2f} ({cells}; {self.params / 1e6:.3f}M parameters at C={self.channels}, " \
               f"L/N={self.layers})"


@dataclass(frozen=True)
class OpSet:
    """The baselines of one op set: its cells' table values (the random draw) and its largest cell."""

    values: tuple[float, ...]
    largest: Largest


def parameter_counts(space: Any, archs: Iterable[str], channels: int, layers: int,
                     shape: tuple[int, int, int] = DATASET_SHAPES["cifar10"]) -> dict[str, int]:
    """The parameter count of each written architecture's network at C x L for inputs of ``shape``."""
    archs = list(archs)
    classes, in_channels, _ = shape
    counts = space.parameter_counts([space.parse(a) for a in archs], channels, layers, classes, in_channels)
    return dict(zip(archs, counts))


def largest_cell(space: Any, values: dict[str, float], dense: bool, channels: int, layers: int,
                 shape: tuple[int, int, int] = DATASET_SHAPES["cifar10"]) -> Largest | None:
    """The largest cell of the table's cells a search of kind ``dense`` chooses among; None if there are none."""
    searched = [a for a in values if space.searched_by(space.parse(a), dense)]
    if not searched:
        return None
    counts = parameter_counts(space, searched, channels, layers, shape)
    most = max(counts.values())
    tied = tuple(sorted(a for a in searched if counts[a] == most))
    return Largest(statistics.fmean(values[a] for a in tied), tied, most, channels, layers)


def parameter_rank(space: Any, genotype: Any, archs: Iterable[str], channels: int, layers: int,
                   shape: tuple[int, int, int] = DATASET_SHAPES["cifar10"]) -> tuple[int, int]:
    """(rank, of): where ``genotype``'s parameter count stands among ``archs`` (and itself), 1 = the most."""
    counts = parameter_counts(space, set(archs) | {space.short(genotype)}, channels, layers, shape)
    mine = counts[space.short(genotype)]
    return 1 + sum(c > mine for c in counts.values()), len(counts)


def bench_record(data: Any, path: Any) -> dict[str, Any] | None:
    """A run's benchmark.json as the search writes it (a table, its metric and the found cell's entry), or None
    with a warning naming ``path`` (a hand-edited or damaged one)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300

    ok = isinstance(data, dict) and isinstance(data.get("metric"), str) and isinstance(data.get("table"), str) and \
        (data.get("value") is None or all(number(data.get(k)) for k in ("value", "rank", "of", "best", "mean")))
    if data is not None and not ok:
        log.warning("ignoring %s: not a benchmark record as ista-nas writes it", path)
    return data if ok else None


def run_size(record: RunRecord, config: dict[str, Any]) -> tuple[int, int, tuple[int, int, int]]:
    """(C, L, input shape) a search run's genotype is evaluated at (report and compare count parameters there),
    from its record (``methods.run_record``) and config."""
    channels, layers = SPACES[record.space].evaluation_size(config, True, evaluation_fields(record))
    return channels, layers, DATASET_SHAPES.get(config.get("dataset"), DATASET_SHAPES["cifar10"])


@functools.lru_cache(maxsize=8)
def _op_set(space_name: str, builtin: bool, table: str, arch_column: str, metric: str, dense: bool,
            size: tuple[int, int, tuple[int, int, int]]) -> OpSet | None:
    space = SPACES[space_name]
    read = builtin_table(space, metric) if builtin else load_table(table, arch_column, metric)
    return table_op_set(read, dense, *size)


def table_op_set(table: Table, dense: bool, channels: int, layers: int,
                 shape: tuple[int, int, int] = DATASET_SHAPES["cifar10"]) -> OpSet | None:
    """The baselines of ``table``'s cells that a search of kind ``dense`` chooses among; None if there are none."""
    largest = largest_cell(table.space, table.values, dense, channels, layers, shape)
    if largest is None:
        return None
    space = table.space
    return OpSet(tuple(v for a, v in table.values.items() if space.searched_by(space.parse(a), dense)), largest)


def run_op_set(bench: dict[str, Any] | None, record: RunRecord, config: dict[str, Any]) -> OpSet | None:
    """The baselines of the op set a search run chose among, from its benchmark.json (the table it recorded with,
    and the method's ``dense``), its record and its config. None without a benchmark.json, or when its table
    cannot be read."""
    if not isinstance(bench, dict) or "metric" not in bench:
        return None
    try:
        return _op_set(record.space, bool(bench.get("builtin")), str(bench.get("table")),
                       config.get("arch_column", SearchConfig.arch_column), bench["metric"],
                       bool(bench.get("dense", True)), run_size(record, config))
    except UserError as exc:
        log.warning("cannot read the benchmark table again (%s); the baselines are left out", exc)
        return None


def cell_baselines(table: Table, genotype: Any, run: tuple[RunRecord, dict[str, Any]] | None = None,
                   bench: dict[str, Any] | None = None) -> dict[str, Any]:
    """What ``lookup`` adds to a cell's table entry: its parameter rank among the table's cells, and the largest
    cell of the op set beside it with the cell's margin. A run's cell (``run``: its record and config): at the
    run's evaluation size,
    in the op set its method chose among (``bench``, its benchmark.json); a written cell: at the space's default
    size, in the op set of the sparse search if the cell belongs to it, else among all the table's cells."""
    space = table.space
    channels, layers, shape = run_size(*run) if run else (*space.default_size, DATASET_SHAPES["cifar10"])
    dense = bool(bench.get("dense", True)) if isinstance(bench, dict) and "metric" in bench else \
        not space.searched_by(genotype, False)
    op_set = table_op_set(table, dense, channels, layers, shape)
    rank, of = parameter_rank(space, genotype, table.values, channels, layers, shape)
    entry = table.get(genotype)
    return {"parameter_rank": rank, "parameter_rank_of": of, "channels": channels, "layers": layers,
            "op_set_cells": len(op_set.values) if op_set else 0,
            "largest_cell": op_set.largest.to_dict() if op_set else None,
            "margin": op_set.largest.margin(entry.value if entry else None) if op_set else None}


def lookup(arch: str, benchmark: str | None, arch_column: str, metric: str | None) -> dict[str, Any]:
    """``ista-nas lookup``: the table entry of ``arch`` (a run directory, a genotype.json, a built-in name or a
    written cell) in ``benchmark`` (default: the built-in table of the cell's space), with ``cell_baselines``."""
    if benchmark == NO_TABLE:
        raise UserError("lookup needs a table: leave out --benchmark for the built-in table of the architecture's "
                        "space, or give --benchmark FILE")
    genotype = get_genotype(arch)
    table = (load_table(benchmark, arch_column, metric or DEFAULT_METRIC) if benchmark else
             builtin_table(space_of(genotype), metric))
    entry = table.lookup(genotype)
    run = Path(arch) if (Path(arch) / "config.json").is_file() else None
    bench = None
    if run and (run / "benchmark.json").is_file():
        try:
            bench = bench_record(read_json(run / "benchmark.json", "run file", "the run is damaged"),
                                 run / "benchmark.json")
        except UserError as exc:
            log.warning("ignoring %s: %s", run / "benchmark.json", exc)
    return {"metric": table.metric, **entry.to_dict(),
            **cell_baselines(table, genotype, _record_and_config(run) if run else None, bench)}


def _record_and_config(run: Path) -> tuple[RunRecord, dict[str, Any]]:
    config = RunDir.open(run)[1]
    return run_record(config, f"{run}/config.json"), config


def format_lookup(found: dict[str, Any]) -> str:
    better = 100.0 * (found["rank"] - 1) / found["of"]
    return (f"{found['arch']}  {found['metric']} {found['value']:.2f}: rank {found['rank']} of {found['of']} "
            f"({better:.1f}% of the table better); table best {found['best']:.2f}, mean {found['mean']:.2f}\n"
            + format_cell_baselines(found))


def format_cell_baselines(found: dict[str, Any]) -> str:
    largest = found["largest_cell"]
    line = (f"parameter rank {found['parameter_rank']} of {found['parameter_rank_of']} cells (1 = the most parameters, "
            f"at C={found['channels']}, L/N={found['layers']})")
    if largest:
        tied = largest["archs"][0] if largest["cells"] == 1 else f"the mean of {largest['cells']} tied cells"
        line += (f"; the largest cell of the {found['op_set_cells']} of its op set: {largest['value']:.2f} ({tied})"
                 + (f", margin {found['margin']:+.2f}" if found["margin"] is not None else ""))
    return line


def space_parameter_rank(genotype: Any, channels: int, layers: int, dataset: str = "cifar10"
                         ) -> dict[str, int] | None:
    """``show``'s parameter rank of a cell among every cell of its space's built-in table (its whole space), at
    C x L; None for a space without one."""
    space = space_of(genotype)
    if space.builtin_table is None:
        return None
    shape = DATASET_SHAPES.get(dataset, DATASET_SHAPES["cifar10"])
    rank, of = parameter_rank(space, genotype, builtin_table(space).values, channels, layers, shape)
    return {"rank": rank, "of": of}
