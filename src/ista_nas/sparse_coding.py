"""The compressed architecture representation of ISTA-NAS (imports torch and the solver only).

Every decision group g (in the DARTS space: one intermediate node of one cell type) has an s-sparse
architecture vector z_g of length n_g, one entry per candidate. A fixed random measurement matrix A_g
(m x n_g) compresses it to b_g = A_g z_g; the m numbers of b are the only architecture parameters trained.
After each epoch z is recovered from b by LASSO and its s largest |z| entries form the support S_g.
During the epoch the candidates in S_g are weighted by one ISTA step restricted to the support,

    alpha_S = z_S + A_S^T (b - A z),      z zero outside S,

so the gradient of the loss reaches b through A_S, and nothing else is ever evaluated.

Groups of different sizes are batched in one tensor, zero-padded to the largest n.

Under a budget (``methods.budget``) a ``chooser`` picks, after each recovery, the candidates each group's
architecture holds among those that fit (``costs.best_within`` on |z|); the support is then those plus the
largest |z| of the others, up to s. Without one, the support is the s largest |z|.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from .fields import POSITIVE, Settings, at_least, one_of, setting
from .solver import LassoResult, lasso

MATRIX_KINDS = ("uniform", "gaussian")
WEIGHT_SCALES = ("raw", "mean", "softmax")


@dataclass
class CodeSettings(Settings):
    """The sparse code's settings: the settings of the ISTA-NAS methods (two-stage, one-stage), which list it."""

    why: ClassVar[str] = "ISTA-NAS's sparse code; DARTS searches softmax(alpha) instead"

    proj_dims: int = setting(7, "m, length of each node's compressed vector b (official code: 7)", at_least(1), "m")
    sparsity: int = setting(2, "s, candidates kept per node (DARTS cell: 2 inputs per node)", at_least(1), "s")
    lam: float = setting(1e-5, "l1 weight of the recovery LASSO (official code: 1e-5)", POSITIVE)
    matrix: str = setting("uniform", "measurement matrix entries: uniform U[0,1) (official) or gaussian N(0,1/m)",
                          one_of(MATRIX_KINDS))
    arch_init: float = setting(1e-3, "ISTA-NAS: standard deviation of b's random initial values, which sets the scale "
                                     "of the first recovered z and of the relaxed weights (official: 1e-3)", POSITIVE)
    weight_scale: str = setting("raw", "ISTA-NAS: raw (the relaxed weights as they are, official), mean (divided by "
                                       "their mean magnitude over the cell, not differentiated) or softmax (softmax "
                                       "of |alpha| per edge: each edge a convex mixture of its support)",
                                one_of(WEIGHT_SCALES))

    def own_checks(self) -> list[tuple[bool, str]]:
        return [(self.sparsity <= self.proj_dims,
                 f"--sparsity (s) must be at most --proj-dims (m): a LASSO solution has at most m nonzeros, got "
                 f"s={self.sparsity} > m={self.proj_dims}")]

log = logging.getLogger(__name__)


def measurement_matrices(group_sizes: Sequence[int], m: int, kind: str, generator: torch.Generator,
                         copies: int = 1) -> Tensor:
    """Random (copies, groups, m, max n) matrices, zero beyond each group's size.

    ``uniform`` draws from U[0, 1) like the official code (np.random.rand); ``gaussian`` from N(0, 1/m),
    the usual compressed-sensing choice.
    """
    n_max = max(group_sizes)
    out = torch.zeros(copies, len(group_sizes), m, n_max, dtype=torch.float64)
    for c in range(copies):
        for g, n in enumerate(group_sizes):
            if kind == "uniform":
                out[c, g, :, :n] = torch.rand(m, n, generator=generator, dtype=torch.float64)
            elif kind == "gaussian":
                out[c, g, :, :n] = torch.randn(m, n, generator=generator, dtype=torch.float64) / m**0.5
            else:
                raise ValueError(f"unknown measurement matrix kind {kind!r}; choose one of {MATRIX_KINDS}")
    return out


