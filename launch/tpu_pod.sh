#!/usr/bin/env bash
# Runs one command on every worker of a Cloud TPU VM pod slice (multi-host JAX: one process per
# worker, all running the same command). Copies this checkout to each worker, installs it with
# jax[tpu], then runs COMMAND there with DYSEN_CLUSTER_DETECTION=auto, so each process calls
# jax.distributed.initialize() with no arguments and the TPU metadata tells it its peers
# (dysen_jax/parallel/distributed.py).
#
#   TPU=NAME ZONE=ZONE [PROJECT=P] [SKIP_INSTALL=1] bash launch/tpu_pod.sh -- COMMAND...
#
# Example (a v4-32 slice = 4 workers; data and checkpoints on GCS so every worker sees them; the
# global batch is 4 input streams, one per worker, or a multiple of 4):
#
#   TPU=dysen-v4-32 ZONE=us-central2-b bash launch/tpu_pod.sh -- python3 -m dysen_jax.train \
#       --config=configs/paper.py --workdir=gs://my-bucket/runs/paper \
#       --config.data.data_dir=gs://my-bucket/data/webvid --config.data.input_streams=4
#
# Create the slice first, e.g.
#   gcloud compute tpus tpu-vm create dysen-v4-32 --zone=us-central2-b --accelerator-type=v4-32 \
#       --version=tpu-ubuntu2204-base
# Every worker prints its output through gcloud; only process 0 logs training progress.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ "${1:-}" == "--" ]] && shift
[[ $# -gt 0 ]] || { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2; echo "tpu_pod.sh: no command given" >&2; exit 2; }
: "${TPU:?set TPU to the TPU VM name (gcloud compute tpus tpu-vm list)}"
: "${ZONE:?set ZONE to the zone of the TPU, e.g. us-central2-b}"
gcloud_args=(--zone "$ZONE")
[[ -n "${PROJECT:-}" ]] && gcloud_args+=(--project "$PROJECT")
remote_dir="${REMOTE_DIR:-dysen_jax}"

# The command, quoted for the remote shell.
command_line=$(printf '%q ' "$@")

if [[ "${SKIP_INSTALL:-0}" != "1" ]]; then
  archive=$(mktemp --suffix=.tar.gz)
  trap 'rm -f "$archive"' EXIT
  tar --exclude=./.git --exclude=./runs --exclude='*.egg-info' --exclude='__pycache__' -czf "$archive" .
  echo "[tpu_pod] copying $(du -h "$archive" | cut -f1) to every worker of $TPU" >&2
  gcloud compute tpus tpu-vm scp "$archive" "$TPU:~/dysen_jax.tar.gz" --worker=all "${gcloud_args[@]}"
  gcloud compute tpus tpu-vm ssh "$TPU" --worker=all "${gcloud_args[@]}" --command \
    "set -e; mkdir -p ~/$remote_dir && tar -xzf ~/dysen_jax.tar.gz -C ~/$remote_dir && cd ~/$remote_dir && \
     python3 -m pip install -q -U 'jax[tpu]' && python3 -m pip install -q -e ."
fi

echo "[tpu_pod] running on all workers of $TPU: $command_line" >&2
gcloud compute tpus tpu-vm ssh "$TPU" --worker=all "${gcloud_args[@]}" --command \
  "cd ~/$remote_dir && export DYSEN_CLUSTER_DETECTION=auto TF_CPP_MIN_LOG_LEVEL=2 && $command_line"
