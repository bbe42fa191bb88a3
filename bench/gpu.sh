#!/usr/bin/env bash
# All GPU measuring in one run (a few minutes): bench at the paper's search batch (256) and the default batch (64),
# then project the paper presets' wall time from the per-step figures. Usage: bench/gpu.sh OUT_DIR
set -euo pipefail
out="${1:?usage: bench/gpu.sh OUT_DIR}"
mkdir -p "$out"
python3 -m pip install -q -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/gpu.csv" || true
ista-nas bench --device cuda --json --batch-size 64 --no-retrain > "$out/bench_b64.json"
ista-nas bench --device cuda --json --batch-size 256 > "$out/bench_b256.json"
python3 - "$out" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
b = json.loads((out / "bench_b256.json").read_text())
search_steps = 25_000 // 256            # paper two-stage: 25k weight images per epoch at batch 256
retrain_steps = 50_000 // 96            # paper retrain: 50k images at batch 96
proj = {
    "card": b["device_name"],
    "search_epoch_s": b["sparse_step_s"] * search_steps,
    "search_50_epochs_min": b["sparse_step_s"] * search_steps * 50 / 60,
    "retrain_epoch_s": b["retrain_step_s"] * retrain_steps,
    "retrain_600_epochs_h": b["retrain_step_s"] * retrain_steps * 600 / 3600,
    "note": "step time x steps per epoch; data loading and evaluation not included",
}
(out / "projection.json").write_text(json.dumps(proj, indent=2))
print(json.dumps(proj, indent=2))
PY
