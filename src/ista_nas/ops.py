"""Candidate operations of the DARTS cell space (leaf module: imports torch only).

The paper's seven candidates, in the official code's order (there is no ``none`` op in ISTA-NAS).
An op is built by name through the ``OPS`` registry: ``OPS[name](channels, stride, affine)``.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

PRIMITIVES: tuple[str, ...] = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)


class _ConcatChannels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, *parts: Tensor) -> Tensor:
        ctx.sizes = [p.shape[1] for p in parts]
        ctx.formats = [_memory_format(p) for p in parts]
        return torch.cat(parts, dim=1)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, ...]:
        return tuple(g.contiguous(memory_format=f) for g, f in zip(grad.split(ctx.sizes, dim=1), ctx.formats))


def _recorded(*tensors: Tensor) -> bool:
    """Whether autograd records an op on ``tensors`` (the custom-backward helpers below are plain ops otherwise,
    e.g. for inference and tracing)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors) and not torch.jit.is_tracing()


def _memory_format(x: Tensor) -> torch.memory_format:
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if channels_last else torch.contiguous_format


class _EveryOtherPixel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, offsets: tuple[int, ...]) -> tuple[Tensor, ...]:
        ctx.shape, ctx.format, ctx.offsets = x.shape, _memory_format(x), offsets
        return tuple(x[:, :, o::2, o::2].contiguous(memory_format=ctx.format) for o in offsets)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, None]:
        g0 = next(g for g in grads if g is not None)
        out = torch.empty(ctx.shape, dtype=g0.dtype, device=g0.device, memory_format=ctx.format).zero_()
        for o, g in zip(ctx.offsets, grads):
            if g is not None:
                out[:, :, o::2, o::2] = g
        return out, None


def every_other_pixel(x: Tensor, offsets: tuple[int, ...]) -> tuple[Tensor, ...]:
    """``x[:, :, o::2, o::2]`` for each offset o, with one gradient in ``x``'s own layout.

    Slicing's backward returns a contiguous gradient even for a channels-last input, which sends the layers
    before it down the slow mixed-layout paths; this keeps the layout and writes all offsets into one tensor.
    """
    if _recorded(x):
        return _EveryOtherPixel.apply(x, offsets)
    return tuple(x[:, :, o::2, o::2] for o in offsets)


def concat_channels(parts: list[Tensor]) -> Tensor:
    """``torch.cat(parts, dim=1)`` whose backward hands each part a dense gradient in the part's own layout.

    torch.cat's backward gives channel slices of the output gradient: in channels-last they are neither
    channels-last nor contiguous, and the batch-norm backward that ends most ops then takes a generic CPU
    path about 20x slower (10.8 ms instead of 0.48 ms for a 64x16x32x32 slice, measured on the project's
    2-core CPU). One copy per part avoids it.
    """
    if _recorded(*parts):
        return _ConcatChannels.apply(*parts)
    return torch.cat(parts, dim=1)


def scaled_batch_norm(bn: nn.BatchNorm2d, x: Tensor, scale: Tensor) -> Tensor:
    """``scale * bn(x)`` for a scalar ``scale``, in one pass: the scale joins BN's affine weight and bias.

    Weighting a candidate op's output by its architecture weight this way saves the separate multiplication
    and its backward (two passes over the op's output); the gradient of ``scale`` comes out of BN's own
    backward. A BN subclass with its own forward (e.g. the global-batch BN of multi-process runs) is
    called as it is and then scaled.
    """
    if type(bn).forward is not nn.BatchNorm2d.forward:
        return bn(x) * scale
    bn._check_input_dim(x)
    momentum = 0.0 if bn.momentum is None else bn.momentum
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
        if bn.momentum is None:
            momentum = 1.0 / float(bn.num_batches_tracked)
    use_batch_stats = bn.training or bn.running_mean is None
    # A dense copy: with the stride-0 expanded weight itself, the CPU batch-norm backward gave wrong gradients
    # inside the supernet (float64, channels-last; tests/test_ops.py compares against the written-out network).
    weight = scale.expand(x.shape[1]).contiguous() if bn.weight is None else bn.weight * scale
    bias = None if bn.bias is None else bn.bias * scale
    running = not bn.training or bn.track_running_stats
    return F.batch_norm(x, bn.running_mean if running else None, bn.running_var if running else None, weight, bias,
                        use_batch_stats, momentum, bn.eps)


