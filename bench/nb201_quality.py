"""NAS-Bench-201 search quality against the benchmark's table: what do the searches find?

Runs every ``--variant`` (a name and the search settings that differ from ``--preset``, as JSON; ``method`` picks
two-stage, one-stage or darts) on every ``--seeds`` seed into OUT/NAME/seed-S, looks each found cell up in the table
(CIFAR-10, CIFAR-100 and ImageNet16-120 200-epoch test accuracy), and writes OUT/results.json and OUT/results.md:
one row per run (cell, the three accuracies, rank of the table's 15,625, supports changed (one-stage: changes of
the held cell), convolutions, the last epoch's held-out accuracy (two-stage and DARTS: the supernet's validation
accuracy; one-stage: its trained target network's test accuracy), the trajectory Kendall tau, search time) and
mean +- sample std per variant, beside the exact distribution of a uniform random draw of the same op set and the
value of that op set's largest cell by parameters (with each variant's margin over it), computed from the table. A finished run is read back when the script is started again, so a study can be
extended seed by seed. The table is only read after a search ends: no search ever sees it.

    python bench/nb201_quality.py --data folder:/tmp/data/cifar10-jpeg --table ../shared/data/nb201-accuracy.csv \
        --out /tmp/nb201q --seeds 0 1 2 3 4 --variant default='{}' --variant darts='{"method": "darts"}'
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import statistics
import time
from pathlib import Path

from scipy.stats import kendalltau

from ista_nas.analysis.baselines import table_op_set
from ista_nas.benchmark import Table, load_table
from ista_nas.methods import make_config, search
from ista_nas.networks.nb201 import NB201_OPS, Nb201Arch

METRICS = ("cifar10", "cifar100", "imagenet16-120")
CONVS = ("nor_conv_1x1", "nor_conv_3x3")


def random_draw(tables: dict[str, Table], ops: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """The exact distribution of each metric over the cells made of ``ops`` only (a uniform random draw), and the
    value of the largest of those cells by parameters at the benchmark's C=16, N=5 (``ista_nas.analysis.baselines``)."""
    out = {}
    for m, table in tables.items():
        values = sorted(v for arch, v in table.values.items() if set(Nb201Arch.parse(arch).ops) <= set(ops))
        q = statistics.quantiles(values, n=20)
        largest = table_op_set(table, dense="none" in ops, channels=16, layers=5).largest
        out[m] = {"cells": len(values), "mean": statistics.fmean(values), "std": statistics.stdev(values),
                  "median": statistics.median(values), "top10": q[17], "top5": q[18], "best": values[-1],
                  "largest": largest.value, "largest_arch": largest.archs[0]}
    return out


def run_one(name: str, overrides: dict, seed: int, args: argparse.Namespace) -> dict:
    out = Path(args.out) / name / f"seed-{seed}"
    cfg = make_config(args.preset, space="nb201", dataset=args.data, seed=seed, **overrides)
    done = (out / "genotype.json").is_file() and (out / "metrics.jsonl").is_file() and \
        len((out / "metrics.jsonl").read_text().splitlines()) >= cfg.epochs
    if not done:
        if out.exists():
            raise SystemExit(f"{out} holds an unfinished run: continue it with `ista-nas search --resume {out}` or "
                             "move it away")
        start = time.time()
        search(cfg, out)
        logging.info("%s seed %d: %.0f s", name, seed, time.time() - start)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    held = [m for m in metrics if "genotype" in m]  # the epochs that hold a cell (one-stage: its search phase)
    # The trajectory tau: the network's held-out accuracy each epoch (the two-stage supernet's validation
    # accuracy, the one-stage target network's test accuracy) against the table value of the cell it held.
    score = [m.get("valid_acc", m.get("test_top1")) for m in held]
    truth = [args.tables["cifar10"].lookup(Nb201Arch.parse(m["genotype"]["arch"])).value for m in held]
    tau = kendalltau(score, truth).statistic if len(held) > 2 else None
    return {"variant": name, "seed": seed, "arch": json.loads((out / "genotype.json").read_text())["arch"],
            "supports_changed": sum(len(m.get("supports_changed", [])) for m in metrics) if cfg.method != "one-stage"
            else sum(a["genotype"] != b["genotype"] for a, b in zip(held, held[1:])),
            "search_s": sum(m["seconds"] for m in metrics), "train_acc": metrics[-1]["train_acc"],
            "valid_acc": metrics[-1].get("valid_acc", metrics[-1].get("test_top1")),
            "trajectory_tau": None if tau is None or tau != tau else float(tau)}


