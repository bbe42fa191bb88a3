"""NAS-Bench-201 (Dong & Yang, ICLR 2020): one cell type of 4 nodes, one decision group per edge choosing 1 of
its 5 ops (ISTA-NAS among the 4 other than none); ``layers`` is N cells per stage. The architecture string
and the benchmark's network are in ``networks.nb201``, the supernets in ``networks.nb201_search``; this module
is the space's entry, with its presets and checks.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..costs import AdditiveCost
from ..diagram import OP_COLOURS, draw_graph
from ..networks.nb201 import NB201_EDGES, NB201_EXAMPLE, NB201_NODES, NB201_OPS, Nb201Arch, Nb201Network
from ..networks.nb201_search import Nb201DenseSearchNetwork, Nb201SearchNetwork
from ..networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet
from .base import Checks, LatencyProbes, SearchSpace, TargetSearch


def draw_cell(arch: Nb201Arch, stem: str | Path) -> list[Path]:
    """Draw a NAS-Bench-201 cell (nodes 0..3 in a row, one labelled arc per edge) into ``stem``.png/.svg."""
    pos = {j: (2.2 * j, 0.0) for j in range(NB201_NODES)}
    names = {0: "in", NB201_NODES - 1: "out", **{j: str(j) for j in range(1, NB201_NODES - 1)}}
    arcs = []
    for op, (to, i) in zip(arch.ops, NB201_EDGES):
        span = to - i  # neighbours: straight; longer edges: higher arcs, alternating sides
        rad = 0.0 if span == 1 else (0.45 if span == 2 else -0.4)
        arcs.append((i, to, OP_COLOURS.get(op, "black") if op != "none" else "#bbbbbb", rad, op, op == "none"))
    return draw_graph("NAS-Bench-201 cell", (8.0, 4.2), pos, names, (0, NB201_NODES - 1), arcs,
                      (-0.8, 2.2 * (NB201_NODES - 1) + 0.8), (-2.2, 2.2), stem)


class Nb201Space(SearchSpace):
    name = "nb201"
    title = "NAS-Bench-201: one op per edge of a 4-node cell"
    genotype_type = Nb201Arch
    example = NB201_EXAMPLE
    default_size = (16, 5)
    # The search: the benchmark's network (C=16, N=5) and two ops per edge competing (s=2 of n=4, m=3), the
    # genotype taking the stronger (largest |z|); b starts as in the official code (1e-3 x randn) and steps at
    # half its rate (Adam 3e-4). Each edge mixes its two ops by softmax(|alpha|): the output scale stays 1
    # whatever |b| is (the cell has no normalisation of its own: raw relaxed weights of ~1e-3 starve its
    # convolutions), the two ops train side by side and b's gradient says which should weigh more. Chosen
    # against the NAS-Bench-201 table on seeds 0-4 among the variants of docs/search-quality.md.
    _search = dict(space="nb201", proj_dims=3, sparsity=2, weight_scale="softmax", arch_lr=3e-4)
    search_presets = {
        "paper": dict(_search, channels=16, layers=5),
        # Minutes on a 2-core CPU (about 3.5 min here), a reduced-scale stand-in: CIFAR-10 (give --dataset
        # folder:PATH where torchvision cannot download it), 12,000 images (6,000 for the weights, 6,000 for b),
        # N=1, C=8, 10 epochs.
        "quick": dict(_search, dataset="cifar10", subset=12000, epochs=10, batch_size=64, lr=0.025, channels=8,
                      layers=1)}
    # The benchmark's training protocol: 200 epochs, batch 256, SGD with Nesterov momentum 0.9, lr 0.1 cosine to
    # 0, weight decay 5e-4, random crop (padding 4 on 32x32) and flip; C=16, N=5; no auxiliary head, drop-path,
    # cutout or gradient clipping.
    train_presets = {
        "paper": dict(space="nb201", channels=16, layers=5, epochs=200, batch_size=256, lr=0.1, lr_min=0.0,
                      nesterov=True, weight_decay=5e-4, cutout=0, auxiliary_weight=0.0, drop_path=0.0, grad_clip=0.0),
        # Minutes on a 2-core CPU, a reduced-scale stand-in: a small network, a subset, 3 epochs.
        "quick": dict(space="nb201", dataset="fashion-mnist", subset=5000, channels=8, layers=1, epochs=3,
                      batch_size=64, lr=0.05, lr_min=0.0, nesterov=True, weight_decay=5e-4, cutout=0,
                      auxiliary_weight=0.0, drop_path=0.0, grad_clip=0.0)}
    # One-stage (the target supernet, layered over the one-stage method's presets): the network it trains is
    # the benchmark's network of the one-stage flavour (an affine BN after skip and pooling); each edge searches
    # with s ops mixed by softmax(|alpha|) as the two-stage search does, and keeps the op of largest |z| when it
    # freezes (docs/one-stage.md). No auxiliary head, cutout, drop-path or parameter budget, as the benchmark.
    _target = dict(space="nb201", proj_dims=3, sparsity=2, weight_scale="softmax", arch_lr=1.5e-4, max_params=0.0,
                   cutout=0, auxiliary_weight=0.0, drop_path=0.0, seed=0)
    _target_presets = {
        # This project's choice (the paper ran no one-stage search here): the benchmark's network (C=16, N=5)
        # and its training protocol for the training phase (200 epochs, batch 256, SGD Nesterov lr 0.1 cosine
        # to 0, weight decay 5e-4, no gradient clipping), a search phase of at most 50 epochs at lr 0.1.
        "paper": dict(_target, dataset="cifar10", subset=0, channels=16, layers=5, epochs=200, max_search_epochs=50,
                      batch_size=256, lr=0.1, lr_min=0.0, nesterov=True, weight_decay=5e-4),
        # Minutes on a 2-core CPU, a reduced-scale stand-in at the two-stage quick preset's search budget:
        # CIFAR-10 (--dataset folder:PATH where torchvision cannot download it), 12,000 images, C=8, N=1,
        # 10 search epochs (every edge freezes by then), 5 training epochs.
        "quick": dict(_target, dataset="cifar10", subset=12000, channels=8, layers=1, epochs=5, max_search_epochs=10,
                      batch_size=64, lr=0.025, lr_min=0.0)}
    target = TargetSearch(presets=_target_presets, spec={"flavour": "one-stage"},  # a BN after skip and pooling
                          checks=lambda cfg: [(cfg.auxiliary_weight == 0, "--space nb201 has no auxiliary head: use "
                                                                          "--auxiliary-weight 0")])
    # NATS-Bench's table of the 200-epoch test accuracies (docs/consistency.md; credit in the file's header).
    builtin_table = ("nb201-accuracy.csv.gz", ("cifar10", "cifar100", "imagenet16-120"))

    @staticmethod
    def _build(cfg: Any, data: Any, one_stage: bool = False) -> nn.Module:
        return Nb201SearchNetwork(channels=cfg.channels, layers=cfg.layers, num_classes=data.num_classes,
                                  in_channels=data.channels, proj_dims=cfg.proj_dims, sparsity=cfg.sparsity,
                                  lam=cfg.lam, matrix=cfg.matrix, seed=cfg.seed, arch_init=cfg.arch_init,
                                  weight_scale=cfg.weight_scale, one_stage=one_stage)

    def supernet(self, cfg: Any, data: Any) -> SparseSupernet:
        return self._build(cfg, data)

    def dense_supernet(self, cfg: Any, data: Any) -> DenseSupernet:
        return Nb201DenseSearchNetwork(channels=cfg.channels, layers=cfg.layers, num_classes=data.num_classes,
                                       in_channels=data.channels, seed=cfg.seed)

    def target_supernet(self, cfg: Any, data: Any) -> TargetSupernet:
        """One-stage: the benchmark's network at the run's size with every op of the one-stage flavour."""
        return self._build(cfg, data, one_stage=True)

    def parameter_counts(self, genotypes: list[Nb201Arch], channels: int, layers: int, classes: int,
                         in_channels: int) -> list[int]:
        """Every op of a cell is built (dead ones too) and an edge's op is the same module whatever the other
        edges hold: a cell's count is the all-none cell's plus, per edge, its op's (one sixth of the difference
        between the all-op and the all-none cells)."""
        def count(op: str) -> int:
            return self.parameter_count(Nb201Arch((op,) * len(NB201_EDGES)), channels, layers, classes, in_channels,
                                        None)

        base = count("none")
        per_edge = {op: (count(op) - base) // len(NB201_EDGES) for op in NB201_OPS}
        return [base + sum(per_edge[op] for op in g.ops) for g in genotypes]

    def cost_model(self, name: str, size: Any = None) -> AdditiveCost:
        """Parameters (M) or FLOPs (M, torch's count: a multiply-add is 2) of the benchmark's network (C=16, N=5,
        CIFAR-10), exact per (edge, op): every op is its own module whatever the other edges hold, and all
        edges of a cell see the same input; an edge's cost is a sixth of the all-op cell's over the all-none
        cell's. (FLOPs of a cell with ``none`` edges cutting others off count the cut-off ops too.)"""
        channels, layers = self.default_size

        def count(op: str) -> float:
            arch = Nb201Arch((op,) * len(NB201_EDGES))
            if name == "params":
                return self.parameter_count(arch, channels, layers, 10, 3, None)
            net = Nb201Network(arch, channels, layers, 10, 3).eval()
            counter = FlopCounterMode(display=False)
            with counter, torch.no_grad():
                net(torch.zeros(1, 3, 32, 32))
            return counter.get_total_flops()

        base = count("none")
        per_edge = tuple((count(op) - base) / len(NB201_EDGES) / 1e6 for op in NB201_OPS)
        unit = "M parameters" if name == "params" else "MFLOPs"
        return AdditiveCost(name, unit, base / 1e6, (per_edge,) * len(NB201_EDGES),
                            f"the benchmark's network, C={channels}, N={layers}, CIFAR-10")

    exact_budgets = ("params", "flops", "latency")
    # HW-NAS-Bench's and HELP's latencies of every cell on six devices (credit in the file's header).
    builtin_latency = ("nb201-latency.csv.gz", ("pixel3", "raspi4", "eyeriss", "fpga", "gold_6226", "titan_rtx_1"))

    def latency_probes(self, size: Any = None) -> LatencyProbes:
        """Every edge of a cell sees the same input: op k is timed as the network whose every edge holds it,
        against the all-skip network (``none`` is never timed: cost 0, it runs nothing)."""
        columns = self.cost_columns(False)
        edges = len(NB201_EDGES)

        def network(choice: list[Any]) -> nn.Module:
            return self.sized_network(self.from_choice(choice), *self.default_size, 10, 3, 32, None,
                                      auxiliary=False)[0]

        return LatencyProbes([columns[0]] * edges,
                             [[k if k in columns else None for k in range(len(NB201_OPS))]] * edges,
                             {k: ([k] * edges, edges) for k in columns[1:]}, network, (3, 32))

    def cost_columns(self, dense: bool) -> list[int]:
        return [i for i, op in enumerate(NB201_OPS) if dense or op != "none"]

    def from_choice(self, choice: Any) -> Nb201Arch:
        return Nb201Arch(tuple(NB201_OPS[k] for k in choice))

    def choice(self, genotype: Nb201Arch) -> list[int]:
        return [NB201_OPS.index(op) for op in genotype.ops]

    def smallest_group(self, dense: bool) -> int:
        return len(NB201_OPS) - (not dense)  # ISTA-NAS picks among the ops other than none, DARTS among all

    def search_size(self, cfg: Any) -> tuple[int, int]:
        edges = len(NB201_EDGES)  # one decision per edge, shared by the cells of all three stages
        return 3 * cfg.layers * edges * len(NB201_OPS), edges * cfg.proj_dims * len(NB201_OPS)

    def network(self, spec: dict[str, Any]) -> nn.Module:
        return Nb201Network(Nb201Arch.from_dict(spec["genotype"]), channels=spec["channels"], layers=spec["layers"],
                            num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                            flavour=spec.get("flavour", "standard"))

    def sized_network(self, genotype: Nb201Arch, channels: int, layers: int, classes: int, in_channels: int,
                      side: int, stem: str | None, auxiliary: bool = True) -> tuple[nn.Module, str, str]:
        return Nb201Network(genotype, channels, layers, classes, in_channels), "cifar", "nb201"

    def owns(self, data: dict[str, Any]) -> bool:
        return "arch" in data

    def parse(self, text: str) -> Nb201Arch | None:
        return Nb201Arch.parse(text) if text.startswith("|") else None

    def groups(self, genotype: Nb201Arch) -> dict[str, tuple[str, ...]]:
        return {f"edge{to}<-{i}": (op,) for op, (to, i) in zip(genotype.ops, NB201_EDGES)}

    def short(self, genotype: Nb201Arch) -> str:
        return str(genotype)

    def describe(self, genotype: Nb201Arch, info: dict[str, Any]) -> list[str]:
        lines = [f"NAS-Bench-201 cell {genotype}:"]
        for j in range(1, NB201_NODES):
            inputs = [f"{op}(node {i})" for op, (to, i) in zip(genotype.ops, NB201_EDGES) if to == j]
            lines.append(f"  node {j} = {' + '.join(inputs)}")
        lines.append(f"C={info['channels']}, N={info['layers']} cells per stage, {info['dataset']} input "
                     f"{'x'.join(map(str, info['input']))}")
        return lines + [self.size_line(info)]

    def sample(self, rng: random.Random) -> Nb201Arch:
        return Nb201Arch(tuple(rng.choice(NB201_OPS[1:]) for _ in NB201_EDGES))  # "none" is no ISTA-NAS candidate

    def searched_by(self, genotype: Nb201Arch, dense: bool) -> bool:
        return dense or "none" not in genotype.ops

    def sample_size(self) -> int:
        return (len(NB201_OPS) - 1) ** len(NB201_EDGES)

    def draw(self, genotype: Nb201Arch, directory: Path) -> list[Path]:
        return draw_cell(genotype, directory / "cell")

    def evaluation_size(self, config: dict[str, Any], search: bool, fields: tuple[str, str] = ("channels", "layers")
                        ) -> tuple[int, int]:
        """A search: the benchmark's network, whatever the method (the table's values are of that network)."""
        return self.default_size if search else super().evaluation_size(config, search, fields)

    def check_search(self, cfg: Any) -> Checks:
        return [(cfg.stem == "cifar", "--space nb201 searches with the cifar stem")]

    def check_train(self, cfg: Any) -> Checks:
        return [(cfg.stem == "cifar" and not cfg.stream,
                 "--space nb201 trains the benchmark's network: the cifar stem, in-memory data (no --stream)")]
