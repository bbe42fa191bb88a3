"""The summary of bench/gpu.sh: OUT/summary.json and OUT/summary.md from its phases, bench figures, preset runs
and NAS-Bench-201 study runs. Usage: python bench/gpu_summary.py OUT WORK MODE (WORK holds logs/ and runs/).

Projections are an epoch's measured wall time on a subset scaled to the full 50,000 training images (the
search's two halves of 25,000, the retraining's 50,000) and multiplied by the preset's epochs: they include
each epoch's evaluation on the whole test split, so they overestimate a little. The study's table values are
the built-in NAS-Bench-201 table's (200-epoch test accuracy, mean over its seeds), looked up, never used.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import torch

from ista_nas.analysis.baselines import table_op_set
from ista_nas.benchmark import table_for
from ista_nas.spaces import SPACES, load_genotype

PUBLISHED = {"DrNAS": 94.36, "GDAS": 93.61, "PC-DARTS": 93.41, "DARTS (2nd order)": 54.30}  # NB201 CIFAR-10 test
METRICS = ("cifar10", "cifar100", "imagenet16-120")
FULL_IMAGES = 50_000


def _json_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip().startswith("{")]


def _bench(logs: Path) -> dict:
    out = {}
    for path in sorted(logs.glob("bench-*.out")):
        rows = _json_lines(path)
        if rows:
            out[path.stem] = rows[-1]
    return out


def _preset(run: Path) -> dict | None:
    """A preset run's measured epochs and each one scaled to the full 50,000 images."""
    metrics = _json_lines(run / "metrics.jsonl")
    if not metrics or not (run / "config.json").exists():
        return None
    images = json.loads((run / "config.json").read_text())["subset"] or FULL_IMAGES
    return {"images": images, "epoch_seconds": [m["seconds"] for m in metrics],
            "projected_epoch_s": [round(m["seconds"] * FULL_IMAGES / images, 1) for m in metrics]}


def _projected(run: Path, paper_epochs: int, unit: str) -> dict | None:
    """``_preset`` with its first epoch's projection times the paper's epochs, in minutes or hours (``unit``)."""
    preset = _preset(run)
    if preset:
        seconds = {"min": 60, "h": 3600}[unit]
        preset["paper_epochs"] = paper_epochs
        preset[f"projected_{unit}"] = round(preset["projected_epoch_s"][0] * paper_epochs / seconds, 2)
    return preset


def _projections(runs: Path) -> dict:
    from ista_nas.config import make_train_config
    from ista_nas.methods import make_config

    found = {"two-stage search, DARTS cell (paper: 0.05 GPU-day = 72 min)":
             _projected(runs / "preset-two-stage", make_config("paper").epochs, "min"),
             "retraining with AMP, C=36 L=20 (paper: 600 epochs)":
             _projected(runs / "preset-retrain", make_train_config("paper").epochs, "h"),
             "NAS-Bench-201 search, C=16 N=5, batch 64, 50 epochs":
             _projected(runs / "preset-nb201", make_config("paper", space="nb201").epochs, "min")}
    one = _preset(runs / "preset-one-stage")
    if one and len(one["projected_epoch_s"]) >= 2:  # a search epoch, then a training epoch
        cfg = make_config("paper", method="one-stage")
        search, train = one["projected_epoch_s"][:2]
        one["paper_epochs"] = {"search (at most)": cfg.max_search_epochs, "training": cfg.epochs}
        one["projected_h"] = round((search * cfg.max_search_epochs + train * cfg.epochs) / 3600, 2)
        one["note"] = (f"a search epoch times {cfg.max_search_epochs} (the most) plus a training epoch times "
                       f"{cfg.epochs}")
        found["one-stage search and training, DARTS cell"] = one
    return {name: p for name, p in found.items() if p}


