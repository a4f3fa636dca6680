#!/usr/bin/env bash
# The PatchCore reference beside rd (issue 28), as run on 2026-12-05: benchmarks/results/patchcore_reference.md,
# budget.md and level_norm.md come from these lines (one torch thread each, seed 0, lite0 teacher).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${DISTILLAD_DATA:-../shared/data}
CATS="--categories mvtec_ad/transistor,mvtec3d/tire,magnetic_tile --image-size 256 --image-size-for magnetic_tile=128"
distillad benchmark --data $DATA --epochs 10 --out benchmarks/runs/ref --threads 1 --no-plots --seeds 1 \
    --categories mvtec_ad/transistor,mvtec3d/tire,magnetic_tile,mvtec_ad/bottle --image-size 256 \
    --image-size-for magnetic_tile=128 --models patchcore,rd
distillad benchmark --data $DATA --epochs auto --out benchmarks/runs/auto --threads 1 --no-plots --seeds 1 $CATS --models rd
PYTHONPATH=src python benchmarks/reference_table.py benchmarks/runs/ref/results.json:10ep \
    benchmarks/runs/auto/results.json:auto --md benchmarks/results/patchcore_reference.md
# budget curves (transistor finished; tire and Magnetic Tile were stopped at 45 and 20 epochs: budget/*_partial.log)
for c in mvtec_ad/transistor mvtec3d/tire; do
  PYTHONPATH=src python benchmarks/budget_curve.py --data $DATA/$c --model rd --epochs 60 --every 5 \
      --json benchmarks/results/budget/$(basename $c)_rd_s0.json
done
PYTHONPATH=src python benchmarks/budget_curve.py --data $DATA/magnetic_tile --model rd --epochs 60 --every 5 \
    --image-size 128 --json benchmarks/results/budget/magnetic_tile_rd_s0.json
PYTHONPATH=src python benchmarks/budget_plot.py benchmarks/results/budget/transistor_rd_s0.json --md benchmarks/results/budget.md
PYTHONPATH=src python benchmarks/level_norm.py benchmarks/runs/ref/runs/*/rd/seed0 --md benchmarks/results/level_norm.md
