import csv
import gzip
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ista_nas.bench import format_table, run_bench
from ista_nas.benchmark import BUILTIN
from ista_nas.spaces import SPACES, load_genotype

ROOT = Path(__file__).parents[1]


def test_bench_reports_consistent_figures():
    r = run_bench(layers=3, channels=4, size=16, batch=4, steps=1, warmup=0, device="cpu", retrain=False)
    for key in ("sparse_step_s", "dense_step_s", "speedup", "recovery_s", "device"):
        assert key in r
    assert r["speedup"] == r["dense_step_s"] / r["sparse_step_s"]
    assert r["sparse_images_per_s"] == 4 / r["sparse_step_s"] and r["device"] == "cpu"
    assert "ISTA-NAS sparse" in format_table(r) and "DARTS dense" in format_table(r)


def test_bench_refuses_bad_input_in_one_line():
    bad = subprocess.run([sys.executable, "-m", "ista_nas.cli", "bench", "--steps", "0"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--steps must be at least 1" in bad.stderr


@pytest.mark.slow
def test_the_gpu_script_rehearses_every_phase_on_the_cpu(tmp_path):
    """bench/gpu.sh --rehearse, as the device command runs it but tiny and on the CPU: every phase exits 0; the
    summary holds each bench's figures (the bench CLI's JSON), each preset's projection (its measured epoch
    scaled to 50,000 images), and each study run's table values, which are the shipped CSV's row of the run's
    genotype; the mean is theirs; what comes back is at most 8 files, no checkpoint in runs.tar.gz."""
    done = subprocess.run(["bash", str(ROOT / "bench" / "gpu.sh"), "--rehearse", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "TMPDIR": str(tmp_path)}, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "out"
    phases = {p["phase"]: p["rc"] for p in map(json.loads, (out / "phases.jsonl").read_text().splitlines())}
    assert set(phases) == {"gpu-tests", "bench-b64", "bench-b256", "bench-nb201", "preset-two-stage",
                           "preset-one-stage", "preset-retrain", "preset-nb201", "evaluate", "export-onnx",
                           "export-torchscript", "torchrun", "study-nb201-two-stage-100", "study-nb201-one-stage-100"}
    assert set(phases.values()) == {0}, phases
    summary = json.loads((out / "summary.json").read_text())
    assert [summary["bench"][f"bench-{n}"]["batch"] for n in ("b64", "b256", "nb201")] == [8, 16, 8]  # tiny
    for b in summary["bench"].values():
        assert b["speedup"] == b["dense_step_s"] / b["sparse_step_s"] and b["device"] == "cpu"
        assert "sparse_graph_step_s" not in b  # no CUDA graph on the CPU
    assert "retrain_step_s" in summary["bench"]["bench-b256"]
    assert len(summary["projections"]) == 4
    for p in summary["projections"].values():
        assert p["projected_epoch_s"] == [round(s * 50_000 / p["images"], 1) for s in p["epoch_seconds"]]
    with gzip.open(BUILTIN / "nb201-accuracy.csv.gz", "rt") as f:
        table = {row["arch"]: row for row in csv.DictReader(line for line in f if not line.startswith("#"))}
    with tarfile.open(out / "runs.tar.gz") as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "back", filter="data")
    assert not [n for n in names if n.endswith(".pt")]
    rows = summary["study"]["runs"]
    assert [r["run"] for r in rows] == ["nb201-one-stage-100", "nb201-two-stage-100"]
    for r in rows:
        found = load_genotype(tmp_path / "back" / "runs" / r["run"] / "genotype.json")
        assert found == SPACES["nb201"].parse(r["arch"])
        assert [r["cifar10"], r["cifar100"], r["imagenet16-120"]] == [
            float(table[r["arch"]][m]) for m in ("cifar10", "cifar100", "imagenet16-120")]
        assert summary["study"]["mean_std"][r["method"]]["cifar10"] == [round(r["cifar10"], 2), 0.0]
    assert len(list(out.iterdir())) <= 8
