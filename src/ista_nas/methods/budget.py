"""Recovery under a parameter budget (replaces the official code's hard-coded 3.7 MB check)."""

from __future__ import annotations

import logging

import torch
from torch import Tensor

from ..solver import LassoResult
from ..networks import SearchNetwork
from ..networks.cnn import Network, count_parameters

log = logging.getLogger(__name__)


def recover_within_budget(net: SearchNetwork, max_params: float, channels: int, layers: int
                          ) -> tuple[LassoResult, Tensor, Tensor, float | None]:
    """Recover z; if the genotype's network (``channels`` x ``layers``) has more than ``max_params`` million
    parameters, reject it and keep the previous z and supports.

    Returns (the solver's result, the recovered z before any rejection, the (T, G) mask of supports that
    changed, the rejected size in millions or None).
    """
    previous_z, previous_support = net.arch.z.clone(), net.arch.support.clone()
    result, changed = net.arch.recover()
    if not result.converged:
        log.warning("recovery did not certify optimality (KKT violation %.2e); supports may be approximate",
                    float(result.kkt_violation.max()))
    recovered = net.arch.z.clone()
    if not max_params:
        return result, recovered, changed, None
    genotype = net.genotype()
    size = count_parameters(Network(genotype, channels, layers, net.shape["num_classes"], net.shape["in_channels"],
                                    stem=net.shape["stem"])) / 1e6
    if size <= max_params:
        return result, recovered, changed, None
    with torch.no_grad():
        net.arch.z.copy_(previous_z)
        net.arch.support.copy_(previous_support)
    net.arch._cache_support()
    log.info("rejected a recovered architecture of %.3fM parameters (budget %.3fM); the supports stay", size,
             max_params)
    return result, recovered, torch.zeros_like(changed), size
