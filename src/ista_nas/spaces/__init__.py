"""Search spaces, by name, and what reads a genotype without knowing its space. A new space is one module (a
``SearchSpace`` subclass) and one entry in ``SPACES``."""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..fields import fits
from ..files import claim_output, read_json
from ..limits import MAX_CLASSES, check_count, check_size
from .base import SearchSpace
from .darts import DartsSpace
from .nb201 import Nb201Space

SPACES: dict[str, SearchSpace] = {space.name: space for space in (DartsSpace(), Nb201Space())}
# The space of a model spec written before specs named their space (the DARTS cell space, the only one then), and
# the reader of a genotype object no space owns (its refusal names what is wrong).
UNNAMED = "darts"


def space_of(genotype: Any) -> SearchSpace:
    """The space a genotype object belongs to."""
    for space in SPACES.values():
        if isinstance(genotype, space.genotype_type):
            return space
    raise TypeError(f"{type(genotype).__name__} is no registered space's genotype")


def genotype_from_dict(data: Any, source: str = "genotype") -> Any:
    """A genotype JSON object of any space (the space is told by its keys; the default space's otherwise)."""
    for space in SPACES.values():
        if isinstance(data, dict) and space.owns(data):
            return space.from_dict(data, source=source)
    return SPACES[UNNAMED].from_dict(data, source=source)


def load_genotype(path: str | Path) -> Any:
    path = Path(path)
    data = read_json(path, "genotype file", "write a genotype as a JSON object")
    return genotype_from_dict(data, source=str(path))


def published() -> dict[str, Any]:
    """Every space's published architectures, by name."""
    return {name: g for space in SPACES.values() for name, g in space.published.items()}


def get_genotype(spec: str | Path) -> Any:
    """A published architecture by name, an architecture in a space's written form, or one read from a JSON
    file (a search's genotype.json, of any space; a run directory stands for its genotype.json)."""
    spec = str(spec)
    names = published()
    if spec in names:
        return names[spec]
    for space in SPACES.values():
        parsed = space.parse(spec)
        if parsed is not None:
            return parsed
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "genotype.json").is_file():
            raise UserError(f"{spec} is a folder without genotype.json; give a search run that has finished an "
                            "epoch (it writes genotype.json), a training run, or a genotype.json")
        path = path / "genotype.json"  # a search run directory
    if not path.exists():
        raise UserError(f"--genotype {spec!r} is neither a built-in name ({', '.join(names)}) nor a file; "
                        "pass a name or the path of a genotype.json")
    return load_genotype(path)


def write_diagrams(genotype: Any, directory: str | Path, flag: str = "--out", run_owned: bool = False) -> list[Path]:
    """The genotype's cell diagrams (PNG and SVG, drawn by its space) in ``directory``. They are drawn aside first
    and moved in only when every name is free or holds an earlier ista-nas drawing (files.claim_output), so a
    refusal leaves the folder as it was."""
    directory = Path(directory)
    with tempfile.TemporaryDirectory(dir=directory, prefix=".diagrams-") as scratch:
        drawn = space_of(genotype).draw(genotype, Path(scratch))
        targets = [claim_output(directory / p.relative_to(scratch), "plot", flag, run_owned) for p in drawn]
        for source, target in zip(drawn, targets):
            os.replace(source, target)
    return targets


def build_model(spec: Any, source: str = "the model spec") -> nn.Module:
    """The discrete network a model spec describes, in its search space. A spec read from someone else's
    checkpoint is checked first (its space, genotype, the entries' types, the one size rule: ``check_network``),
    each problem one UserError naming ``source``."""
    if not isinstance(spec, dict) or spec.get("space", UNNAMED) not in SPACES:
        raise UserError(f"{source} is not a model spec of a known space; give the checkpoint.pt of an ista-nas "
                        "train run")
    space = SPACES[spec.get("space", UNNAMED)]
    genotype = space.from_dict(spec.get("genotype"), source=f"{source}: genotype")
    types = {"channels": int, "layers": int, "num_classes": int, "in_channels": int, "auxiliary": bool, "stem": str}
    wrong = [k for k, expected in types.items() if k in spec and not fits(spec[k], expected)]
    missing = [k for k in types if k not in spec]
    if wrong or missing or spec.get("stem", "cifar") not in ("cifar", "imagenet"):
        raise UserError(f"{source}: {(wrong or missing or ['stem'])[0]} is missing or of the wrong kind; the "
                        "checkpoint is damaged or was not written by ista-nas train")
    check_network(space.name, spec["channels"], spec["layers"], genotype, spec["num_classes"], spec["in_channels"],
                  copies=1, flags=(f"{source}: channels", "layers"))
    return space.network(spec)


