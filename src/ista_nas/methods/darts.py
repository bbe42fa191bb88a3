"""The DARTS baseline (Liu et al., ICLR 2019), first order: the two-stage loop on the dense supernet.

Every candidate op runs, mixed by softmax(alpha); each training batch gives one Adam step on alpha (loss on a
held-out batch) and one SGD step on the weights, exactly as the two-stage ISTA-NAS search steps b. There is
no recovery: the genotype is derived from alpha (the two strongest non-none inputs of each node). Same data,
schedule and budget as the two-stage search, so the two compare at equal cost per epoch.
"""

from __future__ import annotations

from typing import Any

from .two_stage import TwoStage, TwoStageStepper


class DartsStepper(TwoStageStepper):
    """The bilevel step on alpha and the weights."""


class Darts(TwoStage):
    """The job (registered as ``darts``): the two-stage job on the dense supernet, stepped by ``DartsStepper``."""

    stepper_class = DartsStepper
    dense = True  # the space's dense supernet
    presets = {"paper": {"arch_lr": 3e-4}, "quick": {"arch_lr": 3e-4}}  # DARTS's architecture learning rate

    def recover(self) -> dict[str, Any]:
        return {}  # alpha is the architecture: nothing to recover
