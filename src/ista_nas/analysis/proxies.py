"""Training-free scores of a cell (zero-cost proxies): the baselines a search's ranking stands beside.

Each score is computed on the network the space evaluates a cell at (``sized_network``), initialised with a
fixed seed and never trained, from one batch, written from the papers' definitions:

- ``params`` and ``flops``: the network's size (``summary``);
- ``synflow`` (Tanaka et al., NeurIPS 2020; as a proxy, Abdelfattah et al., ICLR 2021): every parameter replaced
  by its absolute value, batch norm in eval mode at its initial statistics (so it passes its input through,
  as the papers' synflow leaves batch norm out), float64, R = the sum of the network's output for one all-ones
  image; the score is the sum over every convolution and linear weight W of W * dR/dW. It reads no data;
- ``naswot`` (Mellor et al., ICML 2021): each image's binary code is the sign pattern (> 0) at the input of
  every ReLU; K[i, j] counts the units where images i and j agree; the score is log|det K|. It reads no labels;
- ``grad_norm``: the sum over every convolution and linear weight of the Euclidean norm of the gradient of the
  batch's cross-entropy loss;
- ``snip`` (Lee et al., ICLR 2019; as a proxy, Abdelfattah et al.): the sum of |W * dL/dW| over the same weights.

``naswot``, ``grad_norm`` and ``snip`` share one forward pass in training mode (batch statistics).
"""

from __future__ import annotations

import random
import statistics
import time
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

from ..benchmark import table_for
from ..engine.data import load_dataset
from ..engine.loop import resolve_device
from ..errors import UserError
from ..limits import check_seed
from ..spaces import SPACES, check_activations, check_network, get_genotype, sample_architectures, space_of
from .summary import network_summary_shaped


PROXIES = ("params", "flops", "synflow", "naswot", "grad_norm", "snip")
MAX_CELLS = 20_000  # each cell is a network built and run: more would run for days on a CPU


def _weights(net: nn.Module) -> list[Tensor]:
    return [m.weight for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def synflow(net: nn.Module, shape: tuple[int, int, int]) -> float:
    """The synaptic flow of ``net`` for inputs of ``shape`` (channels, height, width); ``net`` is changed (its
    parameters made absolute and float64): give a copy you do not need."""
    net = net.double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.abs_()
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    net(torch.ones(1, *shape, dtype=torch.float64, device=device)).sum().backward()
    return float(sum((w.detach() * w.grad).sum() for w in _weights(net) if w.grad is not None))


def batch_scores(net: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """``naswot``, ``grad_norm`` and ``snip`` of ``net`` (in training mode) from one batch ``x``, labels ``y``."""
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64, device=x.device)

    def codes(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        c = (inputs[0].detach() > 0).flatten(1).float()
        kernel.add_((c @ c.T + (1 - c) @ (1 - c).T).double())

    hooks = [m.register_forward_pre_hook(codes) for m in net.modules() if isinstance(m, nn.ReLU)]
    try:
        net.train()
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(x), y).backward()
    finally:
        for h in hooks:
            h.remove()
    weights = [w for w in _weights(net) if w.grad is not None]
    return {"naswot": float(torch.linalg.slogdet(kernel).logabsdet),
            "grad_norm": float(sum(w.grad.norm() for w in weights)),
            "snip": float(sum((w.detach() * w.grad).abs().sum() for w in weights))}


def score_cell(genotype: Any, channels: int, layers: int, batch: tuple[Tensor, Tensor], classes: int,
               seed: int = 0, names: tuple[str, ...] = PROXIES) -> dict[str, float]:
    """The ``names`` proxies of ``genotype``'s network at C x L (``classes`` outputs), from ``batch`` (images on
    the device to use, labels); the network is initialised with ``seed``."""
    x, y = batch
    in_channels, side = x.shape[1], x.shape[2]
    space = space_of(genotype)
    out: dict[str, float] = {}
    if "params" in names or "flops" in names:
        with torch.random.fork_rng(devices=[]):  # the counted network's initialisation draws from the global RNG
            size = network_summary_shaped(genotype, channels, layers, "batch", (classes, in_channels, side))
        out.update({k: float(size[k]) for k in ("params", "flops") if k in names})

    def build() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            net, _, _ = space.sized_network(genotype, channels, layers, classes, in_channels, side, None,
                                            auxiliary=False)
        return net.to(x.device)

    if {"naswot", "grad_norm", "snip"} & set(names):
        out.update({k: v for k, v in batch_scores(build(), x, y).items() if k in names})
    if "synflow" in names:
        out["synflow"] = synflow(build(), (in_channels, side, x.shape[3]))
    return {k: out[k] for k in names}


def one_batch(dataset: str, batch_size: int, seed: int, data_dir: str | None = None,
              device: str | torch.device = "cpu", network: tuple[str, int, int] | None = None
              ) -> tuple[tuple[Tensor, Tensor], int]:
    """``batch_size`` training images of ``dataset`` drawn with ``seed`` (normalised by the split's statistics,
    not augmented) with their labels, and the number of classes. With ``network`` (space, C, L), a batch whose
    activations in that network cannot fit the device is refused before it is drawn."""
    data = load_dataset(dataset, "train", data_dir)
    if batch_size > len(data):
        raise UserError(f"--batch-size {batch_size}: {dataset} has {len(data)} training images; lower it")
    if network is not None:
        check_activations(*network, batch_size, data, str(device))
    index = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:batch_size]
    mean, std = data.stats()
    x = (data.images[index].float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    return (x.to(device), data.labels[index].to(device)), len(data.classes)


def score_cells(genotypes: list[Any], channels: int, layers: int, batch: tuple[Tensor, Tensor], classes: int,
                seed: int = 0, names: tuple[str, ...] = PROXIES, desc: str = "scoring cells") -> list[dict[str, Any]]:
    """``score_cell`` of each genotype, with the seconds it took, under a progress bar."""
    rows = []
    for genotype in tqdm(genotypes, desc=desc, unit="cell", disable=None):
        start = time.perf_counter()
        rows.append({**score_cell(genotype, channels, layers, batch, classes, seed, names),
                     "seconds": time.perf_counter() - start})
    return rows


def spread(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values)}


