#!/usr/bin/env bash
# One command that proves tp-worker on a GPU machine: a fresh cloud GPU box or an air-gapped node with CUDA, a
# C++ compiler, CMake, ninja and pip's PyTorch, but no package registry.
#
#   deploy/gpu-check.sh --fetch DIR   on a Debian 12 machine with its registry: downloads (apt-get download)
#                                     the .deb files the build needs into DIR (34 packages, about 22 MiB; copy DIR over)
#   deploy/gpu-check.sh DIR           on the GPU machine: unpacks DIR into a private prefix (dpkg -x, never
#                                     into /), builds tp-coordinator, tpctl and tp-worker against that
#                                     machine's PyTorch, starts a coordinator and runs the checks on GPU 0
#   deploy/gpu-check.sh --cpu DIR     the same end to end on a machine without a GPU, against the local
#                                     python3's torch (Debian's python3-torch here): (a) with both sides on
#                                     the CPU, (c) and (d) with Gloo
#
# The checks, one line each ("gpu-check (a) ... PASS|FAIL ..."); the exit status is non-zero if any fails:
#   (a) tp-worker, TP=1, preset small, fp32, 50 steps on cuda: its first 10 losses match the same run with
#       --device cpu of the same build within 1e-3 relative (with several GPUs also TP=2 against TP=1)
#   (b) preset 350m, bf16, 30 steps on the GPU: tokens/s and MFU against the GPU's peak dense bf16 FLOP/s
#   (c) python/examples/train.py with the nccl backend on cuda at world size 1, through the coordinator's store
#   (d) every communicator of (a) initialised from unique IDs the coordinator brokered
#
# Environment: PYTHON (the python3 with torch; default python3), WORK (default: a new temporary directory),
# JOBS (build parallelism; default: every core).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)

# What the build needs that a GPU machine with pip's PyTorch lacks: gRPC, Protobuf (and its compilers, for the
# Python client's stubs), Abseil, SQLite, OpenSSL, nlohmann-json, prometheus-cpp with civetweb (and the curl
# its CMake config asks for), with the runtime libraries each links.
packages=(
  libgrpc++-dev libgrpc-dev libgrpc++1.51 libgrpc29 libc-ares-dev libc-ares2 libre2-dev libre2-9
  libprotobuf-dev libprotobuf32 libprotobuf-lite32 libprotoc32 protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libabsl20220623 libsqlite3-dev libsqlite3-0 libssl-dev libssl3 zlib1g-dev nlohmann-json3-dev
  prometheus-cpp-dev libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprometheus-cpp-push1.0
  libcivetweb-dev libcivetweb1 civetweb libcurl4-openssl-dev libcurl4
  pkgconf pkgconf-bin libpkgconf3  # gRPC's CMake config finds re2 through pkg-config
)

if [ "${1:-}" = "--fetch" ]; then
  dir=${2:?usage: deploy/gpu-check.sh --fetch DIR}
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" -eq 0 ] && apt-get update -q >/dev/null
  (cd "$dir" && apt-get download -qq "${packages[@]}" 2>&1 | grep -v "^W: Download is performed unsandboxed" || true)
  echo "gpu-check --fetch: $(ls "$dir"/*.deb | wc -l) packages, $(du -sh "$dir" | cut -f1) in $dir:"
  (cd "$dir" && ls -1 ./*.deb | sed 's|^\./|  |')
  exit 0
fi

mode=gpu
if [ "${1:-}" = "--cpu" ]; then
  mode=cpu
  shift
fi
debs=${1:?usage: deploy/gpu-check.sh [--cpu] DIR   (DIR from deploy/gpu-check.sh --fetch DIR)}
debs=$(cd "$debs" && pwd)
# The python3 with torch: $PYTHON, else the first of python3 and /usr/bin/python3 that has it.
python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3 /usr/bin/python3; do
    if "$candidate" -c 'import torch' 2>/dev/null; then python=$candidate; break; fi
  done
fi
if [ -z "$python" ] || ! "$python" -c 'import torch' 2>/dev/null; then
  echo "gpu-check: no python3 with torch found (${python:-python3, /usr/bin/python3}); set PYTHON" >&2
  exit 2
fi
work=${WORK:-$(mktemp -d /tmp/gpu-check.XXXXXX)}
mkdir -p "$work"
jobs=${JOBS:-$(nproc)}
start=$(date +%s)
failures=0
result() {  # result LETTER PASS|FAIL TEXT
  echo "gpu-check ($1) $2: $3 [$(( $(date +%s) - start ))s]"
  [ "$2" = PASS ] || failures=$((failures + 1))
}
coordinator_pid=""
cleanup() {
  [ -n "$coordinator_pid" ] && kill "$coordinator_pid" 2>/dev/null || true
}
trap cleanup EXIT

# --- unpack into a private prefix -----------------------------------------------------------------------
prefix=$work/prefix
mkdir -p "$prefix"
for deb in "$debs"/*.deb; do dpkg -x "$deb" "$prefix"; done
multiarch=x86_64-linux-gnu
export PATH="$prefix/usr/bin:$PATH"
export LD_LIBRARY_PATH="$prefix/usr/lib/$multiarch:$prefix/lib/$multiarch${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# pkg-config reads the prefix's .pc files only, and puts the prefix before the paths they name.
export PKG_CONFIG_LIBDIR="$prefix/usr/lib/$multiarch/pkgconfig:$prefix/usr/share/pkgconfig"
export PKG_CONFIG_SYSROOT_DIR="$prefix"

# --- build against this machine's PyTorch -----------------------------------------------------------------
torch_cmake=$("$python" -c 'import os, torch; p = torch.utils.cmake_prefix_path; print(p if os.path.isdir(p) else "")')
if [ -z "$torch_cmake" ]; then  # Debian's python3-torch: its CMake files live with libtorch-dev
  torch_cmake=$(dirname "$(ls -d /usr/lib/*/cmake/Torch 2>/dev/null | head -1)")
