#!/usr/bin/env bash
# Every GPU measurement in one device command (at most 9 minutes on one card), or its rehearsal on the CPU.
#
#   bench/gpu.sh [--rehearse] [--data FOLDER|TAR.GZ] [--study-in FOLDER] OUT
#
# Phases, each bounded in time and recorded in OUT/phases.jsonl (name, exit code, seconds) whatever it gives:
#   gpu-tests   pytest -m gpu (tests/test_gpu.py: CPU agreement, no host syncs, captured = eager steps, AMP)
#   bench-*     ista-nas bench: sparse, dense and retrain steps, eager and CUDA-graph, at batch 64 and 256,
#               and the NAS-Bench-201 supernet at C=16, N=5, batch 64
#   preset-*    one epoch of each paper preset on a subset (two-stage and one-stage search on the DARTS cell,
#               retraining with AMP, the NAS-Bench-201 search at C=16, N=5): the full epochs' wall time projected
#   evaluate, export-onnx, export-torchscript   of the network the retrain preset trained on the card
#   torchrun    a search under torchrun --nproc_per_node 1 (nccl on CUDA, gloo on the CPU)
#   study       NAS-Bench-201 at the benchmark's scale: C=16, N=5, all 50,000 training images split 25k/25k,
#               batch 64, 50 epochs, two-stage and one-stage ISTA-NAS on fresh seeds, all at once, stopped by
#               SIGINT (a checkpoint: --resume continues exactly) when the time is up; --study-in FOLDER holds
#               the run directories of an earlier session, which are resumed instead of started.
# OUT gets summary.json, summary.md, phases.jsonl, runs.tar.gz (every run's small files and logs) and one
# ckpt-NAME.tar per unfinished study run (its run directory, to carry into the next session): at most 8 files.
# --rehearse runs every phase at tiny sizes on the CPU (tests/test_bench.py runs it), on a generated folder
# unless --data is given.
set -uo pipefail

mode=full data="" study_in=""
while [[ $# -gt 1 ]]; do
  case "$1" in
    --rehearse) mode=rehearse; shift ;;
    --data) data="$2"; shift 2 ;;
    --study-in) study_in="$2"; shift 2 ;;
    *) echo "unknown option $1; usage: bench/gpu.sh [--rehearse] [--data PATH] [--study-in FOLDER] OUT" >&2; exit 2 ;;
  esac
done
out="${1:?usage: bench/gpu.sh [--rehearse] [--data PATH] [--study-in FOLDER] OUT}"
if [[ -e $out && ( ! -d $out || -n "$(ls -A "$out")" ) ]]; then  # never replace files this script did not write
  echo "$out exists and is not an empty folder; give a new OUT" >&2
  exit 2
fi
mkdir -p "$out"
out="$(cd "$out" && pwd)"
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/ista-gpu.XXXXXX")"
began=$(date +%s)
export ISTA_NAS_CACHE="$work/cache" PYTHONPATH="$here/src${PYTHONPATH:+:$PYTHONPATH}"
py="${PYTHON:-python3}"
cli=("$py" -m ista_nas.cli)

if [[ $mode == full ]]; then
  data="${data:-$here/gpu-data/cifar10-jpeg.tar.gz}"
  dev=cuda budget=540 seeds=(100 101 102 103 104) small=64 large=256
  tiny=() budget_net=() bench_size=() subset_search=12800 subset_train=4800 subset_nb=6400 study_subset=0
  "$py" -m pip install -q --no-deps --no-build-isolation -e "$here" >/dev/null 2>&1 || true
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$out/card.txt" 2>&1 || true
else
  dev=cpu budget=170 seeds=(100) small=8 large=16
  tiny=(--channels 4 --layers 3 --batch-size 8) budget_net=(--budget-channels 4 --budget-layers 3)
  bench_size=(--channels 4 --layers 3 --size 16 --steps 1 --warmup 0 --retrain-channels 4 --retrain-layers 3)
  subset_search=48 subset_train=48
  subset_nb=48 study_subset=48
  export OMP_NUM_THREADS=1
fi

if [[ -n $data && ! -e $data ]]; then
  echo "no data at $data: give --data FOLDER|TAR.GZ (CIFAR-10 as an image folder: train/ and test/)" >&2
  exit 2
fi
if [[ -z $data ]]; then  # the rehearsal's own folder: 10 classes of 32x32 images
  data="$work/data"
  "$py" - "$data" <<'PY'
import sys, pathlib, numpy as np
from PIL import Image
rng = np.random.default_rng(0)
for split, n in (("train", 8), ("test", 2)):
    for c in range(10):
        folder = pathlib.Path(sys.argv[1]) / split / f"c{c}"
        folder.mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i}.png")
PY
elif [[ $data == *.tar.gz ]]; then
  mkdir -p "$work/data" && tar xzf "$data" -C "$work/data"
  data="$(dirname "$(find "$work/data" -type d -name train | head -1)")"
fi
dataset="folder:$data"

