"""The search-space interface: everything the methods, the trainer and the tools know about a space.

A space is a set of decision groups, each choosing s of its n candidates, plus the networks around them.
A subclass provides, for its space:

- supernets: ``supernet`` (ISTA-NAS: its architecture state ``arch`` is a ``SparseCode`` over the space's
  groups), ``dense_supernet`` (the DARTS baseline: every candidate runs) and, where the space has one
  (``target``), ``target_supernet`` (one-stage ISTA-NAS: the target network itself). Every
  supernet offers ``forward_with_aux``, ``arch_parameters``, ``weight_parameters``,
  ``active_weight_parameters``, ``genotype()``, ``ranking()``, ``group_name(type, group)`` and
  ``forward_fixed(x, genotype)`` (any architecture of the space on the shared weights). A target supernet
  adds ``freeze(groups)``, ``op_bn_parameters(type, group, candidates)``, ``held_candidates(type, group)`` and
  ``discrete()`` (the network of its genotype with the op weights fixed, and where each parameter came from).
- the discrete network: ``network(spec)`` from a checkpoint's model spec, ``sized_network`` for counting
  (``parameter_count``: what a parameter budget counts; ``parameter_counts``: many cells at once, what the size
  baselines rank by).
- its genotype: ``genotype_type`` (``to_dict``/``from_dict``), ``owns`` (is this JSON one of ours), ``parse``
  (a written form, e.g. a benchmark string), ``groups`` (the candidates each decision group holds),
  ``short`` and ``describe`` (text), ``draw`` (the cell diagrams), ``sample`` (a uniform random draw),
  ``searched_by`` (made of the candidates a search chooses among).
- defaults and settings: ``default_size`` (the evaluation network's C and L), ``evaluation_size`` (which network
  a run's genotype is sized at, given the fields its method names), ``search_presets`` / ``train_presets``
  (settings layered over the command's presets), ``settings`` (the ``fields.Settings`` groups only this space
  offers: other spaces refuse them),
  ``check_search`` / ``check_train``.
- optional, the one-stage group: ``target`` (a ``TargetSearch``: presets, model spec and checks of a search of
  the target network) with ``target_supernet``; a space without it is refused by ``--method one-stage``.
- ``published``: the published architectures of the space, by name.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import torch
from torch import nn

from ..errors import UserError
from ..fields import Settings, at_least, setting
from ..networks.cnn import count_parameters
from ..networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet

Checks = list[tuple[bool, str]]


@dataclass
class RetrainSize(Settings):
    """The network a search's genotype is retrained at (``ista-nas train``), where a space leaves that size to
    the user: the methods that retrain their genotype (two-stage: its parameter budget is counted there) and the
    spaces whose evaluation size is a choice list it."""

    why: ClassVar[str] = ("the size its genotype is retrained and budgeted at; a one-stage search trains its own "
                          "network, --channels x --layers")

    budget_channels: int = setting(36, "C of the network the found cell is retrained at (ista-nas train: 36), where "
                                       "the report sizes it and a budget of two-stage or DARTS counts it",
                                   at_least(2))
    budget_layers: int = setting(20, "L of the network the found cell is retrained at (ista-nas train: 20), where the "
                                     "report sizes it and a budget of two-stage or DARTS counts it", at_least(1))


class CostSize(NamedTuple):
    """The network a budget counts, where a space leaves it to the search: C, L (or N), the cell's intermediate
    nodes, the data's classes, channels and side, the stem and the ops' flavour (``standard`` or ``one-stage``)."""

    channels: int
    layers: int
    nodes: int
    classes: int
    in_channels: int
    side: int
    stem: str
    flavour: str


@dataclass(frozen=True)
class LatencyProbes:
    """How ``ista-nas latency`` measures a space's latency per candidate: the candidates whose ops run alike
    (one ``classes`` key per (group, candidate); None: never timed, cost 0) are timed by ``probes``, each an
    architecture (a ``choice``) that holds the key's candidates in ``count`` places where ``reference`` holds
    the reference's own (whose keys cost 0: the reference's time is the base); ``network`` builds an
    architecture's network, fed ``input`` (channels, side)."""

    reference: list[Any]
    classes: list[list[Any]]
    probes: dict[Any, tuple[list[Any], int]]
    network: Callable[[list[Any]], nn.Module]
    input: tuple[int, int]
    size: CostSize | None = None  # the network it counts, where the space's costs depend on it