def correlation(search: list[float], true: list[float]) -> dict[str, Any]:
    """Kendall's tau-b and Spearman's rho (with their two-sided p-values) of paired values; None where they are
    undefined (fewer than 2 points, or one side constant), with the reason."""
    from scipy import stats

    out: dict[str, Any] = {"n": len(search)}
    if len(search) < 2 or len(set(search)) < 2 or len(set(true)) < 2:
        why = ("fewer than 2 points" if len(search) < 2 else
               "the search's values are all equal" if len(set(search)) < 2 else
               "every point has the same true accuracy (e.g. the search held one architecture)")
        return {**out, "kendall_tau": None, "kendall_p": None, "spearman_rho": None, "spearman_p": None,
                "undefined": why}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's small-sample notes; the values are what they are
        tau = stats.kendalltau(search, true)
        rho = stats.spearmanr(search, true)
    return {**out, "kendall_tau": float(tau.statistic), "kendall_p": float(tau.pvalue),
            "spearman_rho": float(rho.statistic), "spearman_p": float(rho.pvalue)}


def proxy_baselines(scores: list[dict[str, Any]], true: list[float], names: tuple[str, ...]) -> dict[str, Any]:
    """Per proxy: Kendall tau and Spearman rho against ``true`` (``correlation``) and the proxy's own spread."""
    return {name: {**correlation([s[name] for s in scores], true), "spread": spread([s[name] for s in scores])}
            for name in names}


def top_picks(scores: list[dict[str, Any]], true: list[float], names: tuple[str, ...], pool: int, samples: int,
              seed: int) -> dict[str, dict[str, Any]]:
    """NASWOT's protocol: ``samples`` random pools of ``pool`` scored cells (drawn with ``seed``), the true value of
    the cell each proxy ranks first in each pool; mean and sample std over the pools (ties: the first drawn)."""
    rng = random.Random(seed)
    pools = [rng.sample(range(len(scores)), pool) for _ in range(samples)]
    out = {}
    for name in names:
        picks = [true[max(p, key=lambda i: scores[i][name])] for p in pools]
        out[name] = {"mean": statistics.fmean(picks), "std": statistics.stdev(picks) if samples > 1 else 0.0}
    best = [max(true[i] for i in p) for p in pools]
    out["best in the pool"] = {"mean": statistics.fmean(best), "std": statistics.stdev(best) if samples > 1 else 0.0}
    return out



MAX_PARAMS = 200_000_000  # a scored network beyond this would not fit a CPU's memory for one batch's backward pass


