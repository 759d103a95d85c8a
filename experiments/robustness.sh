#!/usr/bin/env bash
# The robustness matrix of the "learn the cell, not the well" issue: every built-in plate layout ×
# split (by image, by well) × seeds 0, 1, 2 with the plate seed equal to the training seed, the
# black-box baseline (head=baseline) beside every protocell run, and the default plate at 1 thread
# too; then the table with the bar (experiments/robustness.py). From the repository root:
#   experiments/robustness.sh                         # the whole matrix (≈ 2 h on 2 cores)
#   PLATES=default,exp30 SEEDS=0 experiments/robustness.sh
# Runs go one at a time (two 2-thread runs on 2 cores are many times slower); a run is
# reproducible bit for bit at a fixed thread count.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
PLATES=${PLATES:-default,exp30,wells16x3,wells4x12}
SPLITS=${SPLITS:-image,well}
SEEDS=${SEEDS:-0,1,2}
SWEEP=${SWEEP:-outputs/multirun/robustness}
common=("plate=$PLATES" "data.split_by=$SPLITS" "seed=$SEEDS" 'data.synthetic.seed=${seed}'
        "trainer.enable_progress_bar=false")
OMP_NUM_THREADS=2 "$PY" train.py -m "${common[@]}" threads=2 "hydra.sweep.dir=$SWEEP/protocell"
OMP_NUM_THREADS=2 "$PY" train.py -m "${common[@]}" threads=2 head=baseline explain=false "hydra.sweep.dir=$SWEEP/baseline"
OMP_NUM_THREADS=1 "$PY" train.py -m plate=default data.split_by=image "seed=$SEEDS" 'data.synthetic.seed=${seed}' \
    trainer.enable_progress_bar=false threads=1 "hydra.sweep.dir=$SWEEP/threads1"
"$PY" experiments/robustness.py "$SWEEP"
