#!/usr/bin/env bash
# One model trained data-parallel on 2 nodes x 4 GPUs with torchrun (DDP, NCCL). Not run by the tests.
#
#   sbatch examples/slurm_train_multinode.sh
#
# --batch-size is the global batch (8 ranks x 2 images here); --out must be on a shared filesystem.
# A node lost mid-run fails the job (collectives time out after DISTILLAD_DIST_TIMEOUT seconds);
# resubmit with --resume to continue from the last finished epoch.
#SBATCH --job-name=distillad-ddp
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:4
#SBATCH --cpus-per-task=32
#SBATCH --time=12:00:00
set -euo pipefail

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export DISTILLAD_DIST_TIMEOUT=600
srun torchrun --nnodes "$SLURM_NNODES" --nproc-per-node 4 \
    --rdzv-backend c10d --rdzv-endpoint "${head_node}:29500" --rdzv-id "$SLURM_JOB_ID" \
    -m distillad train --model rd --data /shared/data/mvtec_ad --category bottle --image-size 512 \
    --batch-size 16 --out /shared/runs/rd_bottle_512 --resume
