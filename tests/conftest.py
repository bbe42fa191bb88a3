import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ista_nas.methods import make_config
from ista_nas.networks import SearchNetwork

try:  # property tests draw the same examples on every run, so CI stays reproducible
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile("repeatable", derandomize=True, deadline=None)
    _hypothesis_settings.load_profile("repeatable")
except ImportError:
    pass

# Subprocesses running `python -m ista_nas.cli` import this tree too.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parents[1] / "src"),
                                                          os.environ.get("PYTHONPATH")]))


def make_image_folder(root, classes=3, per_class=(40, 8), size=16, mode="RGB", seed=0):
    """A tiny image-folder dataset whose classes differ in mean colour, so a net can learn something."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "test"), per_class):
        for c in range(classes):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                base = 60 + 70 * c
                shape = (size, size, 3) if mode == "RGB" else (size, size)
                arr = np.clip(rng.normal(base, 40, shape), 0, 255).astype(np.uint8)
                Image.fromarray(arr, mode).save(folder / f"{i:03d}.png")
    return root


def make_mixed_size_folder(root, seed=0):
    """ImageNet-style: JPEG images of different sizes, two classes, the test split called val/."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", 12), ("val", 4)):
        for c in range(2):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(count):
                h, w = rng.integers(20, 40, 2)
                Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{i}.jpg")
    return root


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("data") / "tiny")


@pytest.fixture
def tiny_config(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))

    def make(**overrides):
        settings = dict(dataset=f"folder:{tiny_folder}", subset=0, epochs=2, batch_size=12, lr=0.05, channels=4, layers=3,
                        device="cpu", seed=0)
        settings.update(overrides)
        return make_config("quick", **settings)

    return make


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def runs(tiny_folder, tmp_path_factory):
    """A finished NAS-Bench-201 search (two seeds) and a finished training run, shared by the tests of what the
    tool promises about files (test_reliability, test_trust); tests copy them before changing anything."""
    from ista_nas import methods, retrain
    from ista_nas.analysis.report import write_run_report
    from ista_nas.config import make_train_config
    from ista_nas.networks.nb201 import NB201_EXAMPLE

    root = tmp_path_factory.mktemp("runs")
    cfg = methods.make_config("quick", space="nb201", dataset=f"folder:{tiny_folder}", subset=0, epochs=2,
                              batch_size=12, channels=4, layers=1, device="cpu")
    for result in methods.search_seeds(cfg, [0, 1], root / "seeds"):
        write_run_report(result.run_dir)  # as ista-nas search does
    train = make_train_config("quick", space="nb201", dataset=f"folder:{tiny_folder}", subset=0, epochs=1,
                              batch_size=12, channels=4, layers=1, device="cpu", genotype=NB201_EXAMPLE)
    retrain.train(train, root / "train")
    return {"search": root / "seeds" / "seed-0", "seeds": root / "seeds", "train": root / "train"}


def snapshot(*roots):
    """Every file under ``roots`` with the SHA-256 of its bytes."""
    found = {}
    for root in roots:
        paths = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        found.update({str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths})
    return found


def refused(argv, capsys, *untouched, expect=None):
    """``argv`` exits 2 with one line (containing ``expect``) and leaves every file under ``untouched`` as it was."""
    from ista_nas.cli import main

    before = snapshot(*untouched)
    assert main([str(a) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ista-nas: error:") and err.count("\n") == 1, err
    assert "Traceback" not in err and "delete" not in err
    if expect:
        assert expect in err, err
    assert snapshot(*untouched) == before
    return err


def interrupted_copy(monkeypatch, epoch, run_dir, dest):
    """Make a run keep a copy of ``run_dir`` as it stood when ``epoch``'s checkpoint was written: the state a
    run killed right after that epoch leaves behind (same config, same schedule)."""
    import shutil

    from ista_nas.engine import rundir

    real = rundir.save_checkpoint

    def save(path, state):
        real(path, state)
        if state["epoch"] == epoch:
            shutil.copytree(run_dir, dest)

    monkeypatch.setattr(rundir, "save_checkpoint", save)


def evaluate_and_export_agree(run_dir, top1, capsys):
    """A finished run's checkpoint through the CLI: ``evaluate`` gives the run's last test top-1 and the
    TorchScript ``export`` computes what the deployable model computes."""
    import json

    from ista_nas.cli import main
    from ista_nas.export import deployable

    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["top1"] == pytest.approx(top1)
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 0
    loaded = torch.jit.load(capsys.readouterr().out.strip())
    deploy, _ = deployable(Path(run_dir) / "checkpoint.pt")
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), deploy(x), rtol=1e-4, atol=1e-5)


def one_stage_net(seed=1):
    """A one-stage DARTS-cell supernet (C=8, L=5, auxiliary head) with trained-looking BNs and a recovered
    support."""
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
