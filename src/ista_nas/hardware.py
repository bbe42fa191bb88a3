"""The costs a budget counts, per candidate of a space: parameters and FLOPs exactly (the space's
``cost_model``), latency fitted from a table of whole architectures (one number per (decision group,
candidate) plus a constant, by least squares over the architectures the ISTA-NAS search chooses among).

A latency table is a benchmark-style table (``benchmark.load_table``): an ``arch`` column and one numeric column
per device, in milliseconds. A space may ship one (its ``builtin_latency``): ``--latency DEVICE`` reads its
column, ``--latency FILE:COLUMN`` a file of your own.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from .benchmark import BUILTIN, load_table
from .costs import AdditiveCost, Fit, fit_additive
from .errors import UserError
from .files import read_json
from .limits import shown
from .spaces import SPACES

log = logging.getLogger(__name__)

KINDS = ("params", "flops", "latency")


def latency_source(space: str, spec: str) -> tuple[Path, str]:
    """(file, column) of ``--latency`` ``spec``: a device of the space's built-in table, or FILE:COLUMN."""
    builtin = SPACES[space].builtin_latency
    devices = builtin[1] if builtin else ()
    if spec in devices:
        return BUILTIN / builtin[0], spec
    if spec.lower().endswith(".json"):
        raise UserError(f"--latency {spec}: a measured table (ista-nas latency) is read whole, not as a column")
    path, sep, column = spec.rpartition(":")
    if not sep or not path or not column:
        known = f"a device of the built-in table ({', '.join(devices)}) or " if devices else ""
        raise UserError(f"--latency {spec!r} names no latency table: give {known}FILE:COLUMN (a CSV with an arch "
                        "column and that column of milliseconds)")
    return Path(path).expanduser(), column


@functools.lru_cache(maxsize=8)
def _fit(space_name: str, path: Path, column: str, stamp: tuple[int, int]) -> Fit:
    space = SPACES[space_name]
    table = load_table(path, metric=column, kind="latency table",
                       flags=("--latency FILE:COLUMN", "an arch column", "--latency FILE:COLUMN"))
    if table.space is not space:
        raise UserError(f"latency table {path} lists architectures of --space {table.space.name}, the search is of "
                        f"--space {space_name}; give a table of its space")
    cells = [(space.choice(g), v) for g, v in ((space.parse(a), v) for a, v in table.values.items())
             if space.searched_by(g, dense=False)]
    if len(cells) < 2:
        raise UserError(f"latency table {path} has {len(cells)} architecture(s) the search chooses among; a fit of "
                        "one latency per (decision, candidate) needs many more")
    choices = np.array([c for c, _ in cells])
    measured = np.array([v for _, v in cells], dtype=float)
    candidates = max(len(row) for row in _exact(space_name, "params").costs)
    fit = fit_additive(choices, measured, candidates, "latency", "ms", f"{path.name}:{column}")
    log.info("latency of %s: %s", column, fit_line(fit))
    return fit


def latency_fit(space: str, spec: str) -> Fit:
    """One latency per (decision group, candidate) plus a constant, fitted to the ``--latency`` table over the
    architectures the ISTA-NAS search chooses among (``searched_by``: in a cell space, those without ``none``,
    whose ops all run); a candidate they never hold (``none``) gets the cheapest cost of its group. Read once per
    file version."""
    path, column = latency_source(space, spec)
    return _fit(space, path, column, _version(path))


def _version(path: Path) -> tuple[int, int]:
    """(modification time, size) of ``path``, the key a reading is cached under; (0, 0) if it cannot be stat'ed
    (then read, and refused, every time: the cache keeps no failures)."""
    try:
        stat = path.stat()
    except OSError:
        return 0, 0
    return stat.st_mtime_ns, stat.st_size


def fit_line(fit: Fit) -> str:
    """How well one latency per candidate predicts the table's architectures, in words."""
    return (f"one latency per candidate fitted to {fit.cells:,} architectures: R^2 {fit.r2:.3f}, Kendall tau "
            f"{fit.tau:.3f}, median relative error {100 * fit.median_relative_error:.1f}%")


