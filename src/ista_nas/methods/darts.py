"""The DARTS baseline (Liu et al., ICLR 2019), first order: the bilevel loop on the dense supernet.

Every candidate op runs, mixed by softmax(alpha); each training batch gives one Adam step on alpha (loss on a
held-out batch) and one SGD step on the weights, the same bilevel step as the two-stage ISTA-NAS search's
(``methods.bilevel``). There is no recovery: alpha is the architecture, and the genotype is derived from it (the
two strongest non-none inputs of each node). Same data and schedule as the two-stage search, so the two
compare at equal cost per epoch. Under a budget (``methods.budget``, where the space counts costs per candidate) the genotype is derived
within it: the ops of the largest total softmax weight whose cost fits, so the baseline competes under the
same budget as ISTA-NAS.
"""

from __future__ import annotations

from typing import Any

from .bilevel import Bilevel
from .budget import BudgetSettings


class Darts(Bilevel):
    """The job (registered as ``darts``): per epoch the bilevel steps on the dense supernet."""

    variant = "dense"
    settings = (*Bilevel.settings, BudgetSettings)  # the split, the retrained size; its genotype under a budget
    presets = {"paper": {"arch_lr": 3e-4}, "quick": {"arch_lr": 3e-4}}  # DARTS's architecture learning rate

    def end_epoch(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        return self.record_epoch(stats, {})
