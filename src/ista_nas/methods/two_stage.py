"""Two-stage ISTA-NAS search (Yang et al., NeurIPS 2020, Sec. 3.2), read top to bottom.

Per epoch (the bilevel loop of ``methods.bilevel``, over the sparse supernet): the supernet runs only the
current supports; every training batch gives one Adam step on the compressed architecture parameters b (loss
on a batch of the held-out half) and one SGD step on the network weights (loss on a batch of the training
half). After the epoch z is recovered from b by LASSO, under the parameter budget, and the supports move.
The result is the genotype of the final supports; stage two (retraining it) is ``ista-nas train``.
"""

from __future__ import annotations

from typing import Any

from ..sparse_coding import CodeSettings
from .base import ClipSettings
from .bilevel import Bilevel
from .budget import BudgetSettings, recover


class TwoStage(Bilevel):
    """The job (registered as ``two-stage``; the driver runs it): per epoch the bilevel steps on the sparse
    supernet, then the recovery."""

    variant = "sparse"
    settings = (*Bilevel.settings, CodeSettings, ClipSettings, BudgetSettings)  # the split, the retrained size, b

    def end_epoch(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        return self.record_epoch(stats, self.recover())

    def recover(self) -> dict[str, Any]:
        """Recover z from b and move the supports (within the budget, under one); what changed, for the record."""
        net = self.net
        recovery, changed = recover(net, self.ctx)
        return {"supports_changed": [net.group_name(t, g) for t, g in changed.nonzero().tolist()],
                "recovery_iterations": recovery.iterations,
                "recovery_kkt_violation": float(recovery.kkt_violation.max())}
