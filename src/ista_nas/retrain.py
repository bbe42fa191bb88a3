"""Stage two: train the network a genotype describes from scratch and evaluate it (DARTS's protocol).

Per epoch: drop-path rises linearly to its final value, the learning rate follows a linear warm-up then a
cosine, every training batch is one SGD step on the loss plus the auxiliary head's weighted loss, and the
test split is evaluated (top-1, top-5). A checkpoint records everything ``evaluate`` and ``export`` need to
rebuild the model without the run directory.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import torch

from .config import TrainConfig
from .engine.checkpoint import load_checkpoint
from .engine.data import DeviceLoader, load_dataset
from .engine.distributed import Dist, on_main, place
from .engine import driver
from .engine.driver import EpochPlan, Job
from .engine.loop import resolve_device
from .engine.rundir import RunDir
from .engine.splits import train_test
from .engine.stream import StreamingLoader
from .engine.trainer import Loader, Trainer, autocast_for, evaluate, training_means
from .errors import UserError
from .limits import MAX_WORKERS, check_count
from .methods import check_types, run_record
from .networks.cnn import count_parameters
from .spaces import (SPACES, build_model, check_activations, check_network, get_genotype, model_spec, space_of,
                     write_diagrams)

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    test_top1: float
    test_top5: float
    metrics: list[dict[str, Any]]


def resolve_genotype(cfg: TrainConfig) -> Any:
    """The architecture to train (--arch, else --genotype), checked against --space."""
    given = cfg.arch or cfg.genotype
    if not cfg.arch and (Path(given) / "config.json").is_file() and RunDir(given).finished() is False:
        raise UserError(f"--genotype {given} is a run that stopped early: its genotype.json is an interim one; finish "
                        f"it (ista-nas search --resume {given}) or train that interim cell on purpose with "
                        f"--genotype {Path(given) / 'genotype.json'}")
    genotype = get_genotype(given)
    other = space_of(genotype).name
    if other != cfg.space:
        space = SPACES[cfg.space]
        written = f"--arch '{space.example}' or " if space.example else ""
        raise UserError(f"--genotype/--arch {given} is an architecture of --space {other}, not of --space {cfg.space}: "
                        f"give {written}--genotype with the run directory of a --space {cfg.space} search (or train "
                        f"it with --space {other})")
    return genotype


def train(cfg: TrainConfig, out: str | Path) -> TrainResult:
    """Train ``cfg.genotype`` from scratch into the new run directory ``out``."""
    cfg.validate()
    check_network(cfg.space, cfg.channels, cfg.layers)
    # A bad --genotype or --out fails before anything else (checked where the run directory will be: rank 0).
    return driver.start(Train(cfg), out,
                        check=lambda: check_network(cfg.space, cfg.channels, cfg.layers, resolve_genotype(cfg)))


def resume(run_dir: str | Path, **overrides: Any) -> TrainResult:
    """Continue the training run in ``run_dir`` from its last checkpoint (epochs and device may change)."""
    return driver.resume(run_dir, Train, TrainConfig, overrides, entry=lambda _: Train.entry)


class TrainState(TypedDict, total=False):
    """A training checkpoint's own entries: what ``evaluate`` and ``export`` read without the run directory."""

    model_spec: dict[str, Any]  # spaces.model_spec: rebuild the network and feed it
    trainer: dict[str, Any]  # Trainer.state_dict(): its "model" entry is the trained network
    test: dict[str, float]  # the last finished epoch's test loss, top-1, top-5 (none in a Ctrl-C checkpoint)


class Train(Job):
    """Training from scratch as the driver runs it: per epoch the trainer's steps, then the test split."""

    entry = "trainer"

    def setup(self, ctx: Dist) -> None:
        cfg = self.cfg
        self.ctx = ctx
        self.genotype = on_main(lambda: resolve_genotype(cfg))  # a run directory may exist on rank 0's node only
        data, self.train_loader, self.test_loader = train_test(cfg, ctx)
        self.spec = model_spec(cfg, self.genotype, data, *self.train_loader.mean_std)
        check_activations(cfg.space, cfg.channels, cfg.layers, cfg.batch_size, data, cfg.device, cfg.stem)
        torch.manual_seed(cfg.seed)
        self.model = place(build_model(self.spec), ctx, cfg.channels_last, cfg.sync_bn)
        self.trainer = Trainer(self.model, cfg, ctx)
        self.test: dict[str, float] = {}

    def opened(self, run: RunDir) -> None:
        super().opened(run)
        run.write_json("genotype.json", self.genotype.to_dict())
        if run.writes:
            write_diagrams(self.genotype, run.path, run_owned=True)

    def load(self, checkpoint: dict[str, Any]) -> None:
        self.trainer.load_state_dict(checkpoint["trainer"])

    def start_line(self) -> str:
        cfg = self.cfg
        return (f"training {cfg.arch or cfg.genotype} ({count_parameters(self.model) / 1e6:.3f}M parameters without "
                f"the auxiliary head) on {self.ctx}: {cfg.dataset}, {len(self.train_loader.indices)} train / "
                f"{len(self.test_loader.indices)} test images")

    def begin_epoch(self, epoch: int) -> EpochPlan:
        self.trainer.begin_epoch(epoch)
        return EpochPlan(self.trainer.step, self.train_loader.epoch(epoch), len(self.train_loader),
                         f"epoch {epoch + 1}/{self.cfg.epochs}", training_means)

    def end_epoch(self, epoch: int, stats: dict[str, float]) -> dict[str, Any]:
        self.test = test = evaluate(self.model, self.test_loader, self.trainer.autocast,
                                    desc=f"test {epoch + 1}/{self.cfg.epochs}", ctx=self.ctx)
        return {**stats, "test_loss": test["loss"], "test_top1": test["top1"], "test_top5": test["top5"],
                "lr": self.trainer.optimizer.param_groups[0]["lr"], "drop_path": self.model.drop_path_prob}

    def state(self, finished: int, stopped: bool = False) -> TrainState:
        state = TrainState(model_spec=self.spec, trainer=self.trainer.state_dict())
        if not stopped:
            state["test"] = self.test
        return state

    def log_epoch(self, record: dict[str, Any]) -> None:
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f top-1 %.2f%% top-5 %.2f%%  %.1fs",
                 record["epoch"], self.cfg.epochs, record["train_loss"], record["train_acc"], record["test_loss"],
                 record["test_top1"], record["test_top5"], record["seconds"])

    def result(self, run: RunDir) -> TrainResult:
        metrics = run.read_metrics()
        last = metrics[-1] if metrics else {"test_top1": float("nan"), "test_top5": float("nan")}
        log.info("final test accuracy: top-1 %.2f%%, top-5 %.2f%%; checkpoint %s", last["test_top1"],
                 last["test_top5"], run.checkpoint_path)
        return TrainResult(run.path, last["test_top1"], last["test_top5"], metrics)


