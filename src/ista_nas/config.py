"""Search configuration: one dataclass, the paper's settings as defaults, with the reason next to each.

Every field is also a command-line flag (``--batch-size`` for ``batch_size``); a preset overrides a few
defaults, explicit flags override the preset.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import UserError
from .ops import PRIMITIVES
from .sparse_coding import MATRIX_KINDS


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class SearchConfig:
    preset: str = _f("paper", "the preset the other values started from")
    method: str = _f("two-stage", "search method (two-stage ISTA-NAS)")
    # Data
    dataset: str = _f("cifar10", "cifar10, cifar100, fashion-mnist or folder:PATH (train/ and test/ inside)")
    data_dir: str = _f("", "where torchvision datasets live (default ~/.cache/ista-nas/data)")
    subset: int = _f(0, "use only this many training images, 0 = all (split into train and valid halves)")
    train_portion: float = _f(0.5, "share of the training images for weights; the rest trains b (paper: 0.5)")
    augment: bool = _f(True, "pad-and-crop by 1/8 of the side and horizontal flip, as DARTS does")
    cutout: int = _f(0, "cutout square side in pixels, 0 = off (off in the official search)")
    # Network (the search net of the paper: 8 cells of 16 initial channels)
    channels: int = _f(16, "initial channels C of the search net (paper: 16)")
    layers: int = _f(8, "cells L; reductions at L/3 and 2L/3 (paper: 8)")
    steps: int = _f(4, "intermediate nodes per cell (DARTS: 4)")
    # Sparse coding
    proj_dims: int = _f(7, "m, length of each node's compressed vector b (official code: 7)")
    sparsity: int = _f(2, "s, candidates kept per node (DARTS cell: 2 inputs per node)")
    lam: float = _f(1e-5, "l1 weight of the recovery LASSO (official code: 1e-5)")
    matrix: str = _f("uniform", "measurement matrix entries: uniform U[0,1) (official) or gaussian N(0,1/m)")
    # Weights: SGD with cosine schedule (paper two-stage: lr 0.1 at batch 256)
    epochs: int = _f(50, "search epochs (paper: 50)")
    batch_size: int = _f(256, "batch size of both the weight and the architecture step (paper: 256)")
    lr: float = _f(0.1, "initial weight learning rate, cosine-annealed (paper: 0.1 at batch 256)")
    lr_min: float = _f(0.001, "final weight learning rate (paper: 0.001)")
    momentum: float = _f(0.9, "SGD momentum (DARTS: 0.9)")
    weight_decay: float = _f(3e-4, "SGD weight decay (DARTS: 3e-4)")
    grad_clip: float = _f(5.0, "clip the weight gradient norm at this value (DARTS: 5)")
    # Architecture: Adam on b
    arch_lr: float = _f(6e-4, "Adam learning rate of b (paper two-stage: 6e-4)")
    arch_weight_decay: float = _f(1e-3, "Adam weight decay of b (official code: 1e-3)")
    # Run
    seed: int = _f(2, "seeds weights, measurement matrices, split and batch order (official default: 2)")
    device: str = _f("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    channels_last: bool = _f(True, "channels-last memory format: about 2x faster convolutions on CPU")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SearchConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(unknown)}; valid keys are {', '.join(sorted(names))}")
        return cls(**data)

    def validate(self) -> "SearchConfig":
        """Raise a UserError for impossible settings; return self."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise UserError(f"{f.name} must be {kind.__name__}, got {value!r}")
        smallest_group = 2 * len(PRIMITIVES)
        checks = [
            (self.method == "two-stage", f"unknown method {self.method!r}; choose two-stage"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be at least 2 (batch norm needs 2), got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (0 <= self.lr_min <= self.lr, f"--lr-min must be in [0, lr={self.lr}], got {self.lr_min}"),
            (self.arch_lr > 0, f"--arch-lr must be positive, got {self.arch_lr}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.arch_weight_decay >= 0, f"--arch-weight-decay must be >= 0, got {self.arch_weight_decay}"),
            (self.grad_clip > 0, f"--grad-clip must be positive, got {self.grad_clip}"),
            (self.proj_dims >= 1, f"--proj-dims (m) must be at least 1, got {self.proj_dims}"),
            (1 <= self.sparsity < smallest_group,
             f"--sparsity (s) must be in 1..{smallest_group - 1}: the first node has only {smallest_group} "
             f"candidates (2 inputs x {len(PRIMITIVES)} ops), got {self.sparsity}"),
            (self.sparsity <= self.proj_dims,
             f"--sparsity (s) must be at most --proj-dims (m): a LASSO solution has at most m nonzeros, got "
             f"s={self.sparsity} > m={self.proj_dims}"),
            (self.lam > 0, f"--lam must be positive, got {self.lam}"),
            (self.matrix in MATRIX_KINDS, f"unknown --matrix {self.matrix!r}; choose one of {', '.join(MATRIX_KINDS)}"),
            (self.channels >= 1, f"--channels must be at least 1, got {self.channels}"),
            (self.layers >= 1, f"--layers must be at least 1, got {self.layers}"),
            (self.steps >= 1, f"--steps must be at least 1, got {self.steps}"),
            (0 < self.train_portion < 1, f"--train-portion must be strictly between 0 and 1, got {self.train_portion}"),
            (self.subset >= 0, f"--subset must be >= 0 (0 = all images), got {self.subset}"),
            (self.cutout >= 0, f"--cutout must be >= 0, got {self.cutout}"),
            (0 <= self.seed < 2**63, f"--seed must be in 0..2^63-1, got {self.seed}"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)
        return self


PRESETS: dict[str, dict[str, Any]] = {
    # The paper's two-stage search on CIFAR-10 (the dataclass defaults).
    "paper": {},
    # Minutes on a 2-core CPU: a small net on 28x28 Fashion-MNIST, a subset and a few epochs. A reduced-scale
    # stand-in for the paper's setting, to try the tool and see a search converge, not to reproduce results.
    # lr 0.05 at batch 64 (above the paper's 0.1 * 64/256): with b starting at 1e-3 the relaxed weights are tiny
    # and a 10-epoch search needs the faster start.
    "quick": dict(dataset="fashion-mnist", subset=6000, epochs=10, batch_size=64, lr=0.05, channels=8, layers=5),
}


def make_config(preset: str = "paper", **overrides: Any) -> SearchConfig:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return SearchConfig(**{**PRESETS[preset], **overrides, "preset": preset}).validate()
