# The two entry points of the README's quick start, and the pieces they are made of.
#   make demo       install dependencies, build, run the main job on this machine
#   make test       install dependencies, build, run every test (CTest)
#   make sanitize   ASan+UBSan and TSan builds (clang) and their tests
#   make fuzz       every libFuzzer target for FUZZ_SECONDS on its seed corpus
#   make python     the Python client, pip-installed into build/python-venv (python -m tpcoord.run, import tpcoord)
#   make test-compose   the compose test: Docker image, docker-compose.yml up for real (root; see tests/compose/run.sh)
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=
FUZZ_SECONDS ?= 60
# The coordinator's core without gRPC, which the TSan build runs (CTest label "core").
TSAN_TARGETS = job_test job_parts_test job_storage_test job_stress_test progress_history_test \
               sqlite_state_store_test state_committer_test state_dir_test status_page_test timer_queue_test \
               job_replay ds_config_replay safetensors_header_replay
FUZZERS = ds_config_fuzzer job_fuzzer request_checks_fuzzer safetensors_header_fuzzer

.PHONY: all deps deps-tests deps-sanitizers configure build test sanitize fuzz test-compose demo bench clean python

all: build

deps:
	@deploy/install-deps.sh

deps-tests:
	@deploy/install-deps.sh --tests

deps-sanitizers: deps
	@deploy/install-deps.sh --sanitizers

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: deps-tests build
	@ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) --timeout 900

sanitize: deps-sanitizers
	@cmake --preset asan >/dev/null
	@cmake --build build-asan -j $(JOBS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1 ctest --test-dir build-asan --output-on-failure -j $(JOBS) --timeout 900
	@cmake --preset tsan >/dev/null
	@cmake --build build-tsan -j $(JOBS) --target $(TSAN_TARGETS)
	@TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  ctest --test-dir build-tsan --output-on-failure -j $(JOBS) -L core --timeout 900

fuzz: deps-sanitizers
	@cmake --preset asan >/dev/null
	@cmake --build build-asan -j $(JOBS) --target $(FUZZERS)
	@fuzz/run.sh build-asan/fuzz $(FUZZ_SECONDS) $(FUZZERS)

# Needs no local build: the image compiles the binaries itself. Bounded in time; cleans up after itself.
test-compose:
	@TPCOORD_COMPOSE_TEST=1 timeout -k 120 3600 bash tests/compose/run.sh

# Needs no C++ build: pip install ./python (its gRPC stubs generated on the way) into a venv over Debian's python3.
python:
	@deploy/install-deps.sh --python
	@python/install.sh $(BUILD_DIR)/python-venv

demo: build
	@deploy/demo.sh $(BUILD_DIR)

bench: build
	@deploy/install-deps.sh --bench
	@bench/run.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR) build-asan build-tsan
