"""The baselines of NAS-Bench-201 under latency budgets (issue 45's table): for each device column of the built-in
latency table and each budget (the 25th, 50th and 75th percentile of the measured latency of the 4,096 cells
without none), the front (the best CIFAR-10 table value within budget), the largest cell within budget (by
parameters, ties averaged) and the random draw within budget (mean), counted both by the measured latency and by
the additive model a search uses (one latency per (edge, op), fitted: ``ista_nas.hardware``), and the params and
flops picks under the model. Reads only tables; no search.

    python bench/budget_baselines.py [--devices pixel3 raspi4 fpga titan_rtx_1] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics

import numpy as np

from ista_nas import hardware
from ista_nas.analysis.baselines import largest_cell
from ista_nas.analysis.front import cells, pick
from ista_nas.benchmark import builtin_table, load_table
from ista_nas.spaces import SPACES


def baselines(values: dict[str, float], cost: dict[str, float], limit: float) -> dict[str, float]:
    space = SPACES["nb201"]
    fits = {a: v for a, v in values.items() if cost[a] <= limit * (1 + 1e-9)}
    largest = largest_cell(space, fits, True, *space.default_size)
    return {"cells": len(fits), "front": max(fits.values()), "largest": largest.value,
            "random": statistics.fmean(fits.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--devices", nargs="+", default=list(SPACES["nb201"].builtin_latency[1]))
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    space = SPACES["nb201"]
    table = builtin_table(space)
    rows = []
    for device in args.devices:
        path, column = hardware.latency_source("nb201", device)
        measured_table = load_table(path, metric=column)
        found = cells("nb201", "latency", device)
        keys = [space.short(a) for a in found.archs]
        values = {k: table.values[k] for k in keys}
        measured = {k: measured_table.values[k] for k in keys}
        model = dict(zip(keys, found.costs.tolist()))
        fit = hardware.latency_fit("nb201", device)
        for q in (25, 50, 75):
            limit = float(np.percentile(list(measured.values()), q))
            row = {"device": device, "percentile": q, "limit": limit, "fit_r2": fit.r2, "fit_tau": fit.tau,
                   "measured": baselines(values, measured, limit), "model": baselines(values, model, limit)}
            for by in ("params", "flops"):
                arch = pick("nb201", "latency", device, limit, by)["arch"]
                row[f"pick_{by}"] = table.values[arch]
            rows.append(row)
            m, f = row["measured"], row["model"]
            print(f"| {device}, p{q} {limit:.2f} ms | {m['front']:.2f} / {f['front']:.2f} | {m['largest']:.2f} / "
                  f"{f['largest']:.2f} | {m['random']:.2f} / {f['random']:.2f} | {row['pick_params']:.2f} | "
                  f"{row['pick_flops']:.2f} | {f['cells']} |")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)


if __name__ == "__main__":
    main()