def score(cells: list[str], sample: int, sample_seed: int, space_name: str | None, dataset: str, batch_size: int,
          seed: int, channels: int | None, layers: int | None, device: str, benchmark: str | None, arch_column: str,
          metric: str | None, data_dir: str | None = None) -> dict[str, Any]:
    """``ista-nas proxies``: every proxy of each cell (``cells`` as ``get_genotype`` reads them, and ``sample``
    drawn from the op set the sparse search of ``space_name`` chooses among) on the space's evaluation network
    (default C x L), from one seeded batch of ``dataset``; with a table (``benchmark``: ``table_for``'s), each
    proxy's Kendall tau and Spearman rho against it and the table value of the cell it ranks first. Every setting
    is checked before any data is read."""
    if sample and space_name is None:
        raise UserError(f"--sample draws from a space: name it with --space ({' or '.join(SPACES)})")
    check_seed(seed)
    check_seed(sample_seed, "--sample-seed")
    genotypes = [get_genotype(c) for c in cells]
    spaces = {space_of(g).name for g in genotypes} | ({space_name} if sample else set())
    if len(spaces) > 1 or (sample and not 0 <= sample <= min(SPACES[space_name].sample_size(), MAX_CELLS)):
        raise UserError(f"score the cells of one space, and --sample between 0 and the space's {MAX_CELLS} at most")
    if not spaces:
        raise UserError("no cells to score: name cells (written architectures, genotype.json files, run "
                        "directories) or draw some with --sample K --space SPACE")
    space = SPACES[spaces.pop()]
    genotypes += sample_architectures(space.name, sample, sample_seed) if sample else []
    channels = space.default_size[0] if channels is None else channels
    layers = space.default_size[1] if layers is None else layers
    if len(genotypes) > MAX_CELLS or batch_size < 2:
        raise UserError(f"score at most {MAX_CELLS} cells, with --batch-size at least 2 (NASWOT compares images)")
    check_network(space.name, channels, layers, genotypes[0], least_channels=2)
    largest = max(space.parameter_counts(genotypes, channels, layers, 1000, 3))
    if largest > MAX_PARAMS:
        raise UserError(f"--channels {channels} --layers {layers}: a network of {largest / 1e6:.0f}M parameters; "
                        f"score networks of at most {MAX_PARAMS / 1e6:.0f}M (lower --channels or --layers)")
    table = table_for(space, benchmark, arch_column, metric)
    for g in genotypes if table is not None else []:
        table.lookup(g)  # the table's own one-line refusal of a cell it lacks
    batch, classes = one_batch(dataset, batch_size, seed, data_dir, resolve_device(device),
                               (space.name, channels, layers))
    rows = [{"arch": space.short(g), **row} for g, row in
            zip(genotypes, score_cells(genotypes, channels, layers, batch, classes, seed))]
    result: dict[str, Any] = {"network": {"channels": channels, "layers": layers, "dataset": dataset,
                                          "batch": batch_size, "seed": seed}, "cells": rows}
    if table is not None and len(rows) > 1:
        true = [table.lookup(g).value for g in genotypes]
        for row, value in zip(rows, true):
            row["true"] = value
        result.update(truth=f"{table.metric} of {table.path}", correlation=proxy_baselines(rows, true, PROXIES),
                      picks={p: true[max(range(len(rows)), key=lambda i: rows[i][p])] for p in PROXIES},
                      best=max(true))
    return result


def format_score(result: dict[str, Any]) -> str:
    net = result["network"]
    lines = [f"{len(result['cells'])} cells at C={net['channels']}, L/N={net['layers']}, initialised with seed "
             f"{net['seed']}, one batch of {net['batch']} {net['dataset']} images:",
             "  ".join(f"{p:>10}" for p in PROXIES) + "  cell"]
    for row in result["cells"][:50]:
        lines.append("  ".join(f"{row[p]:>10.4g}" for p in PROXIES) + f"  {row['arch']}"
                     + (f"  (true {row['true']:.2f})" if "true" in row else ""))
    if len(result["cells"]) > 50:
        lines.append(f"... {len(result['cells']) - 50} more (--json prints all)")
    if "correlation" in result:
        lines.append(f"against {result['truth']} (best of these cells {result['best']:.2f}):")
        for p in PROXIES:
            c = result["correlation"][p]
            tau = "undefined" if c["kendall_tau"] is None else \
                f"Kendall tau {c['kendall_tau']:.3f}  Spearman rho {c['spearman_rho']:.3f}"
            lines.append(f"  {p:>9}: {tau}; its top cell is worth {result['picks'][p]:.2f}")
    return "\n".join(lines)
