"""Size and cost of a genotype's network: parameters and FLOPs (torch's own counter) at a dataset's input size."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from ..engine.data import DATASET_SHAPES
from ..errors import UserError
from ..networks.cnn import count_parameters
from ..spaces import space_of


def dataset_shape(name: str) -> tuple[int, int, int]:
    if name in DATASET_SHAPES:
        return DATASET_SHAPES[name]
    if name.startswith("folder:"):
        from ..engine.data import load_dataset

        data = load_dataset(name, "train")
        return len(data.classes), data.channels, data.size[0]
    raise UserError(f"unknown dataset {name!r}; choose one of {', '.join(DATASET_SHAPES)} or folder:PATH")


def network_summary(genotype: Any, channels: int = 36, layers: int = 20, dataset: str = "cifar10",
                    stem: str | None = None) -> dict[str, Any]:
    """Parameters (auxiliary head excluded, as papers count them) and FLOPs of one image's forward pass.

    ``flops`` is torch's count (a multiply-add is 2 FLOPs); ``macs`` is half of it, the unit papers call
    "FLOPs" for ImageNet mobile networks (e.g. DARTS's 574M). ``channels`` and ``layers`` mean what the
    genotype's space reads them as (a space of stages of N cells: ``layers`` is N).
    """
    return network_summary_shaped(genotype, channels, layers, dataset, dataset_shape(dataset), stem)


def network_summary_shaped(genotype: Any, channels: int, layers: int, dataset: str, shape: tuple[int, int, int],
                           stem: str | None = None) -> dict[str, Any]:
    """``network_summary`` for a dataset of known ``shape`` (classes, channels, side): many genotypes, one read."""
    classes, in_channels, side = shape
    net, stem, flavour = space_of(genotype).sized_network(genotype, channels, layers, classes, in_channels, side,
                                                           stem)
    net.eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(torch.zeros(1, in_channels, side, side))
    flops = counter.get_total_flops()
    return {"params": count_parameters(net), "params_with_aux": count_parameters(net, exclude_aux=False),
            "flops": flops, "macs": flops // 2, "channels": channels, "layers": layers, "dataset": dataset,
            "input": [in_channels, side, side], "stem": stem, "flavour": flavour}
