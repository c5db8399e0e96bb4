#!/usr/bin/env bash
# The body shared by train.sbatch and train_multinode.sbatch (run inside the batch job, from the repo root):
# rendezvous address, logging, then one lazydet process per task with `srun`.
#   srun_train.sh RECIPE.py [key=value ...]
# Environment knobs: LAZYDET_PYTHON (default: python), LAZYDET_DEVICE=cpu (no GPU: gloo, train.device=cpu).
set -euo pipefail

if [ $# -lt 1 ]; then
  echo "usage: sbatch scripts/slurm/train.sbatch RECIPE.py [key=value ...] (submit from the repository root)" >&2
  exit 2
fi
recipe=$1
shift
if [ ! -f "$recipe" ]; then
  echo "lazydet slurm: recipe '$recipe' not found in $PWD (run sbatch from the repository root)" >&2
  exit 2
fi
: "${SLURM_JOB_ID:?lazydet slurm: not inside a SLURM job; submit with sbatch}"

# Rendezvous: rank 0 runs on the first host of the node list; the port is derived from the job id so two
# jobs sharing a node do not collide, and a requeued job (same id) gets the same port again. (lazydet's
# launch derives the same values itself when they are unset, e.g. under submitit.)
MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_PORT=$((15000 + SLURM_JOB_ID % 20000))
export MASTER_ADDR MASTER_PORT
# One thread per core the task owns (PyTorch would otherwise start one per core of the whole node).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-${SLURM_CPUS_PER_TASK:-1}}

device_args=()
if [ "${LAZYDET_DEVICE:-}" = cpu ]; then
  device_args=(train.device=cpu)
  export CUDA_VISIBLE_DEVICES=  # hide GPUs too, so the process group uses gloo
fi

echo "lazydet slurm: job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0}: ${SLURM_NTASKS} tasks on" \
  "${SLURM_JOB_NUM_NODES} node(s) [${SLURM_JOB_NODELIST}], rendezvous ${MASTER_ADDR}:${MASTER_PORT}," \
  "recipe ${recipe} $*"

# One task per GPU. srun starts python itself (no shell in between) so that the warning signal from
# `--signal=USR1@N` reaches every rank; each rank reads SLURM_PROCID/SLURM_NTASKS/SLURM_LOCALID.
# --kill-on-bad-exit: one crashed rank ends the step instead of leaving the others hanging in a collective.
# --label: every output line starts with its rank ("1: ..."), so the interleaved log of all ranks stays readable.
# No --unbuffered: it runs the tasks on a pseudo-terminal, so they would draw progress bars (\r, escape codes)
# into the log file; `python -u` already writes every line at once.
# --resume: a requeued job continues from output_dir/last_checkpoint (a fresh job starts at iteration 0).
srun --kill-on-bad-exit=1 --label \
  "${LAZYDET_PYTHON:-python}" -u -m scripts.train_net --config-file "$recipe" --resume \
  "$@" "${device_args[@]}"
