"""What a search method may call on a supernet, written as typing Protocols (checked by type checkers and by
``tests/test_registry.py`` on every registered space's supernets; nothing here runs).

Three kinds, one per factory of a search space (``spaces.base.SearchSpace``):

- ``DenseSupernet`` (``dense_supernet``, the DARTS baseline): every candidate runs, weighted by a softmax.
- ``SparseSupernet`` (``supernet``, two-stage ISTA-NAS): its ``arch`` is a ``SparseCode``; only the support runs.
- ``TargetSupernet`` (``target_supernet``, one-stage ISTA-NAS): a sparse supernet that is the target network
  itself: groups freeze, the BNs inside their held ops start training, and ``discrete()`` gives the network of
  its genotype with the op weights as fixed multipliers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

from torch import Tensor, nn

from ..sparse_coding import SparseCode


@runtime_checkable
class DenseSupernet(Protocol):
    arch: nn.Module  # the architecture state: its relaxed weights, its support list

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor | None]: ...
    def forward_fixed(self, x: Tensor, genotype: Any) -> Tensor:
        """Any architecture of the space on the shared weights, each op weighted 1."""
    def arch_parameters(self) -> list[nn.Parameter]: ...
    def weight_parameters(self) -> list[nn.Parameter]: ...
    def active_weight_parameters(self) -> list[nn.Parameter]:
        """The weights the current supports use: the only ones a step can give a gradient."""
    def genotype(self) -> Any: ...
    def ranking(self) -> dict[str, list[list[dict]]]: ...
    def group_name(self, t: int, g: int) -> str: ...


@runtime_checkable
class SparseSupernet(DenseSupernet, Protocol):
    arch: SparseCode  # b, A, z, the support (and its host-side copy), frozen groups


@runtime_checkable
class TargetSupernet(SparseSupernet, Protocol):
    shape: dict[str, Any]  # the network's constructor arguments beyond the genotype

    def freeze(self, groups: Tensor) -> None:
        """Freeze the (types, groups) mask: support and weights fixed."""
    def op_bn_parameters(self, t: int, g: int, candidates: Sequence[int] | None = None) -> list[nn.Parameter]:
        """The affine parameters of the BNs inside group g's candidates (all by default), every cell of type t."""
    def held_candidates(self, t: int, g: int) -> list[int]:
        """The candidates group g runs (a frozen group: those it keeps)."""
    def discrete(self) -> tuple[nn.Module, dict[str, nn.Parameter]]:
        """The network of the genotype, op weights fixed, and each of its parameters' source in the supernet."""
