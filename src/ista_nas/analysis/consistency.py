"""``ista-nas correlate``: does a search rank architectures the way evaluation does?

Kendall's tau (tau-b, ties allowed) and Spearman's rho, from scipy, between what a search believes about a set
of architectures and their true accuracy, under one of two protocols (docs/consistency.md defines both):

- ``trajectory``: one point per epoch of the search run that records a genotype: the supernet's accuracy on
  that epoch's held-out (architecture) batches, ``valid_acc`` (a one-stage search phase: its ``test_top1``),
  against the true accuracy of the architecture the search held after that epoch;
- ``ranking``: K architectures drawn uniformly (with a seed) from the candidates the sparse search chooses
  among, each scored with the run's trained supernet: its shared weights, the architecture's candidates at
  unit weight, batch-norm statistics recalibrated on a few training batches, top-1 on the whole held-out half
  (the architecture half of the search split, unaugmented), against their true accuracy.

The truth is a benchmark table (``--benchmark``) or the final ``test_top1`` of ``ista-nas train`` run
directories (``--truth``; several runs of one architecture are averaged). Without a truth the command only
scores, writes the architectures to train (``architectures/``) and says how to go on.
"""

from __future__ import annotations

import json
import logging
import re
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from ..benchmark import Table
from ..diagram import pyplot, savefig
from ..engine.checkpoint import atomic_write_json, load_checkpoint
from ..engine.data import DeviceLoader, ImageData
from ..engine.distributed import Dist
from ..engine.loop import resolve_device
from ..engine.rundir import RESUMABLE, RunDir
from ..engine.splits import search_split
from ..engine.trainer import evaluate
from ..errors import UserError
from ..limits import check_seed
from ..files import atomic_write_bytes, claim_folder, claim_output, claim_plot, read_json, refuse_link
from ..methods import METHODS, RunRecord, SearchConfig, check_search_size, check_types, evaluation_fields, run_record
from ..methods.base import build_supernet
from ..methods.bilevel import Bilevel
from ..spaces import SPACES, load_genotype, sample_architectures  # noqa: F401 (re-exported)
from .proxies import PROXIES, correlation, one_batch, proxy_baselines, score_cells
from .summary import DATASET_SHAPES, dataset_shape

log = logging.getLogger(__name__)

PROTOCOLS = ("trajectory", "ranking")
MAX_K = 10_000  # the ranking protocol scores each architecture on its own: more would run for days
PROXY_BATCH = 64  # images the zero-cost proxies read: one batch, as their papers score a cell


@dataclass
class Truth:
    """True accuracy by architecture (its space's one-line form), and where it comes from."""

    values: dict[str, float]
    source: str
    fix: str  # how to add an architecture the truth lacks
    key: Callable[[Any], str] = lambda genotype: architecture_key(genotype)

    def get(self, genotype: Any) -> float | None:
        return self.values.get(self.key(genotype))


def architecture_key(genotype: Any) -> str:
    """One string per architecture of any space (its genotype JSON, keys sorted)."""
    return json.dumps(genotype.to_dict(), sort_keys=True)


def truth_from_table(table: Table) -> Truth:
    return Truth(dict(table.values), f"{table.metric} of the benchmark table {table.path}",
                 "give a table of the whole space", table.key)


def truth_from_runs(run_dirs: list[str | Path]) -> Truth:
    """The final test top-1 of each ``ista-nas train`` run, averaged over runs of the same architecture."""
    found: dict[str, list[float]] = {}
    for path in run_dirs:
        run, config = RunDir.open(path)
        if run_record(config, str(run.config_path)).search or not (run.path / "genotype.json").is_file():
            raise UserError(f"--truth {path} is not a finished 'ista-nas train' run (no genotype.json of a training "
                            "run); give training run directories")
        tops = [m["test_top1"] for m in run.read_metrics() if isinstance(m.get("test_top1"), (int, float))]
        if not tops:
            raise UserError(f"--truth {path} has no tested epoch yet (no test_top1 in metrics.jsonl); let it train "
                            "at least one epoch")
        genotype = load_genotype(run.path / "genotype.json")
        found.setdefault(architecture_key(genotype), []).append(tops[-1])
    return Truth({arch: statistics.fmean(v) for arch, v in found.items()},
                 f"final test top-1 of {len(run_dirs)} training run(s)", "train it with ista-nas train and add the "
                 "run to --truth")


