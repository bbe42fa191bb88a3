"""Streaming loader for image folders too large for memory (ImageNet): decoded from disk every epoch.

Same interface as ``DeviceLoader`` (``epoch(e)`` yields normalised batches on the device, ``len``,
``indices``, ``mean_std``). Decoding and the standard ImageNet augmentation (random-resized crop, flip,
colour jitter for training; resize and centre crop for testing) run in DataLoader worker processes, the
only place per-image work belongs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import torch
from torch import Tensor

from ..errors import UserError
from .data import epoch_generator, seeded_subset, shard_bounds

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class StreamingLoader:
    def __init__(self, root: str | Path, split: str, batch_size: int, device: torch.device, train: bool,
                 image_size: int = 224, workers: int = 8, seed: int = 0, channels_last: bool = False,
                 subset: int = 0, shard: tuple[int, int] = (0, 1)):
        from torchvision import datasets, transforms

        root = Path(root)
        folder = root / split
        if split == "test" and not folder.is_dir():
            folder = root / "val"
        if not folder.is_dir():
            raise UserError(f"image folder {root} has no {split}/ directory; lay it out as {root}/train/<class>/*.jpg "
                            f"and {root}/val/<class>/*.jpg")
        normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
        if train:
            tf = transforms.Compose([transforms.RandomResizedCrop(image_size), transforms.RandomHorizontalFlip(),
                                     transforms.ColorJitter(0.4, 0.4, 0.4, 0.2), transforms.ToTensor(), normalize])
        else:
            tf = transforms.Compose([transforms.Resize(image_size * 8 // 7), transforms.CenterCrop(image_size),
                                     transforms.ToTensor(), normalize])
        try:
            self.dataset = datasets.ImageFolder(str(folder), tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise UserError(f"cannot read image folder {folder} ({exc}); put each class's images in "
                            f"{folder}/<class>/") from None
        self.classes = list(self.dataset.classes)
        n = len(self.dataset)
        self.indices = seeded_subset(n, subset, seed, str(folder)) if subset else torch.arange(n)
        self.batch_size, self.device, self.train = batch_size, device, train
        self.workers, self.seed, self.channels_last = workers, seed, channels_last
        self.mean_std = (IMAGENET_MEAN, IMAGENET_STD)
        self.size = (image_size, image_size)
        self.rank, self.world = shard  # this process loads its slice of every (global) batch

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        from torch.utils.data import DataLoader

        order = self.indices
        if self.train:
            order = order[torch.randperm(len(order), generator=epoch_generator(self.seed, epoch, 0))]
        # The augmentation is seeded per epoch too, so a resumed run sees the same crops: worker processes are
        # seeded from ``gen``; without workers the transforms draw from a forked, seeded global generator.
        gen = epoch_generator(self.seed, epoch, 1 if self.rank == 0 else 100 + self.rank)  # per-rank crops
        n = len(order)
        shards = [order[slice(*shard_bounds(k * self.batch_size, min((k + 1) * self.batch_size, n), self.rank,
                                            self.world))].tolist() for k in range(len(self))]
        loader = DataLoader(self.dataset, batch_sampler=[s for s in shards if s], num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", generator=gen)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        batches = iter(loader)
        for part in shards:
            if not part:  # the last test batch can leave a rank nothing; it still takes its turn
                yield (torch.empty(0, 3, *self.size, device=self.device).contiguous(memory_format=memory_format),
                       torch.empty(0, dtype=torch.int64, device=self.device))
                continue
            with torch.random.fork_rng(devices=[]):
                if self.workers == 0:
                    torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=gen)))
                x, y = next(batches)
            yield (x.to(self.device, non_blocking=True).contiguous(memory_format=memory_format),
                   y.to(self.device, non_blocking=True))
