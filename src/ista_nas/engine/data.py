"""Datasets held as decoded uint8 tensors, and a loader that batches and augments on the compute device.

Small image datasets (CIFAR, Fashion-MNIST, image folders of that size) fit in memory many times over, so
they are decoded once (image folders are cached after the first decode), moved to the device as one uint8
tensor, and every batch is gathered, augmented (pad-and-crop, flip, cutout) and normalised there as whole
batches. No DataLoader workers, no per-image Python work.

Every epoch's order and augmentation come from a generator seeded by (seed, epoch, stream), so a resumed
run sees exactly the batches an uninterrupted one would. With several processes each one draws the same
global order and augmentation and keeps its slice of every batch: together the ranks see exactly the batches
of a single process, whatever their number.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import UserError
from ..files import atomic_write_bytes

log = logging.getLogger(__name__)

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
DATASETS = ("cifar10", "cifar100", "fashion-mnist", "folder:PATH")
# (classes, channels, side) of the named datasets (and ImageNet's, for sizing networks): known before any is read
DATASET_SHAPES = {"cifar10": (10, 3, 32), "cifar100": (100, 3, 32), "fashion-mnist": (10, 1, 28),
                  "imagenet": (1000, 3, 224)}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}


@dataclass
class DataInfo:
    """What a network is built for: the class names, the images' channels and (height, width)."""

    classes: list[str]
    channels: int
    size: tuple[int, int]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


@dataclass
class ImageData:
    """A split held in memory, decoded."""

    images: Tensor  # (N, C, H, W) uint8
    labels: Tensor  # (N,) int64
    classes: list[str]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    @property
    def size(self) -> tuple[int, int]:
        return self.images.shape[2], self.images.shape[3]

    def info(self) -> DataInfo:
        return DataInfo(self.classes, self.channels, self.size)

    def __len__(self) -> int:
        return self.images.shape[0]

    def stats(self) -> tuple[list[float], list[float]]:
        """Per-channel mean and std in [0, 1] units (computed in chunks to bound memory)."""
        total = torch.zeros(self.channels, dtype=torch.float64)
        total_sq = torch.zeros_like(total)
        for chunk in self.images.split(4096):
            x = chunk.to(torch.float64) / 255
            total += x.sum((0, 2, 3))
            total_sq += (x * x).sum((0, 2, 3))
        count = len(self) * self.size[0] * self.size[1]
        mean = total / count
        std = (total_sq / count - mean * mean).clamp_min(1e-12).sqrt()
        return mean.tolist(), std.tolist()


