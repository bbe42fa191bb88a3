"""The ISTA-NAS search supernet on the DARTS cell space.

Each cell keeps every candidate (predecessor, op) of every intermediate node as a module, because the
supports move between epochs, but its forward pass evaluates only the candidates in the current support:
s per node (8 op calls per cell at s=2 instead of 98 for the dense DARTS supernet). The support is read
from a host-side cache, so building the computation graph needs no device synchronisation.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..genotype import Genotype
from ..ops import OPS, PRIMITIVES, FactorizedReduce, ReLUConvBN
from ..sparse_coding import SparseCode

NORMAL, REDUCE = 0, 1


def candidate(index: int) -> tuple[int, str]:
    """Candidate index k of a node's z -> (predecessor k // 7, op name k % 7), as in the official code."""
    return index // len(PRIMITIVES), PRIMITIVES[index % len(PRIMITIVES)]


class SparseCell(nn.Module):
    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 affine: bool = False):
        super().__init__()
        self.reduction = reduction
        self.pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
        self.pre1 = ReLUConvBN(c_p, c, 1, 1, 0, affine)
        self.nodes = nn.ModuleList()
        for i in range(steps):
            ops = nn.ModuleList()
            for k in range((i + 2) * len(PRIMITIVES)):
                pred, name = candidate(k)
                op = OPS[name](c, 2 if reduction and pred < 2 else 1, affine)
                if "pool" in name:
                    # A BN after the parameter-free pool puts its output on the conv ops' scale, so the
                    # architecture weights compare like with like (the official search code does the same).
                    op = nn.Sequential(op, nn.BatchNorm2d(c, affine=affine))
                ops.append(op)
            self.nodes.append(ops)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, support: Sequence[Sequence[int]]) -> Tensor:
        """weights: (steps, s) relaxed weights; support: [node][k] candidate indices (host ints)."""
        states = [self.pre0(s0), self.pre1(s1)]
        for ops, idx, w in zip(self.nodes, support, weights.unbind(0)):
            w = w.unbind(0)
            out = w[0] * ops[idx[0]](states[idx[0] // len(PRIMITIVES)])
            for k in range(1, len(idx)):
                out = out + w[k] * ops[idx[k]](states[idx[k] // len(PRIMITIVES)])
            states.append(out)
        return torch.cat(states[2:], dim=1)

    def support_modules(self, support: Sequence[Sequence[int]]) -> list[nn.Module]:
        return [self.pre0, self.pre1] + [ops[k] for ops, idx in zip(self.nodes, support) for k in idx]


class SearchNetwork(nn.Module):
    """Stem + ``layers`` sparse cells (reductions at layers//3 and 2*layers//3) + global pool + linear.

    The architecture state (``self.arch``, a SparseCode over 2 cell types x ``steps`` nodes) is part of the
    module, so ``state_dict()`` and ``.to()`` cover A, b, z and the supports.
    """

    def __init__(self, channels: int = 16, layers: int = 8, num_classes: int = 10, in_channels: int = 3,
                 steps: int = 4, stem_multiplier: int = 3, proj_dims: int = 7, sparsity: int = 2,
                 lam: float = 1e-5, matrix: str = "uniform", seed: int = 0):
        super().__init__()
        self.steps = steps
        c_curr = stem_multiplier * channels
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, channels
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = layers >= 3 and i in (layers // 3, 2 * layers // 3)
            if reduction:
                c_curr *= 2
            self.cells.append(SparseCell(steps, c_pp, c_p, c_curr, reduction, reduction_prev))
            reduction_prev = reduction
            c_pp, c_p = c_p, steps * c_curr
        self.classifier = nn.Linear(c_p, num_classes)
        self.arch = SparseCode([(i + 2) * len(PRIMITIVES) for i in range(steps)], types=2, m=proj_dims,
                               s=sparsity, lam=lam, matrix=matrix, seed=seed)

    def forward(self, x: Tensor) -> Tensor:
        weights = self.arch.relaxed_weights().to(x.dtype)
        support = self.arch.support_list
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            t = REDUCE if cell.reduction else NORMAL
            s0, s1 = s1, cell(s0, s1, weights[t], support[t])
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.arch.b]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("arch.")]

    def active_weight_parameters(self) -> list[nn.Parameter]:
        """The weights the current supports use: the only ones a training step can give a gradient."""
        support = self.arch.support_list
        modules: list[nn.Module] = [self.stem, self.classifier]
        for cell in self.cells:
            modules += cell.support_modules(support[REDUCE if cell.reduction else NORMAL])
        return [p for m in modules for p in m.parameters()]

    def genotype(self) -> Genotype:
        def cell(t: int) -> tuple[tuple[str, int], ...]:
            # Within a node, list the larger |z| first (as a ranking would).
            pairs = []
            for g, idx in enumerate(self.arch.support_list[t]):
                ranked = sorted(idx, key=lambda k: -abs(float(self.arch.z[t, g, k])))
                pairs += [(candidate(k)[1], candidate(k)[0]) for k in ranked]
            return tuple(pairs)

        concat = tuple(range(2, self.steps + 2))
        return Genotype(cell(NORMAL), concat, cell(REDUCE), concat)

    def ranking(self) -> dict[str, list[list[dict]]]:
        """Per cell type and node, every candidate ranked by |z|: the search's confidence in each choice."""
        order = self.arch.ranking().tolist()
        z = self.arch.z.abs().tolist()
        out = {}
        for t, name in ((NORMAL, "normal"), (REDUCE, "reduce")):
            out[name] = [
                [{"predecessor": candidate(k)[0], "op": candidate(k)[1], "abs_z": z[t][g][k]}
                 for k in order[t][g][: self.arch.group_sizes[g]]]
                for g in range(self.steps)
            ]
        return out
