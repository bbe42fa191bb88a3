"""Issue 45's study: NAS-Bench-201 searches under latency budgets, judged against the table's front.

For every device (a column of the built-in latency table, or ``cpu=FILE.json``: a table ``ista-nas latency``
measured here), every budget (a percentile of that device's latency over the 4,096 cells without none: the
table's measured latencies, or for a measured table its predictions) and every method, searches the quick preset
with ``--max-latency`` on each seed (``bench/nb201_quality.py``'s runner: resumable, the table read only after a
search). Each run is set beside the baselines within its budget, counted by the same cost model the search
used (``ista_nas.analysis.front``): the front (the best cell within budget), the largest cell within budget, the
random draw within budget and the params pick; and every epoch's held cell is checked against the budget.

    python bench/hardware_study.py --data folder:/tmp/data/cifar10-jpeg --table ../shared/data/nb201-accuracy.csv \
        --out /tmp/hw --devices pixel3 fpga --percentiles 50 --methods two-stage one-stage --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from nb201_quality import METRICS, run_one  # noqa: E402

from ista_nas import hardware  # noqa: E402
from ista_nas.analysis.front import cells, pick, within_budget  # noqa: E402
from ista_nas.benchmark import load_table  # noqa: E402


def budget(device: str, spec: str, q: int) -> float:
    """The ``q``th percentile of the device's latency over the cells without none (measured where the table is)."""
    found = cells("nb201", "latency", spec)
    if spec.endswith(".json"):
        return float(np.percentile(found.costs, q))
    path, column = hardware.latency_source("nb201", spec)
    measured = load_table(path, metric=column)
    return float(np.percentile([measured.values[a] for a in (str(g) for g in found.archs)], q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--table", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--devices", nargs="+", default=["pixel3"], help="built-in columns, or NAME=FILE.json")
    parser.add_argument("--percentiles", type=int, nargs="+", default=[50])
    parser.add_argument("--methods", nargs="+", default=["two-stage", "one-stage"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--extra", default="{}", help="settings every search adds, as JSON (e.g. {\"lam\": 0.5})")
    parser.add_argument("--tag", default="", help="appended to the variants' names (for --extra)")
    parser.add_argument("--report-only", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.tables = {m: load_table(args.table, metric=m) for m in METRICS}
    rows = []
    for device in args.devices:
        name, _, spec = device.partition("=")
        spec = spec or name
        found = cells("nb201", "latency", spec)
        for q in args.percentiles:
            limit = budget(name, spec, q)
            base = within_budget(found, args.tables["cifar10"], limit)
            picked = args.tables["cifar10"].values[pick("nb201", "latency", spec, limit, "params")["arch"]]
            for method in args.methods:
                variant = f"{method}-{name}-p{q}{args.tag}"
                for seed in args.seeds:
                    out = args.out / variant / f"seed-{seed}"
                    if args.report_only and not (out / "genotype.json").is_file():
                        continue
                    settings = {"method": method, "max_latency": limit, "latency": spec, **json.loads(args.extra)}
                    row = run_one(variant, settings, seed, args)
                    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
                    held = [m for m in metrics if "budget" in m]
                    costs = [hardware.cost_of("nb201", "latency", args.tables["cifar10"].space.parse(
                        m["genotype"]["arch"]), spec) for m in held]
                    value = args.tables["cifar10"].values[row["arch"]]
                    row.update(device=name, percentile=q, method=method + args.tag, limit=limit, cifar10=value,
                               cost=hardware.cost_of("nb201", "latency", args.tables["cifar10"].space.parse(
                                   row["arch"]), spec),
                               epochs_held=len(held), violations=sum(c > limit * (1 + 1e-9) for c in costs),
                               front=base.best, largest=base.largest, random=base.mean, params_pick=picked,
                               cells=base.cells)
                    rows.append(row)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = ["| device, budget | method | seeds | CIFAR-10 (table) | front | largest within | params pick | random "
             "within | margin to front | over largest | violations (epochs) | search s |", "|---|" * 1 + "---|" * 11]
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["percentile"], r["method"]), []).append(r)
    for (device, q, method), group in groups.items():
        v = [r["cifar10"] for r in group]
        sd = statistics.stdev(v) if len(v) > 1 else 0.0
        r0 = group[0]
        lines.append(f"| {device}, p{q} {r0['limit']:.2f} ms | {method} | {','.join(str(r['seed']) for r in group)} | "
                     f"{statistics.fmean(v):.2f} +- {sd:.2f} | {r0['front']:.2f} | {r0['largest']:.2f} | "
                     f"{r0['params_pick']:.2f} | {r0['random']:.2f} | {statistics.fmean(v) - r0['front']:+.2f} | "
                     f"{statistics.fmean(v) - r0['largest']:+.2f} | {sum(r['violations'] for r in group)} of "
                     f"{sum(r['epochs_held'] for r in group)} | {statistics.fmean(r['search_s'] for r in group):.0f} |")
    text = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
