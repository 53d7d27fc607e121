#!/usr/bin/env bash
# Run jaxmem on every worker of a Cloud TPU VM slice (one process per worker host).
#
#   launch/tpu_vm.sh create                       create the slice
#   launch/tpu_vm.sh copy                         ship this checkout (git archive of HEAD) and pip install it
#   launch/tpu_vm.sh run <launcher> [flags...]    start the same command on all workers at once
#   launch/tpu_vm.sh delete                       delete the slice
#
#   launch/tpu_vm.sh run launch/edm_training.py --config=configs/edm_training.py:cifar10_1k --workdir=/mnt/shared/runs/c1k
#   DRY_RUN=1 launch/tpu_vm.sh run launch/edm_training.py ...   prints the gcloud commands instead of running them
#
# Every worker runs the same command; jaxmem.cli calls jax.distributed.initialize(), which takes
# the coordinator from JAX_COORDINATOR_ADDRESS (worker 0, set below) and the process count and
# id from the TPU metadata. Process 0 writes results; checkpoints are written by all processes,
# so --workdir must be storage that every worker sees (a gcsfuse or NFS mount).
# Rerunning the same `run` command resumes from the workdir's checkpoints.
set -euo pipefail

# ---- values to change -----------------------------------------------------------------------
PROJECT="${PROJECT:-my-gcp-project}"            # GCP project
ZONE="${ZONE:-us-central2-b}"                   # a zone that has the accelerator type
TPU_NAME="${TPU_NAME:-jaxmem-v4-32}"            # name of the slice
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-v4-32}"   # v4-32 = 4 worker hosts x 4 chips
RUNTIME_VERSION="${RUNTIME_VERSION:-tpu-ubuntu2204-base}"
REMOTE_DIR="${REMOTE_DIR:-jaxmem}"              # checkout folder in each worker's home
JAX_PACKAGE="${JAX_PACKAGE:-jax[tpu]}"          # pip requirement that installs jax for TPUs
COORDINATOR_PORT="${COORDINATOR_PORT:-8476}"    # port on worker 0 for jax.distributed
SPOT="${SPOT:-0}"                               # 1: create a spot (preemptible) slice
DRY_RUN="${DRY_RUN:-0}"                         # 1: print the commands, run nothing
# -----------------------------------------------------------------------------------------------

GCLOUD=(gcloud compute tpus tpu-vm)
WHERE=(--zone="$ZONE" --project="$PROJECT")
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ARCHIVE="/tmp/${TPU_NAME}-jaxmem.tar.gz"

# Prints the command (shell-quoted) under DRY_RUN=1, runs it otherwise.
run() {
  if [[ "$DRY_RUN" == "1" ]]; then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# Runs a shell command on all workers of the slice at once.
on_all_workers() {
  run "${GCLOUD[@]}" ssh "$TPU_NAME" "${WHERE[@]}" --worker=all --command="$1"
}

# The internal IP of worker 0 (the jax.distributed coordinator).
coordinator_ip() {
  if [[ "$DRY_RUN" == "1" ]]; then
    echo "WORKER0_IP"
  else
    "${GCLOUD[@]}" describe "$TPU_NAME" "${WHERE[@]}" --format='value(networkEndpoints[0].ipAddress)'
  fi
}

usage() {
  sed -n '2,16p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit 2
}

[[ $# -ge 1 ]] || usage
action="$1"
shift
case "$action" in
  create)
    spot=()
    [[ "$SPOT" == "1" ]] && spot=(--spot)
    run "${GCLOUD[@]}" create "$TPU_NAME" "${WHERE[@]}" --accelerator-type="$ACCELERATOR_TYPE" \
      --version="$RUNTIME_VERSION" "${spot[@]}"
    ;;
  copy)
    run git -C "$REPO_ROOT" archive --format=tar.gz -o "$ARCHIVE" HEAD
    run "${GCLOUD[@]}" scp "$ARCHIVE" "$TPU_NAME:jaxmem.tar.gz" "${WHERE[@]}" --worker=all
    on_all_workers "mkdir -p $REMOTE_DIR && tar -xzf jaxmem.tar.gz -C $REMOTE_DIR && \
pip install -q -U '$JAX_PACKAGE' && pip install -q -e $REMOTE_DIR"
    ;;
  run)
    [[ $# -ge 1 ]] || usage
    command=$(printf ' %q' python3 "$@")
    on_all_workers "cd $REMOTE_DIR && JAX_COORDINATOR_ADDRESS=$(coordinator_ip):$COORDINATOR_PORT$command"
    ;;
  delete)
    run "${GCLOUD[@]}" delete "$TPU_NAME" "${WHERE[@]}" --quiet
    ;;
  *)
    usage
    ;;
esac