left() { echo $((budget - ($(date +%s) - began))); }
# phase NAME SECONDS COMMAND...: COMMAND bounded in time (SIGINT), stdout in WORK/logs/NAME.out, stderr in .log
phase() {
  local name="$1" limit="$2" t0 rc ms; shift 2
  mkdir -p "$work/logs"
  if (( $(left) < 10 )); then  # no time left: recorded as not run
    echo "{\"phase\": \"$name\", \"rc\": null, \"seconds\": 0}" >> "$out/phases.jsonl"
    return
  fi
  (( limit > $(left) )) && limit=$(left)
  t0=$(date +%s%N)
  timeout -s INT -k 20 "$limit" "$@" > "$work/logs/$name.out" 2> "$work/logs/$name.log"
  rc=$?
  ms=$(( ($(date +%s%N) - t0) / 1000000 ))
  printf '{"phase": "%s", "rc": %d, "seconds": %d.%03d}\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) \
    >> "$out/phases.jsonl"
  echo "$name: exit $rc" >&2
}
: > "$out/phases.jsonl"
runs="$work/runs"
mkdir -p "$runs"

# On the card phases run one after another (their times are measured); the rehearsal runs each group at once.
in_group() { if [[ $mode == rehearse ]]; then phase "$@" & else phase "$@"; fi; }

in_group gpu-tests 150 "$py" -m pytest -q -m gpu -p no:cacheprovider "$here/tests/test_gpu.py"
in_group bench-b64 60 "${cli[@]}" bench --device "$dev" --json --batch-size "$small" --no-retrain "${bench_size[@]}"
wait
in_group bench-b256 90 "${cli[@]}" bench --device "$dev" --json --batch-size "$large" "${bench_size[@]}"
in_group bench-nb201 60 "${cli[@]}" bench --device "$dev" --json --space nb201 --batch-size "$small" --no-retrain \
  "${bench_size[@]}"
wait
in_group preset-two-stage 60 "${cli[@]}" search --preset paper --dataset "$dataset" --subset "$subset_search" \
  --epochs 1 --device "$dev" "${tiny[@]}" "${budget_net[@]}" --out "$runs/preset-two-stage"
in_group preset-one-stage 90 "${cli[@]}" search --preset paper --method one-stage --dataset "$dataset" \
  --subset "$subset_train" --max-search-epochs 1 --epochs 1 --device "$dev" "${tiny[@]}" --out "$runs/preset-one-stage"
wait
in_group preset-retrain 60 "${cli[@]}" train --preset paper --dataset "$dataset" --subset "$subset_train" --epochs 1 \
  --amp auto --device "$dev" "${tiny[@]}" --out "$runs/preset-retrain"
in_group preset-nb201 60 "${cli[@]}" search --preset paper --space nb201 --dataset "$dataset" --subset "$subset_nb" \
  --batch-size 64 --epochs 1 --device "$dev" "${tiny[@]}" --out "$runs/preset-nb201"
wait
in_group evaluate 30 "${cli[@]}" evaluate "$runs/preset-retrain" --device "$dev"
in_group export-onnx 30 "${cli[@]}" export "$runs/preset-retrain" --format onnx --out "$work/model.onnx"
in_group export-torchscript 30 "${cli[@]}" export "$runs/preset-retrain" --format torchscript --out "$work/model.pt"
wait
in_group torchrun 60 torchrun --standalone --nproc_per_node 1 -m ista_nas.cli search --preset quick --space nb201 \
  --dataset "$dataset" --subset "$subset_nb" --epochs 1 --device "$dev" "${tiny[@]}" --out "$runs/torchrun"

# The study: every run at once, bounded by what is left of the budget (less the packing).
study_limit=$(( $(left) - 25 ))
for method in two-stage one-stage; do
  for seed in "${seeds[@]}"; do
    name="nb201-$method-$seed"
    if [[ -n $study_in && -d $study_in/$name ]]; then
      cp -r "$study_in/$name" "$runs/$name"
      cmd=("${cli[@]}" search --resume "$runs/$name")
    else
      extra=(--epochs 50)
      [[ $method == one-stage ]] && extra=(--max-search-epochs 50 --epochs 1)
      if [[ $mode == rehearse ]]; then
        extra=(--epochs 1)
        [[ $method == one-stage ]] && extra=(--max-search-epochs 1 --epochs 1)
      fi
      cmd=("${cli[@]}" search --preset paper --space nb201 --method "$method" --dataset "$dataset" \
           --subset "$study_subset" --train-portion 0.5 --batch-size 64 --lr 0.025 --arch-lr 3e-4 --seed "$seed" \
           --device "$dev" "${extra[@]}" "${tiny[@]}" --out "$runs/$name")
    fi
    ( phase "study-$name" "$study_limit" "${cmd[@]}" ) &
  done
done
wait  # the study (and, rehearsing, the torchrun phase)

"$py" "$here/bench/gpu_summary.py" "$out" "$work" "$mode" > "$work/logs/summary.log" 2>&1 \
  || echo "summary failed: $(tail -3 "$work/logs/summary.log")" >&2
tar czf "$out/runs.tar.gz" -C "$work" --exclude='*.pt' --exclude='*.onnx' --exclude=cache --exclude=data logs runs
for run in "$runs"/nb201-*; do  # the unfinished study runs' directories, to resume in the next session
  [[ -f $run/status.json ]] && grep -q '"finished": false' "$run/status.json" \
    && tar cf "$out/ckpt-$(basename "$run").tar" -C "$runs" "$(basename "$run")"
done
ls "$out"/ckpt-*.tar 2>/dev/null | tail -n +6 | xargs -r rm  # at most 8 files come back: keep 5 checkpoints
rm -rf "$work"
echo "done in $(( $(date +%s) - began )) s: $out" >&2
