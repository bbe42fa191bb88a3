"""Consistency against NAS-Bench-201's table (docs/consistency.md): does a search rank architectures the way
the benchmark's 200-epoch training does, and better than counting their parameters?

Reads finished NAS-Bench-201 search runs, OUT_OF_STUDY/VARIANT/seed-S as bench/nb201_quality.py writes them,
one ``--runs NAME=FOLDER`` per method, and for every seed runs ``ista-nas correlate`` under both protocols
against the built-in table's CIFAR-10 accuracy:

- ``ranking``: ``--k`` architectures (the same ``--sample-seed`` sample for every run) scored on the run's
  trained supernet, Kendall tau and Spearman rho against the table, beside the parameter count's and FLOPs'
  tau and rho on the same architectures, and the spread of the supernet's scores (chance: 10%);
- ``trajectory``: the supernet's held-out accuracy each epoch against the table value of the cell it held.

Also the parameter count's tau over the whole space (every cell of the table, and the 4,096 cells without
``none`` that ISTA-NAS chooses among). Writes OUT/study.json and OUT/results.md; a finished correlation is read
back when the script is started again. No search reads the table: only this script does, after the searches.

    python bench/nb201_quality.py --data folder:/tmp/data/cifar10-jpeg --out /tmp/final --seeds 15 16 17 18 19 \\
        --variant ista-nas='{}' --variant darts='{"method": "darts"}'
    python bench/consistency_study.py --runs ista-nas=/tmp/final/ista-nas darts=/tmp/final/darts \\
        --seeds 15 16 17 18 19 --out /tmp/consistency
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import statistics
from pathlib import Path

from tqdm import tqdm

from ista_nas.benchmark import builtin_table
from ista_nas.analysis.consistency import correlate, correlation, truth_from_table
from ista_nas.networks.cnn import count_parameters
from ista_nas.networks.nb201 import Nb201Arch
from ista_nas.spaces import SPACES

SPACE = SPACES["nb201"]
TABLE = functools.cache(lambda: builtin_table(SPACE, "cifar10"))  # the truth, read once
PROTOCOLS = ("ranking", "trajectory")


def correlated(run: Path, out: Path, protocol: str, args: argparse.Namespace) -> dict:
    done = out / "correlation.json"
    if done.is_file():
        result = json.loads(done.read_text())
        if result.get("kendall_tau", "absent") != "absent" and (protocol == "trajectory" or result["k"] == args.k):
            return result
    return correlate(run, out, protocol, truth_from_table(TABLE()), k=args.k, seed=args.sample_seed, device="cpu")


def whole_space() -> dict:
    """Kendall tau and Spearman rho of the parameter count (C=16, N=5, 10 classes) over the table's cells."""
    params, values, no_none = [], [], []
    for arch, value in tqdm(sorted(TABLE().values.items()), desc="counting parameters", unit="cell"):
        genotype = Nb201Arch.parse(arch)
        net, _, _ = SPACE.sized_network(genotype, 16, 5, 10, 3, 32, None)
        params.append(float(count_parameters(net)))
        values.append(value)
        no_none.append("none" not in genotype.ops)
    pick = [i for i, keep in enumerate(no_none) if keep]
    return {"all": correlation(params, values),
            "no_none": correlation([params[i] for i in pick], [values[i] for i in pick])}


def mean_std(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "undefined"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} +- {std:.3f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", nargs="+", required=True, metavar="NAME=FOLDER",
                   help="a method's name and its folder of seed-S runs")
    p.add_argument("--seeds", type=int, nargs="+", required=True)
    p.add_argument("--k", type=int, default=64, help="architectures the ranking protocol samples [64]")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    methods = dict(item.split("=", 1) for item in args.runs)

    rows = []
    for name, folder in methods.items():
        for seed in args.seeds:
            run = Path(folder) / f"seed-{seed}"
            row = {"method": name, "seed": seed, "run": str(run)}
            for protocol in PROTOCOLS:
                result = correlated(run, out / name / f"seed-{seed}" / protocol, protocol, args)
                row[protocol] = {key: result.get(key) for key in ("kendall_tau", "spearman_rho", "n",
                                                                    "distinct_architectures", "undefined")}
                row[protocol]["params"] = result["baselines"]["params"]
                row[protocol]["flops"] = result["baselines"]["flops"]
                row[protocol]["score_spread"] = result["score_spread"]
                if protocol == "trajectory":
                    row["found"], row["found_true"] = result["points"][-1]["arch"], result["points"][-1]["true"]
            rows.append(row)
    space = whole_space()
    (out / "study.json").write_text(json.dumps({"settings": vars(args), "whole_space_params": space,
                                                "runs": rows}, indent=1))

    def f(v: float | None) -> str:
        return "undefined" if v is None else f"{v:.3f}"

    lines = [f"Ranking: K={args.k} cells (sample seed {args.sample_seed}, the same for every run) scored on each "
             "run's supernet; truth: CIFAR-10 200-epoch test accuracy of the built-in NAS-Bench-201 table.", "",
             "| method | seed | found cell (CIFAR-10) | ranking tau | ranking rho | params tau (same K) | "
             "supernet scores mean / std / range (%) | trajectory tau (n, distinct) | trajectory params tau |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k, t, sp = r["ranking"], r["trajectory"], r["ranking"]["score_spread"]
        lines.append(f"| {r['method']} | {r['seed']} | {r['found_true']:.2f} | {f(k['kendall_tau'])} | "
                     f"{f(k['spearman_rho'])} | {f(k['params']['kendall_tau'])} | {sp['mean']:.1f} / "
                     f"{sp['std']:.1f} / {sp['min']:.1f}-{sp['max']:.1f} | {f(t['kendall_tau'])} ({t['n']}, "
                     f"{t['distinct_architectures']}) | {f(t['params']['kendall_tau'])} |")
    lines += ["", "| method | seeds | ranking tau | ranking rho | params tau | params rho | FLOPs tau | "
              "trajectory tau | trajectory params tau |", "|---|---|---|---|---|---|---|---|---|"]
    for name in methods:
        mine = [r for r in rows if r["method"] == name]
        k, t = [r["ranking"] for r in mine], [r["trajectory"] for r in mine]
        lines.append(f"| {name} | {len(mine)} | {mean_std([x['kendall_tau'] for x in k])} | "
                     f"{mean_std([x['spearman_rho'] for x in k])} | "
                     f"{mean_std([x['params']['kendall_tau'] for x in k])} | "
                     f"{mean_std([x['params']['spearman_rho'] for x in k])} | "
                     f"{mean_std([x['flops']['kendall_tau'] for x in k])} | {mean_std([x['kendall_tau'] for x in t])} | "
                     f"{mean_std([x['params']['kendall_tau'] for x in t])} |")
    lines += ["", f"Parameter count over the whole table (C=16, N=5): Kendall tau "
              f"{f(space['all']['kendall_tau'])}, Spearman rho {f(space['all']['spearman_rho'])} over "
              f"{space['all']['n']} cells; over the {space['no_none']['n']} cells without none: tau "
              f"{f(space['no_none']['kendall_tau'])}, rho {f(space['no_none']['spearman_rho'])}."]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
