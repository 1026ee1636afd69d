#!/bin/bash
# ganbench sweep on SLURM, requeued at its time limit and on preemption; every start resumes the study.
#
#   source .venv/bin/activate   # sbatch passes the environment on (ganbench on PATH)
#   CONFIG=sweeps/toy_stability.yaml sbatch scripts/slurm_sweep.sh --n-trials 100 --workers 4
#
# --signal=B:TERM@120 sends SIGTERM to this script 120 s before the time limit; the trap below hands it to
# `ganbench sweep`, which starts no new trial, lets every running fit end its G iteration and write
# last.ckpt, records those trials as interrupted (FAIL, not_measured=interrupted) and exits 143; the job is
# then requeued. On preemption SLURM sends SIGTERM to every process of the job itself (a signal that reaches
# the sweep twice within a second counts once). Each start runs the same command on the same study and
# storage: interrupted trials are retried first and their fits continue from their checkpoints, then the
# study is completed to exactly --n-trials. See docs/sweeps.md, "Stopping and resuming a study".
# Extra arguments go to `ganbench sweep` unchanged.
#SBATCH --job-name=ganbench-sweep
#SBATCH --nodes=1
#SBATCH --ntasks=1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --signal=B:TERM@120
#SBATCH --output=slurm-sweep-%j.out
set -uo pipefail

CONFIG=${CONFIG:?CONFIG=sweeps/NAME.yaml}
STORAGE=${STORAGE:-sqlite:///sweeps/$(basename "${CONFIG}" .yaml).db}
export WANDB_MODE=${WANDB_MODE:-offline}     # compute nodes are often offline; `wandb sync` later

requeue() {
    kill -TERM "${pid}" 2>/dev/null
    wait "${pid}"                            # the running fits write their checkpoints
    scontrol requeue "${SLURM_JOB_ID}"
}
trap requeue TERM

ganbench sweep --config "${CONFIG}" --storage "${STORAGE}" --no-progress "$@" &
pid=$!
wait "${pid}"
exit $?