def model_spec(cfg: Any, genotype: Any, data: Any, mean: list[float], std: list[float], **extra: Any
               ) -> dict[str, Any]:
    """Everything needed to rebuild and feed a trained network; stored in every training checkpoint. ``extra``:
    what the space's network needs beyond these (a target network's ``SearchSpace.target.spec``)."""
    return {**extra, "space": cfg.space, "genotype": genotype.to_dict(), "channels": cfg.channels, "layers": cfg.layers,
            "num_classes": len(data.classes), "in_channels": data.channels, "auxiliary": cfg.auxiliary_weight > 0,
            "stem": cfg.stem, "classes": data.classes, "image_size": list(data.size), "mean": mean, "std": std}


def sample_architectures(space_name: str, k: int, seed: int) -> list[Any]:
    """``k`` distinct architectures drawn uniformly from the space's sparse-search candidates, by ``seed``."""
    space, rng = SPACES[space_name], random.Random(seed)
    drawn: dict[str, Any] = {}
    for _ in range(100 * k):
        genotype = space.sample(rng)
        drawn.setdefault(space.short(genotype), genotype)
        if len(drawn) == k:
            return list(drawn.values())
    raise UserError(f"could not draw {k} distinct architectures of --space {space_name}; draw fewer")


def check_network(space_name: str, channels: Any, layers: Any, genotype: Any = None, classes: Any = 1000,
                  in_channels: Any = 3, copies: int = 4, flags: tuple[str, str] = ("--channels", "--layers"),
                  least_channels: int = 1) -> None:
    """The one size rule for a network (``limits``): C and L within their bounds, then, before anything is
    allocated, its weights (``copies`` float32 copies of ``genotype``'s network at C x L, a random cell's when
    None, counted on the meta device: weights, gradients, momentum and a spare; a supernet holds more) within this
    machine's memory. ``flags`` name the sizes in the refusal."""
    check_size(channels, layers, flags, least_channels)
    check_count("the network's classes", classes, 1, MAX_CLASSES)
    check_count("the network's input channels", in_channels, 1, 16)
    space = SPACES[space_name]
    genotype = space.sample(random.Random(0)) if genotype is None else genotype
    params = space.parameter_count(genotype, channels, layers, classes, in_channels, None)
    total = machine_memory()
    if params * 4 * copies > total:
        raise UserError(f"{flags[0]} {channels} {flags[1]} {layers}: a network of {params / 1e9:.1f}G parameters "
                        f"needs {params * 4 * copies / 2**30:.0f} GiB for its weights, gradients and momentum, more "
                        f"than this machine's {total / 2**30:.0f} GiB; lower {flags[0]} or {flags[1]}")


def memory_of(device: str) -> tuple[int, str]:
    """(bytes, name) of the memory a run on ``device`` has: the CUDA device's, else this machine's."""
    if device != "cpu" and torch.cuda.is_available():
        dev = torch.device("cuda" if device == "auto" else device)
        return torch.cuda.get_device_properties(dev).total_memory, f"{torch.cuda.get_device_name(dev)}'s memory"
    return machine_memory(), "this machine's memory"


def machine_memory() -> int:
    """Bytes of physical memory of this machine."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def activation_bytes(space_name: str, channels: int, layers: int, size: tuple[int, int], in_channels: int,
                     classes: int, stem: str = "cifar") -> int:
    """Bytes one image's activations take in a random cell's network at C x L (every module's float32 output, as
    the backward keeps them), counted by a forward on the meta device: nothing allocated. A supernet runs more
    ops than one cell, so for it this is a lower bound."""
    space = SPACES[space_name]
    count = [0]

    def add(module: nn.Module, args: Any, output: Any) -> None:
        count[0] += sum(t.numel() for t in (output if isinstance(output, (tuple, list)) else [output])
                        if isinstance(t, torch.Tensor))

    with torch.device("meta"):
        net, _, _ = space.sized_network(space.sample(random.Random(0)), channels, layers, classes, in_channels, None,
                                        stem, auxiliary=False)
        for module in net.modules():
            if not list(module.children()):
                module.register_forward_hook(add)
        net.train()(torch.empty(2, in_channels, *size))  # two: batch norm refuses one value per channel
    return count[0] * 2


def check_activations(space_name: str, channels: int, layers: int, batch_size: int, data: Any, device: str,
                      stem: str = "cifar") -> None:
    """Refuse, once the data is known and before a step allocates, a batch whose activations alone (a lower
    bound: ``activation_bytes`` times this process's share of ``batch_size``) exceed the device's memory."""
    batch = max(batch_size // int(os.environ.get("WORLD_SIZE", "1")), 1)
    need = batch * activation_bytes(space_name, channels, layers, tuple(data.size), data.channels, len(data.classes),
                                    stem)
    total, where = memory_of(device)
    if need > total:
        raise UserError(f"--batch-size {batch_size} of {data.size[0]}x{data.size[1]} images at --channels "
                        f"{channels} --layers {layers} keeps at least {need / 2**30:.1f} GiB of activations "
                        f"for the backward, more than {where} ({total / 2**30:.1f} GiB); lower --batch-size, "
                        "--channels or --layers")