class SparseCode(nn.Module):
    """Measurement matrices, compressed parameters b and recovered supports for ``types x groups`` decisions.

    Buffers (saved in ``state_dict`` and moved by ``.to``): ``A`` (T, G, m, n), ``z`` (T, G, n) the last
    recovered vector, ``support`` (T, G, s) candidate indices, ``lead`` (T, G) the candidate each group's
    architecture holds first (the largest |z| unless a budget's ``chooser`` picked another). Parameter: ``b``
    (T, G, m). ``chooser`` (set by a budget; None: none): from |z| (T, G, n), the frozen groups (T, G), the
    current ``lead`` and ``support``, the (T, G, p) candidates every group's architecture holds (p <= s, frozen
    groups unchanged).
    """

    chooser: Callable[[Tensor, Tensor, Tensor, Tensor], Tensor] | None = None

    def __init__(self, group_sizes: Sequence[int], types: int = 2, m: int = CodeSettings.proj_dims,
                 s: int = CodeSettings.sparsity, lam: float = CodeSettings.lam, matrix: str = CodeSettings.matrix,
                 seed: int = 0, init_scale: float = CodeSettings.arch_init):
        super().__init__()
        if s > min(group_sizes):
            raise ValueError(f"sparsity s={s} exceeds the smallest group size {min(group_sizes)}")
        self.group_sizes = tuple(group_sizes)
        self.s, self.lam = s, lam
        gen = torch.Generator().manual_seed(seed)
        self.register_buffer("A", measurement_matrices(group_sizes, m, matrix, gen, copies=types).float())
        n_max = max(group_sizes)
        self.register_buffer("valid", torch.arange(n_max) < torch.tensor(group_sizes).unsqueeze(-1))  # (G, n)
        self.b = nn.Parameter(init_scale * torch.randn(types, len(group_sizes), m, generator=gen))
        self.register_buffer("z", torch.zeros(types, len(group_sizes), n_max))
        self.register_buffer("support", torch.zeros(types, len(group_sizes), s, dtype=torch.long))
        self.register_buffer("lead", torch.zeros(types, len(group_sizes), dtype=torch.long))
        # One-stage search: a frozen group keeps its support and uses fixed weights; b gets no gradient there.
        self.register_buffer("frozen", torch.zeros(types, len(group_sizes), dtype=torch.bool))
        self.register_buffer("alpha_fixed", torch.zeros(types, len(group_sizes), s))
        self._support_list: list[list[list[int]]] = []
        self.register_load_state_dict_post_hook(lambda module, _keys: module.cache_support())
        self.recover()

    @property
    def support_list(self) -> list[list[list[int]]]:
        """The support as nested Python ints [type][group][k], cached on the host (no device sync)."""
        return self._support_list

    def cache_support(self) -> None:
        """Refresh the host-side copy of the support (after the buffer changed, e.g. by a broadcast)."""
        self._support_list = self.support.tolist()

    @torch.no_grad()
    def recover(self, warm_start: bool = True) -> tuple[LassoResult, Tensor]:
        """Solve the LASSO for every group from the current b; update z and the support.

        Returns the solver result and a (T, G) bool tensor of the groups whose support changed.
        """
        result = lasso(self.A.double(), self.b.detach().double(), self.lam,
                       z0=self.z.double() if warm_start else None)
        z = torch.where(self.frozen.unsqueeze(-1), self.z, result.z.to(self.z.dtype))
        if not self.frozen.all() and not z[~self.frozen].any():
            log.warning("lam %g zeroes z in every decision group: the supports (and the genotype) fall to the "
                        "candidates' order, not to b; lower --lam (b's entries are far smaller than it)", self.lam)
        changed = self.select(z)
        return result, changed

    @torch.no_grad()
    def select(self, z: Tensor | None = None) -> Tensor:
        """Take ``z`` (default: the current one) and choose the supports from it (the ``chooser``'s where one is
        set); frozen groups keep theirs. Returns the (T, G) groups whose support changed."""
        z = self.z if z is None else z
        ranked = self._rank(z)
        if self.chooser is None:
            support, lead = ranked[..., : self.s].sort(dim=-1).values, ranked[..., 0]
        else:
            held = self.chooser(z.abs(), self.frozen, self.lead, self.support).to(ranked.device)
            lead = held[..., 0]
            others = ranked.tolist()
            for t, groups in enumerate(held.tolist()):
                for g, chosen in enumerate(groups):
                    rest = [k for k in others[t][g] if k not in chosen][: self.s - len(chosen)]
                    others[t][g] = sorted(chosen + rest)
            support = torch.tensor(others, dtype=torch.long, device=ranked.device)[..., : self.s]
        support = torch.where(self.frozen.unsqueeze(-1), self.support, support)
        changed = (support != self.support).any(-1)
        self.z.copy_(z)
        self.support.copy_(support)
        self.lead.copy_(torch.where(self.frozen, self.lead, lead))
        self.cache_support()
        return changed

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object) -> None:
        # Checkpoints written before ``lead`` existed: every group's architecture held its largest |z|.
        if prefix + "z" in state_dict and prefix + "lead" not in state_dict:
            state_dict[prefix + "lead"] = self._rank(state_dict[prefix + "z"].to(self.valid.device))[..., 0]
        super()._load_from_state_dict(state_dict, prefix, *args)

    def relaxed_weights(self) -> Tensor:
        """(T, G, s) weights of the support candidates: alpha_S = z_S + A_S^T (b - A z_S); differentiable in b.
        Frozen groups return their fixed weights."""
        support = self.support
        mask = torch.zeros_like(self.z, dtype=torch.bool).scatter_(-1, support, True)
        z = torch.where(mask, self.z, torch.zeros_like(self.z))
        residual = self.b - (self.A @ z.unsqueeze(-1)).squeeze(-1)  # (T, G, m)
        A_s = self.A.gather(-1, support.unsqueeze(-2).expand(*self.A.shape[:-1], support.shape[-1]))  # (T, G, m, s)
        alpha = self.z.gather(-1, support) + (A_s.transpose(-1, -2) @ residual.unsqueeze(-1)).squeeze(-1)
        return torch.where(self.frozen.unsqueeze(-1), self.alpha_fixed, alpha)

    @torch.no_grad()
    def freeze(self, groups: Tensor) -> None:
        """Freeze the (T, G) ``groups``: their support stays and their current weights become fixed."""
        new = groups & ~self.frozen
        self.alpha_fixed.copy_(torch.where(new.unsqueeze(-1), self.relaxed_weights(), self.alpha_fixed))
        self.frozen |= groups

    def _rank(self, z: Tensor) -> Tensor:
        # Padding is never chosen, and ties (exact zeros) go to the lower index, on every device.
        ranked = torch.where(self.valid, z.abs(), torch.full_like(z, -1.0))
        return ranked.argsort(dim=-1, descending=True, stable=True)

    def ranking(self) -> Tensor:
        """(T, G, n) candidate indices ordered by decreasing |z| (padding last); the support is its first s."""
        return self._rank(self.z)


def scale_weights(alpha: Tensor, scale: str, keep: Tensor | None = None) -> Tensor:
    """The multipliers of a cell's supported candidates from their relaxed weights ``alpha`` (groups, s):
    raw (as they are, official); mean (divided by the cell's mean magnitude, not differentiated: about 1 on
    average whatever |b| is, b's gradient intact); softmax (softmax of |alpha| per group), differentiated: every
    group a convex mixture of its support, near uniform while |b| is small, so its output scale is 1 whatever
    |b| is, and b's gradient says which supported candidate should weigh more (none at s=1). ``keep`` (groups,
    s) bool: only those candidates run; the others get 0 and the scale is taken over the kept ones (a group
    keeping one candidate under softmax weighs it 1)."""
    if keep is not None:
        alpha = alpha * keep
    if scale == "mean":
        kept = alpha.numel() if keep is None else keep.sum()
        return alpha / (alpha.detach().abs().sum() / kept).clamp_min(1e-12)
    if scale == "softmax":
        scores = alpha.abs() if keep is None else alpha.abs().masked_fill(~keep, float("-inf"))
        return scores.softmax(-1)
    return alpha