def load_model(checkpoint_path: str | Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained network of a training checkpoint (eval mode, on the CPU) and the checkpoint itself."""
    checkpoint = load_checkpoint(checkpoint_path)
    if not all(k in checkpoint for k in ("model_spec", "trainer")):
        config = checkpoint.get("config")
        record = run_record(config, f"checkpoint {checkpoint_path}") if isinstance(config, dict) else None
        if record and record.search:
            run = Path(checkpoint_path).parent
            raise UserError(f"{checkpoint_path} is the checkpoint of a {record.method} search, which trains no "
                            f"network to evaluate or export; train its cell first: ista-nas train --genotype {run}")
        raise UserError(f"{checkpoint_path} holds no trained network (no model_spec or trainer); give the "
                        "checkpoint.pt of an ista-nas train run")
    model = build_model(checkpoint["model_spec"], f"checkpoint {checkpoint_path}")
    weights = checkpoint["trainer"].get("model") if isinstance(checkpoint["trainer"], dict) else None
    try:
        model.load_state_dict(weights)
    except (TypeError, AttributeError, RuntimeError, ValueError):
        raise UserError(f"checkpoint {checkpoint_path}: its weights do not fit the network its model spec describes; "
                        "the checkpoint is damaged or was not written by ista-nas train") from None
    return model.eval(), checkpoint


def evaluate_checkpoint(checkpoint_path: str | Path, dataset: str | None = None, data_dir: str | None = None,
                        device: str = "auto", batch_size: int = 256) -> dict[str, float]:
    """Test loss, top-1 and top-5 of a trained checkpoint, on its own dataset's test split or ``dataset``'s."""
    model, checkpoint = load_model(checkpoint_path)
    # The run's settings that matter here, from a training or a one-stage search checkpoint alike.
    defaults = TrainConfig().to_dict()
    stored = check_types(checkpoint["config"], f"checkpoint {checkpoint_path}")
    cfg = TrainConfig(**{k: stored.get(k, v) for k, v in defaults.items()})
    try:  # the loader's settings come from the file: held to the same rules as flags (--workers at most 64, ...)
        check_count("--workers", cfg.workers, 0, MAX_WORKERS)
        check_count("--image-size", cfg.image_size, 8, 4 * 1024)
    except UserError as error:
        raise UserError(f"checkpoint {checkpoint_path}: its {error}; the checkpoint is damaged or was edited") from None
    dev = resolve_device(device)
    name = dataset or cfg.dataset
    spec = checkpoint["model_spec"]
    loader: Loader
    if cfg.stream and name.startswith("folder:"):
        loader = StreamingLoader(name[len("folder:"):], "test", batch_size, dev, train=False,
                                 image_size=cfg.image_size, workers=cfg.workers, channels_last=cfg.channels_last)
        names, channels = loader.classes, 3
    else:
        test = load_dataset(name, "test", data_dir or cfg.data_dir or None)
        loader = DeviceLoader(test, torch.arange(len(test)), batch_size, dev, spec["mean"], spec["std"],
                              shuffle=False, drop_last=False, channels_last=cfg.channels_last)
        names, channels = test.classes, test.channels
    if names != spec["classes"] or channels != spec["in_channels"]:
        raise UserError(f"{name} has {len(names)} classes of {channels}-channel images ({', '.join(names[:4])}...) "
                        f"but the model was trained on {spec['num_classes']} classes of {spec['in_channels']}-channel "
                        f"images ({', '.join(spec['classes'][:4])}...); evaluate on a dataset with the same classes")
    model = model.to(dev)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    result = evaluate(model, loader, autocast_for(dev, cfg.amp)[0])
    return {**result, "images": len(loader.indices), "dataset": name}
