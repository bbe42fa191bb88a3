import pytest
import torch

from ista_nas import UserError
from ista_nas.genotype import save_genotype
from ista_nas.networks.cnn import Network, count_parameters, drop_path
from ista_nas.published import PUBLISHED
from ista_nas.spaces import get_genotype


@pytest.mark.parametrize("name, published_m", [
    ("ista_twostage", 3.32), ("ista_onestage", 3.37), ("darts_v2", 3.35),  # papers' CIFAR-10 counts
])
def test_parameter_counts_match_the_papers(name, published_m):
    net = Network(PUBLISHED[name], channels=36, layers=20, num_classes=10)
    assert abs(count_parameters(net) / 1e6 - published_m) < 0.01


def test_one_stage_flavour_adds_bn_after_parameter_free_ops():
    g = PUBLISHED["ista_onestage"]
    standard = Network(g.__class__(g.normal, g.normal_concat, g.reduce, g.reduce_concat), 36, 20)
    one_stage = Network(g, 36, 20)
    # One BN (2 x C parameters) per pool and per stride-1 skip of every cell.
    extra = 0
    for cell in one_stage.cells:
        c = cell.pre1[2].num_features
        pairs = g.reduce if cell.reduction else g.normal
        for name, pred in pairs:
            stride = 2 if cell.reduction and pred < 2 else 1
            if "pool" in name or (name == "skip_connect" and stride == 1):
                extra += 2 * c
    assert count_parameters(one_stage) - count_parameters(standard) == extra > 0


def test_forward_shapes_cifar_and_imagenet():
    net = Network(PUBLISHED["ista_twostage"], channels=8, layers=5, num_classes=10).train()
    logits, aux = net.forward_with_aux(torch.randn(2, 3, 32, 32))
    assert logits.shape == (2, 10) and aux.shape == (2, 10)
    net.eval()
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert net.forward_with_aux(torch.randn(2, 3, 32, 32))[1] is None  # no auxiliary head in eval
    grey = Network(PUBLISHED["darts_v2"], channels=8, layers=5, num_classes=7, in_channels=1).train()
    logits, aux = grey.forward_with_aux(torch.randn(2, 1, 28, 28))  # 7x7 at the auxiliary head
    assert logits.shape == (2, 7) and aux.shape == (2, 7)
    mobile = Network(PUBLISHED["ista_imagenet"], channels=16, layers=5, num_classes=1000, stem="imagenet")
    mobile.train()
    logits, aux = mobile.forward_with_aux(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 1000) and aux.shape == (2, 1000)


def test_imagenet_network_matches_the_published_size():
    net = Network(PUBLISHED["ista_imagenet"], channels=48, layers=14, num_classes=1000, stem="imagenet")
    assert abs(count_parameters(net) / 1e6 - 5.65) < 0.01  # counted with the official model code


def test_drop_path_only_in_training():
    torch.manual_seed(0)
    net = Network(PUBLISHED["ista_twostage"], channels=4, layers=3, num_classes=3, auxiliary=False)
    net.drop_path_prob = 0.5
    x = torch.randn(8, 3, 16, 16)
    net.eval()
    assert torch.equal(net(x), net(x))  # deterministic: nothing dropped
    calls = []
    import ista_nas.networks.cnn as cnn
    real = cnn.drop_path
    cnn.drop_path = lambda h, p: calls.append(p) or real(h, p)
    try:
        net.eval()(x)
        assert calls == []
        net.train()(x)
        # Counted from the genotype: every op of every cell except the stride-1 (identity) skips.
        g = PUBLISHED["ista_twostage"]
        expected = 0
        for cell in net.cells:
            pairs = g.reduce if cell.reduction else g.normal
            expected += sum(not (op == "skip_connect" and not (cell.reduction and pred < 2)) for op, pred in pairs)
        assert expected == 22 and len(calls) == expected and set(calls) == {0.5}
    finally:
        cnn.drop_path = real


def test_drop_path_zeroes_whole_samples_and_keeps_the_mean():
    torch.manual_seed(0)
    x = torch.ones(20000, 1, 2, 2)
    y = drop_path(x, 0.25)
    per_sample = y.view(20000, -1)
    assert set(per_sample[:, 0].unique().tolist()) <= {0.0, torch.tensor(1 / 0.75).item()}
    assert bool((per_sample == per_sample[:, :1]).all())
    assert abs(float(y.mean()) - 1.0) < 0.02


def test_get_genotype_resolves_names_files_and_run_dirs(tmp_path):
    assert get_genotype("darts_v2") is PUBLISHED["darts_v2"]
    save_genotype(PUBLISHED["pc_darts"], tmp_path / "genotype.json")
    assert get_genotype(str(tmp_path / "genotype.json")) == PUBLISHED["pc_darts"]
    assert get_genotype(str(tmp_path)) == PUBLISHED["pc_darts"]
    with pytest.raises(UserError, match="neither a built-in name"):
        get_genotype("darts_v3")


def test_imagenet_auxiliary_head_pools_like_darts():
    from ista_nas.networks.cnn import AuxiliaryHead

    torch.manual_seed(0)
    head = AuxiliaryHead(16, 10, imagenet=True).eval()
    x = torch.randn(2, 16, 7, 7)  # the 2L/3 map at 224x224
    expected = head.classifier(head.features(torch.nn.functional.avg_pool2d(
        torch.relu(x), 5, stride=2, count_include_pad=False)).flatten(1))
    torch.testing.assert_close(head(x), expected)
