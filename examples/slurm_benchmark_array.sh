#!/usr/bin/env bash
# The benchmark grid over a SLURM job array: task I of N runs part I of the (category, model, seed)
# grid into one shared results folder; a last job merges them. Not run by the tests.
#
#   sbatch examples/slurm_benchmark_array.sh                      # the workers (8 array tasks)
#   sbatch --dependency=afterok:<JOBID> --wrap \
#     "distillad benchmark --models rd,stfpm,dskd --data /shared/data --epochs 200 --out /shared/bench --report-only"
#
# A task that dies (preemption, time limit) leaves no run that looks finished; resubmitting the same
# array index (sbatch --array=3 ...) resumes that shard from its last finished epoch.
#SBATCH --job-name=distillad-bench
#SBATCH --array=0-7
#SBATCH --cpus-per-task=8
#SBATCH --gres=gpu:1
#SBATCH --time=24:00:00
#SBATCH --output=logs/bench-%A_%a.out
set -euo pipefail

# --out must be on a filesystem every node sees; all tasks must get the same flags (the grid's order)
distillad benchmark --models rd,stfpm,dskd --data /shared/data --epochs 200 --seeds 3 \
    --out /shared/bench --device cuda --threads "${SLURM_CPUS_PER_TASK}" \
    --shard "${SLURM_ARRAY_TASK_ID}/${SLURM_ARRAY_TASK_COUNT}"
