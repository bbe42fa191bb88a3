"""Generic epoch loop: progress bar, metric sums kept on the device, divergence check."""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from tqdm import tqdm

from ..errors import RunFailed, UserError

log = logging.getLogger(__name__)


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
            if k in self.sums and self.sums[k].device != v.device:  # sums restored from a checkpoint
                self.sums[k] = self.sums[k].to(v.device)
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()

    def values(self, reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None) -> dict[str, float]:
        """The sums as floats, after ``reduce`` (e.g. adding up every rank's sums)."""
        sums = reduce(self.sums) if reduce is not None else self.sums
        return {k: float(v) for k, v in sums.items()}


class EpochInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a training epoch between two steps; ``progress`` is what resuming at that step needs."""

    def __init__(self, progress: dict[str, Any]):
        super().__init__()
        self.progress = progress


class _StopRequest:
    requested = False


STOP = _StopRequest()


@contextlib.contextmanager
def graceful_stop(enabled: bool = True) -> Iterator[None]:
    """While active, the first Ctrl-C lets the current training step finish and then stops the epoch
    (``EpochInterrupted``, so the method can checkpoint that point); a second Ctrl-C stops at once."""
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if STOP.requested:
            raise KeyboardInterrupt
        STOP.requested = True
        log.warning("stopping after the current step (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    STOP.requested = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        STOP.requested = False


@contextlib.contextmanager
def ignore_interrupts() -> Iterator[None]:
    """Ctrl-C is ignored inside (in the main thread; elsewhere signals do not arrive anyway)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def resume_point(partial: dict[str, Any] | None, epoch: int, main: bool = True) -> dict[str, Any] | None:
    """``run_epoch``'s ``resume`` for ``epoch``: the checkpoint's progress if it stopped inside this epoch. Its
    sums count once: other ranks of a multi-process resume start theirs from zero."""
    if not partial or partial["epoch"] != epoch:
        return None
    return partial if main else {**partial, "sums": {}}


def _rng_state() -> dict[str, Any]:
    return {"rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def run_epoch(step: Callable[..., dict[str, Tensor]], batches: Iterable[Any], total: int, desc: str,
              means: Callable[[dict[str, float]], dict[str, float]], refresh_every: int = 10,
              reduce: Callable[[dict[str, Tensor]], dict[str, Tensor]] | None = None, show: bool = True,
              interruptible: bool = False, resume: dict[str, Any] | None = None) -> dict[str, float]:
    """Call ``step(*batch)`` for every batch; return ``means`` of the summed statistics.

    ``means`` turns sums into display values (means, accuracies); the bar shows them every
    ``refresh_every`` steps, which is also when a non-finite loss is detected and stops the run. With
    several processes ``reduce`` adds up the ranks' sums at those points (every rank takes the same number
    of steps, so all of them reach each reduction and stop together); ``show=False`` hides the bar.

    A training epoch (``interruptible``) raises ``EpochInterrupted`` between two steps once a graceful stop
    was requested; ``resume`` (its ``progress``) continues such an epoch at the step where it stopped, with
    its sums and random-number state, so the epoch ends as an uninterrupted one would.
    """
    meter, start = Meter(), 0
    if resume is not None:
        start, meter.sums = resume["step"], dict(resume["sums"])
        torch.set_rng_state(resume["rng"])
        if resume.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(resume["cuda_rng"])
        batches = itertools.islice(batches, start, None)
    with tqdm(batches, total=total, initial=start, desc=desc, leave=False, disable=None if show else True,
              dynamic_ncols=True) as bar:
        for i, batch in enumerate(bar, start=start):
            if interruptible and STOP.requested:
                raise EpochInterrupted({"step": i, "sums": dict(meter.sums), **_rng_state()})
            meter.add(step(*batch))
            if (i + 1) % refresh_every == 0 or i + 1 == total:
                shown = means(meter.values(reduce))
                _check_finite(shown, desc)
                bar.set_postfix({k: f"{v:.4g}" for k, v in shown.items()}, refresh=False)
    shown = means(meter.values(reduce))
    _check_finite(shown, desc)
    return shown


def _check_finite(values: dict[str, float], desc: str) -> None:
    bad = [k for k, v in values.items() if not math.isfinite(v)]
    if bad:
        raise RunFailed(f"{desc}: {', '.join(bad)} became non-finite ({values[bad[0]]})")
