#!/usr/bin/env bash
# `make bench`: every benchmark, one after the other, on an otherwise idle machine.
set -euo pipefail
build=${1:-build}
"$build/bench/rendezvous_bench"
echo
"$build/bench/train_bench"
echo
"$build/bench/recovery_bench"
echo
"$build/bench/failover_bench"
