"""Run configurations: one dataclass per command over a shared base, the paper's settings as defaults, the
reason next to each, and each field's own constraint declared beside it.

Every field is also a command-line flag (``--batch-size`` for ``batch_size``); the rules, the type test and the
precedence of presets are fields.py's. Presets are data: tables of values by preset name, layered by one rule
(``fields.resolve``): field defaults < the command's preset < the search space's preset < the search method's
preset < the space's target presets (one-stage) < explicit flags.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, ClassVar

from .errors import UserError
from .fields import FLOAT32_MAX, FRACTION, NONNEGATIVE, POSITIVE, SEED, Rule, at_least, fits, one_of, resolve
from .limits import MAX_NODES, MAX_WORKERS
from .sparse_coding import MATRIX_KINDS, WEIGHT_SCALES
from .spaces import SPACES


def _f(default: Any, help: str, rule: Rule | None = None, symbol: str = "", methods: tuple[str, ...] = (),
       why: str = "") -> Any:
    """A field: its default, its help (the reason for the default), its rule, the paper's symbol for it, and for
    a search the methods that own it, if only some do (the others refuse it away from its default: the message
    is the flags followed by ``why``)."""
    assert bool(methods) == bool(why), "a field owned by some methods says why the others refuse it"
    return field(default=default, metadata={"help": help, "rule": rule, "symbol": symbol, "methods": methods,
                                            "why": why})


# Who owns a setting that only some methods use: the methods, and what the setting is (a noun phrase, shown as
# "--flag is a setting of --method M (WHY), unused by --method N").
TRAINING_PHASE = dict(methods=("one-stage",), why="the training phase after its search")  # a search's training phase
ISTA_NAS = ("two-stage", "one-stage")  # the methods that recover z from b (not the DARTS baseline)
SPARSE_CODE = dict(methods=ISTA_NAS, why="ISTA-NAS's sparse code; DARTS searches softmax(alpha) instead")
SPLIT = dict(methods=("two-stage", "darts"), why="the bilevel split of the images; the one-stage search trains on all")
FREEZING = dict(methods=("one-stage",), why="its search freezes each decision once it settles")
# The methods whose genotype is retrained afterwards (ista-nas train), at the budget network's size.
RETRAINED = dict(methods=("two-stage", "darts"), why="the size its genotype is retrained and budgeted at; a one-stage "
                                                     "search trains its own network, --channels x --layers")


def evaluation_fields(config: dict[str, Any], search: bool) -> tuple[str, str]:
    """The (C, L) fields of the network a run's genotype is evaluated at, as its method says: a search whose
    method retrains the genotype (the methods owning ``budget_channels``), the budget network's; a training
    run, or a search that trains its own network, the run's own."""
    retrains = SearchConfig.__dataclass_fields__["budget_channels"].metadata["methods"]
    if search and config.get("method", "two-stage") in retrains:
        return "budget_channels", "budget_layers"
    return "channels", "layers"


def check_types(config: Any, source: str) -> dict[str, Any]:
    """A run's stored settings as readers rely on them: a JSON object, every setting a command knows of its type,
    a known space; else one UserError naming ``source`` and the setting."""
    kinds = {f.name: type(f.default) for cls in (SearchConfig, TrainConfig) for f in dataclasses.fields(cls)}
    bad = [f"{k} = {v!r:.40} is not of type {kinds[k].__name__}" for k, v in config.items()
           if k in kinds and not fits(v, kinds[k])] if isinstance(config, dict) else ["it holds no settings object"]
    bad += [] if bad or config.get("space", "darts") in SPACES else [f"unknown space {config.get('space')!r:.40}"]
    if bad:
        raise UserError(f"{source}: {bad[0]}; the run directory is damaged or was edited by hand")
    return config