fi
torch_version=$("$python" -c 'import torch; print(torch.__version__)')
cmake_args=(-G Ninja -DCMAKE_BUILD_TYPE=Release -DTPCOORD_BUILD_TESTS=OFF -DTPCOORD_BUILD_BENCH=OFF -DTPCOORD_BUILD_PYTHON=OFF
            -DCMAKE_PREFIX_PATH="$prefix/usr;$torch_cmake" -DTorch_DIR="$torch_cmake/Torch"
            -DPYTHON_EXECUTABLE="$(command -v "$python")")
if command -v nvcc >/dev/null; then
  cmake_args+=(-DCMAKE_CUDA_COMPILER="$(command -v nvcc)" -DCUDAToolkit_ROOT="$(dirname "$(dirname "$(command -v nvcc)")")")
  [ "$mode" = gpu ] && cmake_args+=(-DCMAKE_CUDA_ARCHITECTURES=native)
fi
build=$work/build
if ! cmake -S "$repo" -B "$build" "${cmake_args[@]}" >"$work/configure.log" 2>&1; then
  tail -30 "$work/configure.log"
  result build FAIL "cmake could not configure against PyTorch $torch_version ($torch_cmake); see $work/configure.log"
  exit 1
fi
# Every dependency of the build must come from the prefix, not from this machine's /usr (where --cpu runs).
outside=$(grep -E '^(gRPC_DIR|absl_DIR|Protobuf_INCLUDE_DIR|SQLite3_INCLUDE_DIR|nlohmann_json_DIR|prometheus-cpp_DIR):' \
          "$build/CMakeCache.txt" | grep -v "$prefix" || true)
if [ -n "$outside" ]; then
  result build FAIL "dependencies found outside the prefix: $(echo "$outside" | tr '\n' ' ')"
fi
if ! cmake --build "$build" -j "$jobs" --target tp-coordinator tpctl tp-worker >"$work/build.log" 2>&1; then
  grep -E "error|Error" "$work/build.log" | head -20
  result build FAIL "the build failed; see $work/build.log"
  exit 1
fi
# The Python client as a user installs it, into a directory of its own (pip's --target: PYTHONPATH names it).
site=$work/python-site
if ! "$python" -m pip install --disable-pip-version-check --no-build-isolation --no-index --no-deps \
       --target "$site" "$repo/python" >"$work/pip.log" 2>&1; then
  tail -5 "$work/pip.log"
  result build FAIL "pip install ./python failed; see $work/pip.log"
  exit 1
fi
result build PASS "tp-coordinator, tpctl, tp-worker and the Python client against PyTorch $torch_version, $(grep -E 'tpcoord: (LibTorch|NCCL)' "$work/configure.log" | sed 's/-- tpcoord: //' | tr '\n' ' ')"

# --- a coordinator ----------------------------------------------------------------------------------------
"$build/coordinator/tp-coordinator" --listen 127.0.0.1:0 --state-dir "$work/state" >"$work/coordinator.out" \
  2>"$work/coordinator.err" &
coordinator_pid=$!
for _ in $(seq 100); do
  address=$(sed -n 's/^tp-coordinator listening on //p' "$work/coordinator.out")
  [ -n "$address" ] && break
  sleep 0.1
done
[ -n "$address" ] || { cat "$work/coordinator.err"; result coordinator FAIL "did not start"; exit 1; }
export TPCOORD_TOKEN=gpu-check-token-0123456789
data=$repo/deploy/data/public_domain.txt

