import json
import subprocess
import sys

from ista_nas.bench import format_table, run_bench


def test_bench_reports_consistent_figures():
    r = run_bench(layers=3, channels=4, size=16, batch=4, steps=1, warmup=0, device="cpu", retrain=False)
    for key in ("sparse_step_s", "dense_step_s", "speedup", "recovery_s", "device"):
        assert key in r
    assert r["speedup"] == r["dense_step_s"] / r["sparse_step_s"]
    assert r["sparse_images_per_s"] == 4 / r["sparse_step_s"] and r["device"] == "cpu"
    assert "ISTA-NAS sparse" in format_table(r) and "DARTS dense" in format_table(r)


def test_bench_cli_json_and_bad_input():
    proc = subprocess.run([sys.executable, "-m", "ista_nas.cli", "bench", "--json", "--layers", "3", "--channels",
                           "4", "--size", "16", "--batch-size", "4", "--steps", "1", "--warmup", "0", "--no-retrain",
                           "--device", "cpu"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["dense_step_s"] > 0
    bad = subprocess.run([sys.executable, "-m", "ista_nas.cli", "bench", "--steps", "0"], capture_output=True,
                         text=True)
    assert bad.returncode == 2 and "--steps must be at least 1" in bad.stderr