def run_space(run_dir: str | Path) -> Any:
    """The search space of a run directory."""
    return SPACES[run_record(RunDir.open(run_dir)[1], f"{run_dir}/config.json").space]


def trajectory(run_dir: Path) -> list[dict[str, Any]]:
    """(epoch, genotype, supernet accuracy) of every epoch record of a search run that names a genotype."""
    run, config = RunDir.open(run_dir)
    record = run_record(config, str(run.config_path))
    if not record.search:
        raise UserError(f"{run_dir} is a training run; correlate reads a search run directory")
    points = []
    for m in run.read_metrics():
        score = m.get("valid_acc", m.get("test_top1"))
        if isinstance(m.get("genotype"), dict) and isinstance(score, (int, float)):
            genotype = SPACES[record.space].from_dict(m["genotype"])
            points.append({"epoch": m["epoch"], "genotype": genotype, "score": float(score)})
    if not points:
        raise UserError(f"{run_dir} has no epoch records with a genotype yet; let the search run an epoch")
    return points


class _Fixed(nn.Module):
    """The supernet running one architecture (for ``evaluate``)."""

    def __init__(self, net: nn.Module, genotype: Any):
        super().__init__()
        self.net, self.genotype = net, genotype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.forward_fixed(x, self.genotype)


def _recalibrate(net: nn.Module, genotype: Any, batches: list[torch.Tensor]) -> None:
    """Batch-norm running statistics of ``genotype``'s path, re-estimated from ``batches`` (a plain average)."""
    for m in net.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
    net.train()
    with torch.no_grad():
        for x in batches:
            net.forward_fixed(x, genotype)
    net.eval()


def supernet_scores(run_dir: Path, genotypes: list[Any], calibration_batches: int,
                    device: str) -> tuple[list[float], int]:
    """Held-out top-1 (%) of each genotype with the run's trained supernet (module doc: ``ranking``), and how
    many held-out images each score counts."""
    run, config = RunDir.open(run_dir)
    check_types(config, str(run.config_path))
    cfg = SearchConfig.from_dict({**config, "device": device}).validate()
    if cfg.method not in METHODS:
        raise UserError(f"{run.config_path}: unknown method {cfg.method!r}; the run directory is damaged")
    check_search_size(cfg, SPACES[cfg.space])  # the one size rule, for sizes read from a file
    method = METHODS[cfg.method]
    if not issubclass(method, Bilevel):  # only a bilevel search's checkpoint keeps its supernet (SearchState)
        raise UserError(f"{run_dir} is a --method {cfg.method} run, which ends as its trained discrete network: no "
                        "supernet is left to score other architectures; use --protocol trajectory")
    checkpoint = load_checkpoint(run.checkpoint_path)
    stored = checkpoint.get("config") if isinstance(checkpoint.get("config"), dict) else {}
    if "search" not in checkpoint or any(stored.get(k) != v for k, v in config.items() if k not in RESUMABLE):
        raise UserError(f"checkpoint {run.checkpoint_path} was not written by the search in {run_dir} (its settings "
                        "differ from config.json); give the run directory the checkpoint belongs to")
    ctx = Dist.setup(device)
    data, train_loader, valid_loader = search_split(cfg, ctx)
    net = build_supernet(cfg, data, method.variant)
    net.load_state_dict(checkpoint["search"]["model"])
    net.to(ctx.device)
    held_out = DeviceLoader(ImageData(valid_loader.images, valid_loader.labels, data.classes), valid_loader.indices,
                            2 * cfg.batch_size, ctx.device, *valid_loader.mean_std, shuffle=False, drop_last=False,
                            channels_last=cfg.channels_last)
    batches = [x for (x, _), _ in zip(train_loader.epoch(0), range(calibration_batches))]
    scores = []
    for i, genotype in enumerate(tqdm(genotypes, desc="scoring architectures", unit="arch", disable=None)):
        try:
            _recalibrate(net, genotype, batches)
        except ValueError as exc:  # e.g. a DARTS-space run searched with another number of nodes
            raise UserError(f"the sampled architectures do not fit the supernet of {run_dir} ({exc}); the ranking "
                            "protocol samples the space's standard cell") from None
        scores.append(evaluate(_Fixed(net, genotype), held_out, desc=f"architecture {i + 1}/{len(genotypes)}")["top1"])
    return scores, len(valid_loader.indices)


