"""The DARTS cell space (the paper's): a normal and a reduction cell of ``nodes`` intermediate nodes; one
decision group per node, choosing 2 of its (i + 2) x 7 (predecessor, op) candidates. Its genotype is
``genotype.Genotype``; its published cells are in ``published``."""

from __future__ import annotations

import functools
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..diagram import OP_COLOURS, draw_graph
from ..errors import UserError
from ..fields import Rule, Settings, setting
from ..genotype import Genotype
from ..limits import MAX_NODES
from ..costs import AdditiveCost
from ..networks.cnn import Network, build_op, count_parameters, stem_for
from ..networks.dense import DenseSearchNetwork
from ..networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet
from ..networks.search_cnn import SearchNetwork
from ..ops import PRIMITIVES
from ..published import PUBLISHED
from .base import CostSize, LatencyProbes, RetrainSize, SearchSpace, TargetSearch


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
        stem = stem or stem_for(side)
        net = Network(genotype, channels=channels, layers=layers, num_classes=classes, in_channels=in_channels,
                      auxiliary=auxiliary, stem=stem)
        return net, stem, genotype.flavour

    # --- costs (search under a budget) ---
    exact_budgets = ("params", "flops", "latency")  # latency: a table ista-nas latency --space darts measured
    sized_costs = True

    def cost_size(self, cfg: Any, variant: str, shape: tuple[int, int, int]) -> CostSize:
        """Two-stage and DARTS: the network the found cell is retrained at (--budget-channels x
        --budget-layers); one-stage: the network it trains (--channels x --layers, one-stage ops)."""
        classes, in_channels, side = shape
        stem = cfg.stem or stem_for(side)
        if variant == "target":
            return CostSize(cfg.channels, cfg.layers, cfg.nodes, classes, in_channels, side, stem, "one-stage")
        return CostSize(cfg.budget_channels, cfg.budget_layers, cfg.nodes, classes, in_channels, side, stem,
                        "standard")

    def cost_model(self, name: str, size: CostSize | None = None) -> AdditiveCost:
        """Parameters (M) or FLOPs (M, torch's count: a multiply-add is 2) of the network ``size`` describes
        (auxiliary head excluded), exact per (cell type, node, (input, op)) candidate: every op is its own module
        whatever the other candidates are, and its input's shape is fixed by its cell's place in the network
        (a reduction cell's ops on c_{k-2} and c_{k-1} have stride 2). Groups: the normal cell's nodes, then the
        reduction cell's; candidate k of node i is (input k // 7, op k % 7), as the supernets number them."""
        if size is None:
            raise ValueError("the DARTS cell's costs depend on the network: give its size")
        return _darts_costs(name, size)

    def latency_probes(self, size: CostSize | None) -> LatencyProbes:
        """A candidate's ops run alike in every node of its cell type given its op and its input's kind (a
        reduction cell's c_{k-2} and c_{k-1} at stride 2, its nodes at stride 1; all alike in a normal cell). The
        reference cell holds skip connections from c_{k-2} and c_{k-1} in every node (in a reduction cell:
        factorized reductions); a probe puts the op in their place (on the nodes' own inputs: in the first two
        places from node 1 on), in the cells of one type. Costs are relative to the reference's candidates
        (a reduction cell's identity skip on a node costs less than the reference's factorized reduction: a
        negative cost)."""
        if size is None:
            raise ValueError("the DARTS cell's latency depends on the network: give its size")
        ops, nodes, skip = len(PRIMITIVES), size.nodes, PRIMITIVES.index("skip_connect")
        reference = [(skip, ops + skip)] * (2 * nodes)
        classes = [[(t, t == 1 and k // ops < 2, k % ops) for k in range((i + 2) * ops)]
                   for t in range(2) for i in range(nodes)]
        probes: dict[Any, tuple[list[Any], int]] = {}
        for t, strided in ((0, False), (1, True), (1, False)):
            for op in range(ops):
                if not strided and t == 1 or op != skip:
                    choice, count = list(reference), 0
                    for i in range(nodes):
                        inputs = [2, 3][:i] if t == 1 and not strided else [0, 1]
                        held = [p * ops + op for p in inputs] + [p * ops + skip for p in (0, 1)][len(inputs):]
                        choice[t * nodes + i], count = tuple(sorted(held)), count + len(inputs)
                    if count:
                        probes[(t, strided, op)] = choice, count

        def network(choice: list[Any]) -> nn.Module:
            genotype = self.from_choice(choice)
            genotype = Genotype(genotype.normal, genotype.normal_concat, genotype.reduce, genotype.reduce_concat,
                                size.flavour)
            return Network(genotype, size.channels, size.layers, size.classes, size.in_channels, auxiliary=False,
                           stem=size.stem)

        return LatencyProbes(reference, classes, probes, network, (size.in_channels, size.side), size)

    def budget_picks(self, cfg: Any, dense: bool) -> tuple[int, list[list[tuple[int, ...]]] | None]:
        """ISTA-NAS holds its support (--sparsity candidates per node); DARTS two candidates of distinct inputs
        (its rule: the two strongest inputs, each with its strongest op)."""
        if not dense:
            return cfg.sparsity, None
        ops = len(PRIMITIVES)
        groups = [[(a, b) for a in range(n) for b in range(a + 1, n) if a // ops != b // ops]
                  for n in ((i + 2) * ops for i in range(cfg.nodes))]
        return 2, groups * 2

    def choice(self, genotype: Genotype) -> list[tuple[int, ...]]:
        return [tuple(sorted(pred * len(PRIMITIVES) + PRIMITIVES.index(op) for op, pred in pairs[2 * i: 2 * i + 2]))
                for pairs in (genotype.normal, genotype.reduce) for i in range(len(pairs) // 2)]

    def from_choice(self, choice: Any) -> Genotype:
        half = len(choice) // 2

        def cell(groups: Any) -> tuple[tuple[str, int], ...]:
            return tuple((PRIMITIVES[k % len(PRIMITIVES)], k // len(PRIMITIVES)) for group in groups for k in group)

        concat = tuple(range(2, half + 2))
        return Genotype(cell(choice[:half]), concat, cell(choice[half:]), concat)

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


@functools.lru_cache(maxsize=16)
def _darts_costs(name: str, size: CostSize) -> AdditiveCost:
    """``DartsSpace.cost_model``: the network of a reference cell (every node: skip connections from c_{k-2} and
    c_{k-1}) gives the shape each cell's ops see and, less its ops' costs, the base; each candidate's cost is
    its op's, counted alone on that shape in every cell of its type."""
    ops, nodes = len(PRIMITIVES), size.nodes
    pairs = tuple(("skip_connect", pred) for _ in range(nodes) for pred in (0, 1))
    concat = tuple(range(2, nodes + 2))
    reference = Genotype(pairs, concat, pairs, concat, size.flavour)
    with torch.device("meta"):
        net = Network(reference, size.channels, size.layers, size.classes, size.in_channels, auxiliary=False,
                      stem=size.stem)
    shapes: list[tuple[bool, tuple[int, ...]]] = []  # per cell: a reduction?, the shape its inputs' ops see
    hooks = [cell.pre0.register_forward_hook(lambda m, i, out, c=cell: shapes.append((c.reduction, tuple(out.shape))))
             for cell in net.cells]
    with torch.no_grad():
        net(torch.zeros(1, size.in_channels, size.side, size.side, device="meta"))
    for hook in hooks:
        hook.remove()

    @functools.cache
    def op_cost(op: str, c: int, stride: int, shape: tuple[int, ...]) -> tuple[float, tuple[int, ...]]:
        with torch.device("meta"):
            module = build_op(op, c, stride, size.flavour).eval()
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            out = module(torch.zeros(shape, device="meta"))
        return float(count_parameters(module) if name == "params" else counter.get_total_flops()), tuple(out.shape)

    costs = [[0.0] * ((i + 2) * ops) for _ in range(2) for i in range(nodes)]
    spent = 0.0  # the reference network's ops
    for reduction, shape in shapes:
        c = shape[1]
        node_shape = op_cost("max_pool_3x3", c, 2, shape)[1] if reduction else shape  # nodes: after the inputs' ops
        for i in range(nodes):
            row = costs[int(reduction) * nodes + i]
            for k in range(len(row)):
                pred, op = divmod(k, ops)
                stride = 2 if reduction and pred < 2 else 1
                row[k] += op_cost(PRIMITIVES[op], c, stride, shape if pred < 2 else node_shape)[0]
        spent += 2 * nodes * op_cost("skip_connect", c, 2 if reduction else 1, shape)[0]
    if name == "params":
        total = float(count_parameters(net))
    else:
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            net.eval()(torch.zeros(1, size.in_channels, size.side, size.side, device="meta"))
        total = float(counter.get_total_flops())
    unit = "M parameters" if name == "params" else "MFLOPs"
    where = (f"the {'one-stage ' if size.flavour == 'one-stage' else ''}network of C={size.channels}, "
             f"L={size.layers}, {size.classes} classes, {size.in_channels}x{size.side}x{size.side} input")
    return AdditiveCost(name, unit, (total - spent) / 1e6, tuple(tuple(v / 1e6 for v in row) for row in costs), where)
