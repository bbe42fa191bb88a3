#!/usr/bin/env bash
# What the one-stage quick search finds, against DARTS (first order, 3 epochs on the same 3,000 images) and
# uniform random cells, all retrained alike: `train --preset quick --epochs 2` (Fashion-MNIST, 5,000 images,
# C=12, L=6, retrain seed 0), genotypes as the standard flavour. Prints "cell test_top1". A reduced-scale
# stand-in: one retrain per cell. Usage: bash bench/one_stage_quality.sh OUT_DIR   (about 35 min on 2 cores)
set -euo pipefail
O=${1:?give an output folder}; mkdir -p "$O"
for s in 0 1 2; do
  ista-nas search --method one-stage --preset quick --device cpu --seed $s --out "$O/one-$s" > /dev/null 2>&1
  ista-nas search --method darts --preset quick --subset 3000 --epochs 3 --device cpu --seed $s --out "$O/darts-$s" \
    > /dev/null 2>&1
  for f in one darts; do  # the same (standard) flavour for every retrained cell
    python3 -c "import json,sys;g=json.load(open(sys.argv[1]));g['flavour']='standard';json.dump(g,open(sys.argv[2],'w'))" \
      "$O/$f-$s/genotype.json" "$O/$f-$s.json"
  done
done
for s in 0 1 2 3 4; do  # uniform draws: per node 2 distinct (predecessor, op) candidates of its (i+2)*7
  python3 - "$s" "$O/random-$s.json" <<'PY'
import json, sys
import torch
from ista_nas.ops import PRIMITIVES
gen = torch.Generator().manual_seed(100 + int(sys.argv[1]))
def cell():
    return [[PRIMITIVES[k % len(PRIMITIVES)], k // len(PRIMITIVES)]
            for i in range(4) for k in torch.randperm((i + 2) * len(PRIMITIVES), generator=gen)[:2].tolist()]
json.dump({"normal": cell(), "normal_concat": [2, 3, 4, 5], "reduce": cell(), "reduce_concat": [2, 3, 4, 5],
           "flavour": "standard"}, open(sys.argv[2], "w"))
PY
done
for g in one-0 one-1 one-2 darts-0 darts-1 darts-2 random-0 random-1 random-2 random-3 random-4; do
  ista-nas train --preset quick --genotype "$O/$g.json" --epochs 2 --device cpu --seed 0 --out "$O/train-$g" \
    > /dev/null 2>&1
  echo "$g $(tail -1 "$O/train-$g/metrics.jsonl" | python3 -c 'import json,sys;print(json.loads(sys.stdin.read())["test_top1"])')"
done
