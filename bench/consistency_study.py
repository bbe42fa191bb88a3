"""Reduced-scale consistency study (docs/consistency.md): Kendall tau between search and evaluation for the
two-stage ISTA-NAS search and the DARTS baseline on NAS-Bench-201, at CPU scale, several seeds, both protocols
of ``ista-nas correlate``, with true accuracy from short retrains run here (no benchmark table is available).

Into OUT (each run its own directory; finished runs are reused when the script is started again):

1. ``search --space nb201 --preset quick`` of each method and seed;
2. the ``--k`` architectures the ranking protocol samples (``--sample-seed``), each trained once per
   ``--retrain-seeds``, and every architecture a search held at some epoch, trained with the first retrain seed;
   the truth is the final test top-1 of the first retrain seed's run, the same for every architecture (the
   ranking protocol is also reported against the sampled architectures' mean over all retrain seeds);
3. ``correlate`` of every search under both protocols, and the tau between two retrain seeds of the sampled
   architectures (how far the truth itself agrees with itself: a ceiling for any search's tau).

Writes OUT/study.json and prints Markdown tables. Usage (CIFAR-10 JPEG tree unpacked in /tmp/data):

    python bench/consistency_study.py --data folder:/tmp/data/cifar10-jpeg --out /tmp/consistency
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from ista_nas import retrain
from ista_nas.config import make_train_config
from ista_nas.consistency import (architecture_key, correlate, correlation, sample_architectures, trajectory,
                                  truth_from_runs)
from ista_nas.methods import make_config, resume, search
from ista_nas.spaces import SPACES

SPACE = SPACES["nb201"]


def finished(run: Path, epochs: int) -> bool:
    path = run / "metrics.jsonl"
    return path.is_file() and len(path.read_text().splitlines()) >= epochs and (run / "checkpoint.pt").is_file()


def run_search(method: str, seed: int, args: argparse.Namespace) -> Path:
    out = Path(args.out) / f"search-{method}-s{seed}"
    cfg = make_config("quick", space="nb201", method=method, dataset=args.data, seed=seed, device="cpu")
    if not finished(out, cfg.epochs):
        resume(out) if (out / "config.json").is_file() else search(cfg, out)
    return out


def run_retrain(genotype, seed: int, args: argparse.Namespace) -> Path:
    name = str(genotype).replace("|", "").replace("~", "").replace("+", "_")
    out = Path(args.out) / "retrain" / f"{name}-s{seed}"
    if not finished(out, args.retrain_epochs):
        if (out / "config.json").is_file():
            retrain.resume(out)
        else:
            retrain.train(make_train_config("quick", space="nb201", arch=str(genotype), dataset=args.data,
                                            subset=args.retrain_subset, epochs=args.retrain_epochs, seed=seed,
                                            device="cpu"), out)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset, e.g. folder:/tmp/data/cifar10-jpeg")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["two-stage", "darts"])
    p.add_argument("--k", type=int, default=16, help="architectures the ranking protocol samples")
    p.add_argument("--sample-seed", type=int, default=0)
    p.add_argument("--retrain-seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--retrain-subset", type=int, default=8000)
    p.add_argument("--retrain-epochs", type=int, default=5)
    p.add_argument("--stage", choices=("sample", "all"), default="all",
                   help="sample: only retrain the sampled architectures (needs no search)")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    sample = sample_architectures("nb201", args.k, args.sample_seed)
    retrains = {architecture_key(g): [run_retrain(g, s, args) for s in args.retrain_seeds] for g in sample}
    if args.stage == "sample":
        return
    searches = {(m, s): run_search(m, s, args) for m in args.methods for s in args.seeds}
    for run in searches.values():  # the trajectories' architectures: the first retrain seed only
        for point in trajectory(run):
            key = architecture_key(point["genotype"])
            if key not in retrains:
                retrains[key] = [run_retrain(point["genotype"], args.retrain_seeds[0], args)]
    truth = truth_from_runs([runs[0] for runs in retrains.values()])  # one retrain seed, the same for every arch
    averaged = truth_from_runs([r for g in sample for r in retrains[architecture_key(g)]])  # sampled: all seeds

    # The truth against itself: retrain seed 0 against retrain seed 1 of the sampled architectures.
    def top1(run: Path) -> float:
        return json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_top1"]

    per_seed = [[top1(retrains[architecture_key(g)][i]) for g in sample] for i in range(len(args.retrain_seeds))]
    noise = correlation(per_seed[0], per_seed[1]) if len(per_seed) > 1 else None
    rows = []
    for (method, seed), run in searches.items():
        row = {"method": method, "seed": seed}
        for protocol in ("trajectory", "ranking"):
            result = correlate(run, out / "correlate" / f"{method}-s{seed}-{protocol}", protocol, truth, k=args.k,
                               seed=args.sample_seed, device="cpu")
            row[protocol] = {key: result.get(key) for key in ("kendall_tau", "spearman_rho", "n", "undefined",
                                                                "distinct_architectures")}
            if protocol == "ranking" and len(args.retrain_seeds) > 1:  # the same scores, the seed-averaged truth
                row["ranking_averaged_truth"] = correlation([p["search"] for p in result["points"]],
                                                            [averaged.get(g) for g in sample])
            if protocol == "trajectory":
                row["found"] = result["points"][-1]["arch"]
                row["found_true"] = result["points"][-1]["true"]
                row["final_valid_acc"] = result["points"][-1]["search"]
        rows.append(row)
    study = {"settings": vars(args), "noise": noise, "retrain_seeds_top1": per_seed,
             "sample": [str(g) for g in sample], "truth": truth.values, "searches": rows}
    (out / "study.json").write_text(json.dumps(study, indent=1))

    def fmt(v):
        return "undefined" if v is None else f"{v:.3f}"

    print("| search | seed | trajectory tau (n, distinct) | ranking tau | ranking rho | ranking tau, seed-averaged "
          "truth | found | its retrain top-1 | supernet valid acc, last epoch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, k, a = r["trajectory"], r["ranking"], r.get("ranking_averaged_truth", {})
        print(f"| {r['method']} | {r['seed']} | {fmt(t['kendall_tau'])} ({t['n']}, {t['distinct_architectures']}) | "
              f"{fmt(k['kendall_tau'])} | {fmt(k['spearman_rho'])} | {fmt(a.get('kendall_tau'))} | `{r['found']}` | "
              f"{r['found_true']:.2f} | {r['final_valid_acc']:.2f} |")
    for method in args.methods:
        taus = [r["ranking"]["kendall_tau"] for r in rows if r["method"] == method]
        found = [r["found_true"] for r in rows if r["method"] == method]
        print(f"{method}: ranking tau {statistics.mean(taus):.3f} +- {statistics.stdev(taus) if len(taus) > 1 else 0:.3f}"
              f", found retrain top-1 {statistics.mean(found):.2f} +- "
              f"{statistics.stdev(found) if len(found) > 1 else 0:.2f} (n={len(rows) // len(args.methods)})")
    if noise:
        print(f"retrain seed 0 vs 1 over the {args.k} sampled architectures: tau {fmt(noise['kendall_tau'])}, "
              f"rho {fmt(noise['spearman_rho'])}")
    sampled = [statistics.mean(v) for v in zip(*per_seed)]
    print(f"sampled architectures' retrain top-1: mean {statistics.mean(sampled):.2f}, best {max(sampled):.2f}")


if __name__ == "__main__":
    main()