def cost_model(space: str, kind: str, latency: str = "", size: Any = None) -> AdditiveCost:
    """The additive model of ``kind`` (params, flops or latency from ``latency``) for ``space`` (of the network
    ``size`` describes, where the space's costs depend on it: ``SearchSpace.cost_size``)."""
    if kind == "latency":
        return latency_model(space, latency, size)[0]
    return _exact(space, kind, size)


def latency_model(space: str, spec: str, size: Any = None) -> tuple[AdditiveCost, str]:
    """The latency model ``--latency`` names, and a line saying how well it predicts whole architectures: a
    table measured by ``ista-nas latency`` (FILE.json; of the network ``size`` describes, where the space's
    costs depend on it), or one fitted to a table of whole architectures."""
    path = Path(spec).expanduser()
    if path.suffix.lower() == ".json":
        return _measured(space, path, _version(path), size)
    if SPACES[space].sized_costs:
        raise UserError(f"--latency {spec}: in --space {space} a latency budget reads a table measured by "
                        f"ista-nas latency --space {space} (FILE.json), for the network the search counts")
    fit = latency_fit(space, spec)
    return fit.model, fit_line(fit)


@functools.lru_cache(maxsize=8)
def _measured(space_name: str, path: Path, stamp: tuple[int, int], size: Any = None) -> tuple[AdditiveCost, str]:
    fix = "give a latency table written by ista-nas latency"
    data = read_json(path, "latency table", fix)
    shape = _exact(space_name, "params", size).costs
    if not isinstance(data, dict) or data.get("space") != space_name or data.get("unit") != "ms":
        raise UserError(f"latency table {path} is no ms table of --space {space_name} (its space and unit: "
                        f"{shown(data.get('space') if isinstance(data, dict) else data)}); {fix}")
    if size is not None and data.get("size") != size._asdict():
        raise UserError(f"latency table {path} was measured on another network ({shown(data.get('size'))}) than "
                        f"the search counts ({size._asdict()}); {_measure_hint(space_name, size)}")
    costs, base = data.get("costs"), data.get("base")
    if not (isinstance(costs, list) and len(costs) == len(shape)
            and all(isinstance(row, list) and len(row) == len(want) for row, want in zip(costs, shape))):
        raise UserError(f"latency table {path}: costs must be {len(shape)} lists of "
                        f"{'/'.join(sorted({str(len(row)) for row in shape}, key=int))} numbers (one per decision "
                        f"group and candidate of --space {space_name}); {fix}")
    numbers = [base, *(v for row in costs for v in row)]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise UserError(f"latency table {path}: base and costs must be finite numbers of ms; {fix}")
    check = data.get("check") if isinstance(data.get("check"), dict) else {}
    tau, error = check.get("kendall_tau"), check.get("median_relative_error")
    line = (f"measured on {shown(data.get('device_name', data.get('device')))}, batch {shown(data.get('batch_size'))}"
            + (f"; against {shown(check.get('cells'))} whole networks timed there: Kendall tau {tau:.3f}, median "
               f"relative error {100 * error:.1f}%" if isinstance(tau, float) and isinstance(error, float) else ""))
    model = AdditiveCost("latency", "ms", float(base), tuple(tuple(float(v) for v in row) for row in costs), path.name)
    return model, line


def _measure_hint(space: str, size: Any) -> str:
    """The ``ista-nas latency`` command that measures a table of the network ``size`` describes, or why none can."""
    from .engine.data import DATASET_SHAPES
    from .networks.cnn import stem_for

    named = [name for name, shape in DATASET_SHAPES.items() if shape == (size.classes, size.in_channels, size.side)]
    if not named or size.stem != stem_for(size.side):
        return (f"ista-nas latency times the networks of {', '.join(DATASET_SHAPES)} (their classes, channels, "
                "image side and stem); give the search one of those, or a budget on --max-params or --max-flops")
    flavour = " --flavour one-stage" if size.flavour == "one-stage" else ""
    return (f"measure one with ista-nas latency --space {space} --channels {size.channels} --layers {size.layers} "
            f"--nodes {size.nodes} --dataset {named[0]}{flavour}")


@functools.lru_cache(maxsize=8)
def _exact(space: str, kind: str, size: Any = None) -> AdditiveCost:
    return SPACES[space].cost_model(kind, size)


def cost_of(space: str, kind: str, genotype: Any, latency: str = "") -> float:
    """``genotype``'s cost under the model of ``kind``."""
    return cost_model(space, kind, latency).of(SPACES[space].choice(genotype))


