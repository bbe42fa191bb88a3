"""The DARTS supernet (first-order baseline): every candidate op on every edge, softmax-weighted.

It reuses the sparse supernet's cells (they hold every candidate) with a "support" of all candidates, so the
two methods differ only in how the architecture is parameterised and how many ops run: 98 op calls per cell
here, 8 in ISTA-NAS at s=2.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ..genotype import Genotype
from ..ops import PRIMITIVES
from .search_cnn import NORMAL, REDUCE, SearchNetwork, candidate


class DenseCode(nn.Module):
    """DARTS's architecture parameters alpha (types, groups, edges, ops) and their per-edge softmax.

    A decision group of n candidates is n / ``block`` edges of ``block`` ops each (DARTS cell: node i has
    i + 2 edges of 7 ops; a space with one op choice per edge: each edge is its own group).
    """

    def __init__(self, group_sizes: list[int] | tuple[int, ...], block: int = len(PRIMITIVES), types: int = 2,
                 seed: int = 0, init_scale: float = 1e-3):
        super().__init__()
        if any(n % block for n in group_sizes):
            raise ValueError(f"group sizes {group_sizes} are not whole numbers of {block}-op edges")
        edges = torch.tensor([n // block for n in group_sizes])
        max_edges = int(edges.max())
        gen = torch.Generator().manual_seed(seed)
        self.alpha = nn.Parameter(init_scale * torch.randn(types, len(group_sizes), max_edges, block, generator=gen))
        self.register_buffer("edge_valid", torch.arange(max_edges) < edges.unsqueeze(-1))
        self.group_sizes = tuple(group_sizes)
        self._support = [[list(range(n)) for n in self.group_sizes] for _ in range(types)]

    @property
    def support_list(self) -> list[list[list[int]]]:
        return self._support

    def relaxed_weights(self) -> Tensor:
        """(T, G, edges * ops): softmax over the ops of each edge, zero for edges a node does not have."""
        w = torch.softmax(self.alpha, dim=-1) * self.edge_valid.unsqueeze(-1)
        return w.flatten(-2)


class DenseSearchNetwork(SearchNetwork):
    """The sparse supernet's cells with all candidates active and DARTS's alpha in place of b."""

    def _make_arch(self, steps: int, proj_dims: int, sparsity: int, lam: float, matrix: str, seed: int) -> nn.Module:
        return DenseCode([(i + 2) * len(PRIMITIVES) for i in range(steps)], seed=seed)

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.arch.alpha]

    # A budget's choice (``methods.budget.constrain``): from the weights (types x nodes, candidates) and this
    # rule's choice, two candidates of distinct inputs per node, within the budget.
    chooser: Callable[[Tensor, list[tuple[int, ...]]], list[tuple[int, ...]]] | None = None

    def genotype(self) -> Genotype:
        """DARTS's rule: per node the two edges with the strongest op, each with its strongest op (candidate
        input x 7 + op). Under a budget (``chooser``), the two candidates of distinct inputs within it of the
        largest total weight; each node's stronger candidate first."""
        weights = self.arch.relaxed_weights().detach().cpu()  # (T, G, edges x ops): softmax over each edge's ops
        ops = len(PRIMITIVES)
        top = []
        for t in (NORMAL, REDUCE):
            for node in range(self.steps):
                best_w, best_op = weights[t, node, : (node + 2) * ops].view(node + 2, ops).max(dim=-1)
                top.append(tuple(edge * ops + int(best_op[edge])
                                 for edge in best_w.argsort(descending=True, stable=True)[:2].tolist()))
        if self.chooser is not None:
            flat = weights.flatten(0, 1)
            top = [tuple(sorted(pair, key=lambda k, g=g: -float(flat[g, k])))
                   for g, pair in enumerate(self.chooser(flat, [tuple(sorted(p)) for p in top]))]
        pairs = [tuple((PRIMITIVES[k % ops], k // ops) for node in top[t * self.steps: (t + 1) * self.steps]
                       for k in node) for t in (NORMAL, REDUCE)]
        concat = tuple(range(2, self.steps + 2))
        return Genotype(pairs[NORMAL], concat, pairs[REDUCE], concat)

    def ranking(self) -> dict[str, list[list[dict]]]:
        """Per node, every (predecessor, op) ranked by its softmax weight."""
        w = self.arch.relaxed_weights().detach().cpu()
        out = {}
        for t, name in ((NORMAL, "normal"), (REDUCE, "reduce")):
            out[name] = []
            for g, n in enumerate(self.arch.group_sizes):
                order = w[t, g, :n].argsort(descending=True, stable=True).tolist()
                out[name].append([{"predecessor": candidate(k)[0], "op": candidate(k)[1], "weight": float(w[t, g, k])}
                                  for k in order])
        return out