def load_dataset(name: str, split: str, data_dir: str | Path | None = None, cache_dir: str | Path | None = None
                 ) -> ImageData:
    """Load ``split`` ('train' or 'test') of a dataset by name: cifar10, cifar100, fashion-mnist or folder:PATH."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if name.startswith("folder:"):
        return _load_folder(Path(name[len("folder:"):]).expanduser(), split, cache_dir)
    if name == "fashion-mnist":
        return _load_fashion_mnist(split, data_dir)
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, split, data_dir)
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                   "Ankle boot"]


def _load_fashion_mnist(split: str, data_dir: str | Path | None) -> ImageData:
    prefix = "train" if split == "train" else "t10k"
    candidates = [Path(data_dir).expanduser()] if data_dir else []
    candidates += [DEBIAN_FASHION_MNIST]
    for root in candidates:
        for folder in (root, root / "FashionMNIST" / "raw"):
            img, lab = folder / f"{prefix}-images-idx3-ubyte.gz", folder / f"{prefix}-labels-idx1-ubyte.gz"
            if img.is_file() and lab.is_file():
                try:
                    images = torch.from_numpy(_read_idx(img).copy()).unsqueeze(1)
                    labels = torch.from_numpy(_read_idx(lab).astype(np.int64))
                    if images.dim() != 4 or len(images) != len(labels) or not len(labels) or \
                            not 0 <= int(labels.min()) <= int(labels.max()) < len(FASHION_CLASSES):
                        raise ValueError("images and labels do not match, or a label is out of range")
                except (OSError, ValueError, EOFError, IndexError) as exc:
                    raise UserError(f"cannot read Fashion-MNIST file {img} ({exc}); reinstall it with "
                                    "'apt-get install --reinstall dataset-fashion-mnist'") from None
                return ImageData(images, labels, list(FASHION_CLASSES))
    return _torchvision("FashionMNIST", split, data_dir, "fashion-mnist",
                        "or install it with 'apt-get install -y dataset-fashion-mnist'")


def _load_cifar(name: str, split: str, data_dir: str | Path | None) -> ImageData:
    return _torchvision("CIFAR10" if name == "cifar10" else "CIFAR100", split, data_dir, name,
                        "or use --dataset folder:PATH for an image-folder copy (PATH/train/<class>/*.png)")


def _torchvision(cls_name: str, split: str, data_dir: str | Path | None, name: str, hint: str) -> ImageData:
    import torchvision.datasets as tvd

    root = Path(data_dir or "~/.cache/ista-nas/data").expanduser()
    cls = getattr(tvd, cls_name)
    dataset = None
    for download in (False, True):
        try:
            dataset = cls(root=str(root), train=split == "train", download=download)
            break
        except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError... depending on the failure
            err = exc
    if dataset is None:
        folder = getattr(cls, "base_folder", None) or f"{cls_name}/raw"
        raise UserError(f"dataset {name} is not in {root} and could not be downloaded ({type(err).__name__}); "
                        f"pass the folder holding torchvision's {folder} with --data-dir, {hint}")
    data = dataset.data
    images = torch.as_tensor(np.asarray(data))
    images = images.unsqueeze(1) if images.dim() == 3 else images.permute(0, 3, 1, 2)
    labels = torch.as_tensor(np.asarray(dataset.targets), dtype=torch.int64)
    return ImageData(images.contiguous(), labels, list(dataset.classes))


def _load_folder(root: Path, split: str, cache_dir: str | Path | None) -> ImageData:
    split_dir = root / split
    if split == "test" and not split_dir.is_dir() and (root / "val").is_dir():
        split_dir = root / "val"  # ImageNet's layout
    if not split_dir.is_dir():
        raise UserError(f"image folder {root} has no {split}/ directory; lay it out as {root}/train/<class>/*.jpg "
                        f"and {root}/test/<class>/*.jpg")
    try:  # regular files only: a FIFO named like an image would hang the decoder
        classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
        files = [(p, c) for c, cls in enumerate(classes) for p in sorted((split_dir / cls).iterdir())
                 if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    except OSError as exc:
        raise UserError(f"cannot read {exc.filename or split_dir}: {exc.strerror}; make the image folder "
                        "readable") from None
    if not classes:
        raise UserError(f"{split_dir} has no class folders; put each class's images in {split_dir}/<class>/")
    if split == "train" and len(classes) < 2:
        raise UserError(f"{split_dir} holds one class ({classes[0]}): a classifier of one class learns nothing "
                        f"(loss 0 from the start); put each class's images in {split_dir}/<class>/")
    if not files:
        raise UserError(f"{split_dir} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    key = hashlib.sha1(repr((str(split_dir.resolve()), _listing(files, classes))).encode()).hexdigest()[:16]
    cache = Path(cache_dir or os.environ.get("ISTA_NAS_CACHE") or "~/.cache/ista-nas").expanduser() / f"{key}.pt"
    if cache.is_file():
        try:  # a cache is a file from elsewhere: read as tensors only, and used only if it is this folder's decode
            saved = torch.load(cache, weights_only=True)
            return ImageData(*_verified(saved, files, classes), classes)
        except Exception as exc:  # unreadable, damaged or forged: rebuilt, never trusted
            log.warning("ignoring cache %s (%s); decoding the images again", cache,
                        str(exc)[:200] or type(exc).__name__)
    images, labels = _decode(files)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        data = io.BytesIO()  # into memory: a failed write is an OSError from Python, not torch's C++ writer
        torch.save({"images": images, "labels": labels, "sha256": _checksum(images, labels)}, data)
        atomic_write_bytes(cache, data.getbuffer())
    except (OSError, UserError) as exc:  # the cache only saves time: the run goes on without it
        log.warning("could not cache decoded images at %s: %s", cache, exc)
    return ImageData(images, labels, classes)


def _checksum(images: Tensor, labels: Tensor) -> str:
    """SHA-256 of the decoded images and labels: their dtypes, shapes and bytes."""
    digest = hashlib.sha256(repr((str(images.dtype), tuple(images.shape), str(labels.dtype),
                                  tuple(labels.shape))).encode())
    for tensor in (images, labels):
        digest.update(tensor.detach().contiguous().numpy().data)
    return digest.hexdigest()


def _verified(saved: object, files: list[tuple[Path, int]], classes: list[str]) -> tuple[Tensor, Tensor]:
    """A cache's images and labels if they are the decode of ``files``: its checksum matches, the images are
    uint8 (N, 1 or 3, H, W) of the first image's size, and the labels are exactly the listing's (so in range, and
    as many per class); anything else is a ValueError naming what is wrong."""
    from PIL import Image

    if not isinstance(saved, dict) or not {"images", "labels", "sha256"} <= saved.keys():
        raise ValueError("not a checksummed cache")
    images, labels, checksum = saved["images"], saved["labels"], saved["sha256"]
    if not isinstance(images, Tensor) or not isinstance(labels, Tensor) or not isinstance(checksum, str):
        raise ValueError("not a checksummed cache")
    with Image.open(files[0][0]) as im:  # the header only: the size every image was checked to have
        width, height = im.size
    if images.dtype != torch.uint8 or images.dim() != 4 or images.shape[0] != len(files) or \
            images.shape[1] not in (1, 3) or tuple(images.shape[2:]) != (height, width):
        raise ValueError(f"images are {images.dtype} {tuple(images.shape)}, not uint8 "
                         f"({len(files)}, 1 or 3, {height}, {width})")
    if labels.dtype != torch.int64 or tuple(labels.shape) != (len(files),):
        raise ValueError(f"labels are {labels.dtype} {tuple(labels.shape)}, not int64 ({len(files)},)")
    if _checksum(images, labels) != checksum:
        raise ValueError("checksum does not match")
    if not 0 <= int(labels.min()) <= int(labels.max()) < len(classes):
        raise ValueError(f"a label is out of range 0..{len(classes) - 1}")
    expected = torch.tensor([c for _, c in files], dtype=torch.int64)
    if not torch.equal(torch.bincount(labels, minlength=len(classes)),
                       torch.bincount(expected, minlength=len(classes))):
        raise ValueError("images per class differ from the folder's")
    if not torch.equal(labels, expected):
        raise ValueError("labels differ from the folder's")
    return images.contiguous(), labels


def _listing(files: list[tuple[Path, int]], classes: list[str]) -> list[tuple[str, str, int, int]]:
    """Every file's class, name, size and modification time: what keys the decoded cache (an image moved to
    another class, added, removed or rewritten makes a new cache, never stale labels) and a run's data identity."""
    return [(classes[c], p.name, *(lambda st: (st.st_size, st.st_mtime_ns))(p.stat())) for p, c in files]


