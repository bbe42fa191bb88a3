"""The NAS-Bench-201 search space (Dong & Yang, ICLR 2020): its architecture strings, the benchmark's network
and the ISTA-NAS / DARTS supernets over it.

A cell has 4 nodes; node j sums one op applied to each earlier node i, so there are 6 edges (1<-0, 2<-0,
2<-1, 3<-0, 3<-1, 3<-2), each choosing one of 5 ops. As a sparse coding problem every edge is a decision
group of n=5 candidates with sparsity s=1, and one cell type is shared by all cells. The network is the
benchmark's: a 3x3 conv stem, three stages of N cells at C, 2C and 4C channels joined by residual reduction
blocks, BN-ReLU, global pooling and a linear classifier. An architecture is the benchmark's string

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
from ..ops import Chain, weighted
from ..sparse_coding import SparseCode, scale_weights
from .cnn import fold_alpha
from .dense import DenseCode

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
        return cls.parse(data["arch"])




def live_edges(has_op: Sequence[bool]) -> list[bool]:
    """Which edges (in NB201_EDGES order) can reach the cell output, given which edges carry an op other than
    ``none``. An edge into a node whose value no op reads is dead: computing it would leave its weights without
    a gradient (which DistributedDataParallel refuses) for nothing."""
    live_node = [False] * (NB201_NODES - 1) + [True]
    for j in range(NB201_NODES - 2, 0, -1):
        live_node[j] = any(has_op[k] and live_node[to] for k, (to, i) in enumerate(NB201_EDGES) if i == j)
    return [has_op[k] and live_node[to] for k, (to, _) in enumerate(NB201_EDGES)]


class ReLUConvBN(Chain):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


def build_op(name: str, c: int, affine: bool, flavour: str = "standard") -> nn.Module:
    """An edge op at stride 1 (the benchmark's cells never change resolution); ``none`` is never called. The
    one-stage flavour ends the parameter-free ops (skip, pooling) in an affine BN too, so that every op's fixed
    weight can be absorbed into a BN (as the paper's one-stage networks do)."""
    op = _benchmark_op(name, c, affine)
    if flavour == "one-stage" and name in ("skip_connect", "avg_pool_3x3"):
        return Chain(op, nn.BatchNorm2d(c, affine=affine))
    return op


def _benchmark_op(name: str, c: int, affine: bool) -> nn.Module:
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1, affine)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1, affine)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    if name in ("skip_connect", "none"):
        return nn.Identity()
    raise ValueError(f"unknown NAS-Bench-201 op {name!r}")


class ResidualReduction(nn.Module):
    """The benchmark's stride-2 residual block between stages: two ReLU-conv-BN and an avg-pool + 1x1 shortcut."""

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, affine)
        # ceil_mode: odd sides (7x7 from 28x28 inputs) halve like conv_a does; even sides as in the benchmark
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.shortcut(x) + self.conv_b(self.conv_a(x))


def _stages(channels: int, cells: int) -> list[tuple[int, bool]]:
    """(channels, is the residual reduction) for every block of the macro network."""
    return ([(channels, False)] * cells + [(2 * channels, True)] + [(2 * channels, False)] * cells
            + [(4 * channels, True)] + [(4 * channels, False)] * cells)


