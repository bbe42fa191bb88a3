"""Every registered search space x every registered search method, through the one driver: a tiny search
that ends with a valid genotype of the space, a report, and a resume from a copy left after the first epoch
that ends exactly as the uninterrupted run. A new space or method is tested here the moment it is
registered; a pair the method cannot search must be refused in one clear line."""

import html
import json

import pytest
import torch
from conftest import interrupted_copy

from ista_nas.analysis.report import write_run_report
from ista_nas.engine.checkpoint import load_checkpoint
from ista_nas.errors import UserError
from ista_nas.methods import METHODS, make_config, resume, search
from ista_nas.spaces import SPACES, get_genotype, space_of

PAIRS = [(space, method) for space in SPACES for method in METHODS]


def _same(a, b, where="checkpoint"):
    """Recursive equality of checkpoint contents, tensors bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _settings(space, method, folder):
    settings = dict(space=space, method=method, dataset=f"folder:{folder}", subset=0, epochs=2, batch_size=12,
                    lr=0.05, channels=4, device="cpu", seed=0)  # the network's depth: the space's quick preset
    if method == "one-stage":  # one search epoch, then one training epoch
        settings.update(epochs=1, max_search_epochs=1)
    return settings


def test_every_method_searches_some_space():
    for method in METHODS:
        assert any(_accepted(space, method) for space in SPACES), method


def _accepted(space, method):
    try:
        make_config("quick", **_settings(space, method, "/nonexistent"))
    except UserError:
        return False
    return True


@pytest.mark.slow
@pytest.mark.parametrize("space,method", PAIRS)
def test_every_space_and_method_searches_resumes_exactly_and_reports(space, method, tiny_folder, tmp_path,
                                                                    monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    settings = _settings(space, method, tiny_folder)
    if not _accepted(space, method):
        with pytest.raises(UserError) as refused:
            make_config("quick", **settings)
        message = str(refused.value)
        assert len(message.splitlines()) == 1 and (f"--space {space}" in message or f"--method {method}" in message)
        return
    cfg = make_config("quick", **settings)
    interrupted_copy(monkeypatch, 1, tmp_path / "full", tmp_path / "stopped")
    full = search(cfg, tmp_path / "full")
    # A valid genotype of the space: its type, a JSON round trip, a network the space can build from it.
    assert space_of(full.genotype) is SPACES[space]
    stored = json.loads((tmp_path / "full" / "genotype.json").read_text())
    assert SPACES[space].from_dict(stored) == full.genotype == get_genotype(str(tmp_path / "full"))
    net, _, _ = SPACES[space].sized_network(full.genotype, 4, 3, 3, 3, 16, None)
    assert net.eval()(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
    assert [r["epoch"] for r in full.metrics] == [1, 2]
    write_run_report(tmp_path / "full")
    report = (tmp_path / "full" / "report.html").read_text()
    assert "<h1>ista-nas search run</h1>" in report and html.escape(json.dumps(full.genotype.to_dict())) in report
    # Exact resume: the copy left after epoch 1 ends as the uninterrupted run did.
    resumed = resume(tmp_path / "stopped")
    assert resumed.genotype == full.genotype
    drop = lambda records: [{k: v for k, v in r.items() if k != "seconds"} for r in records]  # noqa: E731
    assert drop(resumed.metrics) == drop(full.metrics)
    _same(load_checkpoint(tmp_path / "full" / "checkpoint.pt"), load_checkpoint(tmp_path / "stopped" / "checkpoint.pt"))


@pytest.mark.parametrize("space", list(SPACES))
def test_every_spaces_supernets_offer_what_their_protocol_promises(space):
    """networks.protocols is the contract between spaces and methods: each factory's supernet has every method
    and attribute of its protocol, and a sparse one's architecture state is a SparseCode."""
    from types import SimpleNamespace

    from ista_nas.networks.protocols import DenseSupernet, SparseSupernet, TargetSupernet
    from ista_nas.sparse_coding import SparseCode

    impl = SPACES[space]
    cfg = make_config("quick", space=space, channels=4, layers=3 if space == "darts" else 1, device="cpu")
    data = SimpleNamespace(num_classes=3, channels=3)
    built = [(impl.supernet(cfg, data), SparseSupernet), (impl.dense_supernet(cfg, data), DenseSupernet)]
    if impl.target is not None:
        target = make_config("quick", space=space, method="one-stage", channels=4, device="cpu",
                             **({"layers": 3} if space == "darts" else {}))
        built.append((impl.target_supernet(target, data), TargetSupernet))
    for net, protocol in built:
        assert isinstance(net, protocol), (space, protocol.__name__)
        assert isinstance(net.arch, SparseCode) == (protocol is not DenseSupernet)


@pytest.mark.parametrize("space", list(SPACES))
def test_every_spaces_activation_count_is_its_networks_outputs_without_allocating(space):
    """The memory check's meta-device count of a batch of one's activations is what the real network's modules
    output (float32 bytes) at the same size, and four times as many pixels give about four times the count."""
    import random

    from ista_nas.spaces import activation_bytes

    impl = SPACES[space]
    counted = activation_bytes(space, 4, 3, (16, 16), 3, 10)
    torch.manual_seed(0)
    built, _, _ = impl.sized_network(impl.sample(random.Random(0)), 4, 3, 10, 3, 16, "cifar", auxiliary=False)
    outputs = []
    for module in built.modules():
        if not list(module.children()):
            module.register_forward_hook(lambda m, a, out: outputs.append(out))
    built.train()(torch.zeros(1, 3, 16, 16))
    assert counted == 4 * sum(o.numel() for o in outputs if isinstance(o, torch.Tensor))  # float32 bytes
    assert 3.9 < activation_bytes(space, 4, 3, (32, 32), 3, 10) / counted < 4.0


@pytest.mark.parametrize("space", list(SPACES))
def test_every_spaces_parameter_count_is_its_networks_without_a_draw(space):
    """A parameter budget counts through the space, on the meta device: the same count as the network built for
    real without its auxiliary head, and the global random generator does not move."""
    import random

    from ista_nas.networks.cnn import count_parameters

    impl = SPACES[space]
    genotype = impl.sample(random.Random(0))
    for stem in ("cifar", "imagenet"):
        before = torch.random.get_rng_state()
        counted = impl.parameter_count(genotype, 8, 5, 10, 3, stem)
        assert torch.equal(torch.random.get_rng_state(), before)
        built, _, _ = impl.sized_network(genotype, 8, 5, 10, 3, 32, stem, auxiliary=False)
        assert counted == sum(p.numel() for p in built.parameters()) == count_parameters(built)
