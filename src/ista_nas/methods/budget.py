"""Recovery under a parameter budget (replaces the official code's hard-coded 3.7 MB check)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from ..engine.distributed import Dist
from ..fields import NONNEGATIVE, Settings, setting
from ..solver import LassoResult
from ..spaces.base import SearchSpace

log = logging.getLogger(__name__)


@dataclass
class BudgetSettings(Settings):
    """The parameter budget of a recovery: a setting of the methods that recover z (two-stage, one-stage)."""

    why: ClassVar[str] = "the recovery under a parameter budget; DARTS has none"

    max_params: float = setting(0.0, "reject recovered architectures over this many million parameters, 0 = no "
                                     "budget (two-stage: counted for the network the cell is retrained at, "
                                     "--budget-channels x --budget-layers; one-stage: its own network)", NONNEGATIVE)


def recover_within_budget(net: torch.nn.Module, space: SearchSpace, max_params: float, channels: int, layers: int,
                          ctx: Dist = Dist()) -> tuple[LassoResult, Tensor, Tensor, float | None]:
    """Recover z; if the genotype's network (``channels`` x ``layers``, counted by its ``space``) has more than
    ``max_params`` million parameters, reject it and keep the previous z and supports. With several processes
    every rank ends with rank 0's outcome (architecture buffers and the recovered z are broadcast), so the
    supports agree.

    Returns (the solver's result, the recovered z before any rejection, the (T, G) mask of supports that
    changed, the rejected size in millions or None).
    """
    previous_z, previous_support = net.arch.z.clone(), net.arch.support.clone()
    result, recovered, changed, rejected = _recover(net, space, max_params, channels, layers, previous_z,
                                                    previous_support)
    if ctx.world > 1:
        ctx.broadcast_buffers_(net.arch)
        ctx.broadcast_(recovered)
        net.arch.cache_support()
        changed = (net.arch.support != previous_support).any(-1)
    return result, recovered, changed, rejected


def _recover(net: torch.nn.Module, space: SearchSpace, max_params: float, channels: int, layers: int,
             previous_z: Tensor, previous_support: Tensor) -> tuple[LassoResult, Tensor, Tensor, float | None]:
    result, changed = net.arch.recover()
    if not result.converged:
        log.warning("recovery did not certify optimality (KKT violation %.2e); supports may be approximate",
                    float(result.kkt_violation.max()))
    recovered = net.arch.z.clone()
    if not max_params:
        return result, recovered, changed, None
    shape = net.shape
    size = space.parameter_count(net.genotype(), channels, layers, shape["num_classes"], shape["in_channels"],
                                 shape.get("stem")) / 1e6
    if size <= max_params:
        return result, recovered, changed, None
    with torch.no_grad():
        net.arch.z.copy_(previous_z)
        net.arch.support.copy_(previous_support)
    net.arch.cache_support()
    log.info("rejected a recovered architecture of %.3fM parameters (budget %.3fM); the supports stay", size,
             max_params)
    return result, recovered, torch.zeros_like(changed), size