class Chain(nn.Sequential):
    """A sequence of modules whose output can be scaled by an architecture weight: ``op(x, w) == w * op(x)``.

    When the chain ends in a BatchNorm2d the weight is folded into it (``scaled_batch_norm``)."""

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        modules = list(self)
        folded = scale is not None and isinstance(modules[-1], nn.BatchNorm2d)
        for module in modules[:-1] if folded else modules:
            x = module(x)
        if folded:
            return scaled_batch_norm(modules[-1], x, scale)
        return x if scale is None else x * scale


class ReLUConvBN(Chain):
    """ReLU -> conv -> BN; the cell's 1x1 preprocessing."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool = True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class DilConv(Chain):
    """ReLU -> dilated depthwise conv -> pointwise conv -> BN.

    At stride 2 and dilation 2 every tap of the depthwise conv lands on an even pixel, so it equals an
    undilated stride-1 conv over the even pixels: that is what runs (exactly the same result; the CPU's
    strided dilated depthwise kernels are about 10x slower, forward and backward, at 32x32).
    """

    def __init__(self, c: int, kernel: int, stride: int, dilation: int, affine: bool = True):
        padding = dilation * (kernel - 1) // 2
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c, c, kernel, stride=stride, padding=padding, dilation=dilation, groups=c, bias=False),
            nn.Conv2d(c, c, 1, bias=False),
            nn.BatchNorm2d(c, affine=affine),
        )

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        relu, depthwise, pointwise, bn = self
        if depthwise.stride == (2, 2) and depthwise.dilation == (2, 2):
            x = relu(every_other_pixel(x, (0,))[0])
            x = F.conv2d(x, depthwise.weight, padding=depthwise.padding[0] // 2, groups=depthwise.groups)
        else:
            x = depthwise(relu(x))
        x = pointwise(x)
        return bn(x) if scale is None else scaled_batch_norm(bn, x, scale)


class SepConv(Chain):
    """Two stacked depthwise-separable blocks (only the first strided), as in DARTS."""

    def __init__(self, c: int, kernel: int, stride: int, affine: bool = True):
        super().__init__(
            *DilConv(c, kernel, stride, 1, affine),
            *DilConv(c, kernel, 1, 1, affine),
        )


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs whose outputs are concatenated.

    The second branch reads the input shifted by one pixel (zero-padded on odd sides). Both branches read only
    every other pixel, so they subsample first: ReLU and convolution then touch a quarter of the input, and
    the result is exactly that of ReLU and stride-2 convolutions over the whole input.
    """

    def __init__(self, c_in: int, c_out: int, affine: bool = True):
        super().__init__()
        if c_out % 2:
            raise ValueError(f"FactorizedReduce needs an even channel count, got {c_out}")
        self.relu = nn.ReLU(inplace=False)
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: Tensor, scale: Tensor | None = None) -> Tensor:
        a, b = every_other_pixel(x, (0, 1))
        a, b = self.relu(a), self.relu(b)
        b = F.pad(b, (0, a.shape[3] - b.shape[3], 0, a.shape[2] - b.shape[2]))  # odd sides: the zero padding
        y = concat_channels([F.conv2d(a, self.conv_a.weight), F.conv2d(b, self.conv_b.weight)])
        return self.bn(y) if scale is None else scaled_batch_norm(self.bn, y, scale)


def weighted(op: nn.Module, x: Tensor, weight: Tensor) -> Tensor:
    """``weight * op(x)`` for a candidate op and its scalar architecture weight, folded into the op's final BN
    where it has one."""
    if isinstance(op, (Chain, FactorizedReduce)):
        return op(x, weight)
    return weight * op(x)


def _pool(kind: str) -> Callable[[int, int, bool], nn.Module]:
    def build(c: int, stride: int, affine: bool) -> nn.Module:
        if kind == "max":
            return nn.MaxPool2d(3, stride=stride, padding=1)
        return nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)

    return build


def _skip(c: int, stride: int, affine: bool) -> nn.Module:
    return nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine)


OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "max_pool_3x3": _pool("max"),
    "avg_pool_3x3": _pool("avg"),
    "skip_connect": _skip,
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, 3, stride, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, 5, stride, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, 3, stride, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, 5, stride, 2, affine),
}
assert tuple(OPS) == PRIMITIVES
