# strata: the two commands a fresh machine needs are `make run` and `make test`.
# Everything else here is a step of those two.

BUILD ?= build
SANITIZE_BUILD ?= build-sanitize
THREADS ?= $(shell nproc)
PROMPT ?= The three most useful things to know about the KV cache of a language model are

.PHONY: all setup build build-sanitize run test bench clean

all: build

setup:
	scripts/setup.sh

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

$(SANITIZE_BUILD)/build.ninja:
	cmake -S . -B $(SANITIZE_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Debug -DSTRATA_SANITIZE=ON

build: $(BUILD)/build.ninja
	ninja -C $(BUILD)

build-sanitize: $(SANITIZE_BUILD)/build.ninja
	ninja -C $(SANITIZE_BUILD)

# Installs what is missing, builds, fetches the default model and generates text with it.
run: setup build
	$(BUILD)/strata generate -p "$(PROMPT)" -n 64 --temp 0 -t $(THREADS)

# Installs what is missing, builds both builds and runs the whole suite.
test: setup build build-sanitize
	scripts/run-tests.sh $(BUILD) $(SANITIZE_BUILD)

# Compares strata with llama.cpp on the default model (builds llama.cpp once).
bench: setup build
	bench/vs-llamacpp.sh

clean:
	rm -rf $(BUILD) $(SANITIZE_BUILD)
