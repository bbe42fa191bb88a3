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
from ..ops import OPS, PRIMITIVES, Chain, concat_channels, weighted
from .cnn import Network, build_op, build_stem, preprocessing, stack_cells, transplant
from ..sparse_coding import CodeSettings, SparseCode, scale_weights

NORMAL, REDUCE = 0, 1


def candidate(index: int) -> tuple[int, str]:
    """Candidate index k of a node's z -> (predecessor k // 7, op name k % 7), as in the official code."""
    return index // len(PRIMITIVES), PRIMITIVES[index % len(PRIMITIVES)]


def search_op(name: str, c: int, stride: int, one_stage: bool) -> nn.Module:
    """A candidate op of the supernet.

    Two-stage search (DARTS-style supernet): BNs without affine parameters, and a BN after each pool that puts
    its output on the conv ops' scale, so the architecture weights compare like with like (as the official
    search code does). One-stage search: exactly the target network's one-stage op (affine BNs, a BN after
    every parameter-free op), so that the trained supernet absorbs into that network.
    """
    if one_stage:
        return build_op(name, c, stride, "one-stage")
    op = OPS[name](c, stride, False)
    return Chain(op, nn.BatchNorm2d(c, affine=False)) if "pool" in name else op


class SparseCell(nn.Module):
    def __init__(self, steps: int, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool,
                 one_stage: bool = False):
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = preprocessing(c_pp, c_p, c, reduction_prev, affine=one_stage)
        self.nodes = nn.ModuleList()
        for i in range(steps):
            ops = nn.ModuleList()
            for k in range((i + 2) * len(PRIMITIVES)):
                pred, name = candidate(k)
                ops.append(search_op(name, c, 2 if reduction and pred < 2 else 1, one_stage))
            self.nodes.append(ops)

    def forward(self, s0: Tensor, s1: Tensor, weights: Tensor, support: Sequence[Sequence[int]]) -> Tensor:
        """weights: (steps, s) relaxed weights; support: [node][k] candidate indices (host ints)."""
        states = [self.pre0(s0), self.pre1(s1)]
        for ops, idx, w in zip(self.nodes, support, weights.unbind(0)):
            w = w.unbind(0)
            out = weighted(ops[idx[0]], states[idx[0] // len(PRIMITIVES)], w[0])
            for k in range(1, len(idx)):
                out = out + weighted(ops[idx[k]], states[idx[k] // len(PRIMITIVES)], w[k])
            states.append(out)
        return concat_channels(states[2:])

    def support_modules(self, support: Sequence[Sequence[int]]) -> list[nn.Module]:
        return [self.pre0, self.pre1] + [ops[k] for ops, idx in zip(self.nodes, support) for k in idx]


class SearchNetwork(nn.Module):
    """Stem + ``layers`` sparse cells (reductions at layers//3 and 2*layers//3) + global pool + linear.

    The architecture state (``self.arch``, a SparseCode over 2 cell types x ``steps`` nodes) is part of the
    module, so ``state_dict()`` and ``.to()`` cover A, b, z and the supports.
    """

    def __init__(self, channels: int = 16, layers: int = 8, num_classes: int = 10, in_channels: int = 3,
                 steps: int = 4, stem_multiplier: int = 3, proj_dims: int = CodeSettings.proj_dims,
                 sparsity: int = CodeSettings.sparsity, lam: float = CodeSettings.lam,
                 matrix: str = CodeSettings.matrix, seed: int = 0, one_stage: bool = False, auxiliary: bool = False,
                 stem: str = "cifar", arch_init: float = CodeSettings.arch_init,
                 weight_scale: str = CodeSettings.weight_scale):
        super().__init__()
        self.steps, self.one_stage, self.arch_init = steps, one_stage, arch_init
        self.weight_scale = weight_scale
        self.shape = dict(channels=channels, layers=layers, num_classes=num_classes, in_channels=in_channels,
                          stem=stem)
        self.stem, self.stem1, c_stem = build_stem(stem, in_channels, channels, stem_multiplier)
        self.aux_after = 2 * layers // 3 if auxiliary else -1

        def cell(c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> tuple[nn.Module, int]:
            return SparseCell(steps, c_pp, c_p, c, reduction, reduction_prev, one_stage), steps * c

        self.cells, self.aux_head, c_p = stack_cells(cell, layers, channels, c_stem, stem == "imagenet",
                                                     self.aux_after, num_classes)
        self.classifier = nn.Linear(c_p, num_classes)
        self.arch = self._make_arch(steps, proj_dims, sparsity, lam, matrix, seed)

    def _make_arch(self, steps: int, proj_dims: int, sparsity: int, lam: float, matrix: str, seed: int) -> nn.Module:
        """The architecture state: ISTA-NAS's compressed code (the DARTS baseline overrides this)."""
        return SparseCode([(i + 2) * len(PRIMITIVES) for i in range(steps)], types=2, m=proj_dims, s=sparsity,
                          lam=lam, matrix=matrix, seed=seed, init_scale=self.arch_init)

    def multipliers(self) -> Tensor:
        """(types, steps, s): each supported candidate's output multiplier, its relaxed weight scaled per cell
        type by ``weight_scale`` (sparse_coding.scale_weights; raw: as the official code)."""
        alpha = self.arch.relaxed_weights()
        return torch.stack([scale_weights(a, self.weight_scale) for a in alpha.unbind(0)])

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._run(x, self.multipliers().to(x.dtype), self.arch.support_list)

    def forward_fixed(self, x: Tensor, genotype: Genotype) -> Tensor:
        """The logits of ``genotype``'s network with the supernet's shared weights: its candidates with unit
        weights, whatever the architecture state holds (scoring architectures with a trained supernet)."""
        support = []
        for pairs in (genotype.normal, genotype.reduce):
            if len(pairs) != 2 * self.steps:
                raise ValueError(f"a genotype of {len(pairs) // 2} nodes, the supernet has {self.steps}")
            support.append([[pred * len(PRIMITIVES) + PRIMITIVES.index(op) for op, pred in pairs[2 * i: 2 * i + 2]]
                            for i in range(self.steps)])
        weights = torch.ones(2, self.steps, 2, dtype=x.dtype, device=x.device)
        return self._run(x, weights, support)[0]

    def _run(self, x: Tensor, weights: Tensor, support: Sequence) -> tuple[Tensor, Tensor | None]:
        s0 = self.stem(x)
        s1 = s0 if self.stem1 is None else self.stem1(s0)
        aux = None
        for i, cell in enumerate(self.cells):
            t = REDUCE if cell.reduction else NORMAL
            s0, s1 = s1, cell(s0, s1, weights[t], support[t])
            if i == self.aux_after and self.training and self.aux_head is not None:
                aux = self.aux_head(s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1)), aux

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_aux(x)[0]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.arch.b]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("arch.")]

    def active_weight_parameters(self) -> list[nn.Parameter]:
        """The weights the current supports use: the only ones a training step can give a gradient."""
        support = self.arch.support_list
        modules: list[nn.Module] = [self.stem, self.classifier] + [m for m in (self.stem1, self.aux_head) if m]
        for cell in self.cells:
            modules += cell.support_modules(support[REDUCE if cell.reduction else NORMAL])
        return [p for m in modules for p in m.parameters()]

    def freeze(self, groups: Tensor) -> None:
        """One-stage: freeze the (T, G) ``groups`` (``SparseCode.freeze``): they keep their support."""
        self.arch.freeze(groups)

    def op_bn_parameters(self, t: int, g: int, candidates: Sequence[int] | None = None) -> list[nn.Parameter]:
        """The affine parameters of the BNs inside node g's ``candidates`` (all by default), in every cell of
        type t."""
        params = []
        for cell in self.cells:
            if int(cell.reduction) == t:
                ops = cell.nodes[g] if candidates is None else [cell.nodes[g][k] for k in candidates]
                params += [p for op in ops for m in op.modules() if isinstance(m, nn.BatchNorm2d)
                           for p in m.parameters()]
        return params

    def held_candidates(self, t: int, g: int) -> list[int]:
        """The candidates node g of cell type t runs: its support."""
        return self.arch.support_list[t][g]

    def group_name(self, t: int, g: int) -> str:
        """A decision group's name in logs and metrics: the cell type and the node."""
        return f"{('normal', 'reduce')[t]}/node{g}"

    def _ordered_support(self, t: int) -> list[list[int]]:
        """Each node's support, the larger |z| first (the genotype's order)."""
        z = self.arch.z[t].abs().tolist()
        return [sorted(idx, key=lambda k: -z[g][k]) for g, idx in enumerate(self.arch.support_list[t])]

    def genotype(self) -> Genotype:
        def cell(t: int) -> tuple[tuple[str, int], ...]:
            return tuple((candidate(k)[1], candidate(k)[0]) for node in self._ordered_support(t) for k in node)

        concat = tuple(range(2, self.steps + 2))
        return Genotype(cell(NORMAL), concat, cell(REDUCE), concat, "one-stage" if self.one_stage else "standard")

    @torch.no_grad()
    def discrete(self) -> tuple[Network, dict[str, nn.Parameter]]:
        """The discrete one-stage network of the current supports, each op's output times its relaxed weight
        alpha as a fixed multiplier (the cell's ``alpha`` buffer), and for each of its parameter names the
        supernet parameter it was copied from (to carry optimiser state over). It computes what this supernet
        computes."""
        if not self.one_stage:
            raise ValueError("only a one-stage supernet (affine BN after every op) becomes the one-stage network")
        net = Network(self.genotype(), auxiliary=self.aux_head is not None, **self.shape)
        net.to(device=self.arch.b.device, dtype=self.arch.b.dtype)
        pairs: list[tuple[nn.Module, nn.Module]] = [(self.stem, net.stem), (self.classifier, net.classifier)]
        pairs += [(a, b) for a, b in ((self.stem1, net.stem1), (self.aux_head, net.aux_head)) if a is not None]
        alpha = self.multipliers()
        for cell, target in zip(self.cells, net.cells):
            t = REDUCE if cell.reduction else NORMAL
            pairs += [(cell.pre0, target.pre0), (cell.pre1, target.pre1)]
            weights = []
            for node, ranked in enumerate(self._ordered_support(t)):
                for j, k in enumerate(ranked):
                    pairs.append((cell.nodes[node][k], target.ops[2 * node + j]))
                    weights.append(alpha[t, node, self.arch.support_list[t][node].index(k)])
            target.alpha = torch.stack(weights).detach().clone()
        return net, transplant(net, pairs)

    def absorb(self) -> Network:
        """The plain discrete one-stage network with each relaxed weight folded into the BN that ends its op
        (alpha * BN(x) = BN'(x) with weight alpha * gamma and bias alpha * beta): it computes what this supernet
        computes with its current supports and weights (exactly, in eval mode)."""
        return self.discrete()[0].absorbed()

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
