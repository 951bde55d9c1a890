# wgllm: `make run` serves the bundled default model; `make test` runs every
# test (GPU tests on lavapipe when there is no GPU). Both install missing
# system packages first (scripts/deps.sh).
GO ?= go
BIN := bin/wgllm
GOTESTFLAGS ?= -count=1 -timeout 30m

.PHONY: all deps deps-test dawn build test test-dawn run bench vet clean fuzz-smoke fuzz release wasm

all: build

deps:
	@./scripts/deps.sh

# The tests also drive the chat page in headless Chromium, and the
# JavaScript clients of tests/clients (npm ci from its lockfile).
deps-test:
	@./scripts/deps.sh chromium
	@./scripts/clients.sh

# Dawn, the second WebGPU implementation, as a library loaded at run time
# (npm bun-webgpu-linux-x64, pinned by integrity) into third_party/dawn/;
# the build puts it beside the binary. Without it wgllm runs on wgpu-native.
DAWN_LIB := third_party/dawn/libwebgpu_wrapper.so
dawn:
	@./scripts/dawn.sh

build: deps dawn
	$(GO) build -o $(BIN) ./cmd/wgllm
	@if [ -f $(DAWN_LIB) ]; then cp $(DAWN_LIB) $(dir $(BIN)); fi

vet:
	$(GO) vet ./...

# Packages that need no GPU also run under the race detector.
RACE_PKGS := ./internal/config ./runtime/gguf ./runtime/quant ./runtime/half ./runtime/tokenizer ./runtime/sample ./runtime/chat ./serve/... ./internal/hub/... ./internal/modelstore

# Building every release target in the tests makes a change that breaks
# one platform fail CI (see scripts/release.sh).
test: deps-test vet release wasm
	$(GO) test $(GOTESTFLAGS) ./...
	$(GO) test -race $(GOTESTFLAGS) $(RACE_PKGS)
	$(MAKE) --no-print-directory fuzz-smoke
	$(MAKE) --no-print-directory test-dawn

# The GPU runtime and kernel tests again on Dawn (they skip, saying why,
# when its library is absent). Dawn needs Mesa >= 25 for lavapipe: on
# Debian 12 it is unpacked into third_party/mesa25/ for these runs only.
DAWN_PKGS ?= ./runtime/gpu ./ops
test-dawn: dawn
	@./scripts/lavapipe25.sh || echo "test-dawn: Mesa 25 lavapipe not installed; Dawn finds no adapter on older Mesa and its tests skip"
	env $$(cat third_party/mesa25/env 2>/dev/null) WGLLM_GPU_IMPL=dawn WGLLM_DAWN_LIB=$(CURDIR)/$(DAWN_LIB) \
		$(GO) test $(GOTESTFLAGS) $(DAWN_PKGS)

# Every fuzz target briefly (CI); `make fuzz FUZZTIME=10m` for a long run.
fuzz-smoke:
	@FUZZTIME=3s GO=$(GO) ./scripts/fuzz.sh

FUZZTIME ?= 10m
fuzz:
	@FUZZTIME=$(FUZZTIME) GO=$(GO) ./scripts/fuzz.sh

MODEL ?= models/kjv-30m-q4_k_m.gguf

# The chat server on the bundled model; it prints the URL to open. The
# page's "in this browser" mode needs the wasm build too.
run: build wasm
	./$(BIN) serve -m $(MODEL)

bench: build
	$(GO) test -run '^$$' -bench . -benchtime 20x ./ops/

# dist/: wgllm for linux/amd64, linux/arm64 and windows/amd64, each binary
# checked and archived with licences and SHA-256 sums (installs the cgo
# cross compilers and what deps installs, when missing).
release:
	@./scripts/release.sh

# The runtime for a web page (cmd/wgllm-wasm, the browser's WebGPU) and
# Go's loader for it, in web/wasm/dist/ (built, never committed).
WASM_DIR := web/wasm/dist
wasm:
	@mkdir -p $(WASM_DIR)
	GOOS=js GOARCH=wasm $(GO) build -trimpath -o $(WASM_DIR)/wgllm.wasm ./cmd/wgllm-wasm
	cp "$$($(GO) env GOROOT)/lib/wasm/wasm_exec.js" $(WASM_DIR)/wasm_exec.js

clean:
	rm -rf bin dist $(WASM_DIR)
