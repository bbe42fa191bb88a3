import torch
import torch.nn.functional as F

from ista_nas.networks import SearchNetwork
from ista_nas.networks.cnn import count_parameters


def one_stage_net(seed=1):
    torch.manual_seed(0)
    net = SearchNetwork(channels=8, layers=5, num_classes=10, one_stage=True, auxiliary=True, seed=seed)
    with torch.no_grad():
        net.arch.b.normal_(0, 0.1, generator=torch.Generator().manual_seed(seed))
        for m in net.modules():  # trained-looking BN statistics and affine parameters
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    net.arch.recover()
    return net


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


def _cfg(tiny_folder, **overrides):
    from ista_nas.config import make_config

    settings = dict(method="one-stage", dataset=f"folder:{tiny_folder}", subset=0, channels=4, layers=3,
                    batch_size=12, epochs=3, max_search_epochs=0, device="cpu", seed=0)
    settings.update(overrides)
    return make_config("quick", **settings)


def test_one_stage_run_freezes_absorbs_trains_on_and_writes_a_loadable_model(tiny_folder, tmp_path, monkeypatch):
    import json

    from ista_nas import retrain
    from ista_nas.methods import one_stage

    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    # A huge tolerance: every node's z "stops moving" after epoch 1, so the architecture is fixed then.
    result = one_stage.search(_cfg(tiny_folder, freeze_tol=1e9), tmp_path / "run")
    phases = [r["phase"] for r in result.metrics]
    assert phases == ["search", "train", "train"]
    assert len(result.metrics[0]["frozen"]) == 8
    froze_at = json.loads((tmp_path / "run" / "froze_at.json").read_text())
    assert set(froze_at.values()) == {1}
    model, checkpoint = retrain.load_model(tmp_path / "run" / "checkpoint.pt")
    assert model.genotype == result.genotype and result.genotype.flavour == "one-stage"
    again = retrain.evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", device="cpu")
    assert again["top1"] == result.metrics[-1]["test_top1"]


def test_nodes_freeze_only_when_z_stops_moving(tiny_folder, tmp_path, monkeypatch):
    from ista_nas.methods import one_stage

    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    result = one_stage.search(_cfg(tiny_folder, freeze_tol=0.0, epochs=2), tmp_path / "a")
    assert [r["frozen"] for r in result.metrics] == [[], []]  # z moves every epoch: nothing freezes
    capped = one_stage.search(_cfg(tiny_folder, freeze_tol=0.0, epochs=3, max_search_epochs=2), tmp_path / "b")
    assert [r["phase"] for r in capped.metrics] == ["search", "search", "train"]
    assert len(capped.metrics[1]["frozen"]) == 8


def test_parameter_budget_rejects_oversized_architectures(tiny_folder, tmp_path, monkeypatch):
    from ista_nas.methods import one_stage

    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    free = one_stage.search(_cfg(tiny_folder, freeze_tol=0.0, epochs=1), tmp_path / "free")
    tight = one_stage.search(_cfg(tiny_folder, freeze_tol=0.0, epochs=1, max_params=1e-6), tmp_path / "tight")
    torch.manual_seed(0)
    initial = SearchNetwork(channels=4, layers=3, num_classes=3, one_stage=True, auxiliary=True, seed=0).genotype()
    assert tight.genotype == initial  # every recovery was over budget: the initial supports stayed
    assert free.genotype != initial


def test_one_stage_resume_equals_an_uninterrupted_run(tiny_folder, tmp_path, monkeypatch):
    from conftest import interrupted_copy

    from ista_nas.engine.checkpoint import load_checkpoint
    from ista_nas.methods import one_stage

    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    cfg = _cfg(tiny_folder, freeze_tol=0.0, epochs=4, max_search_epochs=2, drop_path=0.2)
    with monkeypatch.context() as patch:  # one copy in the search phase, one after the absorption
        interrupted_copy(patch, 1, tmp_path / "full", tmp_path / "in_search")
        full = one_stage.search(cfg, tmp_path / "full")
    with monkeypatch.context() as patch:
        interrupted_copy(patch, 3, tmp_path / "again", tmp_path / "in_training")
        one_stage.search(cfg, tmp_path / "again")
    final = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["trainer"]["model"]
    for part in ("in_search", "in_training"):
        resumed = one_stage.resume(tmp_path / part)
        assert resumed.genotype == full.genotype
        state = load_checkpoint(tmp_path / part / "checkpoint.pt")["trainer"]["model"]
        for key in final:
            assert torch.equal(final[key], state[key]), (part, key)


def test_bn_affine_of_a_node_trains_only_once_it_froze(tiny_config):
    from ista_nas.config import make_config
    from ista_nas.methods.one_stage import OneStageSearch, op_bn_parameters

    cfg = make_config("quick", method="one-stage", device="cpu")
    net = one_stage_net()
    with torch.no_grad():  # the BNs inside candidate ops start at (1, 0) as the method requires
        for cell in net.cells:
            for ops in cell.nodes:
                for m in ops.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.weight.fill_(1.0)
                        m.bias.zero_()
    search = OneStageSearch(net, cfg)
    frozen = torch.zeros(2, 4, dtype=torch.bool)
    frozen[0, 2] = True
    net.arch.freeze(frozen)
    search.unfreeze_bn(frozen)
    search.begin_epoch()
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    search.step(x, y)
    trained = op_bn_parameters(net, 0, 2, net.arch.support_list[0][2])
    assert trained and all(p.grad is not None and p.requires_grad for p in trained)
    assert any(not torch.equal(p, torch.ones_like(p)) and not torch.equal(p, torch.zeros_like(p)) for p in trained)
    still = op_bn_parameters(net, 0, 1, net.arch.support_list[0][1]) + op_bn_parameters(net, 1, 2,
                                                                                        net.arch.support_list[1][2])
    assert still and all(p.grad is None and not p.requires_grad for p in still)
    for p in still:  # still exactly (1, 0)
        assert torch.equal(p, torch.ones_like(p)) or torch.equal(p, torch.zeros_like(p))
    assert torch.count_nonzero(net.arch.b.grad[0, 2]) == 0 and torch.count_nonzero(net.arch.b.grad[0, 1]) > 0


def test_one_stage_imagenet_preset_streams_and_absorbs_with_the_mobile_stem(tmp_path):
    from conftest import make_mixed_size_folder

    from ista_nas import retrain
    from ista_nas.config import make_config
    from ista_nas.methods import one_stage

    make_mixed_size_folder(tmp_path / "img")
    cfg = make_config("imagenet", method="one-stage", dataset=f"folder:{tmp_path / 'img'}", image_size=32,
                      workers=0, channels=8, layers=3, batch_size=6, epochs=2, max_search_epochs=1, lr=0.05,
                      device="cpu")
    result = one_stage.search(cfg, tmp_path / "run")
    assert [r["phase"] for r in result.metrics] == ["search", "train"]
    model, checkpoint = retrain.load_model(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["model_spec"]["stem"] == "imagenet" and model.stem1 is not None


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
