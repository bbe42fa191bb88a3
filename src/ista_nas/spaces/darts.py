"""The DARTS cell space (the paper's): a normal and a reduction cell of ``nodes`` intermediate nodes; one
decision group per node, choosing 2 of its (i + 2) x 7 (predecessor, op) candidates. Its genotype is
``genotype.Genotype``; its published cells are in ``published``."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from ..diagram import OP_COLOURS, draw_graph
from ..errors import UserError
from ..fields import Rule, Settings, setting
from ..genotype import Genotype
from ..limits import MAX_NODES
from ..networks.cnn import Network
from ..networks.dense import DenseSearchNetwork
from ..networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet
from ..networks.search_cnn import SearchNetwork
from ..ops import PRIMITIVES
from ..published import PUBLISHED
from .base import RetrainSize, SearchSpace, TargetSearch


@dataclass
class CellSettings(Settings):
    """The DARTS cell's own size, a setting of this space only."""

    nodes: int = setting(4, "intermediate nodes per cell of the DARTS cell space (DARTS's steps: 4)",
                         Rule(lambda v: 1 <= v <= MAX_NODES, f"in 1..{MAX_NODES}"))


def draw_cell(genotype: Genotype, cell: str, stem: str | Path) -> list[Path]:
    """Draw the ``normal`` or ``reduce`` cell into ``stem``.png and ``stem``.svg; return both paths."""
    pairs = genotype.normal if cell == "normal" else genotype.reduce
    concat = genotype.normal_concat if cell == "normal" else genotype.reduce_concat
    steps = len(pairs) // 2
    # Positions: inputs at x=0, node i at x=1.6+1.4i (zig-zag in y), output at the right.
    pos = {0: (0.0, 1.2), 1: (0.0, -1.2)}
    for i in range(steps):
        pos[i + 2] = (1.6 + 1.4 * i, 0.9 if i % 2 == 0 else -0.9)
    out_x = 1.6 + 1.4 * steps + 0.6
    pos["out"] = (out_x, 0.0)
    names = {0: "c_{k-2}", 1: "c_{k-1}", "out": "c_{k}"}
    names.update({i + 2: str(i) for i in range(steps)})
    arcs = []
    for k, (op, pred) in enumerate(pairs):
        same = pairs[2 * (k // 2)][1] == pairs[2 * (k // 2) + 1][1]
        rad = (0.25 if k % 2 == 0 else -0.25) if same else (0.12 if k % 2 == 0 else -0.12)
        arcs.append((pred, k // 2 + 2, OP_COLOURS.get(op, "black"), rad, op))
    arcs += [(node, "out", "#bbbbbb", 0.0) for node in concat]
    return draw_graph(f"{cell} cell", (2.2 + 1.5 * steps, 4.2), pos, names, (0, 1, "out"), arcs,
                      (-0.8, out_x + 0.8), (-2.0, 2.0), stem)


def _input_name(pred: int) -> str:
    return ("c_{k-2}", "c_{k-1}")[pred] if pred < 2 else f"node {pred - 2}"


class DartsSpace(SearchSpace):
    name = "darts"
    title = "the DARTS cell, the paper's"
    genotype_type = Genotype
    default_size = (36, 20)
    target = TargetSearch(checks=lambda cfg: [(cfg.sparsity == 2, "the one-stage supernet of --space darts is the "
                                                                  "DARTS-cell network, two inputs per node: use "
                                                                  f"--sparsity 2, not {cfg.sparsity}")])
    published = PUBLISHED
    settings = (CellSettings, RetrainSize)  # the DARTS cell's nodes, the size its cells are retrained at

    @staticmethod
    def _build(cls: type, cfg: Any, data: Any, **extra: Any) -> nn.Module:
        return cls(channels=cfg.channels, layers=cfg.layers, num_classes=data.num_classes, in_channels=data.channels,
                   steps=cfg.nodes, proj_dims=cfg.proj_dims, sparsity=cfg.sparsity, lam=cfg.lam, matrix=cfg.matrix,
                   seed=cfg.seed, stem=cfg.stem, arch_init=cfg.arch_init, **extra)

    def supernet(self, cfg: Any, data: Any) -> SparseSupernet:
        return self._build(SearchNetwork, cfg, data, weight_scale=cfg.weight_scale)

    def dense_supernet(self, cfg: Any, data: Any) -> DenseSupernet:
        return self._build(DenseSearchNetwork, cfg, data)

    def target_supernet(self, cfg: Any, data: Any) -> TargetSupernet:
        """One-stage: the target network's size, one-stage ops, an auxiliary head when it is weighted."""
        return self._build(SearchNetwork, cfg, data, one_stage=True, auxiliary=cfg.auxiliary_weight > 0,
                           weight_scale=cfg.weight_scale)

    def smallest_group(self, dense: bool) -> int:
        return 2 * len(PRIMITIVES)  # node 0: two inputs x the ops

    def search_size(self, cfg: Any) -> tuple[int, int]:
        # Node i chooses among its i + 2 inputs x the ops, in both cell types.
        ops = cfg.layers * cfg.nodes * (cfg.nodes + 3) // 2 * len(PRIMITIVES)
        return ops, 2 * cfg.nodes * cfg.proj_dims * (cfg.nodes + 1) * len(PRIMITIVES)

    def network(self, spec: dict[str, Any]) -> nn.Module:
        return Network(Genotype.from_dict(spec["genotype"]), channels=spec["channels"], layers=spec["layers"],
                       num_classes=spec["num_classes"], in_channels=spec["in_channels"], auxiliary=spec["auxiliary"],
                       stem=spec["stem"])

    def sized_network(self, genotype: Genotype, channels: int, layers: int, classes: int, in_channels: int,
                      side: int, stem: str | None, auxiliary: bool = True) -> tuple[nn.Module, str, str]:
        stem = stem or ("imagenet" if side >= 128 else "cifar")
        net = Network(genotype, channels=channels, layers=layers, num_classes=classes, in_channels=in_channels,
                      auxiliary=auxiliary, stem=stem)
        return net, stem, genotype.flavour

    def owns(self, data: dict[str, Any]) -> bool:
        return "normal" in data or "reduce" in data

    def groups(self, genotype: Genotype) -> dict[str, tuple[str, ...]]:
        groups = {}
        for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            for node in range(len(pairs) // 2):
                held = pairs[2 * node: 2 * node + 2]
                groups[f"{cell}/node{node}"] = tuple(sorted(f"{op}({pred})" for op, pred in held))
        return groups

    def short(self, genotype: Genotype) -> str:
        return " ".join(f"{op}:{p}" for op, p in genotype.normal)

    def describe(self, genotype: Genotype, info: dict[str, Any]) -> list[str]:
        lines = []
        for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
            lines.append(f"{cell} cell:")
            for node in range(len(pairs) // 2):
                a, b = pairs[2 * node], pairs[2 * node + 1]
                lines.append(f"  node {node}: {a[0]}({_input_name(a[1])}) + {b[0]}({_input_name(b[1])})")
        lines.append(f"flavour {genotype.flavour}; C={info['channels']}, L={info['layers']}, {info['dataset']} input "
                     f"{'x'.join(map(str, info['input']))}")
        return lines + [self.size_line(info, " (auxiliary head excluded)")]

    def sample(self, rng: random.Random, steps: int = 4) -> Genotype:
        """Per node 2 distinct candidates (predecessor, op) of its (i + 2) x 7, as the sparse search picks them."""
        def cell() -> tuple[tuple[str, int], ...]:
            picks = [k for i in range(steps) for k in rng.sample(range((i + 2) * len(PRIMITIVES)), 2)]
            return tuple((PRIMITIVES[k % len(PRIMITIVES)], k // len(PRIMITIVES)) for k in picks)

        concat = tuple(range(2, steps + 2))
        return Genotype(cell(), concat, cell(), concat)

    def sample_size(self, steps: int = 4) -> int:
        return math.prod(math.comb((i + 2) * len(PRIMITIVES), 2) for i in range(steps)) ** 2

    def draw(self, genotype: Genotype, directory: Path) -> list[Path]:
        return [p for cell in ("normal", "reduce") for p in draw_cell(genotype, cell, directory / cell)]

    def check_size(self, channels: int, layers: int, dataset: str) -> None:
        if dataset == "imagenet" and channels % 2:
            raise UserError("--channels must be at least 2 (and even for imagenet) and --layers at least 1")
