#!/usr/bin/env bash
# Installs exactly the Debian 12 (bookworm) packages tpcoord needs to build, test and run.
# Idempotent: packages already present are skipped, so a warm machine pays only for `dpkg -s`.
#
#   deploy/install-deps.sh               # build + test + run (what `make demo` / `make test` call)
#   deploy/install-deps.sh --tests       # also what only some tests need (`make test`: Chromium, a Prometheus parser)
#   deploy/install-deps.sh --python      # the Python client alone (`make python`)
#   deploy/install-deps.sh --runtime     # runtime libraries only (the Docker runtime stage)
#   deploy/install-deps.sh --sanitizers  # clang and libFuzzer for `make sanitize` / `make fuzz`
#   deploy/install-deps.sh --bench       # PyTorch for `make bench`'s baseline
set -euo pipefail

build_packages=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  libtorch-dev libgloo-dev libopenblas0-pthread
  nlohmann-json3-dev libgtest-dev libgmock-dev libbenchmark-dev libsqlite3-dev
  libssl-dev openssl python3 python3-yaml procps
  etcd-server  # the HA tests' etcd cluster (tests/support/etcd_cluster.cc)
  prometheus-cpp-dev  # the coordinator's metrics, and civetweb, the HTTP server of its /metrics and status page
)
# The Python client (python/): gRPC's and protobuf's runtimes, PyTorch's c10d, and what `pip install
# --no-build-isolation ./python` needs offline (pip, setuptools, wheel; venv for the build's copy). Its stubs
# come from the build's protoc and grpc_python_plugin (python/setup.py).
python_packages=(protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf python3-torch
                 python3-pip python3-setuptools python3-wheel python3-venv)
# The observability test (tests/integration/observability_test.py): a real Prometheus text parser, and a real
# browser that loads the status page. The Python client's tests (python/tests): pytest.
test_packages=(python3-prometheus-client chromium "${python_packages[@]}" python3-pytest)
sanitizer_packages=(clang-14 libfuzzer-14-dev libclang-rt-14-dev)
bench_packages=(python3-torch)  # train_bench's baseline: the same model trained in PyTorch
runtime_packages=(
  libgrpc++1.51 libprotobuf32 libsqlite3-0 libtorch1.13 libgloo0 libopenblas0-pthread
  libabsl20220623 libssl3 openssl ca-certificates procps libprometheus-cpp-core1.0 libcivetweb1
  etcd-server  # HA: the etcd members of deploy/k8s/ha/ run from the same image
)

packages=("${build_packages[@]}")
[ "${1:-}" = "--runtime" ] && packages=("${runtime_packages[@]}")
[ "${1:-}" = "--tests" ] && packages=("${build_packages[@]}" "${test_packages[@]}")
[ "${1:-}" = "--sanitizers" ] && packages=("${sanitizer_packages[@]}")
[ "${1:-}" = "--bench" ] && packages=("${bench_packages[@]}")
[ "${1:-}" = "--python" ] && packages=("${python_packages[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
