"""Discrete networks built from a genotype: the CIFAR network and the ImageNet (mobile) network.

One class serves both: ``stem="cifar"`` is a single 3x3 conv, ``stem="imagenet"`` three stride-2 convs to
1/8 resolution. Cells follow the genotype; reductions at L/3 and 2L/3; an auxiliary head after cell 2L/3.
The ``one-stage`` flavour adds a BN after every parameter-free op (pools and the identity skip), as the
networks that ISTA-NAS's one-stage search trains and returns do.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..genotype import Genotype
from ..ops import OPS, Chain, FactorizedReduce, ReLUConvBN, concat_channels


def is_reduction(i: int, layers: int) -> bool:
    """Cell i of ``layers`` halves the resolution and doubles the channels: at L/3 and 2L/3 (DARTS)."""
    return layers >= 3 and i in (layers // 3, 2 * layers // 3)


def stack_cells(make: Callable[[int, int, int, bool, bool], tuple[nn.Module, int]], layers: int, channels: int,
                c_stem: int, imagenet: bool, aux_after: int, num_classes: int
                ) -> tuple[nn.ModuleList, "AuxiliaryHead | None", int]:
    """The cells of a DARTS-style network, built in order: ``make(c_pp, c_p, c, reduction, reduction_prev)``
    returns a cell and its output channels; the channels double at each reduction. The auxiliary head (after
    cell ``aux_after``) is built right after that cell. Returns (cells, head or None, last output channels)."""
    cells, head = nn.ModuleList(), None
    c_pp = c_p = c_stem
    c, reduction_prev = channels, imagenet
    for i in range(layers):
        reduction = is_reduction(i, layers)
        if reduction:
            c *= 2
        cell, c_out = make(c_pp, c_p, c, reduction, reduction_prev)
        cells.append(cell)
        reduction_prev = reduction
        c_pp, c_p = c_p, c_out
        if i == aux_after:
            head = AuxiliaryHead(c_p, num_classes, imagenet)
    return cells, head, c_p


def drop_path(x: Tensor, prob: float) -> Tensor:
    """Zero whole samples with probability ``prob`` and rescale the rest (scheduled drop-path, DARTS)."""
    keep = 1.0 - prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


def preprocessing(c_pp: int, c_p: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    """The two 1x1 input adapters of a cell (the first halves the resolution after a reduction cell)."""
    pre0 = FactorizedReduce(c_pp, c, affine) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0, affine)
    return pre0, ReLUConvBN(c_p, c, 1, 1, 0, affine)


def build_op(name: str, c: int, stride: int, flavour: str) -> nn.Module:
    op = OPS[name](c, stride, True)
    if flavour == "one-stage" and ("pool" in name or isinstance(op, nn.Identity)):
        op = Chain(op, nn.BatchNorm2d(c))  # every op then ends in a BN that can absorb alpha
    return op


class Cell(nn.Module):
    def __init__(self, genotype: Genotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = preprocessing(c_pp, c_p, c, reduction_prev, affine=True)
        pairs = genotype.reduce if reduction else genotype.normal
        self.concat = list(genotype.reduce_concat if reduction else genotype.normal_concat)
        self.inputs = [pred for _, pred in pairs]
        self.ops = nn.ModuleList(build_op(name, c, 2 if reduction and pred < 2 else 1, genotype.flavour)
                                 for name, pred in pairs)
        # Drop-path skips identity ops, so a skip connection is never dropped.
        self.droppable = [not isinstance(op, nn.Identity) for op in self.ops]
        # One-stage training after the search: each op's output times its fixed relaxed weight (one per op, not
        # trained); None (and absent from the state dict) otherwise. ``absorbed`` folds it into the op's last BN.
        self.register_buffer("alpha", None)

    def forward(self, s0: Tensor, s1: Tensor, drop_prob: float) -> Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for node in range(len(self.ops) // 2):
            out = None
            for k in (2 * node, 2 * node + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.alpha is not None:
                    h = h * self.alpha[k]
                if self.training and drop_prob > 0 and self.droppable[k]:
                    h = drop_path(h, drop_prob)
                out = h if out is None else out + h
            states.append(out)
        return concat_channels([states[i] for i in self.concat])


class AuxiliaryHead(nn.Module):
    """DARTS's auxiliary classifier on the 2L/3 feature map (8x8 on CIFAR, 7x7 on ImageNet at 224x224)."""

    def __init__(self, c: int, num_classes: int, imagenet: bool):
        super().__init__()
        self.pool_stride = 2 if imagenet else 3
        layers: list[nn.Module] = [nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                   nn.Conv2d(128, 768, 2, bias=False)]
        if not imagenet:  # the DARTS ImageNet head has no BN here (kept for comparable results)
            layers.append(nn.BatchNorm2d(768))
        layers.append(nn.ReLU(inplace=True))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(x)
        if (min(x.shape[-2:]) - 5) // self.pool_stride + 1 >= 2:  # DARTS's pooling: 8x8 (CIFAR), 7x7 (ImageNet)
            x = F.avg_pool2d(x, 5, stride=self.pool_stride, count_include_pad=False)
        else:  # smaller maps (e.g. 28x28 images give 7x7 with stride 3): pool to the 2x2 the head expects
            x = F.adaptive_avg_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(x.flatten(1))