def mean_std(values: list[float]) -> str:
    return f"{statistics.fmean(values):.2f} +- {statistics.stdev(values) if len(values) > 1 else 0.0:.2f}"


def markdown(rows: list[dict], variants: dict[str, dict], draw: dict, args: argparse.Namespace) -> str:
    lines = [f"Budget: `--preset {args.preset}` of the nb201 space, data `{args.data}`; table `{args.table}`.", "",
             "| variant | seed | cell found | CIFAR-10 | CIFAR-100 | ImageNet16-120 | rank (of 15,625) | convs | "
             "supports changed | last held-out acc | trajectory tau | search s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    tau = lambda r: "-" if r.get("trajectory_tau") is None else f"{r['trajectory_tau']:.3f}"  # noqa: E731
    for r in rows:
        cell = r["arch"].replace("|", "\\|")
        lines.append(f"| {r['variant']} | {r['seed']} | `{cell}` | {r['cifar10']:.2f} | {r['cifar100']:.2f} | "
                     f"{r['imagenet16-120']:.2f} | {r['rank']} | {r['convs']} | {r['supports_changed']} | "
                     f"{r['valid_acc']:.2f} | {tau(r)} | {r['search_s']:.0f} |")
    lines += ["", "| variant | settings | seeds | CIFAR-10 | CIFAR-100 | ImageNet16-120 | margin over the largest "
              "cell (CIFAR-10) | convs | last held-out acc | trajectory tau | search s |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, overrides in variants.items():
        group = [r for r in rows if r["variant"] == name]
        if group:
            taus = [r["trajectory_tau"] for r in group if r.get("trajectory_tau") is not None]
            own = draw["all 5 ops" if overrides.get("method") == "darts" else "4 ops (no none)"]["cifar10"]
            lines.append(f"| {name} | `{json.dumps(overrides)}` | {','.join(str(r['seed']) for r in group)} | "
                         + " | ".join(mean_std([r[m] for r in group]) for m in METRICS)
                         + f" | {mean_std([r['cifar10'] - own['largest'] for r in group])} | "
                           f"{statistics.fmean(r['convs'] for r in group):.1f} | "
                           f"{mean_std([r['valid_acc'] for r in group])} | {mean_std(taus) if taus else '-'} | "
                           f"{statistics.fmean(r['search_s'] for r in group):.0f} |")
    for label, d in draw.items():
        lines.append(f"| random draw, {label} ({d['cifar10']['cells']} cells, exact) | - | - | "
                     + " | ".join(f"{d[m]['mean']:.2f} +- {d[m]['std']:.2f} (median {d[m]['median']:.2f}, "
                                  f"top 5% >= {d[m]['top5']:.2f})" for m in METRICS) + " | - | - | - | - | - |")
        arch = d["cifar10"]["largest_arch"].replace("|", "\\|")
        lines.append(f"| largest cell, {label} (`{arch}`) | - | - | "
                     + " | ".join(f"{d[m]['largest']:.2f}" for m in METRICS) + " | 0 | 6 | - | - | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="the search's --dataset, e.g. folder:/tmp/data/cifar10-jpeg")
    parser.add_argument("--table", required=True, type=Path, help="the NAS-Bench-201 table (arch + the 3 metrics)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--preset", default="quick", help="the nb201 search preset the variants start from")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=JSON",
                        help="a variant: its name and its settings as JSON (repeatable; default: the preset)")
    parser.add_argument("--report-only", action="store_true", help="run nothing; tabulate the finished runs")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    variants = dict((v.split("=", 1)[0], json.loads(v.split("=", 1)[1])) for v in args.variant) or {"preset": {}}
    tables = args.tables = {m: load_table(args.table, metric=m) for m in METRICS}
    rows = []
    for (name, overrides), seed in itertools.product(variants.items(), args.seeds):
        if args.report_only and not (args.out / name / f"seed-{seed}" / "genotype.json").is_file():
            continue
        row = run_one(name, overrides, seed, args)
        arch = Nb201Arch.parse(row["arch"])
        row.update({m: table.lookup(arch).value for m, table in tables.items()})
        row["rank"] = tables["cifar10"].lookup(arch).rank
        row["convs"] = sum(op in CONVS for op in arch.ops)
        rows.append(row)
    draw = {"4 ops (no none)": random_draw(tables, tuple(op for op in NB201_OPS if op != "none")),
            "all 5 ops": random_draw(tables, NB201_OPS)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({"rows": rows, "random_draw": draw}, indent=1) + "\n")
    text = markdown(rows, variants, draw, args)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
