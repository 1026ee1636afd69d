#!/bin/bash
# ganbench fit on a SLURM cluster: N nodes x G GPUs, one task (process) per GPU.
#
#   source .venv/bin/activate   # sbatch passes the environment on (ganbench on PATH)
#   CONFIG=configs/sngan.yaml sbatch --nodes=2 --gpus-per-node=4 --ntasks-per-node=4 \
#       scripts/slurm_ganbench.sh --trainer.max_steps 50000 --data.batch_size 16
#
# The family config comes from CONFIG (not a --config argument): a family config sets
# trainer.devices 1, so it must come before configs/trainer/ddp.yaml and the derived devices.
# srun starts the SLURM_NTASKS processes itself; Lightning's SLURMEnvironment reads SLURM_NTASKS,
# SLURM_PROCID (global rank), SLURM_LOCALID (local rank), SLURM_NODEID (node rank) and
# SLURM_NODELIST (the first node is the rendezvous host; the port is derived from SLURM_JOB_ID).
# Lightning checks that --trainer.num_nodes x --trainer.devices equals SLURM_NTASKS, so both are
# derived from the allocation below. Extra arguments go to `ganbench fit` unchanged.
# The effective batch is data.batch_size x devices x nodes (g_batch_size likewise); learning rates
# are not rescaled. See docs/ddp.md.
#SBATCH --job-name=ganbench
#SBATCH --nodes=1
#SBATCH --gpus-per-node=1
#SBATCH --ntasks-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=SIGUSR1@90
#SBATCH --output=slurm-%j.out
set -euo pipefail

NODES=${SLURM_JOB_NUM_NODES:?run under sbatch/salloc}
TASKS_PER_NODE=${SLURM_NTASKS_PER_NODE:-1}
TASKS_PER_NODE=${TASKS_PER_NODE%%(*}   # "4(x2)" -> "4"
RUN_DIR=${RUN_DIR:-runs/slurm-${SLURM_JOB_ID}}   # one directory for every rank (and for requeues)
CONFIG=${CONFIG:-configs/sngan.yaml}

export WANDB_MODE=${WANDB_MODE:-offline}     # compute nodes are often offline; `wandb sync` later
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}
export NCCL_ASYNC_ERROR_HANDLING=1

# Preempted or timed out: SIGUSR1 (above) makes Lightning save ${RUN_DIR}/hpc_ckpt_*.ckpt and requeue
# the job, and the requeued job resumes from it by itself. A job submitted again by hand with the
# same RUN_DIR continues from checkpoints/last.ckpt.
RESUME=()
if ! compgen -G "${RUN_DIR}/hpc_ckpt_*.ckpt" >/dev/null && [[ -f "${RUN_DIR}/checkpoints/last.ckpt" ]]; then
    RESUME=(--ckpt_path "${RUN_DIR}/checkpoints/last.ckpt")
fi

srun ganbench fit --config "${CONFIG}" --config configs/trainer/ddp.yaml \
    --trainer.num_nodes "${NODES}" --trainer.devices "${TASKS_PER_NODE}" \
    --trainer.default_root_dir "${RUN_DIR}" "${RESUME[@]}" "$@"