def data_identity(name: str) -> str | None:
    """A digest of an image folder's listing (both splits; ``_listing``), which a run records when it starts and
    ``--resume`` compares; None for the datasets the CLI knows by name (their files do not change)."""
    if not name.startswith("folder:"):
        return None
    root, found = Path(name[len("folder:"):]).expanduser(), []
    for split in sorted(d for d in root.iterdir() if d.is_dir()) if root.is_dir() else []:
        classes = sorted(d.name for d in split.iterdir() if d.is_dir())
        files = [(p, c) for c, cls in enumerate(classes) for p in sorted((split / cls).iterdir()) if p.is_file()]
        found.append((split.name, _listing(files, classes)))
    return hashlib.sha1(repr(found).encode()).hexdigest()


def _decode(files: list[tuple[Path, int]]) -> tuple[Tensor, Tensor]:
    from PIL import Image
    from tqdm import tqdm

    arrays, first_shape = [], None
    for path, _ in tqdm(files, desc=f"decoding {files[0][0].parent.parent}", unit="img", leave=False,
                        disable=None):
        try:  # greyscale images stay one channel unless the folder holds a colour one (then all are RGB)
            with Image.open(path) as im:
                arr = np.asarray(im.convert("L" if im.mode in ("L", "1", "I;16", "I") else "RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:  # damaged, or too many pixels
            raise UserError(f"cannot decode image {path} ({str(exc)[:120]}); remove or replace the file") from None
        if first_shape is None:
            first_shape = arr.shape
        elif arr.shape[:2] != first_shape[:2]:
            raise UserError(f"image {path} is {arr.shape[1]}x{arr.shape[0]} but the first image is "
                            f"{first_shape[1]}x{first_shape[0]}; resize the folder's images to one size")
        arrays.append(arr)
    if any(a.ndim == 3 for a in arrays):
        arrays = [a if a.ndim == 3 else np.repeat(a[..., None], 3, axis=2) for a in arrays]
    stacked = torch.from_numpy(np.stack(arrays))
    images = stacked.unsqueeze(1) if stacked.dim() == 3 else stacked.permute(0, 3, 1, 2)
    return images.contiguous(), torch.tensor([c for _, c in files], dtype=torch.int64)


@dataclass
class Augment:
    crop_padding: int = 0  # pad-and-crop by up to this many pixels (0: off)
    flip: bool = False  # random horizontal flip
    cutout: int = 0  # side of the square cut out (0: off)


def seeded_subset(n: int, subset: int, seed: int, source: str) -> Tensor:
    """A seeded permutation of range(n), cut to ``subset`` items (0: all); a subset larger than n is refused."""
    if subset > n:
        raise UserError(f"--subset {subset} is larger than the {n} training images of {source}; use at most {n} "
                        "(or 0 for all)")
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[: subset or n]


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """A seed for one (run seed, epoch, stream) triple: resumed runs draw exactly what uninterrupted ones do."""
    return (seed * 0x9E3779B1 + epoch * 0x85EBCA77 + stream * 0xC2B2AE3D) % 2**63


def epoch_generator(seed: int, epoch: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, stream))


def shard_bounds(start: int, end: int, rank: int, world: int) -> tuple[int, int]:
    """Rank ``rank``'s part [lo, hi) of the global batch [start, end): consecutive slices whose sizes differ
    by at most one (``torch.tensor_split``'s rule), so the ranks together see exactly the global batch."""
    q, r = divmod(end - start, world)
    lo = start + rank * q + min(rank, r)
    return lo, lo + q + (rank < r)


class DeviceLoader:
    """Iterates batches of (float images, labels) on ``device`` for one epoch at a time."""

    def __init__(self, data: ImageData, indices: Tensor, batch_size: int, device: torch.device,
                 mean: list[float], std: list[float], augment: Augment | None = None, shuffle: bool = True,
                 drop_last: bool = True, channels_last: bool = False, seed: int = 0, stream: int = 0,
                 shard: tuple[int, int] = (0, 1)):
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.indices = indices.cpu()
        self.batch_size, self.device = batch_size, device
        self.mean_std = (list(mean), list(std))
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        self.augment = augment or Augment()
        self.shuffle, self.drop_last, self.channels_last = shuffle, drop_last, channels_last
        self.seed, self.stream = seed, stream
        self.rank, self.world = shard  # this process yields its slice of every (global) batch

    def __len__(self) -> int:
        n = len(self.indices)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        # The epoch's order and every augmentation parameter are drawn up front on the host and copied to
        # the device once, so the batches themselves need no host-to-device copy (no per-step sync on CUDA).
        gen = epoch_generator(self.seed, epoch, self.stream)
        n, (h, w) = len(self.indices), self.images.shape[-2:]
        order = self.indices[torch.randperm(n, generator=gen)] if self.shuffle else self.indices
        aug = self.augment
        params = {"order": order}
        if aug.crop_padding:
            params["offset"] = torch.randint(0, 2 * aug.crop_padding + 1, (n, 2), generator=gen)
        if aug.flip:
            params["flip"] = torch.rand(n, generator=gen) < 0.5
        if aug.cutout:
            params["centre"] = (torch.rand(n, 2, generator=gen) * torch.tensor([h, w])).long()
        pinned = self.device.type == "cuda"
        params = {k: (v.pin_memory() if pinned else v).to(self.device, non_blocking=True) for k, v in params.items()}
        for k in range(len(self)):
            lo, hi = shard_bounds(k * self.batch_size, min((k + 1) * self.batch_size, n), self.rank, self.world)
            part = {key: v[lo:hi] for key, v in params.items()}
            idx = part["order"]
            yield self._batch(self.images[idx], part), self.labels[idx]

    def _batch(self, x: Tensor, part: dict[str, Tensor]) -> Tensor:
        aug, (n, _, h, w) = self.augment, x.shape
        if aug.crop_padding:
            p, off = aug.crop_padding, part["offset"]
            rows = (off[:, :1] + torch.arange(h, device=self.device)).view(n, h, 1)
            cols = (off[:, 1:] + torch.arange(w, device=self.device)).view(n, 1, w)
            padded = F.pad(x, (p, p, p, p))
            x = padded[torch.arange(n, device=self.device).view(n, 1, 1), :, rows, cols].permute(0, 3, 1, 2)
        if aug.flip:
            x = torch.where(part["flip"].view(n, 1, 1, 1), x.flip(3), x)
        x = (x.float() - self.mean) / self.std
        if aug.cutout:
            centre = part["centre"].T
            half = aug.cutout // 2
            ys = torch.arange(h, device=self.device).view(1, h, 1)
            xs = torch.arange(w, device=self.device).view(1, 1, w)
            dy, dx = ys - centre[0].view(n, 1, 1), xs - centre[1].view(n, 1, 1)
            hole = (dy >= -half) & (dy < aug.cutout - half) & (dx >= -half) & (dx < aug.cutout - half)
            x = x * (~hole).unsqueeze(1)
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        return x.contiguous(memory_format=memory_format)