class _Config:
    """Shared behaviour: dict round trip, type and field checks, presets; subclasses add ``_checks``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    # Settings of ista-nas 0.1.0 that 0.2.0 removed or renamed: a run that holds one was made by 0.1.0.
    RETIRED: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def changed(self, names: Collection[str]) -> list[str]:
        """Those of the fields ``names`` whose value differs from the field's default."""
        return [f.name for f in dataclasses.fields(self) if f.name in names and getattr(self, f.name) != f.default]

    @classmethod
    def unknown_keys(cls, data: dict[str, Any]) -> list[str]:
        """The keys of ``data`` that are no field of this config, sorted."""
        return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})

    @classmethod
    def check_stored(cls, data: dict[str, Any], source: str = "the run's config.json") -> None:
        """A UserError naming the settings of ista-nas 0.1.0 that ``data`` holds, or a setting of the wrong type."""
        check_types(data, source)
        retired = [f"{key} ({cls.RETIRED[key]})" for key in sorted(cls.RETIRED) if key in data]
        if retired:
            raise UserError(f"{source} was written by ista-nas 0.1.0: its settings {', '.join(retired)} are gone "
                            "in 0.2.0; continue that run with the version that wrote it (commit a2bfcc7 of this "
                            "repository), or start it again")

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        cls.check_stored(data)
        unknown = cls.unknown_keys(data)
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys are "
                            f"{', '.join(sorted(f.name for f in dataclasses.fields(cls)))}")
        return cls(**data)

    def validate(self):
        """A UserError for a wrong type, a value outside its field's rule or an impossible combination; else self."""
        for f in dataclasses.fields(self):
            value, kind = getattr(self, f.name), type(f.default)
            if not fits(value, kind):
                raise UserError(f"{f.name} must be {kind.__name__}, got {value!r:.60}")
            if kind is float and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                raise UserError(f"--{f.name.replace('_', '-')} must be a finite number float32 holds, got {value:.3g}")
            rule = f.metadata.get("rule")
            if rule is not None and not rule.test(value):
                symbol = f.metadata.get("symbol")
                flag = f"--{f.name.replace('_', '-')}" + (f" ({symbol})" if symbol else "")
                raise UserError(rule.message(flag, value))
        for ok, message in self._checks():
            if not ok:
                raise UserError(message)
        return self

    def _checks(self) -> list[tuple[bool, str]]:
        raise NotImplementedError


