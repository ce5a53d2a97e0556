# The two entry points of the README's quick start, and the pieces they are made of.
#   make demo   install dependencies, build, run the main job on this machine
#   make test   install dependencies, build, run every test (CTest)
#   make test-compose   the compose test: Docker image, docker-compose.yml up for real (root; see tests/compose/run.sh)
BUILD_DIR ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test test-compose demo bench clean

all: build

deps:
	@deploy/install-deps.sh

configure: deps
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@ctest --test-dir $(BUILD_DIR) --output-on-failure -j $(JOBS) --timeout 900

# Needs no local build: the image compiles the binaries itself. Bounded in time; cleans up after itself.
test-compose:
	@TPCOORD_COMPOSE_TEST=1 timeout -k 120 3600 bash tests/compose/run.sh

demo: build
	@deploy/demo.sh $(BUILD_DIR)

bench: build
	@bench/run.sh $(BUILD_DIR)

clean:
	rm -rf $(BUILD_DIR)
