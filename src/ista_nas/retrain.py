"""Stage two: train the network a genotype describes from scratch and evaluate it (DARTS's protocol).

Per epoch: drop-path rises linearly to its final value, the learning rate follows a linear warm-up then a
cosine, every training batch is one SGD step on the loss plus the auxiliary head's weighted loss, and the
test split is evaluated (top-1, top-5). A checkpoint records everything ``evaluate`` and ``export`` need to
rebuild the model without the run directory.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import TrainConfig
from .engine.checkpoint import load_checkpoint
from .engine.data import Augment, DeviceLoader, ImageData, epoch_seed, load_dataset, seeded_subset
from .engine.distributed import Dist, on_main, place, wrap
from .engine.loop import EpochInterrupted, cosine_lr, graceful_stop, resolve_device, resume_point, run_epoch
from .engine.stream import StreamingLoader
from .engine.rundir import RunDir
from .diagram import write_diagrams
from .errors import UserError
from .genotype import NB201_EXAMPLE, AnyGenotype, Genotype, Nb201Arch
from .networks.cnn import Network, count_parameters
from .published import get_genotype
from .spaces import SPACES

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    test_top1: float
    test_top5: float
    metrics: list[dict[str, Any]]


def learning_rate(epoch: int, cfg: TrainConfig) -> float:
    """Linear warm-up reaching lr in the last of ``warmup_epochs`` (lr * (e + 1) / warmup, as the ISTA-NAS
    ImageNet code), then cosine or linear decay from lr to lr_min over the remaining epochs."""
    if epoch < cfg.warmup_epochs:
        return cfg.lr * (epoch + 1) / cfg.warmup_epochs
    e, span = epoch - cfg.warmup_epochs, cfg.epochs - cfg.warmup_epochs
    if cfg.lr_schedule == "linear":
        return cfg.lr_min + (cfg.lr - cfg.lr_min) * (1 - e / span)
    return cosine_lr(e, span, cfg.lr, cfg.lr_min)


@dataclass
class DataInfo:
    classes: list[str]
    channels: int
    size: tuple[int, int]


Loader = DeviceLoader | StreamingLoader


def resolve_genotype(cfg: TrainConfig) -> AnyGenotype:
    """The architecture to train (--arch, else --genotype), checked against --space."""
    genotype = get_genotype(cfg.arch or cfg.genotype)
    if cfg.space == "nb201" and not isinstance(genotype, Nb201Arch):
        raise UserError(f"--space nb201 trains a NAS-Bench-201 architecture; give --arch '{NB201_EXAMPLE}' or the "
                        "run directory of an nb201 search as --genotype")
    if cfg.space == "darts" and not isinstance(genotype, Genotype):
        raise UserError(f"{cfg.arch or cfg.genotype} is a NAS-Bench-201 architecture; train it with --space nb201")
    return genotype


def model_spec(cfg: TrainConfig, genotype: AnyGenotype, data: DataInfo, mean: list[float], std: list[float]
               ) -> dict[str, Any]:
    """Everything needed to rebuild and feed the network; stored in every checkpoint."""
    return {"space": cfg.space, "genotype": genotype.to_dict(), "channels": cfg.channels, "layers": cfg.layers,
            "num_classes": len(data.classes), "in_channels": data.channels, "auxiliary": cfg.auxiliary_weight > 0,
            "stem": cfg.stem, "classes": data.classes, "image_size": list(data.size), "mean": mean, "std": std}


def build_model(spec: dict[str, Any]) -> torch.nn.Module:
    """The discrete network a model spec describes, in its search space (DARTS cells by default)."""
    return SPACES[spec.get("space", "darts")].network(spec)


def autocast_for(device: torch.device, amp: str) -> tuple[Callable[[], Any], bool]:
    """(context factory, needs a grad scaler) for the mixed-precision mode on this device."""
    if device.type != "cuda" or amp == "off":
        return contextlib.nullcontext, False
    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise UserError("--amp bf16: this GPU has no bf16 support; use --amp fp16 or auto")
    dtype = torch.float16 if amp == "fp16" or (amp == "auto" and not torch.cuda.is_bf16_supported()) \
        else torch.bfloat16
    return (lambda: torch.autocast("cuda", dtype=dtype)), dtype == torch.float16


class Trainer:
    """The model, its optimiser and the mixed-precision machinery; ``step`` is one SGD update (on this
    rank's shard, gradients averaged over the ranks by DDP)."""

    def __init__(self, model: Network, cfg: TrainConfig, ctx: Dist):
        self.model, self.cfg, self.ctx = model, cfg, ctx
        self.optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
        used = model.used_parameters() if hasattr(model, "used_parameters") else list(model.parameters())
        self.train_net = wrap(model, [p for p in used if p.requires_grad], ctx)
        self.autocast, scaled = autocast_for(ctx.device, cfg.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaled)

    def begin_epoch(self, epoch: int) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(epoch, self.cfg)
        self.model.drop_path_prob = self.cfg.drop_path * epoch / self.cfg.epochs
        # Drop-path masks: reproducible after a resume, and different on every rank.
        torch.manual_seed(epoch_seed(self.cfg.seed, epoch, 2) + self.ctx.rank)
        self.model.train()

    def step(self, x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with self.autocast():
            logits, aux = self.train_net(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.cfg.label_smoothing)
            total = loss if aux is None else loss + self.cfg.auxiliary_weight * F.cross_entropy(
                aux, y, label_smoothing=self.cfg.label_smoothing)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": loss.detach().float() * len(y), "correct": (logits.argmax(1) == y).sum(),
                "n": torch.tensor(len(y))}

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if state["scaler"]:  # empty when the run trained without fp16 loss scaling: a new scaler starts fresh
            self.scaler.load_state_dict(state["scaler"])


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader: Loader, autocast: Callable[[], Any] = contextlib.nullcontext,
             desc: str = "test", ctx: Dist = Dist()) -> dict[str, float]:
    """Loss, top-1 and top-5 accuracy (%) of ``model`` over one pass of ``loader`` (every rank's shard)."""
    model.eval()

    def step(x: Tensor, y: Tensor) -> dict[str, Tensor]:
        with autocast():
            logits = model(x).float()
        top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
        return {"loss": F.cross_entropy(logits, y, reduction="sum"), "top1": (top5[:, 0] == y).sum(),
                "top5": (top5 == y.unsqueeze(1)).any(1).sum(), "n": torch.tensor(len(y))}

    def summarize(sums: dict[str, float]) -> dict[str, float]:
        n = max(sums["n"], 1.0)
        return {"loss": sums["loss"] / n, "top1": 100 * sums["top1"] / n, "top5": 100 * sums["top5"] / n}

    return run_epoch(step, loader.epoch(0), len(loader), desc, summarize, reduce=ctx.sum_stats, show=ctx.main)