@dataclass
class RunConfig(_Config):
    """The fields every run has: what it trains on, the network's size, the SGD schedule, the run itself."""

    preset: str = _f("paper", "the preset the other values started from")
    space: str = _f("darts", "search space: " + ", ".join(f"{n} ({s.title})" for n, s in SPACES.items()),
                    one_of(SPACES))
    # Data
    dataset: str = _f("cifar10", "cifar10, cifar100, fashion-mnist or folder:PATH (train/ and test/ or val/ inside)")
    data_dir: str = _f("", "where torchvision datasets live (default ~/.cache/ista-nas/data)")
    subset: int = _f(0, "use only this many training images, 0 = all (a search splits them into its weight and "
                        "architecture halves)", NONNEGATIVE)
    augment: bool = _f(True, "pad-and-crop by 1/8 of the side and horizontal flip, as DARTS does")
    cutout: int = _f(0, "cutout square side in pixels, 0 = off (off in the official search)", NONNEGATIVE)
    stream: bool = _f(False, "read a folder: dataset from disk every epoch with DataLoader workers and ImageNet "
                             "augmentation, for datasets too large for memory (ImageNet; search: one-stage)",
                   methods=("one-stage",), why="a search of the target network on an image folder, --dataset "
                                               "folder:PATH")
    image_size: int = _f(224, "with --stream: training crop and test centre-crop side (ImageNet: 224)", at_least(8))
    workers: int = _f(8, "with --stream: DataLoader worker processes", Rule(lambda v: 0 <= v <= MAX_WORKERS,
                                                                             f"in 0..{MAX_WORKERS}"))
    # Network
    stem: str = _f("cifar", "cifar (one 3x3 conv) or imagenet (three stride-2 convs to 1/8, the mobile setting)",
                   one_of(("cifar", "imagenet")))
    channels: int = _f(16, "initial channels C of the search net (paper: 16)", at_least(1))
    layers: int = _f(8, "cells L; reductions at L/3 and 2L/3 (paper: 8); a space of stages: cells N per stage",
                     at_least(1))
    auxiliary_weight: float = _f(0.0, "one-stage: weight of the auxiliary head's loss, 0 = none (paper: 0.4)",
                                 NONNEGATIVE)
    drop_path: float = _f(0.0, "one-stage: final drop-path of the training phase, rising from 0 (paper: 0.2)",
                          FRACTION, **TRAINING_PHASE)
    # Optimisation: SGD, a warm-up then cosine or linear decay (DARTS's protocol)
    epochs: int = _f(50, "search epochs (paper: 50); one-stage: training epochs after the architecture is fixed "
                         "(paper: 600), the search phase comes first", at_least(1))
    batch_size: int = _f(256, "batch size of both the weight and the architecture step (paper: 256)",
                         at_least(2, "batch norm needs 2"))
    lr: float = _f(0.1, "initial weight learning rate, cosine-annealed (paper: 0.1 at batch 256)", POSITIVE)
    lr_min: float = _f(0.001, "final weight learning rate (paper: 0.001); one-stage: of the training phase (the "
                              "search phase holds lr)")
    # A search's warm-up, schedule shape, Nesterov, smoothing and AMP are its training phase's (one-stage only).
    warmup_epochs: int = _f(0, "linear learning-rate warm-up epochs before the decay (ImageNet: 5; search: the "
                               "one-stage training phase)", **TRAINING_PHASE)
    lr_schedule: str = _f("cosine", "decay after the warm-up: cosine (DARTS CIFAR) or linear (ISTA-NAS/PC-DARTS "
                                    "ImageNet; search: the one-stage training phase)", one_of(("cosine", "linear")),
                         **TRAINING_PHASE)
    momentum: float = _f(0.9, "SGD momentum (DARTS: 0.9)", FRACTION)
    nesterov: bool = _f(False, "Nesterov momentum (DARTS: off; search: the one-stage training phase)",
                        **TRAINING_PHASE)
    weight_decay: float = _f(3e-4, "SGD weight decay (DARTS CIFAR: 3e-4, ImageNet: 3e-5)", NONNEGATIVE)
    grad_clip: float = _f(5.0, "clip the weight gradient norm at this value (DARTS: 5)", NONNEGATIVE)
    label_smoothing: float = _f(0.0, "label smoothing of the loss (ImageNet: 0.1; search: the one-stage training "
                                     "phase)", FRACTION, **TRAINING_PHASE)
    amp: str = _f("auto", "mixed precision: auto (bf16 on CUDA when supported, else fp16; off on CPU), bf16, fp16, "
                          "off (search: the one-stage training phase)", one_of(("auto", "bf16", "fp16", "off")),
                   **TRAINING_PHASE)
    # Run
    seed: int = _f(2, "seeds weights, measurement matrices, split and batch order (official default: 2)", SEED)
    device: str = _f("auto", "auto (CUDA when present), cpu, cuda or cuda:N")
    channels_last: bool = _f(True, "channels-last memory format: about 2x faster convolutions on CPU")
    cuda_graphs: str = _f("auto", "replay each step from a CUDA graph, captured again every epoch: auto (one process "
                                  "on CUDA, no fp16), on or off", one_of(("auto", "on", "off")))
    sync_bn: bool = _f(True, "under torchrun: batch norm statistics over the global batch, so N processes compute "
                             "what one process does; off: each process's own shard (less communication)")
    tensorboard: bool = _f(False, "also log the metrics and the genotype to RUN/tensorboard for TensorBoard (needs "
                                  "pip install 'ista-nas[tensorboard]')")

    def _checks(self) -> list[tuple[bool, str]]:
        """The constraints between fields, shared by every command."""
        return [
            (0 <= self.lr_min <= self.lr, f"--lr-min must be in [0, lr={self.lr}], got {self.lr_min}"),
            (0 <= self.warmup_epochs < self.epochs,
             f"--warmup-epochs must be in 0..epochs-1 ({self.epochs - 1}), got {self.warmup_epochs}"),
            (self.stem != "imagenet" or self.channels % 2 == 0,
             f"--channels must be even with the imagenet stem (its first cell halves the stem output), got "
             f"{self.channels}"),
            (not self.stream or self.dataset.startswith("folder:"),
             f"--stream reads image folders; give --dataset folder:PATH, not {self.dataset!r}"),
            (self.stream or not self.changed({"workers", "image_size"}),
             "--workers and --image-size set the --stream loader, which reads an image folder from disk; add --stream "
             "or drop them"),
            (self.cuda_graphs != "on" or self.amp != "fp16", "--cuda-graphs on: fp16 loss scaling reads its overflow "
             "check on the host every step; use --amp bf16 or --cuda-graphs auto"),
        ]