def spread(scores: list[float], chance: float | None, held_out: int | None = None) -> dict[str, Any]:
    """How far apart the search's scores are, beside what noise alone gives: the accuracy of guessing
    (``chance``) and, for top-1 over ``held_out`` images, one score's binomial standard error at their mean."""
    mean = statistics.fmean(scores)
    out = {"mean": mean, "std": statistics.stdev(scores) if len(scores) > 1 else 0.0, "min": min(scores),
           "max": max(scores), "chance": chance}
    if held_out:
        p = min(max(mean / 100, 0.0), 1.0)
        out.update(held_out=held_out, binomial_se=100 * (p * (1 - p) / held_out) ** 0.5)
    return out


def _shape(config: dict[str, Any]) -> tuple[int, int, int] | None:
    """(classes, channels, side) of the run's dataset; None, with a warning, when it cannot be read any more."""
    try:
        return dataset_shape(config.get("dataset", "cifar10"))
    except UserError as exc:
        log.warning("the run's dataset cannot be read (%s): chance level unknown, sizes counted at CIFAR-10's shape",
                    exc)
        return None


def baselines(genotypes: list[Any], true: list[float], record: RunRecord, config: dict[str, Any],
              device: str) -> dict[str, Any]:
    """Kendall tau and Spearman rho against ``true`` of each architecture's training-free scores (``proxies``:
    parameter count, FLOPs and the zero-cost proxies), with each score's own spread: what a search must beat to
    rank better than its networks' size or a score at initialisation. Computed on the network the space
    evaluates a search's genotype at (its evaluation_size), from one batch of the run's training images (a run
    whose data cannot be read any more: the sizes alone, at CIFAR-10's shape, with a warning); also returned
    per architecture. ``record`` is the run's (``methods.run_record``)."""
    space = SPACES[record.space]
    channels, layers = space.evaluation_size(config, True, evaluation_fields(record))
    dataset, names = config.get("dataset", "cifar10"), PROXIES
    try:
        batch, classes = one_batch(dataset, PROXY_BATCH, 0, config.get("data_dir"), resolve_device(device))
    except UserError as exc:
        log.warning("the run's data cannot be read (%s): the proxies that need a batch are left out", exc)
        names, (classes, in_channels, side) = ("params", "flops"), DATASET_SHAPES["cifar10"]
        batch = (torch.zeros(1, in_channels, side, side), torch.zeros(1, dtype=torch.long))
    scored: dict[str, dict[str, Any]] = {}
    distinct = {architecture_key(g): g for g in genotypes}
    for key, row in zip(distinct, score_cells(list(distinct.values()), channels, layers, batch, classes, 0, names,
                                              desc="training-free scores")):
        scored[key] = {k: v for k, v in row.items() if k != "seconds"}
    per = [scored[architecture_key(g)] for g in genotypes]
    return {"network": {"channels": channels, "layers": layers, "dataset": dataset, "batch": len(batch[1]),
                        "seed": 0}, **proxy_baselines(per, true, names), "per_architecture": per}


