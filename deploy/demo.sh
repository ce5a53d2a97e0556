#!/usr/bin/env bash
# The README's main job on one machine: a coordinator on a free loopback port, and a demo job walked
# through tp_model_init recording and the DeepSpeed config merge with tpctl.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
bin_coordinator=$build/coordinator/tp-coordinator
tpctl=$build/coordinator/tpctl
work=$(mktemp -d "${TMPDIR:-/tmp}/tpcoord-demo.XXXXXX")

"$bin_coordinator" --listen 127.0.0.1:0 --state-dir "$work/state" >"$work/coordinator.out" 2>"$work/coordinator.log" &
coordinator_pid=$!
trap 'kill $coordinator_pid 2>/dev/null; wait $coordinator_pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/coordinator.out" 2>/dev/null && break; sleep 0.1; done
address=$(awk '/listening on/ {print $NF}' "$work/coordinator.out")
[ -n "$address" ] || { cat "$work/coordinator.log"; exit 1; }
export TPCOORD_COORDINATOR=$address

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
echo "tp-coordinator serving on $address"
step "$tpctl" health
step "$tpctl" record --job demo --tp-size 2 --dtype fp32
step "$tpctl" merge --job demo --config deploy/ds_config.json
echo; echo "# a second tp_model_init with other arguments is rejected with DeepSpeed's message:"
step "$tpctl" record --job demo --tp-size 4 --dtype fp32 || true
step "$tpctl" jobs
step "$tpctl" job demo