@dataclass(frozen=True)
class TargetSearch:
    """What a space offers a search of its target network (one-stage ISTA-NAS), with ``target_supernet``."""

    presets: dict[str, dict[str, Any]] = field(default_factory=dict)  # per preset, over the method's presets
    spec: dict[str, Any] = field(default_factory=dict)  # what the trained network's model spec adds
    checks: Callable[[Any], Checks] = lambda cfg: []  # the space's constraints on such a search


class SearchSpace:
    name: ClassVar[str]
    title: ClassVar[str]  # for help and messages
    genotype_type: ClassVar[type]
    example: ClassVar[str] = ""  # a written architecture, for help texts ("" = the space has no written form)
    default_size: ClassVar[tuple[int, int]]  # (C, L) of the evaluation network
    published: ClassVar[dict[str, Any]] = {}
    search_presets: ClassVar[dict[str, dict[str, Any]]] = {}
    train_presets: ClassVar[dict[str, dict[str, Any]]] = {}
    target: ClassVar[TargetSearch | None] = None  # the one-stage group: None if the space has no target supernet
    settings: ClassVar[tuple[type[Settings], ...]] = ()  # search settings only this space offers (others refuse them)

    # --- networks ---
    def supernet(self, cfg: Any, data: Any) -> SparseSupernet:
        raise NotImplementedError

    def dense_supernet(self, cfg: Any, data: Any) -> DenseSupernet:
        raise NotImplementedError

    def target_supernet(self, cfg: Any, data: Any) -> TargetSupernet:
        raise NotImplementedError(f"the {self.name} space has no one-stage supernet")

    def smallest_group(self, dense: bool) -> int:
        """Candidates of the smallest decision group (of the dense supernet with ``dense``)."""
        raise NotImplementedError

    def search_size(self, cfg: Any) -> tuple[int, int]:
        """(candidate ops the supernet of ``cfg`` builds, entries of its measurement matrices A), from a formula:
        what the search bounds before anything is built (``methods.validate``)."""
        raise NotImplementedError

    def network(self, spec: dict[str, Any]) -> nn.Module:
        raise NotImplementedError

    def sized_network(self, genotype: Any, channels: int, layers: int, classes: int, in_channels: int,
                      side: int | None, stem: str | None, auxiliary: bool = True) -> tuple[nn.Module, str, str]:
        """(the network, its stem, its flavour) for counting parameters and FLOPs at this input size (``side``
        picks the stem where ``stem`` is None), with its auxiliary head where the space has one and
        ``auxiliary``."""
        raise NotImplementedError

    def parameter_count(self, genotype: Any, channels: int, layers: int, classes: int, in_channels: int,
                        stem: str | None) -> int:
        """The parameters of ``genotype``'s network at C x L without an auxiliary head: what a parameter budget
        counts. The network is built on the meta device: no memory, no random draws, no input size."""
        with torch.device("meta"):
            net, _, _ = self.sized_network(genotype, channels, layers, classes, in_channels, None, stem or "cifar",
                                           auxiliary=False)
        return count_parameters(net)

    def parameter_counts(self, genotypes: list[Any], channels: int, layers: int, classes: int,
                         in_channels: int) -> list[int]:
        """``parameter_count`` of each genotype (the cifar stem): what the size baselines rank cells by
        (``baselines``). A space whose counts add up per candidate may count thousands of cells faster."""
        return [self.parameter_count(g, channels, layers, classes, in_channels, None) for g in genotypes]

    # --- costs (search under a budget: methods.budget, hardware) ---
    exact_budgets: ClassVar[tuple[str, ...]] = ()  # the costs (params, flops, latency) it counts per candidate
    sized_costs: ClassVar[bool] = False  # do its costs depend on the search's network and data (``cost_size``)?
    # The latency table that ships for this space: (file name in ista_nas/data, its device columns), or None.
    builtin_latency: ClassVar[tuple[str, tuple[str, ...]] | None] = None

    def cost_columns(self, dense: bool) -> list[int] | None:
        """The candidates of each group (indices into ``cost_model``'s) the sparse or ``dense`` search chooses
        among; None: all of them."""
        return None

    def cost_size(self, cfg: Any, variant: str, shape: tuple[int, int, int]) -> CostSize:
        """With ``sized_costs``: the network a budget of a search (``variant``: sparse, dense or target) of data
        of ``shape`` (classes, channels, side) counts."""
        raise NotImplementedError

    def cost_model(self, name: str, size: CostSize | None = None) -> Any:
        """The exact additive model (``costs.AdditiveCost``) of ``name`` (params or flops) of the network a
        search of this space is evaluated at (``size``, where ``cost_size`` gives one), per (decision group,
        candidate): a space whose costs add up that way offers budgets on them (and latency, fitted over
        ``choice``)."""
        raise UserError(f"--space {self.name} counts no cost per candidate yet; search a space that does for a "
                        "FLOPs or latency budget")

    def latency_probes(self, size: CostSize | None) -> LatencyProbes:
        """How ``ista-nas latency`` times this space's candidates (of the network ``size`` describes, where
        ``sized_costs``)."""
        raise UserError(f"--space {self.name} has no latency measurement yet")

    def budget_picks(self, cfg: Any, dense: bool) -> tuple[int, list[list[tuple[int, ...]]] | None]:
        """(candidates the architecture holds per decision group, the sets it may hold per group or None: any
        that many distinct ones), in ``cost_model``'s order of groups and candidates."""
        return 1, None

    def from_choice(self, choice: Any) -> Any:
        """The genotype of one candidate index per decision group (``choice``'s inverse)."""
        raise NotImplementedError

    def choice(self, genotype: Any) -> list[Any]:
        """Per decision group the index of the candidate ``genotype`` holds (a tuple of them where a group holds
        several), in ``cost_model``'s order."""
        raise NotImplementedError

    # --- genotypes ---
    def owns(self, data: dict[str, Any]) -> bool:
        """Is the JSON object ``data`` a genotype of this space (by its keys)?"""
        raise NotImplementedError

    def from_dict(self, data: Any, source: str = "genotype") -> Any:
        return self.genotype_type.from_dict(data, source=source)

    def parse(self, text: str) -> Any | None:
        """The architecture ``text`` writes in this space's written form, or None if it is not one."""
        return None

    def groups(self, genotype: Any) -> dict[str, tuple[str, ...]]:
        """The candidates each decision group holds, by group name."""
        raise NotImplementedError

    def short(self, genotype: Any) -> str:
        """One line for tables."""
        raise NotImplementedError

    def describe(self, genotype: Any, info: dict[str, Any]) -> list[str]:
        """``ista-nas show``'s lines for the genotype and its summary ``info``."""
        raise NotImplementedError

    @staticmethod
    def size_line(info: dict[str, Any], note: str = "") -> str:
        """The parameters and FLOPs of a summary, as ``show`` prints them."""
        return (f"parameters {info['params'] / 1e6:.3f}M{note}, FLOPs {info['flops'] / 1e6:.1f}M "
                f"({info['macs'] / 1e6:.1f}M multiply-adds)")

    def sample(self, rng: random.Random) -> Any:
        """An architecture drawn uniformly from the candidates the sparse (ISTA-NAS) search chooses among."""
        raise NotImplementedError

    # The benchmark table that ships with the package for this space: (file name in ista_nas/data, its metric
    # columns, the first the default), or None.
    builtin_table: tuple[str, tuple[str, ...]] | None = None

    def searched_by(self, genotype: Any, dense: bool) -> bool:
        """Is ``genotype`` made only of the candidates a search chooses among (the sparse ISTA-NAS search, or
        with ``dense`` the DARTS baseline's dense supernet)? The cells a search of this kind could find."""
        return True

    def sample_size(self) -> int:
        """How many distinct architectures ``sample`` can draw."""
        raise NotImplementedError

    def draw(self, genotype: Any, directory: Path) -> list[Path]:
        """The cell diagrams (PNG and SVG) into ``directory``; returns their paths."""
        raise NotImplementedError

    # --- sizes and settings ---
    def evaluation_size(self, config: dict[str, Any], search: bool, fields: tuple[str, str] = ("channels", "layers")
                        ) -> tuple[int, int]:
        """(C, L) of the network a run's genotype is sized at in reports: the run config's ``fields`` (which the
        run's method names: ``methods.evaluation_fields``), unless the space evaluates searches elsewhere
        (``search``: a search run's config)."""
        return config.get(fields[0], self.default_size[0]), config.get(fields[1], self.default_size[1])

    def check_size(self, channels: int, layers: int, dataset: str) -> None:
        """Raise a UserError for a network size ``show`` cannot build."""

    def check_search(self, cfg: Any) -> Checks:
        return []

    def check_train(self, cfg: Any) -> Checks:
        return []