@dataclass
class SearchConfig(RunConfig):
    """``ista-nas search``: a search method over a space. ``validate`` checks the fields and what holds for every
    search; ``methods.validate`` (which ``methods.make_config``, ``search`` and ``resume`` call) adds who owns a
    setting (``owned``: a field's ``methods``, a space's ``own_fields``; e.g. the one-stage training phase's
    drop_path, warmup_epochs, lr_schedule, nesterov, label_smoothing and amp are refused by the other methods)
    and what the method and the space require of the config."""

    method: str = _f("two-stage", "two-stage (search a small supernet, retrain later), one-stage (search and train "
                                  "the target network in one run) or darts (the dense first-order DARTS baseline)")
    train_portion: float = _f(0.5, "share of the training images for weights; the rest trains b (paper: 0.5)",
                              Rule(lambda v: 0 < v < 1, "strictly between 0 and 1"), **SPLIT)
    nodes: int = _f(4, "intermediate nodes per cell of the DARTS cell space (DARTS's steps: 4)",
                    Rule(lambda v: 1 <= v <= MAX_NODES, f"in 1..{MAX_NODES}"))
    # Sparse coding
    proj_dims: int = _f(7, "m, length of each node's compressed vector b (official code: 7)", at_least(1), "m",
                        **SPARSE_CODE)
    sparsity: int = _f(2, "s, candidates kept per node (DARTS cell: 2 inputs per node)", at_least(1), "s",
                       **SPARSE_CODE)
    lam: float = _f(1e-5, "l1 weight of the recovery LASSO (official code: 1e-5)", POSITIVE, **SPARSE_CODE)
    matrix: str = _f("uniform", "measurement matrix entries: uniform U[0,1) (official) or gaussian N(0,1/m)",
                     one_of(MATRIX_KINDS), **SPARSE_CODE)
    clip_with_b: bool = _f(False, "ISTA-NAS: b's gradient counts in the norm that clips the weight step, as in the "
                                  "official code (two-stage: the architecture step's plus the training batch's); "
                                  "one-stage presets: on; two-stage: off (measured: docs/one-stage.md)",
                          methods=ISTA_NAS, why="b's share of the clipped norm; DARTS clips by the weights' norm")
    # Architecture: Adam on b
    arch_init: float = _f(1e-3, "ISTA-NAS: standard deviation of b's random initial values, which sets the scale of "
                                "the first recovered z and of the relaxed weights (official: 1e-3)", POSITIVE,
                          **SPARSE_CODE)
    weight_scale: str = _f("raw", "ISTA-NAS: raw (the relaxed weights as they are, official), mean (divided by their "
                                  "mean magnitude over the cell, not differentiated) or softmax (softmax of |alpha| "
                                  "per edge: each edge a convex mixture of its support)", one_of(WEIGHT_SCALES),
                           **SPARSE_CODE)
    arch_lr: float = _f(6e-4, "Adam learning rate of b (paper two-stage: 6e-4)", POSITIVE)
    arch_weight_decay: float = _f(1e-3, "Adam weight decay of b (official code: 1e-3)", NONNEGATIVE)
    # One-stage search
    freeze_tol: float = _f(1e-3, "one-stage: a decision group (a node of the DARTS cell, an edge of others) "
                                 "freezes when its z moved at most this much (L2) in an epoch", NONNEGATIVE,
                            **FREEZING)
    max_search_epochs: int = _f(0, "one-stage: freeze every group still searching after this many search epochs, "
                                   "0 = search until every group froze", NONNEGATIVE, **FREEZING)
    # Parameter budget
    max_params: float = _f(0.0, "reject recovered architectures over this many million parameters, 0 = no budget "
                                "(two-stage: counted for the budget_channels x budget_layers network)", NONNEGATIVE,
                          methods=ISTA_NAS, why="the recovery under a parameter budget; DARTS has none")
    # The network a search's genotype is evaluated at: the methods that own these retrain it at this size (the
    # others train their own network, --channels x --layers): its parameter budget and its reports' sizes.
    budget_channels: int = _f(36, "two-stage: C of the network the parameter budget is counted for", at_least(2),
                              **RETRAINED)
    budget_layers: int = _f(20, "two-stage: L of the network the parameter budget is counted for", at_least(1),
                            **RETRAINED)
    # The true quality of the search trajectory (a tabular benchmark: every architecture trained)
    benchmark: str = _f("", "a benchmark table (CSV with a header, or JSON lines) of architectures and their trained "
                            "accuracy: every epoch records the --metric of the architecture the search holds; "
                            "empty: the space's built-in table where one ships, none: no table")
    arch_column: str = _f("arch", "the benchmark table's column of architecture strings")
    metric: str = _f("", "the benchmark table's column to record (any numeric column); empty: test_acc of a file, "
                         "the first metric of a built-in table (cifar10)")

    def owned(self, baseline: "SearchConfig") -> list[tuple[bool, str]]:
        """The one check of who owns a setting: a setting that only other methods use (its field's ``methods``, with
        its ``why``) or only another space offers (that space's ``own_fields``) keeps the value ``baseline`` (the
        same preset, method and space without flags) gives it. One refusal per setting given, naming the flag, its
        owner and the fix. ``methods.validate`` calls it once the method is known, before anything else."""
        checks = []
        for f in dataclasses.fields(self):
            if getattr(self, f.name) == getattr(baseline, f.name):
                continue
            flag, owners = f"--{f.name.replace('_', '-')}", f.metadata.get("methods", ())
            if owners and self.method not in owners:
                checks.append((False, f"{flag} is a setting of --method {' and '.join(owners)} ({f.metadata['why']}), "
                                      f"unused by --method {self.method}: drop it or use --method {owners[0]}"))
            offered = [s.name for s in SPACES.values() if f.name in s.own_fields]
            if offered and self.space not in offered:
                checks.append((False, f"{flag} is a setting of --space {offered[0]} only, unused by --space "
                                      f"{self.space}: drop it or use --space {offered[0]}"))
        return checks

    def _checks(self) -> list[tuple[bool, str]]:
        return super()._checks() + [
            (self.grad_clip > 0, f"--grad-clip must be positive, got {self.grad_clip}"),
        ]


