"""The fused building blocks of the supernets against their plain PyTorch definitions (float64)."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ista_nas.networks import SearchNetwork
from ista_nas.networks.dense import DenseSearchNetwork
from ista_nas.networks.search_cnn import REDUCE, NORMAL
from ista_nas.ops import (PRIMITIVES, DilConv, FactorizedReduce, concat_channels, every_other_pixel,
                          scaled_batch_norm)

CL = torch.channels_last


def _grads(fn, tensors):
    out = fn()
    weights = torch.linspace(-1, 1, out.numel(), dtype=out.dtype).view_as(out)  # a loss that sees every element
    return out.detach(), torch.autograd.grad((out * weights).sum(), tensors, allow_unused=True)


@pytest.mark.parametrize("fmt", [CL, torch.contiguous_format])
def test_concat_channels_is_cat_with_dense_gradients(fmt):
    parts = [torch.randn(2, c, 5, 5, dtype=torch.float64).contiguous(memory_format=fmt).requires_grad_()
             for c in (3, 4, 2)]
    ref, ref_grads = _grads(lambda: torch.cat(parts, dim=1), parts)
    out, grads = _grads(lambda: concat_channels(parts), parts)
    assert torch.equal(out, ref)
    for g, r, p in zip(grads, ref_grads, parts):
        assert torch.equal(g, r)
        assert g.is_contiguous(memory_format=fmt) and g.stride() == p.stride()
    with torch.no_grad():
        assert torch.equal(concat_channels(parts), ref)


@pytest.mark.parametrize("side", [6, 7])
def test_every_other_pixel_is_slicing_with_a_gradient_in_the_input_layout(side):
    x = torch.randn(2, 3, side, side, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    ref, ref_grads = _grads(lambda: torch.cat([x[:, :, ::2, ::2].flatten(), 3 * x[:, :, 1::2, 1::2].flatten()]), [x])
    out, grads = _grads(lambda: torch.cat([t.flatten() * w for t, w in zip(every_other_pixel(x, (0, 1)), (1, 3))]),
                        [x])
    assert torch.equal(out, ref) and torch.equal(grads[0], ref_grads[0])
    assert grads[0].is_contiguous(memory_format=CL)
    assert torch.autograd.gradcheck(lambda t: every_other_pixel(t, (1,)), (x,))


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_scaled_batch_norm_is_scale_times_bn(affine, momentum):
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(4, affine=affine, momentum=momentum).double()
    if affine:
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
    ref_bn = copy.deepcopy(bn)
    x = torch.randn(3, 4, 6, 6, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    scale = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
    inputs = [x, scale]
    for _ in range(2):  # two training steps (running statistics), then evaluation
        ref, ref_grads = _grads(lambda: scale * ref_bn(x), inputs + list(ref_bn.parameters()))
        out, grads = _grads(lambda: scaled_batch_norm(bn, x, scale), inputs + list(bn.parameters()))
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        for g, r in zip(grads, ref_grads):
            torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)
        for name, buf in bn.named_buffers():
            torch.testing.assert_close(buf, dict(ref_bn.named_buffers())[name], rtol=1e-12, atol=0)
    bn.eval(), ref_bn.eval()
    torch.testing.assert_close(scaled_batch_norm(bn, x, scale), scale * ref_bn(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("side", [8, 7])
def test_factorized_reduce_is_relu_and_two_offset_strided_convs(side):
    torch.manual_seed(0)
    fr = FactorizedReduce(4, 6).double()
    nn.init.normal_(fr.bn.weight)
    x = torch.randn(2, 4, side, side, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()
    ref_bn = copy.deepcopy(fr.bn)

    def reference():  # the DARTS definition: shift by one pixel, zero-pad odd sides, stride-2 1x1 convs
        r = F.relu(x)
        shifted = F.pad(r[:, :, 1:, 1:], (0, side % 2, 0, side % 2))
        y = torch.cat([F.conv2d(r, fr.conv_a.weight, stride=2), F.conv2d(shifted, fr.conv_b.weight, stride=2)], 1)
        return ref_bn(y)

    params = [x, fr.conv_a.weight, fr.conv_b.weight]
    ref, ref_grads = _grads(reference, params)
    out, grads = _grads(lambda: fr(x), params)
    assert out.shape == (2, 6, (side + 1) // 2, (side + 1) // 2)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("kernel", [3, 5])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("side", [8, 7])
def test_dil_conv_is_its_layers_in_sequence(kernel, stride, side):
    torch.manual_seed(0)
    op = DilConv(4, kernel, stride, 2).double()
    ref_op = copy.deepcopy(op)
    x = torch.randn(2, 4, side, side, dtype=torch.float64).contiguous(memory_format=CL).requires_grad_()

    def reference():  # the dilated, strided depthwise conv as nn.Conv2d computes it
        y = x
        for module in ref_op:
            y = module(y)
        return y

    ref, ref_grads = _grads(reference, [x, *ref_op.parameters()])
    out, grads = _grads(lambda: op(x), [x, *op.parameters()])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-12)


def _reference_forward(net, x):
    """The supernet's forward written out from its definition: each support op's output times its weight,
    summed per node, the nodes concatenated (plain multiplications and torch.cat)."""
    weights = net.arch.relaxed_weights()
    support = net.arch.support_list
    s0 = s1 = net.stem(x)
    for cell in net.cells:
        t = REDUCE if cell.reduction else NORMAL
        states = [cell.pre0(s0), cell.pre1(s1)]
        for node, ops in enumerate(cell.nodes):
            states.append(sum(weights[t, node, j] * ops[k](states[k // len(PRIMITIVES)])
                              for j, k in enumerate(support[t][node])))
        s0, s1 = s1, torch.cat(states[2:], dim=1)
    return net.classifier(F.adaptive_avg_pool2d(s1, 1).flatten(1))


@pytest.mark.parametrize("one_stage", [False, True])
def test_sparse_supernet_equals_its_written_out_definition(one_stage):
    """Weights folded into BN, the dense-gradient concatenation and the subsampling FactorizedReduce change
    nothing: outputs, the gradients of every weight and of b, and the BN statistics agree (odd input side,
    channels-last, float64)."""
    torch.manual_seed(0)
    net = SearchNetwork(channels=4, layers=5, num_classes=3, seed=0, one_stage=one_stage).double()
    with torch.no_grad():
        net.arch.b.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    net.arch.recover()
    net = net.to(memory_format=CL)
    ref_net = copy.deepcopy(net)
    x = torch.randn(3, 3, 9, 9, dtype=torch.float64).contiguous(memory_format=CL)
    ref, ref_grads = _grads(lambda: _reference_forward(ref_net, x), list(ref_net.parameters()))
    out, grads = _grads(lambda: net(x), list(net.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    assert [g is None for g in grads] == [r is None for r in ref_grads]  # the same weights are used
    assert sum(g is not None for g in grads) > 30
    for (name, _), g, r in zip(net.named_parameters(), grads, ref_grads):
        if g is not None:
            torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12, msg=lambda m, name=name: f"{name}: {m}")
    for (name, buf), ref_buf in zip(net.named_buffers(), ref_net.buffers()):
        torch.testing.assert_close(buf, ref_buf, rtol=1e-12, atol=1e-14, msg=lambda m, name=name: f"{name}: {m}")


def test_dense_supernet_weights_every_op_like_darts():
    torch.manual_seed(0)
    net = DenseSearchNetwork(channels=4, layers=3, num_classes=3, seed=0).double()
    with torch.no_grad():
        net.arch.alpha.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    ref_net = copy.deepcopy(net)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    ref, ref_grads = _grads(lambda: _reference_forward(ref_net, x), list(ref_net.parameters()))
    out, grads = _grads(lambda: net(x), list(net.parameters()))
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for g, r in zip(grads, ref_grads):
        torch.testing.assert_close(g, r, rtol=1e-9, atol=1e-12)