class _Nb201Body(nn.Module):
    """Stem, the blocks and the head shared by the benchmark network and the supernets."""

    def __init__(self, make_cell, channels: int, cells: int, num_classes: int, in_channels: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.blocks = nn.ModuleList()
        c_prev = channels
        for c, reduction in _stages(channels, cells):
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
        self.edges = nn.ModuleList(build_op(name, c, affine=True, flavour=flavour) for name in arch.ops)
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

    def __init__(self, arch: Nb201Arch, channels: int = 16, cells: int = 5, num_classes: int = 10,
                 in_channels: int = 3, flavour: str = "standard"):
        super().__init__(lambda c: Nb201Cell(arch, c, flavour), channels, cells, num_classes, in_channels)
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


def _runs(op: int | None) -> bool:
    return op is not None and NB201_OPS[op] != "none"


class Nb201SearchCell(nn.Module):
    """Every candidate op of every edge; ``forward`` runs only the supported ones, weighted ("none" and the
    ops a frozen one-stage edge dropped, given as None, add 0). Two-stage and DARTS: BNs without affine
    parameters; one-stage (``flavour``): the target network's ops, an affine BN ending each."""

    def __init__(self, c: int, flavour: str = "standard"):
        super().__init__()
        affine = flavour == "one-stage"
        self.edges = nn.ModuleList(
            nn.ModuleList(build_op(name, c, affine, flavour) for name in NB201_OPS) for _ in NB201_EDGES)

    def forward(self, x: Tensor, weights: Tensor, support: Sequence[Sequence[int | None]]) -> Tensor:
        live = live_edges([any(_runs(op) for op in ops) for ops in support])
        nodes = [x]
        for j in range(1, NB201_NODES):
            out = None
            for k, (to, i) in enumerate(NB201_EDGES):
                if to != j or not live[k]:
                    continue
                for w, op in zip(weights[k].unbind(0), support[k]):
                    if not _runs(op):
                        continue
                    term = weighted(self.edges[k][op], nodes[i], w)
                    out = term if out is None else out + term
            nodes.append(out if out is not None else x.mul(0))
        return nodes[-1]


class Nb201SearchNetwork(_Nb201Body):
    """The NAS-Bench-201 supernet: one decision group per edge, one cell type shared by all cells.

    ISTA-NAS (sparse) chooses among the 4 ops other than ``none`` (n=4, s=1), as the paper removed ``none``
    from the DARTS space: a ``none`` in the support would give b no gradient for its edge, so the edge could
    never leave it. The DARTS baseline (``dense``) weighs all 5 ops, ``none`` included, as the benchmark's
    DARTS baseline does.

    ``one_stage``: the target network of the one-stage search, its ops those of the one-stage flavour network.
    An edge searches with its whole support (s ops mixed as ``weight_scale`` says); once frozen it keeps only
    the op of largest |z| (the genotype's), weighed as the scale weighs a support of one, so that when every
    edge froze the supernet is the discrete network of its genotype (``discrete``).
    """

    def __init__(self, channels: int = 16, cells: int = 5, num_classes: int = 10, in_channels: int = 3,
                 proj_dims: int = 3, sparsity: int = 1, lam: float = 1e-5, matrix: str = "uniform", seed: int = 0,
                 dense: bool = False, arch_init: float = 1e-3, weight_scale: str = "raw", one_stage: bool = False):
        flavour = "one-stage" if one_stage else "standard"
        super().__init__(lambda c: Nb201SearchCell(c, flavour), channels, cells, num_classes, in_channels)
        self.shape = dict(channels=channels, cells=cells, num_classes=num_classes, in_channels=in_channels)
        self.candidates = NB201_OPS if dense else tuple(op for op in NB201_OPS if op != "none")
        self.op_ids = [NB201_OPS.index(op) for op in self.candidates]  # candidate index -> the cell's op index
        groups = [len(self.candidates)] * len(NB201_EDGES)
        self.arch = (DenseCode(groups, block=len(self.candidates), types=1, seed=seed) if dense else
                     SparseCode(groups, types=1, m=proj_dims, s=sparsity, lam=lam, matrix=matrix, seed=seed,
                                init_scale=arch_init))
        self.dense, self.one_stage = dense, one_stage
        self.weight_scale = weight_scale
        self._kept: list[list[bool]] | None = None  # host-side cache of keep(); None: to be read from the buffers
        self._kept_mask: Tensor | None = None  # keep() as a tensor on the network's device, for multipliers()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.forget_kept())

    def forget_kept(self) -> None:
        """Drop the host-side cache of which ops the frozen edges keep (after the architecture state changed)."""
        self._kept = self._kept_mask = None

    def freeze(self, groups: Tensor) -> None:
        """One-stage: freeze the (1, edges) ``groups`` (``SparseCode.freeze``); each keeps its op of largest |z|."""
        self.arch.freeze(groups)
        self.forget_kept()

    def keep(self) -> list[list[bool]]:
        """Per edge and support position, whether that op runs: all of the support, but on a frozen edge of the
        one-stage supernet only the op of largest |z|. Host-side (read from the buffers once per freeze)."""
        if not self.one_stage:
            return [[True] * len(ops) for ops in self.arch.support_list[0]]
        if self._kept is None:
            frozen, top = self.arch.frozen[0].tolist(), self.arch.ranking()[0, :, 0].tolist()
            self._kept = [[not frozen[k] or c == top[k] for c in ops]
                          for k, ops in enumerate(self.arch.support_list[0])]
        return self._kept

    def _support_ops(self) -> list[list[int | None]]:
        """Each edge's supported ops (the cell's op indices), None where a frozen edge dropped one."""
        return [[self.op_ids[c] if kept else None for c, kept in zip(group, keep)]
                for group, keep in zip(self.arch.support_list[0], self.keep())]

    def multipliers(self) -> Tensor:
        """(edges, s): each supported op's output multiplier (0 for ops that do not run)."""
        weights = self.arch.relaxed_weights()[0]
        if self.dense:
            return weights
        if not self.one_stage:
            return scale_weights(weights, self.weight_scale)
        if self._kept_mask is None or self._kept_mask.device != weights.device:
            self._kept_mask = torch.tensor(self.keep(), device=weights.device)  # once per freeze, not per step
        return scale_weights(weights, self.weight_scale, self._kept_mask)

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, None]:
        return self.run(x, (self.multipliers().to(x.dtype), self._support_ops())), None

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_aux(x)[0]

    def forward_fixed(self, x: Tensor, arch: Nb201Arch) -> Tensor:
        """The logits of ``arch``'s network with the supernet's shared weights: its ops with unit weights,
        whatever the architecture state holds (scoring architectures with a trained supernet)."""
        weights = torch.ones(len(NB201_EDGES), 1, dtype=x.dtype, device=x.device)
        return self.run(x, (weights, [[NB201_OPS.index(op)] for op in arch.ops]))

    def arch_parameters(self) -> list[nn.Parameter]:
        return list(self.arch.parameters())

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("arch.")]

    def active_weight_parameters(self) -> list[nn.Parameter]:
        support = self._support_ops()
        live = live_edges([any(_runs(op) for op in ops) for ops in support])
        modules: list[nn.Module] = [self.stem, self.head, self.classifier]
        for block in self.blocks:
            if isinstance(block, ResidualReduction):
                modules.append(block)
            else:
                modules += [block.edges[k][op] for k, ops in enumerate(support) if live[k] for op in ops if _runs(op)]
        return [p for m in modules for p in m.parameters()]

    def op_bn_parameters(self, t: int, g: int, candidates: Sequence[int] | None = None) -> list[nn.Parameter]:
        """The affine parameters of the BNs inside edge g's ``candidates`` (all by default), in every cell."""
        ops = [self.op_ids[c] for c in (range(len(self.candidates)) if candidates is None else candidates)]
        return [p for cell in self._search_cells() for op in ops for m in cell.edges[g][op].modules()
                if isinstance(m, nn.BatchNorm2d) for p in m.parameters()]

    def held_candidates(self, t: int, g: int) -> list[int]:
        """The candidates edge g runs (once frozen: the one it keeps)."""
        return [c for c, kept in zip(self.arch.support_list[t][g], self.keep()[g]) if kept]

    def _search_cells(self) -> list[Nb201SearchCell]:
        return [block for block in self.blocks if isinstance(block, Nb201SearchCell)]

    @torch.no_grad()
    def discrete(self) -> tuple[Nb201Network, dict[str, nn.Parameter]]:
        """The one-stage flavour network of the genotype, each edge's output times its multiplier (fixed, the
        cells' ``alpha`` buffers), and for each of its parameter names the supernet parameter it was copied
        from. Once every edge froze (or at s=1) it computes what this supernet computes."""
        if not self.one_stage:
            raise ValueError("only a one-stage supernet (affine BN ending every op) becomes the one-stage network")
        genotype = self.genotype()
        net = Nb201Network(genotype, flavour="one-stage", **self.shape).hold_op_weights()
        net.to(device=self.arch.b.device, dtype=self.arch.b.dtype)
        pairs: list[tuple[nn.Module, nn.Module]] = [(self.stem, net.stem), (self.head, net.head),
                                                    (self.classifier, net.classifier)]
        multipliers, support = self.multipliers(), self.arch.support_list[0]
        alpha = torch.stack([multipliers[k, support[k].index(self.candidates.index(op))]
                             for k, op in enumerate(genotype.ops)]).detach().clone()
        for block, target in zip(self.blocks, net.blocks):
            if isinstance(block, ResidualReduction):
                pairs.append((block, target))
                continue
            pairs += [(block.edges[k][NB201_OPS.index(op)], target.edges[k]) for k, op in enumerate(genotype.ops)]
            target.alpha = alpha.clone()
        for source, dest in pairs:
            dest.load_state_dict(source.state_dict())
        names = {id(q): name for name, q in net.named_parameters()}
        return net, {names[id(q)]: p for source, dest in pairs for p, q in zip(source.parameters(), dest.parameters())}

    def group_name(self, t: int, g: int) -> str:
        to, i = NB201_EDGES[g]
        return f"edge{to}<-{i}"

    def _scores(self) -> Tensor:
        """(edges, candidates): |z| for ISTA-NAS, the softmax weights for DARTS."""
        if self.dense:
            return self.arch.relaxed_weights().detach()[0].cpu()
        return self.arch.z.detach()[0].abs().cpu()

    def genotype(self) -> Nb201Arch:
        """ISTA-NAS: per edge the candidate with the largest |z| (the support at s=1). DARTS: the largest softmax
        weight, "none" included, as the benchmark's DARTS baseline derives it; ties go to the earlier op."""
        if not self.dense:
            return Nb201Arch(tuple(self.candidates[int(order[0])] for order in self.arch.ranking()[0]))
        scores = self._scores()
        return Nb201Arch(tuple(self.candidates[int(row.argsort(descending=True, stable=True)[0])] for row in scores))

    def ranking(self) -> dict[str, list[list[dict]]]:
        key = "weight" if self.dense else "abs_z"
        scores = self._scores()
        return {"cell": [[{"edge": self.group_name(0, g), "op": self.candidates[k], key: float(row[k])}
                          for k in row.argsort(descending=True, stable=True).tolist()]
                         for g, row in enumerate(scores)]}
