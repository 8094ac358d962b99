# A thin wrapper around CMake (see CMakeLists.txt). Every target installs what
# is missing first (scripts/bootstrap.sh, apt-get on Debian).
BUILD ?= build
BUILD_ASAN ?= build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build run test test-asan test-valgrind bench chaos fuzz model format clean

all: build

deps:
	@scripts/bootstrap.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

# The main job: a private redis-server unless REDIS_URL is set.
run: build
	@scripts/run.sh $(BUILD)/stepq

test: build
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS)

test-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DSTEPQ_SANITIZE=address,undefined >/dev/null
	@cmake --build $(BUILD_ASAN) -j$(JOBS)
	@cd $(BUILD_ASAN) && ctest --output-on-failure -j$(JOBS)

test-valgrind: build
	@cd $(BUILD) && STEPQ_TEST_PREFIX="valgrind --error-exitcode=99 --leak-check=full --errors-for-leak-kinds=definite -q" ctest --output-on-failure -j$(JOBS) -L 'unit|vg'

BUILD_FUZZ ?= build-fuzz
FUZZ_SECONDS ?= 60

# libFuzzer targets (clang), each run FUZZ_SECONDS from its seed corpus.
fuzz: deps
	@cmake -S . -B $(BUILD_FUZZ) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug -DSTEPQ_FUZZ=ON >/dev/null
	@cmake --build $(BUILD_FUZZ) -j$(JOBS)
	@fuzz/run.sh $(BUILD_FUZZ) $(FUZZ_SECONDS)

bench: build
	@bench/run.sh $(BUILD)

# Fault injection under load through the whole migration walk, on a private
# redis-server (tests/chaos/chaos.sh); the short form runs in `make test`.
chaos: build
	@tests/chaos/chaos.sh $(BUILD)/stepq

# The spin model of the migration protocol (docs/model.md): an exhaustive
# search of each configuration, then every seeded bug of model/mutants/
# must be caught.
model:
	@STEPQ_BOOTSTRAP_EXTRA=spin scripts/bootstrap.sh
	@model/run.sh

format:
	@clang-format -i include/*.h src/*.c src/*.h cmd/stepq/*.c cmd/stepq/*.h tests/*.h tests/*/*.c fuzz/*.c

clean:
	@rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ)
