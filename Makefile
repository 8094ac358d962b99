# A thin wrapper around CMake (see CMakeLists.txt). Every target installs what
# is missing first (scripts/bootstrap.sh, apt-get on Debian).
BUILD ?= build
BUILD_ASAN ?= build-asan
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build run test cluster-chaos cluster-soak test-asan test-valgrind bench chaos chaos-walk fuzz model mutate mutate-ci format clean screenshots install

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
	@cd $(BUILD) && ctest --output-on-failure -j$(JOBS) -LE cluster-long

# Every Redis Cluster test, the reshard and the failover included (docs/cluster.md).
cluster-chaos: build
	@cd $(BUILD) && ctest --output-on-failure -L cluster

# The reshard and the failover, each ITER times on a cluster of its own,
# with the totals of steps lost and run twice (tests/cluster/soak.sh).
ITER ?= 5
cluster-soak: build
	@tests/cluster/soak.sh $(BUILD)/stepq $(ITER)

test-asan: deps
	@cmake -S . -B $(BUILD_ASAN) -DCMAKE_BUILD_TYPE=Debug -DSTEPQ_SANITIZE=address,undefined >/dev/null
	@cmake --build $(BUILD_ASAN) -j$(JOBS)
	@cd $(BUILD_ASAN) && ctest --output-on-failure -j$(JOBS) -LE cluster-long

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

# The randomized walk (tests/chaos/walk_random.sh): WALK_SEQS random operator
# sequences under load, each reconciled; SEED=N replays one (docs/chaos.md).
WALK_SEQS ?= 100
chaos-walk: build
	@WALK_SEQS=$(WALK_SEQS) tests/chaos/walk_random.sh $(BUILD)/stepq

BUILD_MUTATE ?= build-mutate

# Deliberate bugs in the phase-critical code (tests/mutate/mutations.txt),
# each built in a scratch copy of the tree ($(BUILD_MUTATE)) and run against
# the tests meant to catch it; fails when one survives or an entry no longer
# matches the code. MUTATE_ONLY=name,name runs some; mutate-ci the entries
# tagged ci (tests/README.md).
mutate: deps
	@MUTATE_DIR=$(BUILD_MUTATE) MUTATE_JOBS=$(JOBS) tests/mutate/mutate.py

mutate-ci: deps
	@MUTATE_DIR=$(BUILD_MUTATE) MUTATE_JOBS=$(JOBS) MUTATE_SUBSET=ci tests/mutate/mutate.py

# The spin model of the migration protocol (docs/model.md): an exhaustive
# search of each configuration, then every seeded bug of model/mutants/
# must be caught.
model:
	@STEPQ_BOOTSTRAP_EXTRA=spin scripts/bootstrap.sh
	@model/run.sh

# PREFIX (default /usr/local) and DESTDIR (staging) as usual.
PREFIX ?= /usr/local
install: build
	@cmake -S . -B $(BUILD) -DCMAKE_INSTALL_PREFIX=$(PREFIX) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)
	@DESTDIR=$(DESTDIR) cmake --install $(BUILD)

# The console of each phase, as shown in the README (docs/img/console-*.png).
screenshots: build
	@tests/browser/screenshots.sh $(BUILD) docs/img

format:
	@clang-format -i include/*.h src/*.c src/*.h cmd/stepq/*.c cmd/stepq/*.h tests/*.h tests/*/*.c fuzz/*.c

clean:
	@rm -rf $(BUILD) $(BUILD_ASAN) $(BUILD_FUZZ) $(BUILD_MUTATE)
