import json
import subprocess
import sys

import pytest
import torch

from ista_nas import retrain
from ista_nas.config import make_train_config
from ista_nas.export import deployable, export


@pytest.fixture(scope="module")
def trained(tiny_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = make_train_config("quick", dataset=f"folder:{tiny_folder}", subset=0, epochs=1, batch_size=12,
                            channels=4, layers=3, device="cpu", genotype="ista_onestage")
    retrain.train(cfg, out)
    return out / "checkpoint.pt"


def test_deployable_is_normalisation_then_network(trained):
    model, meta = deployable(trained)
    x = torch.rand(3, 3, 16, 16)
    mean = torch.tensor(meta["input"]["mean"]).view(1, -1, 1, 1)
    std = torch.tensor(meta["input"]["std"]).view(1, -1, 1, 1)
    torch.testing.assert_close(model(x), model.net((x - mean) / std))
    assert meta["classes"] == ["class0", "class1", "class2"] and meta["genotype"]["flavour"] == "one-stage"


def test_torchscript_export_matches_eager(trained, tmp_path):
    path = export(trained, "torchscript", tmp_path / "m.pt")
    model, meta = deployable(trained)
    files = {"ista_nas.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=files)
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        assert float((loaded(x) - model(x)).abs().max()) < 1e-4
    stored = json.loads(files["ista_nas.json"])
    assert stored["test"]["top1"] == meta["test"]["top1"] and stored["genotype"] == meta["genotype"]


def test_onnx_export_matches_eager_for_any_batch(trained, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    path = export(trained, "onnx", tmp_path / "m.onnx")
    model, meta = deployable(trained)
    session = ort.InferenceSession(str(path))
    for batch in (1, 6):
        x = torch.rand(batch, 3, 16, 16)
        out = session.run(None, {"images": x.numpy()})[0]
        with torch.no_grad():
            assert float((torch.from_numpy(out) - model(x)).abs().max()) < 1e-4
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(props["ista_nas"])["classes"] == meta["classes"]


def test_export_cli(trained, tmp_path):
    run = trained.parent
    proc = subprocess.run([sys.executable, "-m", "ista_nas.cli", "export", str(run), "--out", str(tmp_path / "x.pt")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "x.pt") and (tmp_path / "x.pt").stat().st_size > 0
    bad = subprocess.run([sys.executable, "-m", "ista_nas.cli", "export", str(run), "--format", "tflite"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid choice: 'tflite'" in bad.stderr and len(bad.stderr.splitlines()) == 1