@dataclass
class TrainConfig(RunConfig):
    """``ista-nas train``: a genotype's network from scratch (the paper's CIFAR evaluation protocol)."""

    genotype: str = _f("ista_twostage", "built-in genotype name, a genotype.json, or a search run directory")
    arch: str = _f("", "an architecture in its space's written form (instead of --genotype), e.g. " + " or ".join(
        f"'{s.example}'" for s in SPACES.values() if s.example))
    cutout: int = _f(16, "cutout square side in pixels, 0 = off (DARTS retrain: 16)", NONNEGATIVE)
    channels: int = _f(36, "initial channels C (paper CIFAR: 36, ImageNet: 48)", at_least(2))
    layers: int = _f(20, "cells L; reductions at L/3 and 2L/3 (paper CIFAR: 20, ImageNet: 14); a space of stages: "
                         "cells N per stage", at_least(1))
    auxiliary_weight: float = _f(0.4, "weight of the auxiliary head's loss, 0 = no auxiliary head (DARTS: 0.4)",
                                 NONNEGATIVE)
    drop_path: float = _f(0.2, "final drop-path probability, rising linearly from 0 (DARTS: 0.2)", FRACTION)
    epochs: int = _f(600, "training epochs (paper: 600)", at_least(1))
    batch_size: int = _f(96, "batch size (paper: 96)", at_least(2, "batch norm needs 2"))
    lr: float = _f(0.025, "initial learning rate, annealed to lr_min (paper: 0.025)", POSITIVE)
    lr_min: float = _f(0.0, "final learning rate (DARTS: 0)")
    grad_clip: float = _f(5.0, "clip the gradient norm at this value, 0 = off (DARTS: 5)", NONNEGATIVE)
    seed: int = _f(0, "seeds weights, subset and batch order", SEED)

    def _checks(self) -> list[tuple[bool, str]]:
        return super()._checks() + SPACES[self.space].check_train(self)


