#!/usr/bin/env bash
# Runs one command as N cooperating JAX processes on this machine (a multi-host run in miniature):
# process i gets DYSEN_COORDINATOR=127.0.0.1:<free port>, DYSEN_NUM_PROCESSES=N, DYSEN_PROCESS_ID=i
# (read by dysen_jax/parallel/distributed.py) and K CPU devices through XLA_FLAGS, so N x K devices
# form one mesh and all-reduce over gloo. Every output line is prefixed with [pI]. The script waits
# for all of them and exits non-zero as soon as one fails (the others are stopped).
#
#   bash launch/local_multiprocess.sh [-n NUM_PROCESSES] [-d DEVICES_PER_PROCESS] [-p PORT] -- COMMAND...
#
# Example: 2 processes x 2 CPU devices train the smoke config (the global batch of 8 is 2 input
# streams; any process count that divides data.input_streams sees the same batches):
#
#   bash launch/local_multiprocess.sh -n 2 -d 2 -- python -m dysen_jax.train \
#       --config=configs/tiny.py:smoke --workdir=runs/mh --config.data.input_streams=2
#
# Defaults: -n 2, -d 1, -p a free port. JAX_PLATFORMS defaults to cpu (export it to override).
# The persistent XLA compilation cache is off for these processes (JAX_ENABLE_COMPILATION_CACHE=false;
# export KEEP_COMPILATION_CACHE=1 to keep it): only process 0 writes it and the others' cache keys
# differ, so with it process 0 would start its first all-reduce minutes before the others finish
# compiling, and gloo gives up after 30 s. Without it all processes compile together (same wall time).
set -euo pipefail

num_processes=2
devices_per_process=1
port=""
usage() { sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
while getopts "n:d:p:h" opt; do
  case "$opt" in
    n) num_processes="$OPTARG" ;;
    d) devices_per_process="$OPTARG" ;;
    p) port="$OPTARG" ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[[ "${1:-}" == "--" ]] && shift
[[ $# -gt 0 ]] || { echo "local_multiprocess.sh: no command given" >&2; usage; }
[[ "$num_processes" =~ ^[1-9][0-9]*$ ]] || { echo "-n must be a positive integer, got '$num_processes'" >&2; exit 2; }
[[ "$devices_per_process" =~ ^[1-9][0-9]*$ ]] || { echo "-d must be a positive integer, got '$devices_per_process'" >&2; exit 2; }
if [[ -z "$port" ]]; then
  port=$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
fi

compilation_cache=false
[[ "${KEEP_COMPILATION_CACHE:-0}" == "1" ]] && compilation_cache="${JAX_ENABLE_COMPILATION_CACHE:-true}"

# Our device count replaces any --xla_force_host_platform_device_count already in XLA_FLAGS.
xla_flags="$(echo "${XLA_FLAGS:-}" | sed -E 's/--xla_force_host_platform_device_count=[0-9]+//g')"
xla_flags="${xla_flags} --xla_force_host_platform_device_count=${devices_per_process}"

pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
}
trap 'stop_all; exit 130' INT TERM

echo "[launch] $num_processes processes x $devices_per_process devices, coordinator 127.0.0.1:$port" >&2
for ((i = 0; i < num_processes; i++)); do
  DYSEN_COORDINATOR="127.0.0.1:$port" DYSEN_NUM_PROCESSES="$num_processes" DYSEN_PROCESS_ID="$i" \
    XLA_FLAGS="$xla_flags" JAX_PLATFORMS="${JAX_PLATFORMS:-cpu}" JAX_ENABLE_COMPILATION_CACHE="$compilation_cache" \
    "$@" > >(sed -u "s/^/[p$i] /") 2> >(sed -u "s/^/[p$i] /" >&2) &
  pids+=("$!")
done

# Wait for all; the first failure stops the others (they would otherwise wait for the coordinator).
status=0
remaining=${#pids[@]}
declare -A finished=()
while ((remaining > 0)); do
  for i in "${!pids[@]}"; do
    pid=${pids[$i]}
    [[ -n "${finished[$pid]:-}" ]] && continue
    if ! kill -0 "$pid" 2>/dev/null; then
      rc=0
      wait "$pid" || rc=$?
      finished[$pid]=1
      remaining=$((remaining - 1))
      if ((rc != 0)); then
        echo "[launch] process $i exited with status $rc: stopping the others" >&2
        [[ $status -eq 0 ]] && status=$rc
        stop_all
      fi
    fi
  done
  ((remaining > 0)) && sleep 0.2
done
wait  # let the log prefixers flush
exit "$status"
