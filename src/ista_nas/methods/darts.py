"""The DARTS baseline (Liu et al., ICLR 2019), first order: the two-stage loop on the dense supernet.

Every candidate op runs, mixed by softmax(alpha); each training batch gives one Adam step on alpha (loss on a
held-out batch) and one SGD step on the weights, exactly as the two-stage ISTA-NAS search steps b. There is
no recovery: the genotype is derived from alpha (the two strongest non-none inputs of each node). Same data,
schedule and budget as the two-stage search, so the two compare at equal cost per epoch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..spaces.base import Checks, SearchSpace
from .two_stage import TwoStage, TwoStageSearch

if TYPE_CHECKING:
    from ..config import SearchConfig


class DartsSearch(TwoStageSearch):
    """The bilevel step on alpha and the weights; a warm-up trains the dense supernet with alpha fixed."""

    random_supports = False


class Darts(TwoStage):
    searcher_class = DartsSearch
    dense = True  # the space's dense supernet
    presets = {"paper": {"arch_lr": 3e-4}, "quick": {"arch_lr": 3e-4}}  # DARTS's architecture learning rate

    @staticmethod
    def checks(cfg: "SearchConfig", space: SearchSpace) -> Checks:
        return [(not cfg.max_params, "--max-params applies to ISTA-NAS, not to --method darts"),
                (not cfg.clip_with_b, "--clip-with-b applies to ISTA-NAS's b, not to --method darts (DARTS clips by "
                                      "the weights' norm)"),
                (not cfg.explore, "--explore applies to ISTA-NAS's sparse supernet, not to --method darts (every op "
                                  "runs there)")]

    def recover(self) -> dict[str, Any]:
        return {}  # alpha is the architecture: nothing to recover