def stem_for(side: int) -> str:
    """The stem a DARTS-cell network has by default for images of ``side`` pixels: ImageNet's from 128 on."""
    return "imagenet" if side >= 128 else "cifar"


def build_stem(kind: str, in_channels: int, channels: int, stem_multiplier: int = 3
               ) -> tuple[nn.Module, nn.Module | None, int]:
    """(stem, second stem stage or None, output channels). The first two cell inputs are both the stem output
    (``cifar``: one 3x3 conv), or the 1/4 and 1/8 resolution stages (``imagenet``: three stride-2 convs)."""
    if kind == "imagenet":
        stem = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(channels // 2), nn.ReLU(inplace=True),
            nn.Conv2d(channels // 2, channels, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(channels))
        stem1 = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(channels, channels, 3, stride=2, padding=1, bias=False),
                              nn.BatchNorm2d(channels))
        return stem, stem1, channels
    if kind != "cifar":
        raise ValueError(f"stem must be 'cifar' or 'imagenet', got {kind!r}")
    c_stem = stem_multiplier * channels
    return nn.Sequential(nn.Conv2d(in_channels, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem)), None, c_stem


class Network(nn.Module):
    """The network a genotype describes. ``forward`` returns logits; ``forward_with_aux`` adds the head's."""

    def __init__(self, genotype: Genotype, channels: int = 36, layers: int = 20, num_classes: int = 10,
                 in_channels: int = 3, auxiliary: bool = True, stem: str = "cifar", stem_multiplier: int = 3):
        super().__init__()
        self.genotype = genotype
        self.drop_path_prob = 0.0  # set by the trainer each epoch
        imagenet = stem == "imagenet"
        self.stem, self.stem1, c_stem = build_stem(stem, in_channels, channels, stem_multiplier)
        self.aux_after = 2 * layers // 3 if auxiliary else -1

        def cell(c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool) -> tuple[nn.Module, int]:
            made = Cell(genotype, c_pp, c_p, c, reduction, reduction_prev)
            return made, len(made.concat) * c

        self.cells, self.aux_head, c_p = stack_cells(cell, layers, channels, c_stem, imagenet, self.aux_after,
                                                     num_classes)
        self.classifier = nn.Linear(c_p, num_classes)

    def forward_with_aux(self, x: Tensor) -> tuple[Tensor, Tensor | None]:
        s0 = self.stem(x)
        s1 = s0 if self.stem1 is None else self.stem1(s0)
        aux = None
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_after and self.training and self.aux_head is not None:
                aux = self.aux_head(s1)
        return self.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1)), aux

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_with_aux(x)[0]

    def hold_op_weights(self) -> "Network":
        """Give every cell an ``alpha`` buffer (ones until a state dict with the fixed op weights is loaded)."""
        for cell in self.cells:
            cell.alpha = torch.ones(len(cell.ops)).to(self.classifier.weight)
        return self

    @torch.no_grad()
    def absorbed(self) -> "Network":
        """A copy with every cell's fixed op weights folded into the BN that ends each op: alpha * BN(x) is a BN
        with weight alpha * gamma and bias alpha * beta, so the copy is the plain network computing the same
        outputs (exactly in eval mode; in training mode too, as the batch statistics are the same)."""
        net = copy.deepcopy(self)
        for cell in net.cells:
            fold_alpha(cell, cell.ops)
        return net


@torch.no_grad()
def fold_alpha(cell: nn.Module, ops: Sequence[nn.Module | None]) -> None:
    """Fold a cell's fixed op weights (its ``alpha`` buffer, one per op; nothing if None) into the BN that ends
    each op (None: an op that never runs), and drop the buffer: alpha * BN(x) is the BN with weight
    alpha * gamma and bias alpha * beta."""
    if cell.alpha is None:
        return
    for op, a in zip(ops, cell.alpha):
        if op is None:
            continue
        bn = last_bn(op)
        bn.weight.mul_(a)
        bn.bias.mul_(a)
    cell.alpha = None


def transplant(net: nn.Module, pairs: Sequence[tuple[nn.Module, nn.Module]]) -> dict[str, nn.Parameter]:
    """Copy each (source, destination) pair's state into the destination, a part of ``net``; returns, for each
    of ``net``'s copied parameter names, the source parameter it came from (a supernet's ``discrete()``: to
    carry the optimiser state over)."""
    for source, dest in pairs:
        dest.load_state_dict(source.state_dict())
    names = {id(q): name for name, q in net.named_parameters()}
    return {names[id(q)]: p for source, dest in pairs for p, q in zip(source.parameters(), dest.parameters())}


def last_bn(op: nn.Module) -> nn.BatchNorm2d:
    """The BN that ends a one-stage op (every op of the one-stage flavour ends in an affine BN)."""
    bns = [m for m in op.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and bns[-1].affine, "one-stage ops end in an affine BN"
    return bns[-1]


def count_parameters(model: nn.Module, exclude_aux: bool = True) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if not (exclude_aux and name.startswith("aux_head.")))
