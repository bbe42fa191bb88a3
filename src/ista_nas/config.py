"""What every run has: the settings of its data, network, SGD schedule and the run itself (``RunConfig``), the
training phase that the train command and the one-stage search share (``TrainingPhase``, ``Streaming``), the
train command's config (``TrainConfig``), and the behaviour every config has (``_Config``: dict round trip, type
and rule checks, presets). A search's config is composed in ``methods`` from this base and the settings each
method and space declares beside its code (``fields.Settings``).

Presets are data: tables of values by preset name, layered by one rule (``fields.resolve``): field defaults <
the command's preset < the search space's preset < the search method's preset < the space's target presets
(one-stage) < explicit flags.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

from .errors import UserError
from .fields import FLOAT32_MAX, FRACTION, NONNEGATIVE, POSITIVE, SEED, Rule, Settings, at_least, fits, one_of, resolve
from .fields import setting as _f
from .limits import MAX_WORKERS
from .spaces import SPACES


# The record a run's config.json holds beside its settings: the command that made it (its config class's COMMAND).
COMMAND_KEY = "command"
COMMANDS = ("search", "train")


def check_types(config: Any, source: str, classes: tuple[type, ...]) -> dict[str, Any]:
    """A run's stored settings as readers rely on them: a JSON object, every setting of ``classes`` of its type,
    a known space and command where it names them; else one UserError naming ``source`` and the setting."""
    types = {f.name: type(f.default) for cls in classes for f in dataclasses.fields(cls)}
    bad = [f"{k} = {v!r:.40} is not of type {types[k].__name__}" for k, v in config.items()
           if k in types and not fits(v, types[k])] if isinstance(config, dict) else ["it holds no settings object"]
    if not bad and config.get("space") not in (None, *SPACES):  # a run of an earlier version may name none
        bad = [f"unknown space {config['space']!r:.40}"]
    if not bad and config.get(COMMAND_KEY) not in (None, *COMMANDS):  # a run of an earlier version names none
        bad = [f"unknown command {config[COMMAND_KEY]!r:.40} (a run names {' or '.join(COMMANDS)})"]
    if bad:
        raise UserError(f"{source}: {bad[0]}; the run directory is damaged or was edited by hand")
    return config


class _Config:
    """Shared behaviour: dict round trip, type and field checks, presets; each part adds ``own_checks``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {}
    COMMAND: ClassVar[str] = ""  # the command whose settings these are, recorded in a run's config.json
    # Settings of ista-nas 0.1.0 that 0.2.0 removed or renamed: a run that holds one was made by 0.1.0.
    RETIRED: ClassVar[dict[str, str]] = {}
    # Settings removed after a study: (the value that left them off, the last commit that had them). A run that
    # recorded that value reads as one without the setting; any other value is refused, naming the commit.
    DROPPED: ClassVar[dict[str, tuple[Any, str]]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def record(self) -> dict[str, Any]:
        """What a run's config.json and checkpoints hold: the command that made the run, then its settings."""
        return {COMMAND_KEY: self.COMMAND, **self.to_dict()}

    def changed(self, names: Collection[str]) -> list[str]:
        """Those of the fields ``names`` whose value differs from the field's default."""
        return [f.name for f in dataclasses.fields(self) if f.name in names and getattr(self, f.name) != f.default]

    @classmethod
    def unknown_keys(cls, data: dict[str, Any]) -> list[str]:
        """The keys of ``data`` that are no field of this config (nor its record), sorted."""
        return sorted(set(data) - {f.name for f in dataclasses.fields(cls)} - {COMMAND_KEY} - set(cls.DROPPED))

    @classmethod
    def check_stored(cls, data: dict[str, Any], source: str = "the run's config.json") -> None:
        """A UserError naming the settings of ista-nas 0.1.0 that ``data`` holds, a setting of the wrong type, or
        another command's record."""
        check_types(data, source, (cls,))
        if data.get(COMMAND_KEY, cls.COMMAND) != cls.COMMAND:
            raise UserError(f"{source} is not a run of this command: it records an ista-nas {data[COMMAND_KEY]} run; "
                            f"give it to ista-nas {data[COMMAND_KEY]} (--resume continues it there)")
        retired = [f"{key} ({cls.RETIRED[key]})" for key in sorted(cls.RETIRED) if key in data]
        if retired:
            raise UserError(f"{source} was written by ista-nas 0.1.0: its settings {', '.join(retired)} are gone "
                            "in 0.2.0; continue that run with the version that wrote it (commit a2bfcc7 of this "
                            "repository), or start it again")
        for key, (off, commit) in cls.DROPPED.items():
            if key in data and data[key] != off:
                raise UserError(f"{source} records {key} {data[key]!r}, a setting since removed; continue that run "
                                f"with the version that had it (commit {commit} of this repository), or start it "
                                "again")

    @classmethod
    def current(cls, data: dict[str, Any]) -> dict[str, Any]:
        """``data`` without the removed settings a run recorded off (``DROPPED``; ``check_stored`` refuses any
        other value)."""
        return {k: v for k, v in data.items() if k not in cls.DROPPED}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        cls.check_stored(data)
        unknown = cls.unknown_keys(data)
        if unknown:
            raise UserError(f"unknown config key(s) {', '.join(map(repr, unknown))}; valid keys are "
                            f"{', '.join(sorted(f.name for f in dataclasses.fields(cls)))}")
        return cls(**{k: v for k, v in cls.current(data).items() if k != COMMAND_KEY})

    def validate(self):
        """A UserError for a wrong type, a value outside its field's rule or an impossible combination; else self."""
        self.check_rules()
        self.check_parts(type(self).__mro__)
        return self

    def check_rules(self) -> None:
        """Every field's type and rule."""
        for f in dataclasses.fields(self):
            value, expected = getattr(self, f.name), type(f.default)
            if not fits(value, expected):
                raise UserError(f"{f.name} must be {expected.__name__}, got {value!r:.60}")
            if expected is float and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
                raise UserError(f"--{f.name.replace('_', '-')} must be a finite number float32 holds, got {value:.3g}")
            rule = f.metadata.get("rule")
            if rule is not None and not rule.test(value):
                symbol = f.metadata.get("symbol")
                flag = f"--{f.name.replace('_', '-')}" + (f" ({symbol})" if symbol else "")
                raise UserError(rule.message(flag, value))

    def check_parts(self, parts: Collection[type]) -> None:
        """The constraints each of ``parts`` (this config's classes) declares, ``own_checks``: one validation per
        part, the run's first."""
        for part in reversed(type(self).__mro__):
            if part in parts:
                for ok, message in part.__dict__.get("own_checks", lambda _: [])(self):
                    if not ok:
                        raise UserError(message)


@dataclass
class RunConfig(_Config):
    """The settings every run has: what it trains on, the network's size, the SGD schedule, the run itself."""

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
    # Network
    stem: str = _f("cifar", "cifar (one 3x3 conv) or imagenet (three stride-2 convs to 1/8, the mobile setting)",
                   one_of(("cifar", "imagenet")))
    channels: int = _f(16, "initial channels C of the search net (paper: 16)", at_least(1))
    layers: int = _f(8, "cells L; reductions at L/3 and 2L/3 (paper: 8); a space of stages: cells N per stage",
                     at_least(1))
    auxiliary_weight: float = _f(0.0, "one-stage: weight of the auxiliary head's loss, 0 = none (paper: 0.4)",
                                 NONNEGATIVE)
    # Optimisation: SGD with cosine decay (DARTS's protocol)
    epochs: int = _f(50, "search epochs (paper: 50); one-stage: training epochs after the architecture is fixed "
                         "(paper: 600), the search phase comes first", at_least(1))
    batch_size: int = _f(256, "batch size of both the weight and the architecture step (paper: 256)",
                         at_least(2, "batch norm needs 2"))
    lr: float = _f(0.1, "initial weight learning rate, cosine-annealed (paper: 0.1 at batch 256)", POSITIVE)
    lr_min: float = _f(0.001, "final weight learning rate (paper: 0.001); one-stage: of the training phase (the "
                              "search phase holds lr)")
    momentum: float = _f(0.9, "SGD momentum (DARTS: 0.9)", FRACTION)
    weight_decay: float = _f(3e-4, "SGD weight decay (DARTS CIFAR: 3e-4, ImageNet: 3e-5)", NONNEGATIVE)
    grad_clip: float = _f(5.0, "clip the weight gradient norm at this value (DARTS: 5)", NONNEGATIVE)
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

    def own_checks(self) -> list[tuple[bool, str]]:
        """The constraints between fields, shared by every command."""
        return [
            (0 <= self.lr_min <= self.lr, f"--lr-min must be in [0, lr={self.lr}], got {self.lr_min}"),
            (self.stem != "imagenet" or self.channels % 2 == 0,
             f"--channels must be even with the imagenet stem (its first cell halves the stem output), got "
             f"{self.channels}"),
        ]


@dataclass
class TrainingPhase(Settings):
    """How a network of fixed architecture trains beyond the search's SGD: the train command's, and the
    training phase of a one-stage search (which lists these among its settings)."""

    why: ClassVar[str] = "the training phase after its search"

    drop_path: float = _f(0.0, "one-stage: final drop-path of the training phase, rising from 0 (paper: 0.2)",
                          FRACTION)
    warmup_epochs: int = _f(0, "linear learning-rate warm-up epochs before the decay (ImageNet: 5; search: the "
                               "one-stage training phase)")
    lr_schedule: str = _f("cosine", "decay after the warm-up: cosine (DARTS CIFAR) or linear (ISTA-NAS/PC-DARTS "
                                    "ImageNet; search: the one-stage training phase)", one_of(("cosine", "linear")))
    nesterov: bool = _f(False, "Nesterov momentum (DARTS: off; search: the one-stage training phase)")
    label_smoothing: float = _f(0.0, "label smoothing of the loss (ImageNet: 0.1; search: the one-stage training "
                                     "phase)", FRACTION)
    amp: str = _f("auto", "mixed precision: auto (bf16 on CUDA when supported, else fp16; off on CPU), bf16, fp16, "
                          "off (search: the one-stage training phase)", one_of(("auto", "bf16", "fp16", "off")))

    def own_checks(self) -> list[tuple[bool, str]]:
        return [
            (0 <= self.warmup_epochs < self.epochs,
             f"--warmup-epochs must be in 0..epochs-1 ({self.epochs - 1}), got {self.warmup_epochs}"),
            (self.cuda_graphs != "on" or self.amp != "fp16", "--cuda-graphs on: fp16 loss scaling reads its overflow "
             "check on the host every step; use --amp bf16 or --cuda-graphs auto"),
        ]


@dataclass
class Streaming(Settings):
    """Images read from disk every epoch: the train command's, and a one-stage search's (ImageNet)."""

    why: ClassVar[str] = "a search of the target network on an image folder, --dataset folder:PATH"

    stream: bool = _f(False, "read a folder: dataset from disk every epoch with DataLoader workers and ImageNet "
                             "augmentation, for datasets too large for memory (ImageNet; search: one-stage)")
    image_size: int = _f(224, "with --stream: training crop and test centre-crop side (ImageNet: 224)", at_least(8))
    workers: int = _f(8, "with --stream: DataLoader worker processes", Rule(lambda v: 0 <= v <= MAX_WORKERS,
                                                                             f"in 0..{MAX_WORKERS}"))

    def own_checks(self) -> list[tuple[bool, str]]:
        return [
            (not self.stream or self.dataset.startswith("folder:"),
             f"--stream reads image folders; give --dataset folder:PATH, not {self.dataset!r}"),
            (self.stream or not self.changed({"workers", "image_size"}),
             "--workers and --image-size set the --stream loader, which reads an image folder from disk; add --stream "
             "or drop them"),
        ]


@dataclass
class TrainConfig(RunConfig, TrainingPhase, Streaming):
    """``ista-nas train``: a genotype's network from scratch (the paper's CIFAR evaluation protocol)."""

    COMMAND: ClassVar[str] = "train"

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

    def own_checks(self) -> list[tuple[bool, str]]:
        return SPACES[self.space].check_train(self)


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
    space = SPACES.get(overrides.get("space", TrainConfig.space))
    tables = [("", TrainConfig.PRESETS)] + ([(f"--space {space.name}", space.train_presets)] if space else [])
    return TrainConfig(**resolve(preset, tables, overrides))
