#!/usr/bin/env bash
# The README's main job on one machine: a coordinator on a free loopback port and two tp-agents ("hosts")
# that each start two tp-worker processes (TP=2 x DP=2 in all), which rendezvous through it and train a
# small seeded Llama on the public-domain corpus in deploy/data for 100 steps on the CPU, then write a
# Hugging Face checkpoint to demo-output/checkpoint.
# It runs the secure path: mutual TLS and a job token, made by deploy/make-secrets.sh into
# demo-output/secrets.
set -euo pipefail
build=${1:-build}
cd "$(dirname "$0")/.."
coordinator_bin=$build/coordinator/tp-coordinator
worker_bin=$build/worker/tp-worker
agent_bin=$build/agent/tp-agent
tpctl=$build/coordinator/tpctl
output=${DEMO_OUTPUT:-demo-output}
work=$(mktemp -d "${TMPDIR:-/tmp}/tpcoord-demo.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

rm -rf "$output"
secrets=$output/secrets
deploy/make-secrets.sh "$secrets" localhost 127.0.0.1
"$coordinator_bin" --listen 127.0.0.1:0 --state-dir "$work/state" --tls-cert "$secrets/server/tls.crt" \
  --tls-key "$secrets/server/tls.key" --tls-client-ca "$secrets/server/ca.crt" --metrics-listen 127.0.0.1:0 \
  >"$work/coordinator.out" 2>"$work/coordinator.log" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$work/coordinator.out" 2>/dev/null && break; sleep 0.1; done
address=$(awk '/listening on/ {print $NF}' "$work/coordinator.out")
[ -n "$address" ] || { cat "$work/coordinator.log"; exit 1; }
# Agents and tpctl verify the coordinator against the CA, show their own certificate and send the token
# (the agents' workers inherit none of it: they reach their agent on its local socket).
export TPCOORD_COORDINATOR=$address TPCOORD_TLS_CA=$secrets/client/ca.crt TPCOORD_TLS_CERT=$secrets/client/tls.crt \
  TPCOORD_TLS_KEY=$secrets/client/tls.key TPCOORD_TOKEN_FILE=$secrets/token
echo "tp-coordinator serving on $address (mutual TLS; certificates and job token in $secrets)"
echo "status page and Prometheus metrics: $(awk '/metrics on/ {sub("/metrics$", "/", $NF); print $NF}' "$work/coordinator.out")"
echo "starting 2 tp-agents (hosts host-a and host-b), each with 2 tp-workers: job 'demo', TP=2 x DP=2,"
echo "Llama preset 'small', deploy/ds_config.json; only the agents hold the token and the client certificate"
echo

# Each agent starts its host's workers (tp_model_init -> initialize -> train) and carries their sessions to
# the coordinator on one; only rank 0 prints (the coordinator picks ranks). Their Gloo pairs use loopback.
hosts=(host-a host-b)
agent_pids=()
for host in "${hosts[@]}"; do
  TPCOORD_GLOO_INTERFACE=127.0.0.1 "$agent_bin" --job demo --nnodes 2 --nproc-per-node 2 --host "$host" -- \
    "$worker_bin" --config deploy/ds_config.json --random-init small --data deploy/data/public_domain.txt \
    --output-dir "$output" 2>"$work/agent-$host.log" &
  agent_pids+=($!)
  pids+=($!)
done
status=0
for i in 0 1; do
  wait "${agent_pids[$i]}" || { status=$?; echo "the agent of ${hosts[$i]} failed:"; cat "$work/agent-${hosts[$i]}.log"; }
done
[ "$status" -eq 0 ] || exit "$status"

echo
echo "\$ tpctl job demo"
"$tpctl" job demo | grep -v "merged config"
echo
echo "\$ tpctl events demo"
"$tpctl" events demo
echo
echo "checkpoint (Hugging Face layout) in $output/checkpoint:"
ls -l "$output/checkpoint"
