"""The data a run trains on, from its config: the search's weight and architecture halves of one seeded
subset, or a training run's (augmented) training split and its test split. The loaders carry the
normalisation (mean, std) of the training data and yield this rank's shard of every global batch."""

from __future__ import annotations

from typing import Any

import torch

from ..errors import UserError
from .data import Augment, DataInfo, DeviceLoader, ImageData, load_dataset, seeded_subset
from .distributed import Dist
from .stream import StreamingLoader
from .trainer import Loader


def _augment(cfg: Any, data: ImageData) -> Augment:
    return Augment(crop_padding=min(data.size) // 8 if cfg.augment else 0, flip=cfg.augment, cutout=cfg.cutout)


def search_split(cfg: Any, ctx: Dist) -> tuple[DataInfo, DeviceLoader, DeviceLoader]:
    """The seeded subset of the training split, cut into the weight half (``train_portion``) and the
    architecture half."""
    ctx.check_batch(cfg.batch_size)
    device = ctx.device
    data = load_dataset(cfg.dataset, "train", cfg.data_dir or None)
    order = seeded_subset(len(data), cfg.subset, cfg.seed, cfg.dataset)
    split = int(len(order) * cfg.train_portion)
    train_idx, valid_idx = order[:split], order[split:]
    if min(len(train_idx), len(valid_idx)) < cfg.batch_size:
        raise UserError(f"{len(order)} images split {len(train_idx)}/{len(valid_idx)} give less than one batch of "
                        f"{cfg.batch_size}; raise --subset or lower --batch-size")
    mean, std = data.stats()
    data = ImageData(data.images.to(device), data.labels.to(device), data.classes)  # one copy on the device
    common = dict(batch_size=cfg.batch_size, device=device, mean=mean, std=std, augment=_augment(cfg, data),
                  channels_last=cfg.channels_last, seed=cfg.seed, shard=(ctx.rank, ctx.world))
    info = data.info()
    return info, DeviceLoader(data, train_idx, stream=0, **common), DeviceLoader(data, valid_idx, stream=1, **common)


def train_test(cfg: Any, ctx: Dist) -> tuple[DataInfo, Loader, Loader]:
    """Training split (seeded subset, augmented) and test split (whole, in order); with ``stream`` read from
    an image folder every epoch."""
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
    train_loader = DeviceLoader(train, order, cfg.batch_size, device, mean, std, _augment(cfg, train),
                                channels_last=cfg.channels_last, seed=cfg.seed, shard=shard)
    test_loader = DeviceLoader(test, torch.arange(len(test)), 2 * cfg.batch_size, device, mean, std, shuffle=False,
                               drop_last=False, channels_last=cfg.channels_last, shard=shard)
    return train.info(), train_loader, test_loader