def _scatter(points: list[dict[str, Any]], result: dict[str, Any], path: Path, xlabel: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    xs, ys = [p["search"] for p in points], [p["true"] for p in points]
    ax.scatter(xs, ys, s=22, c=[p.get("epoch", 0) for p in points] if "epoch" in points[0] else None,
               cmap="viridis" if "epoch" in points[0] else None)
    tau = result["kendall_tau"]
    stats_text = "undefined" if tau is None else f"Kendall tau {tau:.3f}, Spearman rho {result['spearman_rho']:.3f}"
    base = result.get("baselines", {}).get("params", {}).get("kendall_tau")
    sp = result["score_spread"]
    notes = ([f"parameter count alone: Kendall tau {base:.3f}"] if base is not None else []) + \
        [f"search scores std {sp['std']:.2f}" + (f", one score's s.e. {sp['binomial_se']:.2f}" if "binomial_se" in sp
                                                else "")]
    ax.set(xlabel=xlabel, ylabel="true accuracy (%)",
           title=f"{result['protocol']}: {stats_text} (n={result['n']})\n" + "; ".join(notes))
    ax.grid(alpha=0.3)
    savefig(fig, path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def correlate(run_dir: str | Path, out: str | Path, protocol: str = "trajectory", truth: Truth | None = None,
              k: int = 16, seed: int = 0, calibration_batches: int = 10, device: str = "auto") -> dict[str, Any]:
    """Score the run's architectures (``protocol``), correlate with ``truth`` and write ``out``: correlation.json,
    scatter.png and ``architectures/`` (every architecture scored, as genotype JSON files to train)."""
    run_dir, out = Path(run_dir), Path(out)
    if protocol not in PROTOCOLS:
        raise UserError(f"unknown --protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")
    if k < 2 or calibration_batches < 1:
        raise UserError("--k must be at least 2 and --calibration-batches at least 1")
    check_seed(seed, "--sample-seed")
    config = RunDir.open(run_dir)[1]
    record = run_record(config, f"{run_dir}/config.json")
    space = SPACES[record.space]
    most = min(space.sample_size(), MAX_K)
    if protocol == "ranking" and k > most:
        raise UserError(f"--k {k}: the ranking protocol scores at most {most} architectures of --space {space.name} "
                        f"({space.sample_size()} candidates, at most {MAX_K} scored); lower --k")
    out, files = _claim_outputs(out)
    held_out = None
    if protocol == "trajectory":
        points = [{"epoch": p["epoch"], "genotype": p["genotype"], "search": p["score"]} for p in trajectory(run_dir)]
        xlabel = "supernet accuracy on held-out batches, that epoch (%)"
    else:
        genotypes = sample_architectures(space.name, k, seed)
        scores, held_out = supernet_scores(run_dir, genotypes, calibration_batches, device)
        points = [{"genotype": g, "search": s} for g, s in zip(genotypes, scores)]
        xlabel = "supernet top-1 on the held-out half, shared weights (%)"
    distinct = {architecture_key(p["genotype"]): p["genotype"] for p in points}
    names = {key: out / "architectures" / f"arch-{i:02d}.json" for i, key in enumerate(distinct)}
    result: dict[str, Any] = {"written_by": "ista-nas correlate", "run": str(run_dir.resolve()),
                              "protocol": protocol, "method": record.method, "space": space.name,
                              "seed": config.get("seed")}
    shape = _shape(config)
    result["score_spread"] = spread([p["search"] for p in points], shape and 100 / shape[0], held_out)
    if protocol == "ranking":
        result.update(k=k, sample_seed=seed, calibration_batches=calibration_batches)
    rows = [{**({"epoch": p["epoch"]} if "epoch" in p else {}), "arch": space.short(p["genotype"]),
             "file": str(names[architecture_key(p["genotype"])]), "search": p["search"]} for p in points]

    earlier = _written_before(out)

    def write() -> None:  # the result first: it marks the folder as correlate's (the architectures' owner)
        (out / "architectures").mkdir(exist_ok=True)
        atomic_write_json(files["correlation.json"], result)
        for key, genotype in distinct.items():
            text = json.dumps(genotype.to_dict()) + "\n"
            atomic_write_bytes(names[key], text.encode())
        for stale in earlier - set(names.values()):  # an earlier, larger sample's, as its correlation.json says
            if stale.is_file() and not stale.is_symlink():
                stale.unlink()

    if truth is None:
        result.update(points=rows, truth=None)
        write()
        return result
    missing = {r["file"] for r, p in zip(rows, points) if truth.get(p["genotype"]) is None}
    if missing:
        result.update(points=rows, truth=None)
        write()  # the architectures to train
        raise UserError(f"the truth ({truth.source}) lacks {len(missing)} of the {len(distinct)} architectures, "
                        f"e.g. {min(missing)}; {truth.fix}")
    for r, p in zip(rows, points):
        r["true"] = truth.get(p["genotype"])
    result.update(correlation([r["search"] for r in rows], [r["true"] for r in rows]))
    size = baselines([p["genotype"] for p in points], [r["true"] for r in rows], record, config, device)
    for r, counted in zip(rows, size.pop("per_architecture")):
        r.update(counted)
    result.update(truth=truth.source, distinct_architectures=len(distinct), baselines=size, points=rows)
    write()
    _scatter(rows, result, files["scatter.png"], xlabel)
    return result


def _claim_outputs(out: Path) -> tuple[Path, dict[str, Path]]:
    """The --out folder and the paths correlate writes there, refused before any work when one of them holds a
    file ista-nas did not write: correlation.json and scatter.png carry their marks; the architectures' genotype
    files (which cannot) are correlate's when the folder's correlation.json is."""
    out = claim_folder(out, "--out")
    files = {"correlation.json": claim_output(out / "correlation.json", "json", "--out"),
             "scatter.png": claim_plot(out / "scatter.png", "--out")}
    refuse_link(out / "architectures", "--out")
    if (out / "architectures").exists():
        if not (out / "architectures").is_dir():
            raise UserError(f"--out {out}: architectures is not a folder; choose another --out")
        genotypes = sorted((out / "architectures").glob("arch-*.json"))
        if genotypes and not files["correlation.json"].is_file():
            raise UserError(f"--out {out}: architectures/ holds files ({genotypes[0].name}, ...) that ista-nas "
                            "correlate did not write there (no correlation.json beside them); choose another --out")
    return out, files


def _written_before(out: Path) -> set[Path]:
    """The architecture files the correlation.json in ``out`` (correlate's own, as ``_claim_outputs`` checked)
    says it wrote: the only files a new correlation may remove. Anything else in architectures/ is left."""
    try:
        earlier = read_json(out / "correlation.json", "correlation", "")
    except UserError:
        return set()
    points = earlier.get("points") if isinstance(earlier, dict) else None
    names = {Path(p["file"]).name for p in points or [] if isinstance(p, dict) and isinstance(p.get("file"), str)}
    return {out / "architectures" / n for n in names if re.fullmatch(r"arch-\d+\.json", n)}


def format_result(result: dict[str, Any]) -> str:
    lines = [f"{result['protocol']} protocol, {result['method']} search of {result['run']}: "
             f"{len(result['points'])} points"]
    if result["truth"] is None:
        lines.append("no truth given: the scored architectures are in architectures/ of --out; train each (ista-nas "
                     "train --genotype FILE) and rerun with --truth RUN..., or give --benchmark")
    elif result["kendall_tau"] is None:
        lines.append(f"Kendall tau and Spearman rho are undefined: {result['undefined']}")
    else:
        lines.append(f"Kendall tau {result['kendall_tau']:.3f} (p={result['kendall_p']:.3g})  Spearman rho "
                     f"{result['spearman_rho']:.3f} (p={result['spearman_p']:.3g}); truth: {result['truth']}")
    for name in PROXIES:
        base = result.get("baselines", {}).get(name)
        if base is not None:
            sp = base["spread"]
            lines.append(f"baseline, {name} alone: " + ("undefined" if base["kendall_tau"] is None else
                         f"Kendall tau {base['kendall_tau']:.3f}  Spearman rho {base['spearman_rho']:.3f}")
                         + f" (values: mean {sp['mean']:.4g}, std {sp['std']:.3g}, range {sp['min']:.4g}-"
                           f"{sp['max']:.4g})")
    lines.append(format_spread(result["score_spread"]))
    return "\n".join(lines)


def format_spread(sp: dict[str, Any]) -> str:
    """One line: the scores' spread beside chance and, where known, one score's noise."""
    noise = f"; one score's binomial s.e. {sp['binomial_se']:.2f} on {sp['held_out']} images" \
        if "binomial_se" in sp else ""
    chance = "unknown" if sp["chance"] is None else f"{sp['chance']:.2f}"
    return (f"search scores: mean {sp['mean']:.2f}, std {sp['std']:.2f}, range {sp['min']:.2f}-{sp['max']:.2f} "
            f"(chance {chance}{noise})")

