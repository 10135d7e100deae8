# Entry points for people and CI. Each target first makes sure the Debian packages are there.
BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CONFIDE     = $(BUILD)/confide
DEMO       ?= demo

PREFIX     ?= /usr/local

.PHONY: all setup build run test test-asan bench fuzz format clean install

all: build

setup:
	@bash scripts/setup.sh

build: setup
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

# The main job: a day of generated payment traffic through the embedded pipeline.
run: build
	@rm -rf $(DEMO) && mkdir -p $(DEMO)
	$(CONFIDE) gen --seed 42 --days 1 --customers 5000 --terminals 10000 --out $(DEMO)/day.csv
	$(CONFIDE) run --config examples/confide.yaml --input $(DEMO)/day.csv --out $(DEMO)/out
	$(CONFIDE) audit verify $(DEMO)/out/audit --keys $(DEMO)/out/keys --trusted-head $(DEMO)/out/tree_heads.ndjson
	$(CONFIDE) audit verify-results $(DEMO)/out --keys $(DEMO)/out/keys
	@echo "outputs: $(DEMO)/out/{results,alerts,late,dead_letter}.ndjson, audit log in $(DEMO)/out/audit"

# Installs bin/confide, lib/libconfide.{a,so*}, include/confide/, lib/pkgconfig/confide.pc
# and the examples under PREFIX, staged below DESTDIR when given.
install: build
	@DESTDIR="$(DESTDIR)" cmake --install $(BUILD) --prefix "$(PREFIX)"

test: build
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: setup
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCF_SANITIZE=address,undefined \
		$(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1 \
		ctest --output-on-failure -j $(JOBS)

bench: build
	@mkdir -p bench/results
	$(CONFIDE) bench pipeline --json

fuzz: setup
	@CC=clang cmake -S . -B build-fuzz -DCMAKE_BUILD_TYPE=Debug -DCF_FUZZ=ON \
		-DCF_SANITIZE=address,undefined >/dev/null
	@cmake --build build-fuzz -j $(JOBS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) build-fuzz $(DEMO)
