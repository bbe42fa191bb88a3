"""The supernets of the NAS-Bench-201 space (its architecture strings and the benchmark's network are in
``networks.nb201``): every edge holds all 5 ops and runs the supported ones, weighted. One decision group per
edge, one cell type shared by all cells; ISTA-NAS's sparse code chooses among the 4 ops other than none
(``Nb201SearchNetwork``; its one-stage flavour, ``one_stage=True``, is the target network itself), DARTS's
softmax among all 5 (the subclass ``Nb201DenseSearchNetwork``), as the DARTS cell space's supernets are built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from ..ops import weighted
from ..sparse_coding import CodeSettings, SparseCode, scale_weights
from .cnn import transplant
from .dense import DenseCode
from .nb201 import NB201_EDGES, NB201_NODES, NB201_OPS, Nb201Arch, Nb201Network, ResidualReduction, _Nb201Body, \
    edge_op, live_edges


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
            nn.ModuleList(edge_op(name, c, affine, flavour) for name in NB201_OPS) for _ in NB201_EDGES)

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
    never leave it. The DARTS baseline (``Nb201DenseSearchNetwork``) weighs all 5 ops, ``none`` included, as
    the benchmark's DARTS baseline does.

    ``one_stage``: the target network of the one-stage search, its ops those of the one-stage flavour network.
    An edge searches with its whole support (s ops mixed as ``weight_scale`` says); once frozen it keeps only
    the op of largest |z| (the genotype's), weighed as the scale weighs a support of one, so that when every
    edge froze the supernet is the discrete network of its genotype (``discrete``).
    """

    candidates: tuple[str, ...] = tuple(op for op in NB201_OPS if op != "none")  # what a decision chooses among

    def __init__(self, channels: int = 16, layers: int = 5, num_classes: int = 10, in_channels: int = 3,
                 proj_dims: int = 3, sparsity: int = 1, lam: float = CodeSettings.lam,
                 matrix: str = CodeSettings.matrix, seed: int = 0, arch_init: float = CodeSettings.arch_init,
                 weight_scale: str = CodeSettings.weight_scale, one_stage: bool = False):
        flavour = "one-stage" if one_stage else "standard"
        super().__init__(lambda c: Nb201SearchCell(c, flavour), channels, layers, num_classes, in_channels)
        self.shape = dict(channels=channels, layers=layers, num_classes=num_classes, in_channels=in_channels)
        self.op_ids = [NB201_OPS.index(op) for op in self.candidates]  # candidate index -> the cell's op index
        groups = [len(self.candidates)] * len(NB201_EDGES)
        self.arch = self._code(groups, seed, proj_dims, sparsity, lam, matrix, arch_init)
        self.one_stage = one_stage
        self.weight_scale = weight_scale
        self._kept: list[list[bool]] | None = None  # host-side cache of keep(); None: to be read from the buffers
        self._kept_mask: Tensor | None = None  # keep() as a tensor on the network's device, for multipliers()
        self.register_load_state_dict_post_hook(lambda module, _keys: module.forget_kept())

    def _code(self, groups: list[int], seed: int, proj_dims: int, sparsity: int, lam: float, matrix: str,
              arch_init: float) -> nn.Module:
        """The architecture state: ISTA-NAS's sparse code over the edges."""
        return SparseCode(groups, types=1, m=proj_dims, s=sparsity, lam=lam, matrix=matrix, seed=seed,
                          init_scale=arch_init)

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
            frozen, top = self.arch.frozen[0].tolist(), self.arch.lead[0].tolist()
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
        return net, transplant(net, pairs)

    def group_name(self, t: int, g: int) -> str:
        to, i = NB201_EDGES[g]
        return f"edge{to}<-{i}"

    score_name = "abs_z"  # what ``ranking`` orders the candidates by

    def _scores(self) -> Tensor:
        """(edges, candidates): |z|."""
        return self.arch.z.detach()[0].abs().cpu()

    def genotype(self) -> Nb201Arch:
        """Per edge the candidate its support leads with: the largest |z| (the support at s=1), or under a budget
        the one the budget's choice holds (``SparseCode.lead``)."""
        return Nb201Arch(tuple(self.candidates[k] for k in self.arch.lead[0].tolist()))

    def ranking(self) -> dict[str, list[list[dict]]]:
        scores = self._scores()
        return {"cell": [[{"edge": self.group_name(0, g), "op": self.candidates[k], self.score_name: float(row[k])}
                          for k in row.argsort(descending=True, stable=True).tolist()]
                         for g, row in enumerate(scores)]}


class Nb201DenseSearchNetwork(Nb201SearchNetwork):
    """The DARTS baseline's supernet of the space: every edge weighs all 5 ops, ``none`` included, by
    softmax(alpha), as the benchmark's DARTS baseline does (the sparse code's settings do not apply)."""

    candidates = NB201_OPS
    score_name = "weight"

    def __init__(self, channels: int = 16, layers: int = 5, num_classes: int = 10, in_channels: int = 3,
                 seed: int = 0):
        super().__init__(channels, layers, num_classes, in_channels, seed=seed)

    def _code(self, groups: list[int], seed: int, *_: object) -> nn.Module:
        """The architecture state: DARTS's alpha over every op of every edge."""
        return DenseCode(groups, block=len(self.candidates), types=1, seed=seed)

    def multipliers(self) -> Tensor:
        return self.arch.relaxed_weights()[0]

    def _scores(self) -> Tensor:
        """(edges, candidates): the softmax weights."""
        return self.arch.relaxed_weights().detach()[0].cpu()

    # A budget's choice (``methods.budget.constrain``): from the weights (edges, candidates) and this rule's choice,
    # one candidate per edge, within the budget.
    chooser: Callable[[Tensor, list[tuple[int, ...]]], list[tuple[int, ...]]] | None = None

    def genotype(self) -> Nb201Arch:
        """The largest softmax weight per edge, "none" included, as the benchmark's DARTS baseline derives it; ties
        go to the earlier op. Under a budget (``chooser``), the ops within it of the largest total weight."""
        scores = self._scores()
        top = [(int(row.argsort(descending=True, stable=True)[0]),) for row in scores]
        if self.chooser is not None:
            top = self.chooser(scores, top)
        return Nb201Arch(tuple(self.candidates[k] for (k,) in top))
