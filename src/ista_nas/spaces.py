"""Search spaces, by name: what the methods and the trainer build for each.

A space is a set of decision groups, each choosing s of its n candidates, plus the networks around them. It
provides two builders:

- ``supernet(settings, num_classes, in_channels, dense)``: the search network. It holds its architecture
  state as ``arch`` (a ``SparseCode`` over the space's groups: n, s, m, batched recovery, relaxed weights; or
  DARTS's ``DenseCode`` when ``dense``) and offers what the methods use: ``forward_with_aux``,
  ``arch_parameters``, ``weight_parameters``, ``active_weight_parameters`` (the weights of the current
  supports), ``genotype()`` (with ``to_dict()``), ``ranking()`` and ``group_name(type, group)``.
- ``network(spec)``: the discrete network of a checkpoint's model spec (its ``genotype`` entry and sizes).

The search methods, the recovery and the trainer call only these, so a new space is a new entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from .genotype import Genotype, Nb201Arch
from .networks.cnn import Network
from .networks.dense import DenseSearchNetwork
from .networks.nb201 import Nb201Network, Nb201SearchNetwork
from .networks.search_cnn import SearchNetwork


@dataclass(frozen=True)
class SearchSpace:
    name: str
    supernet: Callable[[Any, int, int, bool], nn.Module]
    network: Callable[[dict[str, Any]], nn.Module]


def _darts_supernet(cfg: Any, num_classes: int, in_channels: int, dense: bool) -> nn.Module:
    """DARTS cells: one group per intermediate node i of each cell type, n = (i + 2) x 7 candidates."""
    cls = DenseSearchNetwork if dense else SearchNetwork
    return cls(channels=cfg.channels, layers=cfg.layers, num_classes=num_classes, in_channels=in_channels,
               steps=cfg.steps, proj_dims=cfg.proj_dims, sparsity=cfg.sparsity, lam=cfg.lam, matrix=cfg.matrix,
               seed=cfg.seed, stem=cfg.stem, arch_init=cfg.arch_init)


def _darts_network(spec: dict[str, Any]) -> nn.Module:
    return Network(Genotype.from_dict(spec["genotype"]), channels=spec["channels"], layers=spec["layers"],
                   num_classes=spec["num_classes"], in_channels=spec["in_channels"], auxiliary=spec["auxiliary"],
                   stem=spec["stem"])


def _nb201_supernet(cfg: Any, num_classes: int, in_channels: int, dense: bool) -> nn.Module:
    """NAS-Bench-201: one group per cell edge, n = 5 ops, one cell type; ``layers`` is N cells per stage."""
    return Nb201SearchNetwork(channels=cfg.channels, cells=cfg.layers, num_classes=num_classes,
                              in_channels=in_channels, proj_dims=cfg.proj_dims, sparsity=cfg.sparsity, lam=cfg.lam,
                              matrix=cfg.matrix, seed=cfg.seed, dense=dense,
                              arch_init=cfg.arch_init, weight_scale=cfg.weight_scale)


def _nb201_network(spec: dict[str, Any]) -> nn.Module:
    return Nb201Network(Nb201Arch.from_dict(spec["genotype"]), channels=spec["channels"], cells=spec["layers"],
                        num_classes=spec["num_classes"], in_channels=spec["in_channels"])


SPACES: dict[str, SearchSpace] = {
    "darts": SearchSpace("darts", _darts_supernet, _darts_network),
    "nb201": SearchSpace("nb201", _nb201_supernet, _nb201_network),
}
