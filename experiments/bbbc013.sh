#!/usr/bin/env bash
# BBBC013 end to end (docs/examples/bbbc013.md): prepare the 24 control wells twice — cells grown from
# the nuclei by a fixed distance (the default here) and, for the confound report only, cells grown
# from the GFP channel by the watershed (the mask that leaks the label) — then train, explain and
# measure seeds 0, 1, 2 against the N/C-ratio proxy truth (experiments/bbbc013.py). From the repo root:
#   experiments/bbbc013.sh                     # ≈ 5 min a seed on 2 cores
#   SEEDS="0" DATA=/path/to/bbbc013_controls experiments/bbbc013.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data/bbbc013_controls}
OUT=${OUT:-outputs/bbbc013}
SEEDS=${SEEDS:-0 1 2}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
prep=(input="$DATA" plate_map="$DATA/plate_map.csv" channels=bbbc013 "conditions=[untreated,PI3K_inhibited]"
      progress=false)
"$PY" prepare.py "${prep[@]}" segmentation=distance output="$OUT/store_distance"
"$PY" prepare.py "${prep[@]}" segmentation=watershed augment.copies=0 output="$OUT/store_gfp_watershed"
for s in $SEEDS; do
  "$PY" train.py experiment=bbbc013 data.path="$OUT/store_distance" seed="$s" threads="$THREADS" \
      trainer.enable_progress_bar=false hydra.run.dir="$OUT/run_seed$s"
  "$PY" experiments/bbbc013.py "$OUT/run_seed$s" --out "$OUT/run_seed$s/bbbc013.json"
done
"$PY" experiments/bbbc013.py --table "$OUT"
