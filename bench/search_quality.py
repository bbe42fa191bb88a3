"""Reduced-scale search-quality study: do the searches find better architectures than random draws?

Runs, into OUT (each run its own directory; a finished run is reused when the script is started again):

1. ISTA-NAS (two-stage) and the DARTS baseline on NAS-Bench-201, ``--preset quick`` of the nb201 space, for
   every seed;
2. ``--random`` architectures drawn uniformly from the space ISTA-NAS searches (the 4 ops other than ``none``
   on each of the 6 edges), plus two calibration cells (all avg_pool_3x3, all nor_conv_3x3) that show whether
   the short retrain separates a pooling-only cell from a convolution-heavy one;
3. one identical short retrain of every distinct architecture (``--train-*`` settings), test top-1 on the full
   test split.

It writes OUT/results.json and prints a Markdown table. Usage (CIFAR-10 JPEG tree unpacked in /tmp/data):

    python bench/search_quality.py --data folder:/tmp/data/cifar10-jpeg --out /tmp/quality

A short retrain is a noisy proxy for the benchmark's 200-epoch accuracy; the table says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
from pathlib import Path

from ista_nas import retrain
from ista_nas.config import make_train_config
from ista_nas.methods import make_config, search
from ista_nas.networks.nb201 import NB201_EDGES, NB201_OPS, Nb201Arch

SEARCH_OPS = tuple(op for op in NB201_OPS if op != "none")


def _done(run: Path, name: str) -> bool:
    return (run / name).exists() and (run / "checkpoint.pt").exists()


def run_search(method: str, seed: int, args: argparse.Namespace) -> dict:
    out = Path(args.out) / f"search-{method}{args.label}-s{seed}"
    if not _done(out, "genotype.json"):
        cfg = make_config("quick", space="nb201", method=method, dataset=args.data, seed=seed,
                          **json.loads(args.search_overrides))
        search(cfg, out)
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    arch = json.loads((out / "genotype.json").read_text())["arch"]
    return {"method": method + args.label, "seed": seed, "arch": arch,
            "search_train_acc": [m["train_acc"] for m in metrics], "search_valid_acc": [m["valid_acc"] for m in metrics], "search_s": sum(m["seconds"] for m in metrics)}


def run_retrain(arch: str, args: argparse.Namespace) -> float:
    out = Path(args.out) / ("train-" + arch.replace("|", "").replace("~", "").replace("+", "_"))
    if not _done(out, "metrics.jsonl") or len((out / "metrics.jsonl").read_text().splitlines()) < args.train_epochs:
        cfg = make_train_config("quick", space="nb201", arch=arch, dataset=args.data, subset=args.train_subset,
                                epochs=args.train_epochs, channels=args.train_channels, layers=args.train_layers,
                                seed=args.train_seed)
        retrain.train(cfg, out)
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["test_top1"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="dataset, e.g. folder:/tmp/data/cifar10-jpeg")
    p.add_argument("--out", required=True)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--methods", nargs="+", default=["two-stage", "darts"])
    p.add_argument("--random", type=int, default=8, help="architectures drawn at random")
    p.add_argument("--random-seed", type=int, default=0)
    p.add_argument("--search-overrides", default="{}", help="JSON of search settings over the quick preset")
    p.add_argument("--label", default="", help="added to the method's name (runs with other --search-overrides)")
    p.add_argument("--train-subset", type=int, default=8000)
    p.add_argument("--train-epochs", type=int, default=5)
    p.add_argument("--train-channels", type=int, default=8)
    p.add_argument("--train-layers", type=int, default=1)
    p.add_argument("--train-seed", type=int, default=0)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    Path(args.out).mkdir(parents=True, exist_ok=True)

    rng = random.Random(args.random_seed)
    draws = [str(Nb201Arch(tuple(rng.choice(SEARCH_OPS) for _ in NB201_EDGES))) for _ in range(args.random)]
    calibration = [str(Nb201Arch((op,) * len(NB201_EDGES))) for op in ("avg_pool_3x3", "nor_conv_3x3")]
    searches = [run_search(m, s, args) for m in args.methods for s in args.seeds]
    accuracy = {arch: run_retrain(arch, args) for arch in dict.fromkeys(
        calibration + draws + [r["arch"] for r in searches])}

    rows = [{**r, "retrain_top1": accuracy[r["arch"]]} for r in searches]
    random_acc = [accuracy[a] for a in draws]
    summary = {
        "random_mean": statistics.mean(random_acc), "random_std": statistics.stdev(random_acc),
        "random_max": max(random_acc),
        **{f"{m}{args.label}_mean": statistics.mean(r["retrain_top1"] for r in rows if r["method"] == m + args.label)
           for m in args.methods},
        "calibration": {a: accuracy[a] for a in calibration},
    }
    result = {"settings": vars(args), "searches": rows, "random": [{"arch": a, "retrain_top1": accuracy[a]}
                                                                    for a in draws], "summary": summary}
    (Path(args.out) / f"results{args.label}.json").write_text(json.dumps(result, indent=2))
    print("| what | seed | architecture | convs | short-retrain test top-1 |\n|---|---|---|---|---|")
    for r in rows + [{"method": "random", "seed": i, **d} for i, d in enumerate(result["random"])]:
        convs = sum(op.startswith("nor_conv") for op in Nb201Arch.parse(r["arch"]).ops)
        print(f"| {r['method']} | {r['seed']} | `{r['arch']}` | {convs} | {r['retrain_top1']:.2f} |")
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