# tp_worker NAME WORLD TP DEVICE CONFIG PRESET [RANK]: one worker of job NAME, output in $work/NAME-RANK.*
tp_worker() {
  local name=$1 world=$2 tp=$3 device=$4 config=$5 preset=$6 rank=${7:-0}
  LOCAL_RANK=$rank timeout 600 "$build/worker/tp-worker" --coordinator "$address" --job "$name" \
    --world-size "$world" --rank "$rank" --tp-size "$tp" --host 127.0.0.1 --config "$config" \
    --random-init "$preset" --data "$data" --device "$device" --threads 4 \
    >"$work/$name-$rank.out" 2>"$work/$name-$rank.err"
}
# job NAME WORLD TP DEVICE CONFIG PRESET: the whole job; 0 when every worker exits 0
job() {
  local pids=() status=0 rank
  for rank in $(seq 0 $(($2 - 1))); do
    tp_worker "$1" "$2" "$3" "$4" "$5" "$6" "$rank" &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid" || status=1; done
  [ "$status" -eq 0 ] || tail -5 "$work/$1-0.err"
  return "$status"
}
losses() { sed -n 's/^step \([0-9]*\)\/[0-9]* loss \([^ ]*\) .*/\2/p' "$work/$1-0.out" | head -10; }
# compare A B: the largest relative difference of the first 10 losses, or FAIL
compare() {
  paste <(losses "$1") <(losses "$2") | awk '
    NF == 2 { n++; d = ($1 - $2) / ($2 == 0 ? 1 : $2); if (d < 0) d = -d; if (d > m) m = d }
    END { if (n < 10) { print "FAIL only " n " losses"; exit } printf "%s %.2e\n", (m <= 1e-3 ? "PASS" : "FAIL"), m }'
}

gpu_device=cuda
gpus=0
if [ "$mode" = gpu ]; then
  gpus=$("$python" -c 'import torch; print(torch.cuda.device_count())')
else
  gpu_device=cpu
fi

# --- (a) the same run on the device and on the CPU ---------------------------------------------------------
cat >"$work/small.json" <<'EOF'
{"train_batch_size": 8, "steps_per_print": 1, "gradient_clipping": 1.0,
 "optimizer": {"type": "AdamW", "params": {"lr": 0.003, "weight_decay": 0.01}},
 "tpcoord": {"steps": 50, "seq_len": 64, "seed": 7, "eval_windows": 8}}
EOF
if job a-device 1 1 "$gpu_device" "$work/small.json" small && job a-cpu 1 1 cpu "$work/small.json" small; then
  read -r verdict diff <<<"$(compare a-device a-cpu)"
  result a "$verdict" "TP=1 small fp32, 50 steps on $gpu_device: first 10 losses within $diff relative of --device cpu ($(losses a-device | head -1) -> $(losses a-device | tail -1))"
else
  result a FAIL "a run failed: $(tail -1 "$work/a-device-0.err" "$work/a-cpu-0.err" 2>/dev/null | tr '\n' ' ')"
fi
if [ "$gpus" -ge 2 ]; then
  if job a-tp2 2 2 cuda "$work/small.json" small; then
    read -r verdict diff <<<"$(compare a-tp2 a-device)"
    result a-tp2 "$verdict" "TP=2 on 2 GPUs against TP=1: first 10 losses within $diff relative"
  else
    result a-tp2 FAIL "$(tail -1 "$work/a-tp2-0.err")"
  fi
fi

# --- (b) a 350M model in bf16: tokens/s and MFU --------------------------------------------------------------
if [ "$mode" = gpu ]; then
  cat >"$work/350m.json" <<'EOF'
{"train_batch_size": 16, "steps_per_print": 10, "bf16": {"enabled": true},
 "optimizer": {"type": "AdamW", "params": {"lr": 0.0003}}, "tpcoord": {"steps": 30, "seq_len": 1024, "eval_windows": 2}}
EOF
  if job b 1 1 cuda "$work/350m.json" 350m; then
    done_line=$(grep '^done: ' "$work/b-0.out" || true)
    if echo "$done_line" | grep -q "MFU"; then
      result b PASS "$(grep -o '[0-9]* parameters' "$work/b-0.out" | head -1), bf16, 30 steps: ${done_line#done: }"
    else
      result b FAIL "no MFU in: $done_line (GPU: $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null))"
    fi
  else
    result b FAIL "$(tail -1 "$work/b-0.err")"
  fi
fi

# --- (c) the Python client's example, on the device's backend ------------------------------------------------
backend=nccl
[ "$mode" = cpu ] && backend=gloo
if PYTHONPATH="$site" timeout 300 "$python" "$repo/python/examples/train.py" --coordinator "$address" \
     --job c-example --world-size 1 --backend "$backend" --steps 20 >"$work/c.out" 2>"$work/c.err" &&
   grep -q '"done": true' "$work/c.out"; then
  result c PASS "python/examples/train.py, $backend at world size 1 through the coordinator's store: loss $(grep -o '"loss": [0-9.e-]*' "$work/c.out" | head -1 | cut -d' ' -f2) -> $(grep -o '"loss": [0-9.e-]*' "$work/c.out" | tail -1 | cut -d' ' -f2)"
else
  result c FAIL "$(tail -3 "$work/c.err" | tr '\n' ' ')"
fi

# --- (d) the communicators of (a) ---------------------------------------------------------------------------
line=$(grep '^communicators: ' "$work/a-device-0.out" || true)
want="unique id(s) brokered by the coordinator"
[ "$mode" = cpu ] && want="through the coordinator's store"
if [ -n "$line" ] && [ "$(echo "$line" | tr ';' '\n' | grep -c "$want")" -eq 3 ]; then
  result d PASS "${line#communicators: }"
else
  result d FAIL "expected world, TP and DP ${want}: ${line:-no communicators line}"
fi

echo "gpu-check: $failures failure(s), $(( $(date +%s) - start ))s, work in $work"
[ "$failures" -eq 0 ]
