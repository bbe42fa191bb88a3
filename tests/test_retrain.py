import json
import math
import subprocess
import sys

import pytest
import torch

from ista_nas import UserError
from ista_nas import retrain
from ista_nas.config import make_train_config
from ista_nas.engine.checkpoint import load_checkpoint
from ista_nas.published import PUBLISHED
from ista_nas import methods
from ista_nas.engine.trainer import learning_rate

from conftest import interrupted_copy


@pytest.fixture
def train_config(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))

    def make(**overrides):
        settings = dict(dataset=f"folder:{tiny_folder}", subset=0, epochs=2, batch_size=12, lr=0.05, channels=4,
                        layers=3, device="cpu", genotype="darts_v2", drop_path=0.2, cutout=4)
        settings.update(overrides)
        return make_train_config("quick", **settings)

    return make


def test_learning_rate_schedule():
    cfg = make_train_config("paper", epochs=10, lr=0.5, lr_min=0.0, warmup_epochs=2)
    lrs = [learning_rate(e, cfg) for e in range(10)]
    assert lrs[:2] == pytest.approx([0.25, 0.5])
    for e in range(2, 10):
        assert lrs[e] == pytest.approx(0.25 * (1 + math.cos(math.pi * (e - 2) / 8)))
    linear = make_train_config("paper", epochs=10, lr=0.5, lr_min=0.1, warmup_epochs=2, lr_schedule="linear")
    assert [learning_rate(e, linear) for e in range(2, 10)] == pytest.approx(
        [0.1 + 0.4 * (1 - k / 8) for k in range(8)])


def test_tiny_training_run_and_evaluation_agree(train_config, tmp_path):
    result = retrain.train(train_config(), tmp_path / "run")
    run = tmp_path / "run"
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in lines] == [1, 2]
    assert lines[1]["drop_path"] == pytest.approx(0.1) and lines[0]["drop_path"] == 0
    for r in lines:
        assert 0 <= r["test_top1"] <= r["test_top5"] <= 100
    assert json.loads((run / "genotype.json").read_text()) == PUBLISHED["darts_v2"].to_dict()
    again = retrain.evaluate_checkpoint(run / "checkpoint.pt", device="cpu", batch_size=7)
    assert again["top1"] == pytest.approx(result.test_top1) and again["images"] == 24
    assert again["loss"] == pytest.approx(lines[-1]["test_loss"], rel=1e-5)


def test_training_resume_equals_an_uninterrupted_run(train_config, tmp_path, monkeypatch):
    # Stopped after epoch 2 of 4: drop-path is active by then, so its random masks must replay exactly.
    with monkeypatch.context() as patch:
        interrupted_copy(patch, 2, tmp_path / "full", tmp_path / "part")
        full = retrain.train(train_config(epochs=4), tmp_path / "full")
    resumed = retrain.resume(tmp_path / "part")
    a = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["trainer"]["model"]
    b = load_checkpoint(tmp_path / "part" / "checkpoint.pt")["trainer"]["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert resumed.test_top1 == full.test_top1
    assert [r["epoch"] for r in resumed.metrics] == [1, 2, 3, 4]


def test_a_search_run_directory_trains(train_config, tiny_config, tmp_path):

    search = methods.search(tiny_config(epochs=1), tmp_path / "search")
    result = retrain.train(train_config(genotype=str(tmp_path / "search"), epochs=1), tmp_path / "train")
    stored = load_checkpoint(result.run_dir / "checkpoint.pt")["model_spec"]["genotype"]
    assert stored == search.genotype.to_dict()


def test_bad_genotype_and_evaluation_input(train_config, tmp_path):
    with pytest.raises(UserError, match="neither a built-in name"):
        retrain.train(train_config(genotype="darts_v9"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
    proc = subprocess.run([sys.executable, "-m", "ista_nas.cli", "evaluate", str(tmp_path / "none.pt")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no checkpoint at" in proc.stderr and "Traceback" not in proc.stderr


def test_streaming_from_disk_handles_mixed_image_sizes(tmp_path, monkeypatch):
    # ImageNet-style: JPEG-like images of different sizes, test split called val/, read every epoch.
    from conftest import make_mixed_size_folder

    make_mixed_size_folder(tmp_path / "img")
    cfg = make_train_config("imagenet", dataset=f"folder:{tmp_path / 'img'}", image_size=32, workers=0,
                            channels=8, layers=3, batch_size=6, epochs=2, warmup_epochs=1, device="cpu")
    result = retrain.train(cfg, tmp_path / "run")
    assert len(result.metrics) == 2 and result.metrics[0]["lr"] == pytest.approx(0.5)
    spec = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["model_spec"]
    assert spec["stem"] == "imagenet" and spec["image_size"] == [32, 32] and spec["num_classes"] == 2
    again = retrain.evaluate_checkpoint(tmp_path / "run" / "checkpoint.pt", device="cpu")
    assert again["images"] == 8 and again["top1"] == pytest.approx(result.test_top1)


def test_cli_rejects_an_invalid_genotype_file_in_one_line(tmp_path):
    bad = tmp_path / "g.json"
    data = PUBLISHED["darts_v2"].to_dict()
    data["normal"][3] = ["conv_11x11", 1]
    bad.write_text(json.dumps(data))
    proc = subprocess.run([sys.executable, "-m", "ista_nas.cli", "train", "--genotype", str(bad), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "unknown op 'conv_11x11'" in proc.stderr and "normal[3]" in proc.stderr
    assert not (tmp_path / "run").exists()
