"""Generic epoch loop: progress bar, metric sums kept on the device, divergence check."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..errors import RunFailed, UserError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown --device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name} asked for CUDA but no CUDA device is available; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise UserError(f"--device {name}: there are only {torch.cuda.device_count()} CUDA devices "
                        f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if device.type not in ("cpu", "cuda"):
        raise UserError(f"--device {name}: only cpu and cuda are supported")
    return device


def cosine_lr(epoch: int, epochs: int, lr: float, lr_min: float) -> float:
    """Cosine annealing from ``lr`` at epoch 0 towards ``lr_min`` at ``epochs``."""
    return lr_min + 0.5 * (lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


class Meter:
    """Sums of per-batch statistics, accumulated on the device (no host sync per step)."""

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}

    def add(self, stats: dict[str, Tensor]) -> None:
        for k, v in stats.items():
            v = v.detach()
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()

    def values(self, reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> dict[str, float]:
        """The sums as floats, after ``reduce`` (e.g. adding up every rank's sums)."""
        sums = reduce(self.sums) if reduce is not None else self.sums
        return {k: float(v) for k, v in sums.items()}


def run_epoch(step: Callable[..., dict[str, Tensor]], batches: Iterable[Any], total: int, desc: str,
              summarize: Callable[[dict[str, float]], dict[str, float]], refresh_every: int = 10,
              reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None, show: bool = True,
              ) -> dict[str, float]:
    """Call ``step(*batch)`` for every batch; return ``summarize`` of the summed statistics.

    ``summarize`` turns sums into display values (means, accuracies); the bar shows them every
    ``refresh_every`` steps, which is also when a non-finite loss is detected and stops the run. With
    several processes ``reduce`` adds up the ranks' sums at those points (every rank takes the same number
    of steps, so all of them reach each reduction and stop together); ``show=False`` hides the bar.
    """
    meter = Meter()
    with tqdm(batches, total=total, desc=desc, leave=False, disable=None if show else True,
              dynamic_ncols=True) as bar:
        for i, batch in enumerate(bar):
            meter.add(step(*batch))
            if (i + 1) % refresh_every == 0 or i + 1 == total:
                shown = summarize(meter.values(reduce))
                _check_finite(shown, desc)
                bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
    shown = summarize(meter.values(reduce))
    _check_finite(shown, desc)
    return shown


def _check_finite(values: dict[str, float], desc: str) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise RunFailed(f"{desc}: {', '.join(bad)} became non-finite ({values[bad[0]]})")
