#!/usr/bin/env bash
# The backbone × mask × last-layer grid on the synthetic wells (CPU-sized variants of the paper's
# runs with protocell's recipe), seeds 0, 1, 2 each on a built-in plate of its own, then the comparison
# table and the dashboard figure. From the repository root:
#   experiments/grid_cpu.sh                         # the whole grid: 24 runs
#   BACKBONES=vgg11 experiments/grid_cpu.sh         # one backbone only (8 runs)
#   SEEDS=0,1,2 SWEEP=outputs/multirun/mygrid experiments/grid_cpu.sh
#   THREADS=1 experiments/grid_cpu.sh                # torch threads per run (default 2, as experiments/README.md)
# A run is reproducible bit for bit at a fixed thread count, not across thread counts.
# Each run trains, pushes, evaluates and explains (explain/explain_metrics.json feeds the table).
# Wall time on 2 CPU cores (threads=2): ≈ 2 min per VGG-11 run, ≈ 10.5 min per DenseNet-121 run, explain included.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SEEDS=${SEEDS:-0,1,2}
PLATE_SEEDS=${PLATE_SEEDS:-5439,7578,8936}   # one built-in plate per training seed, never a training seed
SWEEP=${SWEEP:-outputs/multirun/grid_cpu}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS
experiments=()
for b in ${BACKBONES:-vgg11 densenet121}; do experiments+=("cpu_${b}_mask"); done
# the experiment picks the backbone (VGG-11 at 1/8 width, or DenseNet-121 cut at RF 63 px);
# mask and last layer are swept on top of it, with protocell's recipe (conf/experiment/cpu_common.yaml)
IFS=, read -ra seeds <<< "$SEEDS"
IFS=, read -ra plates <<< "$PLATE_SEEDS"
for i in "${!seeds[@]}"; do
  "$PY" train.py -m "experiment=$(IFS=,; echo "${experiments[*]}")" mask=on,off last_layer=trained,frozen \
      "seed=${seeds[$i]}" "data.synthetic.seed=${plates[$i]}" "threads=$THREADS" trainer.enable_progress_bar=false \
      "hydra.sweep.dir=$SWEEP/seed${seeds[$i]}"
done
"$PY" experiments/compare.py "$SWEEP" --out "$SWEEP/comparison"
"$PY" experiments/dashboard.py "$SWEEP/comparison_runs.csv" --out "$SWEEP/dashboard.png"