SearchConfig.RETIRED = {"explore": "removed", "weight_warmup_epochs": "removed", "steps": "renamed nodes"}

SearchConfig.PRESETS = {
    # The paper's two-stage search on CIFAR-10 (the dataclass defaults).
    "paper": {},
    # Minutes on a 2-core CPU: a small net on 28x28 Fashion-MNIST, a subset and a few epochs. A reduced-scale
    # stand-in for the paper's setting, to try the tool and see a search converge, not to reproduce results.
    # lr 0.05 at batch 64 (above the paper's 0.1 * 64/256): with b starting at 1e-3 the relaxed weights are tiny
    # and a 10-epoch search needs the faster start.
    "quick": dict(dataset="fashion-mnist", subset=6000, epochs=10, batch_size=64, lr=0.05, channels=8, layers=5),
}

TrainConfig.PRESETS = {
    # DARTS's CIFAR evaluation protocol, used by the paper (the dataclass defaults).
    "paper": {},
    # The paper's ImageNet (mobile) setting with PC-DARTS's large-batch recipe; give --dataset folder:PATH
    # (PATH/train and PATH/val). Images are read from disk each epoch.
    "imagenet": dict(genotype="ista_imagenet", dataset="folder:imagenet", stem="imagenet", channels=48, layers=14,
                     epochs=250, batch_size=1024, lr=0.5, warmup_epochs=5, lr_schedule="linear", weight_decay=3e-5,
                     label_smoothing=0.1, drop_path=0.0, cutout=0, stream=True),
    # Minutes on a 2-core CPU: a small network, a Fashion-MNIST subset and a few epochs. A reduced-scale
    # stand-in to see the pipeline work, not the paper's setting.
    "quick": dict(dataset="fashion-mnist", subset=5000, epochs=3, batch_size=64, lr=0.05, channels=12, layers=6,
                  cutout=0, drop_path=0.1),
}


def make_train_config(preset: str = "paper", **overrides: Any) -> TrainConfig:
    """A validated TrainConfig from a preset (``train_settings``)."""
    return train_settings(preset, **overrides).validate()


def train_settings(preset: str = "paper", **overrides: Any) -> TrainConfig:
    """The TrainConfig of a preset: the command's, then the space's (``overrides``' space, darts by default);
    not validated yet (``retrain.train`` validates it)."""
    space = SPACES.get(overrides.get("space", "darts"))
    tables = [("", TrainConfig.PRESETS)] + ([(f"--space {space.name}", space.train_presets)] if space else [])
    return TrainConfig(**resolve(preset, tables, overrides))