# --- a latency table measured here (ista-nas latency) ---------------------------------------------------------


def timed(nets: list[Any], x: Any, warmup: int, passes: int, calls: int, device: Any) -> list[list[float]]:
    """Per network, the fastest of ``calls`` calls in each of ``passes`` passes over all of them (ms), after
    ``warmup`` untimed calls each. The passes interleave the networks, so a machine that slows down for a while
    slows them all alike; the fastest call of a pass is the one least disturbed (CUDA: synchronised)."""
    import time

    import torch

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out: list[list[float]] = [[] for _ in nets]
    with torch.inference_mode():
        for net in nets:
            for _ in range(warmup):
                net(x)
        sync()
        for _ in range(passes):
            for i, net in enumerate(nets):
                best = float("inf")
                for _ in range(calls):
                    start = time.perf_counter()
                    net(x)
                    sync()
                    best = min(best, time.perf_counter() - start)
                out[i].append(1e3 * best)
    return out


def measure(space_name: str, device: Any, batch: int, warmup: int, passes: int, calls: int, check: int, seed: int,
            threads: int, size: Any = None) -> dict[str, Any]:
    """A latency table of ``space_name`` (of the network ``size`` describes, where the space's costs depend on
    it) measured on ``device`` with ``threads`` CPU threads: the space's reference architecture and, for every
    kind of candidate whose ops run alike (``SearchSpace.latency_probes``), a probe holding it in ``count``
    places instead of the reference's candidates are timed; its cost is the difference over ``count``, and
    the constant is the reference's time. Each time is the median over ``passes`` of each pass's fastest of
    ``calls`` calls (the spread: the interquartile range over the passes). Then ``check`` architectures drawn
    with ``seed`` are timed whole the same way, and the table's prediction of them is scored (Kendall tau,
    median relative error)."""
    import random
    import statistics

    import torch
    from scipy.stats import kendalltau

    space = SPACES[space_name]
    torch.set_num_threads(threads)
    plan = space.latency_probes(size)
    keys = list(plan.probes)

    def network(choice: Any) -> Any:
        torch.manual_seed(seed)
        return plan.network(choice).to(device).eval()

    channels, side = plan.input
    x = torch.randn(batch, channels, side, side, device=device)
    times = timed([network(plan.reference)] + [network(plan.probes[k][0]) for k in keys], x, warmup, passes,
                  calls, device)
    medians = [statistics.median(t) for t in times]
    quartiles = [statistics.quantiles(t, n=4) for t in times]
    cost = {k: (m - medians[0]) / plan.probes[k][1] for k, m in zip(keys, medians[1:])}
    spread = {k: (q3 - q1) / plan.probes[k][1] for k, (q1, _, q3) in zip(keys, quartiles[1:])}
    costs = [[cost.get(key, 0.0) for key in row] for row in plan.classes]
    spreads = [[spread.get(key, 0.0) for key in row] for row in plan.classes]
    model = AdditiveCost("latency", "ms", medians[0], tuple(map(tuple, costs)), f"measured on {device}")
    rng = random.Random(seed)
    steps = {} if size is None else {"steps": size.nodes}
    archs = [space.sample(rng, **steps) for _ in range(check)]
    log.info("timing %d whole networks, %d passes", check, passes)
    measured = [statistics.median(t) for t in timed([network(space.choice(g)) for g in archs], x, warmup, passes,
                                                     calls, device)]
    predicted = [model.of(space.choice(g)) for g in archs]
    error = statistics.median(abs(p - m) / m for p, m in zip(predicted, measured))
    return {"written_by": "ista-nas latency", "space": space_name, "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name(),
            "torch": torch.__version__, "threads": threads, "batch_size": batch, "warmup": warmup, "passes": passes,
            "calls": calls, **({} if size is None else {"size": size._asdict()}), "unit": "ms",
            "base": medians[0], "costs": costs, "spread": spreads,
            "check": {"cells": check, "seed": seed, "kendall_tau": float(kendalltau(predicted, measured).statistic),
                      "median_relative_error": error, "measured": measured, "predicted": predicted,
                      "archs": [space.short(g) for g in archs]}}


def _cpu_name() -> str:
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
