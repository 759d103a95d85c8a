#!/usr/bin/env bash
# BBBC013's whole plate (docs/examples/bbbc013_dose.md): prepare the 24 control wells and the 72 dose wells
# (nuclei grown by 8 px: segmentation=distance), train experiment=bbbc013 on the controls for seeds 0 1 2 (one
# at a time), score all 96 wells in one call (two stores, one plate), then compare protocell's readouts with
# the classic N/C-ratio readouts (experiments/bbbc013_dose.py). From the repo root:
#   experiments/bbbc013_dose.sh                        # ≈ 15–20 min a seed on 2 busy cores
#   SEEDS="0" SHARED=/path/to/shared/data experiments/bbbc013_dose.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/data}
OUT=${OUT:-outputs/bbbc013_dose}
SEEDS=${SEEDS:-0 1 2}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
C=$SHARED/bbbc013_controls
D=$SHARED/bbbc013_dose
"$PY" prepare.py input="$C" plate_map="$C/plate_map.csv" channels=bbbc013 "conditions=[untreated,PI3K_inhibited]" \
    segmentation=distance progress=false output="$OUT/store_controls"
"$PY" prepare.py input="$D" plate_map="$D/plate_map.csv" channels=bbbc013 segmentation=distance augment.copies=0 \
    progress=false output="$OUT/store_dose"
runs=()
for s in $SEEDS; do
  run="$OUT/run_seed$s"
  [ -f "$run/metrics.json" ] || "$PY" train.py experiment=bbbc013 data.path="$OUT/store_controls" seed="$s" \
      threads="$THREADS" explain=false trainer.enable_progress_bar=false hydra.run.dir="$run"
  "$PY" score.py run="$run" "data.path=[$OUT/store_controls,$OUT/store_dose]" threads="$THREADS" progress=false wandb=false
  runs+=("$run")
done
"$PY" experiments/bbbc013_dose.py "${runs[@]}" --out "$OUT/classic"
