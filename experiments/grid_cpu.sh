#!/usr/bin/env bash
# The backbone × mask × last-layer grid on the synthetic wells (CPU-sized variants of the paper's
# runs, default schedule), 2 seeds (SEEDS), then the comparison table. From the repository root:
#   experiments/grid_cpu.sh                         # the whole grid: 16 runs
#   BACKBONES=vgg11 experiments/grid_cpu.sh         # one backbone only (8 runs)
#   SEEDS=0,1,2 SWEEP=outputs/multirun/mygrid experiments/grid_cpu.sh
#   THREADS=1 experiments/grid_cpu.sh                # torch threads per run (default 2, as experiments/README.md)
# A run is reproducible bit for bit at a fixed thread count, not across thread counts.
# Each run trains, pushes, evaluates and explains (explain/explain_metrics.json feeds the table).
# Wall time on 2 CPU cores (threads=2): ≈ 2 min per VGG-11 run, ≈ 10.5 min per DenseNet-121 run, explain included.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1}
SWEEP=${SWEEP:-outputs/multirun/grid_cpu}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
experiments=()
for b in ${BACKBONES:-vgg11 densenet121}; do experiments+=("cpu_${b}_mask"); done
# the experiment picks the backbone (VGG-11 at 1/8 width, or DenseNet-121 cut at RF 63 px);
# mask and last layer are swept on top of it
"$PY" train.py -m "experiment=$(IFS=,; echo "${experiments[*]}")" mask=on,off last_layer=trained,frozen \
    "seed=$SEEDS" "threads=$THREADS" "hydra.sweep.dir=$SWEEP"
"$PY" experiments/compare.py "$SWEEP" --out "$SWEEP/comparison"
