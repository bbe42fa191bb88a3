"""Run configurations: one dataclass per command, the paper's settings as defaults, the reason next to each.

Every field is also a command-line flag (``--batch-size`` for ``batch_size``); a preset overrides a few
defaults, explicit flags override the preset.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import UserError
from .genotype import NB201_OPS
from .ops import PRIMITIVES
from .sparse_coding import MATRIX_KINDS


def _f(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


class _Config:
    """Shared behaviour: dict round trip, type checks, presets. Subclasses list their checks in ``_checks``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys are "
                            f"{', '.join(sorted(names))}")
        return cls(**data)

    @classmethod
    def make(cls, preset: str = "paper", **overrides: Any):
        if preset not in cls.PRESETS:
            raise UserError(f"unknown preset {preset!r}; choose one of {', '.join(cls.PRESETS)}")
        return cls(**{**cls.PRESETS[preset], **overrides, "preset": preset}).validate()

    def validate(self):
        """Raise a UserError for a value of the wrong type or an impossible setting; return self."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise UserError(f"{f.name} must be {kind.__name__}, got {value!r}")
            if kind is float and not math.isfinite(value):
                raise UserError(f"--{f.name.replace('_', '-')} must be a finite number, got {value!r}")
        for ok, message in self._checks():
            if not ok:
                raise UserError(message)
        return self

    def _checks(self) -> list[tuple[bool, str]]:
        raise NotImplementedError


@dataclass
class SearchConfig(_Config):
    preset: str = _f("paper", "the preset the other values started from")
    method: str = _f("two-stage", "two-stage (search a small supernet, retrain later), one-stage (search and train "
                                  "the target network in one run) or darts (the dense first-order DARTS baseline)")
    space: str = _f("darts", "search space: darts (the DARTS cell, the paper's) or nb201 (NAS-Bench-201: one op per "
                             "edge of a 4-node cell)")
    # Data
    dataset: str = _f("cifar10", "cifar10, cifar100, fashion-mnist or folder:PATH (train/ and test/ inside)")
    data_dir: str = _f("", "where torchvision datasets live (default ~/.cache/ista-nas/data)")
    subset: int = _f(0, "use only this many training images, 0 = all (split into train and valid halves)")
    train_portion: float = _f(0.5, "share of the training images for weights; the rest trains b (paper: 0.5)")
    augment: bool = _f(True, "pad-and-crop by 1/8 of the side and horizontal flip, as DARTS does")
    cutout: int = _f(0, "cutout square side in pixels, 0 = off (off in the official search)")
    # Network (the search net of the paper: 8 cells of 16 initial channels)
    channels: int = _f(16, "initial channels C of the search net (paper: 16)")
    layers: int = _f(8, "cells L; reductions at L/3 and 2L/3 (paper: 8); nb201: cells N per stage (5)")
    steps: int = _f(4, "intermediate nodes per cell (DARTS: 4)")
    # Sparse coding
    proj_dims: int = _f(7, "m, length of each node's compressed vector b (official code: 7)")
    sparsity: int = _f(2, "s, candidates kept per node (DARTS cell: 2 inputs per node)")
    lam: float = _f(1e-5, "l1 weight of the recovery LASSO (official code: 1e-5)")
    matrix: str = _f("uniform", "measurement matrix entries: uniform U[0,1) (official) or gaussian N(0,1/m)")
    # Weights: SGD with cosine schedule (paper two-stage: lr 0.1 at batch 256)
    epochs: int = _f(50, "search epochs (paper: 50); one-stage: training epochs after the architecture is fixed "
                         "(paper: 600), the search phase comes first")
    batch_size: int = _f(256, "batch size of both the weight and the architecture step (paper: 256)")
    lr: float = _f(0.1, "initial weight learning rate, cosine-annealed (paper: 0.1 at batch 256)")
    lr_min: float = _f(0.001, "final weight learning rate (paper: 0.001); one-stage: of the training phase (the "
                              "search phase holds lr)")
    momentum: float = _f(0.9, "SGD momentum (DARTS: 0.9)")
    weight_decay: float = _f(3e-4, "SGD weight decay (DARTS: 3e-4)")
    grad_clip: float = _f(5.0, "clip the weight gradient norm at this value (DARTS: 5)")
    clip_with_b: bool = _f(False, "ISTA-NAS: b's gradient counts in the norm that clips the weight step, as in the "
                                  "official code (two-stage: the architecture step's plus the training batch's); "
                                  "one-stage presets: on; two-stage: off (measured: docs/one-stage.md)")
    weight_warmup_epochs: int = _f(0, "nb201, two-stage and darts: first epochs that train only the weights (b or "
                                      "alpha fixed); ISTA-NAS trains a random support each step, unit weights")
    # Architecture: Adam on b
    arch_init: float = _f(1e-3, "ISTA-NAS: standard deviation of b's random initial values, which sets the scale of "
                                "the first recovered z and of the relaxed weights (official: 1e-3)")
    weight_scale: str = _f("raw", "ISTA-NAS: raw (the relaxed weights as they are, official) or mean (divided by "
                                  "their mean magnitude over the cell, not differentiated)")
    arch_lr: float = _f(6e-4, "Adam learning rate of b (paper two-stage: 6e-4)")
    arch_weight_decay: float = _f(1e-3, "Adam weight decay of b (official code: 1e-3)")
    # One-stage search only
    auxiliary_weight: float = _f(0.0, "one-stage: weight of the auxiliary head's loss, 0 = none (paper: 0.4)")
    freeze_tol: float = _f(1e-3, "one-stage: a node freezes when its z moved at most this much (L2) in an epoch")
    max_search_epochs: int = _f(0, "one-stage: freeze every node still searching after this many search epochs, "
                                   "0 = search until every node froze")
    # One-stage training phase (after the search phase; the optimiser carries on): the train command's settings
    drop_path: float = _f(0.0, "one-stage: final drop-path of the training phase, rising from 0 (paper: 0.2)")
    warmup_epochs: int = _f(0, "one-stage: linear learning-rate warm-up epochs of the training phase (ImageNet: 5)")
    lr_schedule: str = _f("cosine", "one-stage: the training phase's decay from lr to lr_min: cosine (CIFAR) or "
                                    "linear (ImageNet)")
    nesterov: bool = _f(False, "one-stage: Nesterov momentum in the training phase")
    label_smoothing: float = _f(0.0, "one-stage: label smoothing of the training phase's loss (ImageNet: 0.1)")
    amp: str = _f("auto", "one-stage: the training phase's mixed precision: auto (bf16 on CUDA when supported, "
                          "else fp16; off on CPU), bf16, fp16, off")
    max_params: float = _f(0.0, "reject recovered architectures over this many million parameters, 0 = no budget "
                                "(two-stage: counted for the budget_channels x budget_layers network)")
    budget_channels: int = _f(36, "two-stage: C of the network the parameter budget is counted for")
    budget_layers: int = _f(20, "two-stage: L of the network the parameter budget is counted for")
    stem: str = _f("cifar", "cifar (one 3x3 conv) or imagenet (three stride-2 convs to 1/8, the mobile setting)")
    stream: bool = _f(False, "one-stage: read a folder: dataset from disk every epoch (ImageNet)")
    image_size: int = _f(224, "one-stage with --stream: crop side (ImageNet: 224)")
    workers: int = _f(8, "one-stage with --stream: DataLoader worker processes")
    # Run
    seed: int = _f(2, "seeds weights, measurement matrices, split and batch order (official default: 2)")
    device: str = _f("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    channels_last: bool = _f(True, "channels-last memory format: about 2x faster convolutions on CPU")
    sync_bn: bool = _f(True, "under torchrun: batch norm statistics over the global batch, so N processes compute "
                             "what one process does; off: each process's own shard (less communication)")
    tensorboard: bool = _f(False, "also log the metrics and the genotype to RUN/tensorboard for TensorBoard (needs "
                                  "pip install 'ista-nas[tensorboard]')")

    def _checks(self) -> list[tuple[bool, str]]:
        # nb201: ISTA-NAS picks among the 4 ops other than none, the DARTS baseline among all 5.
        smallest_group = 2 * len(PRIMITIVES) if self.space != "nb201" else len(NB201_OPS) - (self.method != "darts")
        checks = [
            (self.method in METHODS, f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}"),
            (self.space in SPACES, f"unknown --space {self.space!r}; choose one of {', '.join(SPACES)}"),
            (self.space != "nb201" or (self.method != "one-stage" and not self.max_params and self.stem == "cifar"),
             "--space nb201 searches with --method two-stage or darts, without --max-params and with the cifar stem"),
            (self.method != "darts" or not self.max_params, "--max-params applies to ISTA-NAS, not to --method darts"),
            (self.method != "darts" or not self.clip_with_b, "--clip-with-b applies to ISTA-NAS's b, not to --method "
                                                             "darts (DARTS clips by the weights' norm)"),
            (self.method != "one-stage" or self.sparsity == 2,
             f"--method one-stage trains the DARTS-cell network, two inputs per node: use --sparsity 2, not "
             f"{self.sparsity}"),
            (self.auxiliary_weight >= 0, f"--auxiliary-weight must be >= 0, got {self.auxiliary_weight}"),
            (self.method == "one-stage" or all(getattr(self, f.name) == f.default for f in dataclasses.fields(self)
                                               if f.name in TRAINING_PHASE_ONLY),
             f"--{', --'.join(k.replace('_', '-') for k in TRAINING_PHASE_ONLY)} set the one-stage training phase; "
             "drop them or add --method one-stage"),
            (0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path}"),
            (self.freeze_tol >= 0, f"--freeze-tol must be >= 0, got {self.freeze_tol}"),
            (self.max_search_epochs >= 0, f"--max-search-epochs must be >= 0, got {self.max_search_epochs}"),
            (self.max_params >= 0, f"--max-params must be >= 0 (millions; 0 = no budget), got {self.max_params}"),
            (self.budget_channels >= 2 and self.budget_layers >= 1,
             "--budget-channels must be at least 2 and --budget-layers at least 1"),
            (self.stem in ("cifar", "imagenet"), f"unknown --stem {self.stem!r}; choose cifar or imagenet"),
            (self.stem != "imagenet" or self.channels % 2 == 0,
             f"--channels must be even with the imagenet stem, got {self.channels}"),
            (not self.stream or (self.method == "one-stage" and self.dataset.startswith("folder:")),
             "--stream needs --method one-stage and --dataset folder:PATH"),
            (self.image_size >= 8 and self.workers >= 0, "--image-size must be at least 8 and --workers >= 0"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be at least 2 (batch norm needs 2), got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (0 <= self.lr_min <= self.lr, f"--lr-min must be in [0, lr={self.lr}], got {self.lr_min}"),
            (self.arch_lr > 0, f"--arch-lr must be positive, got {self.arch_lr}"),
            (0 <= self.weight_warmup_epochs < self.epochs, f"--weight-warmup-epochs must be in 0..epochs-1 "
                                                            f"({self.epochs - 1}), got {self.weight_warmup_epochs}"),
            (self.space == "nb201" or (not self.weight_warmup_epochs and self.weight_scale == "raw"),
             "--weight-warmup-epochs and --weight-scale mean are offered for --space nb201 only (studied there: "
             "docs/search-quality.md); drop them or add --space nb201"),
            (self.method != "one-stage" or not self.weight_warmup_epochs,
             "--weight-warmup-epochs applies to --method two-stage and darts"),
            (self.weight_scale in ("raw", "mean"), f"unknown --weight-scale {self.weight_scale!r}; choose raw or mean"),
            (self.arch_init > 0, f"--arch-init must be positive, got {self.arch_init}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.arch_weight_decay >= 0, f"--arch-weight-decay must be >= 0, got {self.arch_weight_decay}"),
            (self.grad_clip > 0, f"--grad-clip must be positive, got {self.grad_clip}"),
            (self.proj_dims >= 1, f"--proj-dims (m) must be at least 1, got {self.proj_dims}"),
            (1 <= self.sparsity < smallest_group,
             f"--sparsity (s) must be in 1..{smallest_group - 1}: the smallest decision group has only "
             f"{smallest_group} candidates, got {self.sparsity}"),
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
        return checks

    def validate(self):
        super().validate()
        if self.method == "one-stage":
            training_phase(self).validate()  # the training phase's settings, checked as the train command checks them
        return self


METHODS = ("two-stage", "one-stage", "darts")
SPACES = ("darts", "nb201")
# NAS-Bench-201 search: the benchmark's network (C=16, N=5) and one op per edge (s=1 of n=4). m=3 measurements
# per edge is this project's choice (the paper searched only the DARTS space). arch_init=1: the NAS-Bench-201 cell
# has no normalisation of its own, so with the official b ~ 1e-3 x randn every edge's output is scaled by ~1e-3,
# the cell's conv weights get ~1e-3 of their gradient and stay near their random start while the parameter-free
# ops need no training (measured: docs/search-quality.md); with b ~ randn the relaxed weights start at the scale
# of the discrete network's (1) and the supernet trains as the plain network does.
NB201_SEARCH = {"paper": dict(space="nb201", channels=16, layers=5, proj_dims=3, sparsity=1, arch_init=1.0),
                # Minutes on a 2-core CPU (about 1 min here), a reduced-scale stand-in: CIFAR-10 (give
                # --dataset folder:PATH where torchvision cannot download it), 6,000 images, N=1, C=8, 10 epochs.
                "quick": dict(space="nb201", dataset="cifar10", subset=6000, epochs=10, batch_size=64, lr=0.025,
                              channels=8, layers=1, proj_dims=3, sparsity=1, arch_init=1.0)}

SearchConfig.PRESETS = {
    # The paper's two-stage search on CIFAR-10 (the dataclass defaults).
    "paper": {},
    # Minutes on a 2-core CPU: a small net on 28x28 Fashion-MNIST, a subset and a few epochs. A reduced-scale
    # stand-in for the paper's setting, to try the tool and see a search converge, not to reproduce results.
    # lr 0.05 at batch 64 (above the paper's 0.1 * 64/256): with b starting at 1e-3 the relaxed weights are tiny
    # and a 10-epoch search needs the faster start.
    "quick": dict(dataset="fashion-mnist", subset=6000, epochs=10, batch_size=64, lr=0.05, channels=8, layers=5),
}
# The one-stage method's presets: the target network's settings (official train_search_single defaults). The
# search phase holds lr; the training phase (--epochs) decays it from lr to lr_min.
ONE_STAGE_PRESETS = {
    # Official: lr 0.025 cosine to 0.001 over 600 training epochs, after a search phase of about 120 epochs (the
    # paper). The official loop has no cap of its own below 600; 200 bounds a search whose nodes do not settle at a
    # third of the training cost.
    "paper": dict(method="one-stage", clip_with_b=True, channels=36, layers=20, batch_size=96, epochs=600,
                  max_search_epochs=200, lr=0.025, lr_min=0.001, arch_lr=3e-4, cutout=16, auxiliary_weight=0.4,
                  drop_path=0.2, seed=5, max_params=3.7),
    # The mobile setting (C=48, L=14, 224x224 crops streamed from --dataset folder:PATH with train/ and val/). The
    # official code has no one-stage ImageNet search script: the training phase is the train imagenet preset
    # (250 epochs, 5 warm-up, linear decay, label smoothing 0.1). The search cap of 50 epochs is this project's
    # choice (PC-DARTS's ImageNet search ran 50 epochs).
    "imagenet": dict(method="one-stage", clip_with_b=True, dataset="folder:imagenet", stem="imagenet", channels=48,
                     layers=14, batch_size=1024, epochs=250, max_search_epochs=50, lr=0.5, lr_min=0.0, warmup_epochs=5,
                     lr_schedule="linear", label_smoothing=0.1, weight_decay=3e-5, arch_lr=3e-4, cutout=0,
                     auxiliary_weight=0.4, drop_path=0.0, stream=True),
    # Minutes on a 2-core CPU, a reduced-scale stand-in: search 3 epochs at most, then train 2.
    "quick": dict(method="one-stage", clip_with_b=True, dataset="fashion-mnist", subset=3000, channels=8, layers=5,
                  batch_size=64, epochs=2, max_search_epochs=3, lr=0.05, lr_min=0.0, arch_lr=3e-3, auxiliary_weight=0.4,
                  drop_path=0.1),
}
# The one-stage settings that only its training phase uses.
TRAINING_PHASE_ONLY = ("drop_path", "warmup_epochs", "lr_schedule", "nesterov", "label_smoothing", "amp")
# The one-stage run's training phase, field by field: the settings it takes from the run's config (same meaning
# in both), and the ones fixed by what it trains (the searched one-stage network, in the DARTS space).
TRAINING_PHASE_FROM_SEARCH = (
    "dataset", "data_dir", "subset", "augment", "cutout", "stream", "image_size", "workers",  # the same data
    "stem", "channels", "layers", "auxiliary_weight",  # the same network
    "epochs", "batch_size", "lr", "lr_min", "momentum", "weight_decay", "grad_clip",  # the optimiser carries on
    "seed", "device", "channels_last", "sync_bn", "tensorboard") + TRAINING_PHASE_ONLY
TRAINING_PHASE_FIXED = dict(genotype="(one-stage search)", space="darts", arch="")


def training_phase(cfg: SearchConfig) -> "TrainConfig":
    """The TrainConfig of a one-stage run's training phase (every field named above; a test checks the list
    covers TrainConfig, so a new training setting has to be placed here)."""
    return TrainConfig(preset=cfg.preset, **TRAINING_PHASE_FIXED,
                       **{name: getattr(cfg, name) for name in TRAINING_PHASE_FROM_SEARCH})


def make_config(preset: str = "paper", **overrides: Any) -> SearchConfig:
    """A validated SearchConfig from a preset (of the method in ``overrides``, two-stage by default)."""
    if overrides.get("method") == "one-stage":
        if preset not in ONE_STAGE_PRESETS:
            raise UserError(f"unknown one-stage preset {preset!r}; choose one of {', '.join(ONE_STAGE_PRESETS)}")
        return SearchConfig(**{**ONE_STAGE_PRESETS[preset], **overrides, "preset": preset}).validate()
    if overrides.get("space") == "nb201" and preset in NB201_SEARCH:  # the space's network and sparsity
        overrides = {**NB201_SEARCH[preset], **overrides}
    if overrides.get("method") == "darts":  # the two-stage settings with DARTS's architecture learning rate
        overrides = {"arch_lr": 3e-4, **overrides}
    return SearchConfig.make(preset, **overrides)


AMP_MODES = ("auto", "bf16", "fp16", "off")


@dataclass
class TrainConfig(_Config):
    preset: str = _f("paper", "the preset the other values started from")
    genotype: str = _f("ista_twostage", "built-in genotype name, a genotype.json, or a search run directory")
    space: str = _f("darts", "darts (DARTS-cell networks) or nb201 (the NAS-Bench-201 network and its training "
                             "protocol)")
    arch: str = _f("", "nb201: the architecture string |op~0|+|op~0|op~1|+|op~0|op~1|op~2| (instead of --genotype)")
    # Data
    dataset: str = _f("cifar10", "cifar10, cifar100, fashion-mnist or folder:PATH (train/ and test/ or val/)")
    data_dir: str = _f("", "where torchvision datasets live (default ~/.cache/ista-nas/data)")
    subset: int = _f(0, "train on only this many training images, 0 = all")
    augment: bool = _f(True, "pad-and-crop by 1/8 of the side and horizontal flip (DARTS's CIFAR augmentation)")
    cutout: int = _f(16, "cutout square side in pixels, 0 = off (DARTS retrain: 16)")
    stream: bool = _f(False, "read a folder: dataset from disk every epoch with DataLoader workers and ImageNet "
                             "augmentation, for datasets too large for memory (ImageNet)")
    image_size: int = _f(224, "with --stream: training crop and test centre-crop side (ImageNet: 224)")
    workers: int = _f(8, "with --stream: DataLoader worker processes")
    # Network (the paper's CIFAR evaluation network: 20 cells of 36 initial channels)
    stem: str = _f("cifar", "cifar (one 3x3 conv) or imagenet (three stride-2 convs to 1/8, the mobile setting)")
    channels: int = _f(36, "initial channels C (paper CIFAR: 36, ImageNet: 48)")
    layers: int = _f(20, "cells L; reductions at L/3 and 2L/3 (paper CIFAR: 20, ImageNet: 14)")
    auxiliary_weight: float = _f(0.4, "weight of the auxiliary head's loss, 0 = no auxiliary head (DARTS: 0.4)")
    drop_path: float = _f(0.2, "final drop-path probability, rising linearly from 0 (DARTS: 0.2)")
    # Optimisation: SGD, cosine schedule (DARTS's protocol)
    epochs: int = _f(600, "training epochs (paper: 600)")
    batch_size: int = _f(96, "batch size (paper: 96)")
    lr: float = _f(0.025, "initial learning rate, cosine-annealed to lr_min (paper: 0.025)")
    lr_min: float = _f(0.0, "final learning rate (DARTS: 0)")
    warmup_epochs: int = _f(0, "linear learning-rate warm-up epochs before the decay (ImageNet: 5)")
    lr_schedule: str = _f("cosine", "decay after the warm-up: cosine (DARTS CIFAR) or linear (ISTA-NAS/PC-DARTS ImageNet)")
    momentum: float = _f(0.9, "SGD momentum (DARTS: 0.9)")
    nesterov: bool = _f(False, "Nesterov momentum (NAS-Bench-201: on)")
    weight_decay: float = _f(3e-4, "SGD weight decay (DARTS CIFAR: 3e-4, ImageNet: 3e-5)")
    grad_clip: float = _f(5.0, "clip the gradient norm at this value, 0 = off (DARTS: 5)")
    label_smoothing: float = _f(0.0, "label smoothing of the loss (ImageNet: 0.1)")
    # Run
    seed: int = _f(0, "seeds weights, subset and batch order")
    device: str = _f("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    channels_last: bool = _f(True, "channels-last memory format (faster convolutions on CPU and recent GPUs)")
    sync_bn: bool = _f(True, "under torchrun: batch norm statistics over the global batch, so N processes compute "
                             "what one process does; off: each process's own shard (less communication)")
    tensorboard: bool = _f(False, "also log the metrics and the genotype to RUN/tensorboard for TensorBoard (needs "
                                  "pip install 'ista-nas[tensorboard]')")
    amp: str = _f("auto", "mixed precision: auto (bf16 on CUDA when supported, else fp16; off on CPU), bf16, fp16, off")

    def _checks(self) -> list[tuple[bool, str]]:
        return [
            (self.stem in ("cifar", "imagenet"), f"unknown --stem {self.stem!r}; choose cifar or imagenet"),
            (self.epochs >= 1, f"--epochs must be at least 1, got {self.epochs}"),
            (self.batch_size >= 2, f"--batch-size must be at least 2 (batch norm needs 2), got {self.batch_size}"),
            (self.lr > 0, f"--lr must be positive, got {self.lr}"),
            (0 <= self.lr_min <= self.lr, f"--lr-min must be in [0, lr={self.lr}], got {self.lr_min}"),
            (0 <= self.warmup_epochs < self.epochs,
             f"--warmup-epochs must be in 0..epochs-1 ({self.epochs - 1}), got {self.warmup_epochs}"),
            (0 <= self.momentum < 1, f"--momentum must be in [0, 1), got {self.momentum}"),
            (self.weight_decay >= 0, f"--weight-decay must be >= 0, got {self.weight_decay}"),
            (self.grad_clip >= 0, f"--grad-clip must be >= 0 (0 = off), got {self.grad_clip}"),
            (self.space in SPACES, f"unknown --space {self.space!r}; choose one of {', '.join(SPACES)}"),
            (self.space != "nb201" or (self.stem == "cifar" and not self.stream),
             "--space nb201 trains the benchmark's network: the cifar stem, in-memory data (no --stream)"),
            (0 <= self.label_smoothing < 1, f"--label-smoothing must be in [0, 1), got {self.label_smoothing}"),
            (self.auxiliary_weight >= 0, f"--auxiliary-weight must be >= 0, got {self.auxiliary_weight}"),
            (0 <= self.drop_path < 1, f"--drop-path must be in [0, 1), got {self.drop_path}"),
            (self.channels >= 2, f"--channels must be at least 2, got {self.channels}"),
            (self.layers >= 1, f"--layers must be at least 1, got {self.layers}"),
            (self.subset >= 0, f"--subset must be >= 0 (0 = all images), got {self.subset}"),
            (self.cutout >= 0, f"--cutout must be >= 0, got {self.cutout}"),
            (0 <= self.seed < 2**63, f"--seed must be in 0..2^63-1, got {self.seed}"),
            (self.amp in AMP_MODES, f"unknown --amp {self.amp!r}; choose one of {', '.join(AMP_MODES)}"),
            (self.lr_schedule in ("cosine", "linear"), f"unknown --lr-schedule {self.lr_schedule!r}; choose cosine "
                                                        "or linear"),
            (self.stem != "imagenet" or self.channels % 2 == 0,
             f"--channels must be even with the imagenet stem (its first cell halves the stem output), got "
             f"{self.channels}"),
            (not self.stream or self.dataset.startswith("folder:"),
             f"--stream reads image folders; give --dataset folder:PATH, not {self.dataset!r}"),
            (self.image_size >= 8, f"--image-size must be at least 8, got {self.image_size}"),
            (self.workers >= 0, f"--workers must be >= 0, got {self.workers}"),
        ]


# NAS-Bench-201's training protocol (Dong & Yang, ICLR 2020): 200 epochs, batch 256, SGD with Nesterov momentum
# 0.9, lr 0.1 cosine to 0, weight decay 5e-4, random crop (padding 4 on 32x32) and flip; C=16, N=5; no
# auxiliary head, drop-path, cutout or gradient clipping.
NB201_TRAIN = {"paper": dict(space="nb201", channels=16, layers=5, epochs=200, batch_size=256, lr=0.1, lr_min=0.0,
                             nesterov=True, weight_decay=5e-4, cutout=0, auxiliary_weight=0.0, drop_path=0.0,
                             grad_clip=0.0),
               # Minutes on a 2-core CPU, a reduced-scale stand-in: a small network, a subset, 3 epochs.
               "quick": dict(space="nb201", dataset="fashion-mnist", subset=5000, channels=8, layers=1, epochs=3,
                             batch_size=64, lr=0.05, lr_min=0.0, nesterov=True, weight_decay=5e-4, cutout=0,
                             auxiliary_weight=0.0, drop_path=0.0, grad_clip=0.0)}


def make_train_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    """A validated TrainConfig from a preset of the space in ``overrides`` (darts by default)."""
    if overrides.get("space") == "nb201":
        if preset not in NB201_TRAIN:
            raise UserError(f"unknown nb201 preset {preset!r}; choose one of {', '.join(NB201_TRAIN)}")
        return TrainConfig(**{**NB201_TRAIN[preset], **overrides, "preset": preset}).validate()
    return TrainConfig.make(preset, **overrides)


TrainConfig.PRESETS = {
    # DARTS's CIFAR evaluation protocol, used by the paper (the dataclass defaults).
    "paper": {},
    # The paper's ImageNet (mobile) setting with PC-DARTS's large-batch recipe; give --dataset folder:PATH
    # (PATH/train and PATH/val). Images are read from disk each epoch.
    "imagenet": dict(genotype="ista_imagenet", dataset="folder:imagenet", stem="imagenet", channels=48, layers=14,
                     epochs=250, batch_size=1024, lr=0.5, warmup_epochs=5, lr_schedule="linear", weight_decay=3e-5,
                     label_smoothing=0.1,
                     drop_path=0.0, cutout=0, stream=True),
    # Minutes on a 2-core CPU: a small network, a Fashion-MNIST subset and a few epochs. A reduced-scale
    # stand-in to see the pipeline work, not the paper's setting.
    "quick": dict(dataset="fashion-mnist", subset=5000, epochs=3, batch_size=64, lr=0.05, channels=12, layers=6,
                  cutout=0, drop_path=0.1),
}
