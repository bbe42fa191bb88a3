"""Zero-cost proxies and the parameter count against the NAS-Bench-201 table: how well does each rank cells, and
what does it pick?

Draws ``--cells`` distinct cells uniformly from the whole space (all 15,625, ``none`` included, as the published
studies do) with ``--sample-seed``, scores each with every proxy of ``ista_nas.analysis.proxies`` on the benchmark's network
(C=16, N=5, initialised with ``--seed``) from one batch of ``--batch-size`` CIFAR-10 training images, appending
one JSON line per cell to OUT/scores.jsonl (a rerun scores only the cells missing there). Then it writes
OUT/results.json and OUT/results.md: Kendall tau and Spearman rho of every proxy against the table's CIFAR-10,
CIFAR-100 and ImageNet16-120 200-epoch test accuracies, over the whole sample and over its cells without ``none``
(the op set ISTA-NAS searches), and, as NASWOT reports it, the table value of the cell each proxy ranks first in
``--samples`` random pools of ``--pool`` scored cells (mean +- std). The same batch serves all three datasets
(only CIFAR-10 is here): the published figures score each dataset on its own images.

    python bench/proxy_study.py --data folder:/tmp/data/cifar10-jpeg --table ../shared/data/nb201-accuracy.csv \
        --out /tmp/proxies --cells 1000
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import random
import statistics
from pathlib import Path

from ista_nas.benchmark import load_table
from ista_nas.analysis.proxies import correlation
from ista_nas.networks.nb201 import NB201_EDGES, NB201_OPS, Nb201Arch
from ista_nas.analysis.proxies import PROXIES, one_batch, score_cells, top_picks

METRICS = ("cifar10", "cifar100", "imagenet16-120")
# Published Spearman rho on NAS-Bench-201 (Abdelfattah et al., ICLR 2021, all 15,625 cells, each dataset's own
# images); NASWOT's pick in pools of 100 (Mellor et al., ICML 2021, CIFAR-10).
PUBLISHED_RHO = {"synflow": "0.74 / 0.76 / 0.75", "grad_norm": "0.58 / 0.64 / 0.58", "snip": "0.58 / 0.63 / 0.58"}


def score(args: argparse.Namespace) -> list[dict]:
    every = [str(Nb201Arch(ops)) for ops in itertools.product(NB201_OPS, repeat=len(NB201_EDGES))]
    cells = random.Random(args.sample_seed).sample(every, args.cells)
    path = args.out / "scores.jsonl"
    done = {}
    if path.is_file():
        done = {row["arch"]: row for row in map(json.loads, path.read_text().splitlines())}
    todo = [c for c in cells if c not in done]
    if todo and not args.report_only:
        batch, classes = one_batch(args.data, args.batch_size, args.seed)
        args.out.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            for arch in todo:  # one at a time, so an interrupted study keeps what it scored
                row = {"arch": arch, **score_cells([Nb201Arch.parse(arch)], 16, 5, batch, classes, args.seed,
                                                   desc=f"{len(done) + 1}/{len(cells)}")[0]}
                fh.write(json.dumps(row) + "\n")
                fh.flush()
                done[arch] = row
    return [done[c] for c in cells if c in done]


def study(rows: list[dict], tables: dict, args: argparse.Namespace) -> dict:
    out = {"cells": len(rows), "seconds_per_cell": statistics.median(r["seconds"] for r in rows),
           "seconds": sum(r["seconds"] for r in rows), "correlation": {}, "picks": {}}
    for subset, chosen in (("whole space", rows), ("without none", [r for r in rows if "none" not in r["arch"]])):
        for m, table in tables.items():
            true = [table.values[r["arch"]] for r in chosen]
            out["correlation"][f"{subset}, {m}"] = {p: correlation([r[p] for r in chosen], true) for p in PROXIES}
    if len(rows) >= args.pool:
        for m, table in tables.items():
            out["picks"][m] = top_picks(rows, [table.values[r["arch"]] for r in rows], PROXIES, args.pool,
                                        args.samples, args.sample_seed)
    return out


def markdown(result: dict, args: argparse.Namespace) -> str:
    lines = [f"{result['cells']} cells drawn with seed {args.sample_seed}, one batch of {args.batch_size} images of "
             f"`{args.data}`, network seed {args.seed}; {result['seconds'] / 60:.1f} min of scoring "
             f"(median {result['seconds_per_cell']:.2f} s a cell).", "",
             "Kendall tau / Spearman rho against the table:", "",
             "| cells, truth | " + " | ".join(PROXIES) + " |", "|---|" + "---|" * len(PROXIES)]
    for key, per in result["correlation"].items():
        lines.append(f"| {key} | " + " | ".join("-" if per[p]["kendall_tau"] is None else
                                                f"{per[p]['kendall_tau']:.3f} / {per[p]['spearman_rho']:.3f}"
                                                for p in PROXIES) + " |")
    lines.append("| published rho (C10 / C100 / IN16), Abdelfattah et al. | - | - | "
                 + " | ".join(PUBLISHED_RHO.get(p, "-") for p in PROXIES[2:]) + " |")
    if result["picks"]:
        names = [*PROXIES, "best in the pool"]
        lines += ["", f"Table value of the cell each proxy ranks first in {args.samples} random pools of {args.pool} "
                  "(mean +- std):", "", "| truth | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
        for m, picks in result["picks"].items():
            lines.append(f"| {m} | " + " | ".join(f"{picks[p]['mean']:.2f} +- {picks[p]['std']:.2f}" for p in names)
                         + " |")
        lines.append("| published, CIFAR-10 (NASWOT, pools of 100) | - | - | - | 91.78 +- 1.45 | - | - | - |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True,
                        help="CIFAR-10 as the CLI reads it, e.g. folder:/tmp/data/cifar10-jpeg")
    parser.add_argument("--table", required=True, type=Path, help="the NAS-Bench-201 table (arch + the 3 metrics)")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--cells", type=int, default=1000)
    parser.add_argument("--sample-seed", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0, help="the networks' initialisation and the batch's draw")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--pool", type=int, default=100)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--report-only", action="store_true", help="score nothing; tabulate the scored cells")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = score(args)
    tables = {m: load_table(args.table, metric=m) for m in METRICS}
    result = study(rows, tables, args)
    (args.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    text = markdown(result, args)
    (args.out / "results.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
