#!/usr/bin/env bash
# Issue 46's scale study: does the NAS-Bench-201 search get better as its network grows toward the benchmark's?
# One factor at a time from the quick preset (C=8, N=1, 12,000 images, 10 epochs): first the network (C=16 N=2,
# then C=16 N=5), then the data, then the epochs. Each point runs both ISTA-NAS methods (and DARTS at the largest
# network) through bench/nb201_quality.py, which looks the found cells up in the table only after each search
# and resumes: start the script again to go on where it stopped (a finished seed is read back). One thread per
# search (OMP_NUM_THREADS=1), so it can run beside other work; the tuning seeds 0-4 come first, the reporting
# seeds (25-29, used by no earlier study) once the settings are chosen.
#
#   bash bench/scale_study.sh DATA_FOLDER TABLE OUT [tune|report]
#   bash bench/scale_study.sh /tmp/data/cifar10-jpeg ../shared/data/nb201-accuracy.csv /tmp/scale tune
set -euo pipefail
data=$1 table=$2 out=$3 phase=${4:-tune}
seeds=(0 1 2 3 4)
[ "$phase" = report ] && seeds=(25 26 27 28 29)
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
here=$(dirname "$0")
points=(
  'c16n2-two={"channels":16,"layers":2}'
  'c16n2-one={"method":"one-stage","channels":16,"layers":2}'
  'c16n5-two={"channels":16,"layers":5}'
  'c16n5-one={"method":"one-stage","channels":16,"layers":5}'
  'c16n5-darts={"method":"darts","channels":16,"layers":5}'
)
for point in "${points[@]}"; do
  python "$here/nb201_quality.py" --data "folder:$data" --table "$table" --out "$out/$phase" \
    --seeds "${seeds[@]}" --variant "$point"
done
