"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020): its architecture strings and the benchmark's
network (the ISTA-NAS and DARTS supernets over it are in ``networks.nb201_search``).

A cell has 4 nodes; node j sums one op applied to each earlier node i, so there are 6 edges (1<-0, 2<-0,
2<-1, 3<-0, 3<-1, 3<-2), each choosing one of 5 ops. As a sparse coding problem every edge is a decision
group: the ISTA-NAS supernets choose among the n=4 ops other than none (the space's presets keep s=2 of them
running while searching, the genotype takes the larger |z|), the DARTS supernet among all 5; one cell type is
shared by all cells. The network is the benchmark's: a 3x3 conv stem, three stages of N (``layers``) cells at
C, 2C and 4C channels joined by residual reduction blocks, BN-ReLU, global pooling and a linear classifier.
An architecture is the benchmark's string

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

(node 1's edge, then node 2's, then node 3's; ``op~i`` reads node i), parsed by ``Nb201Arch``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError
from ..ops import Chain, ReLUConvBN
from .cnn import fold_alpha

NB201_OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NB201_NODES = 4
# The cell's edges (to, from) in the string's order: 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2.
NB201_EDGES: tuple[tuple[int, int], ...] = tuple((j, i) for j in range(1, NB201_NODES) for i in range(j))
NB201_EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


@dataclass(frozen=True)
class Nb201Arch:
    """A NAS-Bench-201 cell: one op name per edge, in NB201_EDGES order."""

    ops: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> "Nb201Arch":
        """An architecture string, checked: 3 nodes, node j with j inputs ``op~i`` for i = 0..j-1."""
        if not isinstance(text, str):
            raise UserError(f"a NAS-Bench-201 architecture is a string like {NB201_EXAMPLE!r}, got "
                            f"{type(text).__name__}")
        nodes = text.split("+")
        if len(nodes) != NB201_NODES - 1:
            raise UserError(f"architecture {text!r} has {len(nodes)} nodes separated by '+', NAS-Bench-201 cells have "
                            f"{NB201_NODES - 1}; e.g. {NB201_EXAMPLE!r}")
        ops = []
        for j, node in enumerate(nodes, start=1):
            if len(node) < 2 or not node.startswith("|") or not node.endswith("|"):
                raise UserError(f"node {j} of {text!r} must be written |op~i|...|, got {node!r}")
            entries = node[1:-1].split("|")
            if len(entries) != j:
                raise UserError(f"node {j} of {text!r} needs {j} input(s) (op~0 ... op~{j - 1}), got {len(entries)}")
            for i, entry in enumerate(entries):
                op, sep, src = entry.partition("~")
                if not sep or src != str(i):
                    raise UserError(f"input {i + 1} of node {j} in {text!r} must read node {i} as 'op~{i}', got "
                                    f"{entry!r}")
                if op not in NB201_OPS:
                    raise UserError(f"unknown op {op!r} in {text!r}; NAS-Bench-201 ops are {', '.join(NB201_OPS)}")
                ops.append(op)
        return cls(tuple(ops))

    def __str__(self) -> str:
        parts, k = [], 0
        for j in range(1, NB201_NODES):
            parts.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(parts)

    def to_dict(self) -> dict[str, str]:
        return {"arch": str(self)}

    @classmethod
    def from_dict(cls, data: object, source: str = "architecture") -> "Nb201Arch":
        if not isinstance(data, dict) or set(data) != {"arch"}:
            raise UserError(f"{source}: a NAS-Bench-201 genotype is {{\"arch\": \"{NB201_EXAMPLE}\"}}")
        if not isinstance(data["arch"], str):
            raise UserError(f"{source}: its arch is not a string; write it as \"{NB201_EXAMPLE}\"")
        try:
            return cls.parse(data["arch"])
        except UserError as error:
            raise UserError(f"{source}: {error}") from None




def live_edges(has_op: Sequence[bool]) -> list[bool]:
    """Which edges (in NB201_EDGES order) can reach the cell output, given which edges carry an op other than
    ``none``. An edge into a node whose value no op reads is dead: computing it would leave its weights without
    a gradient (which DistributedDataParallel refuses) for nothing."""
    live_node = [False] * (NB201_NODES - 1) + [True]
    for j in range(NB201_NODES - 2, 0, -1):
        live_node[j] = any(has_op[k] and live_node[to] for k, (to, i) in enumerate(NB201_EDGES) if i == j)
    return [has_op[k] and live_node[to] for k, (to, _) in enumerate(NB201_EDGES)]


def edge_op(name: str, c: int, affine: bool, flavour: str = "standard") -> nn.Module:
    """An edge op at stride 1 (the benchmark's cells never change resolution); ``none`` is never called. The
    one-stage flavour ends the parameter-free ops (skip, pooling) in an affine BN too, so that every op's fixed
    weight can be absorbed into a BN (as the paper's one-stage networks do)."""
    op = _benchmark_op(name, c, affine)
    if flavour == "one-stage" and name in ("skip_connect", "avg_pool_3x3"):
        return Chain(op, nn.BatchNorm2d(c, affine=affine))
    return op


def _benchmark_op(name: str, c: int, affine: bool) -> nn.Module:
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, 0, affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, 1, affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name in ("skip_connect", "none"):
        return nn.Identity()
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class ResidualReduction(nn.Module):
    """The benchmark's stride-2 residual block between stages: two ReLU-conv-BN and an avg-pool + 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, 1, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, affine)
        # ceil_mode: odd sides (7x7 from 28x28 inputs) halve like conv_a does; even sides as in the benchmark
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def _stages(channels: int, layers: int) -> list[tuple[int, bool]]:
    """(channels, is the residual reduction) for every block of the macro network."""
    return ([(channels, False)] * layers + [(2 * channels, True)] + [(2 * channels, False)] * layers
            + [(4 * channels, True)] + [(4 * channels, False)] * layers)


class _Nb201Body(nn.Module):
    """Stem, the blocks and the head shared by the benchmark network and the supernets."""

    def __init__(self, make_cell, channels: int, layers: int, num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.blocks = nn.ModuleList()
        c_prev = channels
        for c, reduction in _stages(channels, layers):
            self.blocks.append(ResidualReduction(c_prev, c) if reduction else make_cell(c))
            c_prev = c
        self.head = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(c_prev, num_classes)
        self.drop_path_prob = 0.0  # the benchmark trains without drop-path; the trainer sets it regardless

    def run(self, x: Tensor, cell_args: tuple) -> Tensor:
        x = self.stem(x)
        for block in self.blocks:
            x = block(x) if isinstance(block, ResidualReduction) else block(x, *cell_args)
        return self.classifier(F.adaptive_avg_pool2d(self.head(x), 1).flatten(1))


class Nb201Cell(nn.Module):
    def __init__(self, arch: Nb201Arch, c: int, flavour: str = "standard"):
        super().__init__()
        # Every op of the string is built (the benchmark counts them all), but dead ones never run.
        self.live = live_edges([op != "none" for op in arch.ops])
        self.edges = nn.ModuleList(edge_op(name, c, affine=True, flavour=flavour) for name in arch.ops)
        # One-stage training: each edge's output times its fixed relaxed weight (not trained); None (and absent
        # from the state dict) otherwise. ``Nb201Network.absorbed`` folds it into the op's last BN.
        self.register_buffer("alpha", None)

    def _edge(self, k: int, x: Tensor) -> Tensor:
        out = self.edges[k](x)
        return out if self.alpha is None else out * self.alpha[k]

    def forward(self, x: Tensor) -> Tensor:
        nodes = [x]
        for j in range(1, NB201_NODES):
            terms = [self._edge(k, nodes[i]) for k, (to, i) in enumerate(NB201_EDGES) if to == j and self.live[k]]
            nodes.append(torch.stack(terms).sum(0) if len(terms) > 1 else terms[0] if terms else x.mul(0))
        return nodes[-1]


class Nb201Network(_Nb201Body):
    """The benchmark's network for one architecture (C=16, N=5 by default)."""

    def __init__(self, arch: Nb201Arch, channels: int = 16, layers: int = 5, num_classes: int = 10,
                 in_channels: int = 3, flavour: str = "standard"):
        super().__init__(lambda c: Nb201Cell(arch, c, flavour), channels, layers, num_classes, in_channels)
        self.genotype, self.flavour = arch, flavour

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, None]:
        return self.run(x, ()), None

    def forward(self, x: Tensor) -> Tensor:
        return self.run(x, ())

    def _cells(self) -> list[Nb201Cell]:
        return [block for block in self.blocks if isinstance(block, Nb201Cell)]

    def hold_op_weights(self) -> "Nb201Network":
        """Give every cell an ``alpha`` buffer, one fixed weight per edge (ones until a state dict with the
        fixed op weights is loaded): the one-stage training phase's network."""
        for cell in self._cells():
            cell.alpha = torch.ones(len(cell.edges)).to(self.classifier.weight)
        return self

    @torch.no_grad()
    def absorbed(self) -> "Nb201Network":
        """A copy with every edge's fixed weight folded into the BN that ends its op (the one-stage flavour: every
        op other than none ends in one): the plain network computing the same outputs (exactly in eval mode)."""
        net = copy.deepcopy(self)
        for cell in net._cells():  # a none edge never runs: its weight has nothing to scale
            fold_alpha(cell, [None if name == "none" else op for name, op in zip(self.genotype.ops, cell.edges)])
        return net

    def used_parameters(self) -> list[nn.Parameter]:
        """The parameters a training step gives gradients: all but those of dead edges."""
        dead = {id(p) for cell in self._cells() for live, edge in zip(cell.live, cell.edges) if not live
                for p in edge.parameters()}
        return [p for p in self.parameters() if id(p) not in dead]