def prepare_data(cfg: TrainConfig, ctx: Dist) -> tuple[DataInfo, Loader, Loader]:
    """Training split (seeded subset, augmented) and test split (whole, in order); the loaders carry the
    normalisation (mean, std) of the training data and yield this rank's shard of every global batch."""
    ctx.check_batch(cfg.batch_size)
    device, shard = ctx.device, (ctx.rank, ctx.world)
    if cfg.stream:
        root = cfg.dataset[len("folder:"):]
        common = dict(device=device, image_size=cfg.image_size, workers=cfg.workers, seed=cfg.seed,
                      channels_last=cfg.channels_last, shard=shard)
        train_loader = StreamingLoader(root, "train", cfg.batch_size, train=True, subset=cfg.subset, **common)
        test_loader = StreamingLoader(root, "test", 2 * cfg.batch_size, train=False, **common)
        if test_loader.classes != train_loader.classes:
            raise UserError(f"the test/val split of {root} has other class folders than train/; give both the same")
        if len(train_loader.indices) < cfg.batch_size:
            raise UserError(f"{len(train_loader.indices)} training images give less than one batch of "
                            f"{cfg.batch_size}; lower --batch-size")
        return DataInfo(train_loader.classes, 3, train_loader.size), train_loader, test_loader
    train = load_dataset(cfg.dataset, "train", cfg.data_dir or None)
    test = load_dataset(cfg.dataset, "test", cfg.data_dir or None)
    order = seeded_subset(len(train), cfg.subset, cfg.seed, cfg.dataset)
    if test.classes != train.classes or test.size != train.size or test.channels != train.channels:
        raise UserError(f"the test split of {cfg.dataset} does not match its training split (classes, image size "
                        "or channels); give both splits the same class folders and image format")
    if len(order) < cfg.batch_size:
        raise UserError(f"{len(order)} training images give less than one batch of {cfg.batch_size}; "
                        "raise --subset or lower --batch-size")
    mean, std = train.stats()
    train = ImageData(train.images.to(device), train.labels.to(device), train.classes)
    augment = Augment(crop_padding=min(train.size) // 8 if cfg.augment else 0, flip=cfg.augment, cutout=cfg.cutout)
    train_loader = DeviceLoader(train, order, cfg.batch_size, device, mean, std, augment,
                                channels_last=cfg.channels_last, seed=cfg.seed, shard=shard)
    test_loader = DeviceLoader(test, torch.arange(len(test)), 2 * cfg.batch_size, device, mean, std, shuffle=False,
                               drop_last=False, channels_last=cfg.channels_last, shard=shard)
    return DataInfo(train.classes, train.channels, train.size), train_loader, test_loader


def train(cfg: TrainConfig, out: str | Path) -> TrainResult:
    """Train ``cfg.genotype`` from scratch into the new run directory ``out``."""
    cfg.validate()
    # A bad --genotype or --out fails before anything else (checked where the run directory will be: rank 0).
    return _run(cfg, RunDir.prepare_new(out, cfg.to_dict(), check=lambda: resolve_genotype(cfg)), checkpoint=None)


def resume(run_dir: str | Path, **overrides: Any) -> TrainResult:
    """Continue the training run in ``run_dir`` from its last checkpoint (epochs and device may change)."""
    cfg, open_run, checkpoint = RunDir.prepare_resume(run_dir, TrainConfig, overrides, kind="trainer")
    return _run(cfg, open_run, checkpoint)


def _run(cfg: TrainConfig, open_run: Callable[[], RunDir], checkpoint: dict[str, Any] | None) -> TrainResult:
    ctx = Dist.setup(cfg.device)
    genotype = on_main(lambda: resolve_genotype(cfg))  # a run directory may exist on rank 0's node only
    data, train_loader, test_loader = prepare_data(cfg, ctx)
    spec = model_spec(cfg, genotype, data, train_loader.mean_std[0], train_loader.mean_std[1])
    torch.manual_seed(cfg.seed)
    model = place(build_model(spec), ctx, cfg.channels_last, cfg.sync_bn)
    trainer = Trainer(model, cfg, ctx)
    run = RunDir.open_on_main(open_run, cfg.tensorboard)
    run.write_json("genotype.json", genotype.to_dict())
    if run.writes:
        write_diagrams(genotype, run.path)
    start = run.restore(checkpoint, "trainer", trainer.load_state_dict, cfg.epochs)
    log.info("training %s (%.3fM parameters without the auxiliary head) on %s: %s, %d train / %d test images, "
             "run directory %s", cfg.arch or cfg.genotype, count_parameters(model) / 1e6, ctx, cfg.dataset,
             len(train_loader.indices), len(test_loader.indices), run.path)
    partial = (checkpoint or {}).get("partial")
    try:
        with graceful_stop(ctx.world == 1):
            _epochs(cfg, run, trainer, train_loader, test_loader, spec, start, ctx, partial)
    except KeyboardInterrupt:
        run.report_interrupt()
        raise
    metrics = run.read_metrics()
    last = metrics[-1] if metrics else {"test_top1": float("nan"), "test_top5": float("nan")}
    log.info("final test accuracy: top-1 %.2f%%, top-5 %.2f%%; checkpoint %s", last["test_top1"], last["test_top5"],
             run.checkpoint_path)
    return TrainResult(run.path, last["test_top1"], last["test_top5"], metrics)


def _epochs(cfg: TrainConfig, run: RunDir, trainer: Trainer, train_loader: Loader, test_loader: Loader,
            spec: dict[str, Any], start: int, ctx: Dist, partial: dict[str, Any] | None) -> None:
    model = trainer.model
    for epoch in range(start, cfg.epochs):
        began = time.perf_counter()
        trainer.begin_epoch(epoch)
        try:
            stats = run_epoch(trainer.step, train_loader.epoch(epoch), len(train_loader),
                              f"epoch {epoch + 1}/{cfg.epochs}", _summarize, reduce=ctx.sum_stats, show=ctx.main,
                              interruptible=True, resume=resume_point(partial, epoch, ctx.main))
        except EpochInterrupted as stop:  # Ctrl-C: keep this very step
            run.save_checkpoint({"epoch": epoch, "config": cfg.to_dict(), "model_spec": spec,
                                 "trainer": trainer.state_dict(), "partial": {"epoch": epoch, **stop.progress}})
            raise
        test = evaluate(model, test_loader, trainer.autocast, desc=f"test {epoch + 1}/{cfg.epochs}", ctx=ctx)
        record = {"epoch": epoch + 1, **stats, "test_loss": test["loss"], "test_top1": test["top1"],
                  "test_top5": test["top5"], "lr": trainer.optimizer.param_groups[0]["lr"],
                  "drop_path": model.drop_path_prob, "seconds": round(time.perf_counter() - began, 3)}
        run.append_metrics(record)
        run.save_checkpoint({"epoch": epoch + 1, "config": cfg.to_dict(), "model_spec": spec,
                             "trainer": trainer.state_dict(), "test": test})
        log.info("epoch %d/%d  train loss %.4f acc %.2f%%  test loss %.4f top-1 %.2f%% top-5 %.2f%%  %.1fs",
                 epoch + 1, cfg.epochs, stats["train_loss"], stats["train_acc"], test["loss"], test["top1"],
                 test["top5"], record["seconds"])


def _summarize(sums: dict[str, float]) -> dict[str, float]:
    n = max(sums["n"], 1.0)
    return {"train_loss": sums["loss"] / n, "train_acc": 100 * sums["correct"] / n}


def load_model(checkpoint_path: str | Path) -> tuple[Network, dict[str, Any]]:
    """The trained network of a training checkpoint (eval mode, on the CPU) and the checkpoint itself."""
    checkpoint = load_checkpoint(checkpoint_path, required=("model_spec", "trainer"))
    model = build_model(checkpoint["model_spec"])
    model.load_state_dict(checkpoint["trainer"]["model"])
    return model.eval(), checkpoint


def evaluate_checkpoint(checkpoint_path: str | Path, dataset: str | None = None, data_dir: str | None = None,
                        device: str = "auto", batch_size: int = 256) -> dict[str, float]:
    """Test loss, top-1 and top-5 of a trained checkpoint, on its own dataset's test split or ``dataset``'s."""
    model, checkpoint = load_model(checkpoint_path)
    # The run's settings that matter here, from a training or a one-stage search checkpoint alike.
    defaults = TrainConfig().to_dict()
    cfg = TrainConfig(**{k: checkpoint["config"].get(k, v) for k, v in defaults.items()})
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
