import pytest
import torch
import torch.nn.functional as F

from ista_nas.networks import SearchNetwork
from ista_nas.networks.cnn import count_parameters
from ista_nas.networks.search_cnn import candidate
from ista_nas.ops import PRIMITIVES

from conftest import one_stage_net


def small_net(**kw):
    torch.manual_seed(0)
    return SearchNetwork(channels=4, layers=3, num_classes=5, in_channels=3, seed=0, **kw)


def test_candidate_indexing():
    assert candidate(0) == (0, PRIMITIVES[0])
    assert candidate(7 * 3 + 4) == (3, PRIMITIVES[4])


def test_only_support_ops_run():
    net = small_net()
    calls = {}
    for c, cell in enumerate(net.cells):
        for i, ops in enumerate(cell.nodes):
            for k, op in enumerate(ops):
                op.register_forward_hook(lambda *_, key=(c, i, k): calls.__setitem__(key, calls.get(key, 0) + 1))
    net(torch.randn(2, 3, 16, 16))
    expected = {}
    for c, cell in enumerate(net.cells):
        t = 1 if cell.reduction else 0
        for i, idx in enumerate(net.arch.support_list[t]):
            for k in idx:
                expected[(c, i, k)] = expected.get((c, i, k), 0) + 1
    assert calls == expected
    assert sum(calls.values()) == len(net.cells) * 4 * 2  # s = 2 per node, 4 nodes: 8 of 98 candidates


def test_gradients_reach_b_and_nothing_outside_the_support():
    net = small_net()
    x, y = torch.randn(4, 3, 16, 16), torch.randint(0, 5, (4,))
    F.cross_entropy(net(x), y).backward()
    assert net.arch.b.grad is not None and torch.count_nonzero(net.arch.b.grad) > 0
    active = {id(p) for p in net.active_weight_parameters()}
    for name, p in net.named_parameters():
        if name.startswith("arch."):
            continue
        if id(p) in active:
            assert p.grad is not None, name
        else:
            assert p.grad is None, name
    # b of a node gets gradient only through its own A_S: every node of both cell types is used here.
    assert bool((net.arch.b.grad.abs().sum(-1) > 0).all())


def test_genotype_matches_support_and_z_order():
    net = small_net()
    with torch.no_grad():
        net.arch.b.normal_(0, 1e-2)
    net.arch.recover()
    g = net.genotype()
    for t, pairs in ((0, g.normal), (1, g.reduce)):
        for node, idx in enumerate(net.arch.support_list[t]):
            got = pairs[2 * node: 2 * node + 2]
            assert sorted(got) == sorted((candidate(k)[1], candidate(k)[0]) for k in idx)
            z = net.arch.z[t, node]
            first = idx[0] if abs(z[idx[0]]) >= abs(z[idx[1]]) else idx[1]
            assert got[0] == (candidate(first)[1], candidate(first)[0])
    ranking = net.ranking()
    assert [len(r) for r in ranking["normal"]] == [14, 21, 28, 35]
    values = [e["abs_z"] for e in ranking["reduce"][3]]
    assert values == sorted(values, reverse=True)


def test_arch_state_moves_with_the_module():
    net = small_net().double()
    assert net.arch.b.dtype == torch.float64 and net.arch.A.dtype == torch.float64
    keys = net.state_dict().keys()
    assert {"arch.A", "arch.b", "arch.z", "arch.support"} <= set(keys)


# --- the one-stage flavour: the target supernet and the network it becomes ---------------------------------


def test_absorbed_network_equals_the_supernet():
    net = one_stage_net()
    disc = net.absorb()
    assert disc.genotype == net.genotype() and disc.genotype.flavour == "one-stage"
    x = torch.randn(4, 3, 32, 32)
    net.eval()
    disc.eval()
    with torch.no_grad():
        assert float((net(x) - disc(x)).abs().max()) < 1e-5
    # The discrete network holds only the support ops: far fewer parameters than the supernet.
    assert count_parameters(disc) < count_parameters(net) / 3


def test_frozen_nodes_keep_support_weights_and_get_no_gradient():
    net = one_stage_net()
    frozen = torch.zeros(2, 4, dtype=torch.bool)
    frozen[0, 1] = frozen[1, 3] = True
    before_alpha = net.arch.relaxed_weights().detach().clone()
    before_support = net.arch.support.clone()
    net.arch.freeze(frozen)
    loss = F.cross_entropy(net.train()(torch.randn(4, 3, 32, 32)), torch.randint(0, 10, (4,)))
    (grad,) = torch.autograd.grad(loss, [net.arch.b])
    assert bool((grad[frozen] == 0).all()) and bool((grad[~frozen].abs().sum(-1) > 0).all())
    with torch.no_grad():
        net.arch.b.add_(torch.randn_like(net.arch.b))  # b moves a lot
    net.arch.recover()
    assert torch.equal(net.arch.support[frozen], before_support[frozen])
    assert torch.equal(net.arch.relaxed_weights()[frozen], before_alpha[frozen])
    assert not torch.equal(net.arch.relaxed_weights()[~frozen], before_alpha[~frozen])


def test_absorption_with_the_mobile_stem():
    torch.manual_seed(0)
    net = SearchNetwork(channels=8, layers=3, num_classes=5, one_stage=True, auxiliary=True, seed=2, stem="imagenet")
    with torch.no_grad():
        net.arch.b.normal_(0, 0.1)
    net.arch.recover()
    net.train()(torch.randn(4, 3, 64, 64))  # gather BN statistics
    disc = net.absorb()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert float((net.eval()(x) - disc.eval()(x)).abs().max()) < 1e-5


@pytest.mark.parametrize("weight_scale", ["raw", "mean"])
def test_fixed_weight_network_and_its_absorbed_copy_compute_the_supernets_outputs(weight_scale):
    net = one_stage_net().double()
    net.weight_scale = weight_scale  # mean: each multiplier is alpha over the cell type's mean |alpha|
    fixed, sources = net.discrete()
    plain = fixed.absorbed()
    assert all(cell.alpha is not None for cell in fixed.cells) and all(cell.alpha is None for cell in plain.cells)
    assert not any(k.endswith("alpha") for k in plain.state_dict())
    assert set(sources) == {name for name, _ in fixed.named_parameters()}
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        ref = net.eval()(x)
        torch.testing.assert_close(fixed.eval()(x), ref, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(plain.eval()(x), ref, rtol=1e-12, atol=1e-12)
    # A plain network holding the fixed weights again loads the fixed network's state exactly.
    from ista_nas.networks.cnn import Network

    again = Network(fixed.genotype, auxiliary=True, **net.shape).double().hold_op_weights()
    again.load_state_dict(fixed.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(again.eval()(x), fixed(x), rtol=1e-12, atol=1e-12)