def _study(runs: Path) -> dict:
    tables = {m: table_for(SPACES["nb201"], "", metric=m) for m in METRICS}
    rows = []
    for run in sorted(runs.glob("nb201-*")):
        _, method_a, method_b, seed = run.name.split("-")
        metrics = _json_lines(run / "metrics.jsonl")
        status = json.loads((run / "status.json").read_text()) if (run / "status.json").exists() else {}
        row = {"run": run.name, "method": f"{method_a}-{method_b}", "seed": int(seed), "epochs_done": len(metrics),
               "finished": bool(status.get("finished")),
               "seconds_per_epoch": round(statistics.median(m["seconds"] for m in metrics), 1) if metrics else None}
        if (run / "genotype.json").exists():
            genotype = load_genotype(run / "genotype.json")
            row["arch"] = tables["cifar10"].key(genotype)
            for metric, table in tables.items():
                entry = table.get(genotype)
                row[metric] = entry.value if entry else None
        rows.append(row)
    groups = {}
    for method in sorted({r["method"] for r in rows}):
        done = [r for r in rows if r["method"] == method and r["finished"] and r.get("cifar10") is not None]
        groups[method] = {"finished_runs": len(done), **{
            m: [round(statistics.mean(r[m] for r in done), 2),
                round(statistics.stdev(r[m] for r in done), 2) if len(done) > 1 else 0.0] for m in METRICS if done}}
    ops = table_op_set(tables["cifar10"], False, 16, 5)
    baselines = {"random draw of the op set (table mean)": round(statistics.mean(ops.values), 2),
                 "largest cell of the op set": round(ops.largest.value, 2), **PUBLISHED}
    return {"runs": rows, "mean_std": groups, "baselines_cifar10": baselines}


def _markdown(summary: dict) -> str:
    lines = [f"# bench/gpu.sh ({summary['mode']})", "", f"card: {summary['card']}; torch {summary['torch']}", "",
             "| phase | exit | seconds |", "|---|---|---|"]
    lines += [f"| {p['phase']} | {p['rc']} | {p['seconds']} |" for p in summary["phases"]]
    lines += ["", "## Steps (median seconds; graph: replayed from a CUDA graph)", "",
              "| bench | space | batch | sparse | sparse graph | dense | dense graph | graph speedup | retrain | "
              "retrain graph |", "|---|---|---|---|---|---|---|---|---|---|"]
    for name, b in summary["bench"].items():
        cells = [b.get(k) for k in ("sparse_step_s", "sparse_graph_step_s", "dense_step_s", "dense_graph_step_s",
                                    "graph_speedup", "retrain_step_s", "retrain_graph_step_s")]
        lines.append(f"| {name} | {b['space']} | {b['batch']} | "
                     + " | ".join("-" if c is None else f"{c:.4g}" for c in cells) + " |")
    lines += ["", "## Paper presets, projected from one epoch on a subset", ""]
    lines += [f"- {name}: {json.dumps(p)}" for name, p in summary["projections"].items()]
    study = summary["study"]
    lines += ["", "## NAS-Bench-201 at the benchmark's scale (table values, %)", "",
              "| run | epochs | finished | s/epoch | CIFAR-10 | CIFAR-100 | ImageNet16-120 |",
              "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['epochs_done']} | {r['finished']} | {r['seconds_per_epoch']} | {r.get('cifar10')} | "
              f"{r.get('cifar100')} | {r.get('imagenet16-120')} |" for r in study["runs"]]
    lines += ["", f"mean +- std of finished runs: {json.dumps(study['mean_std'])}",
              f"baselines (CIFAR-10): {json.dumps(study['baselines_cifar10'])}", ""]
    return "\n".join(lines)


def main(out: Path, work: Path, mode: str) -> None:
    card = (out / "card.txt").read_text().strip() if (out / "card.txt").exists() else "cpu"
    summary = {"mode": mode, "card": card, "torch": torch.__version__, "phases": _json_lines(out / "phases.jsonl"),
               "bench": _bench(work / "logs"), "projections": _projections(work / "runs"),
               "study": _study(work / "runs")}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(_markdown(summary))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
