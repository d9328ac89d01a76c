GO ?= go
BIN := bin
CMDS := extract repack requant2bit infer

.PHONY: all build build-cuda test vet demo quality clean kernelcmp kernelcmp-generate

DEMO_SRC := testdata/models/tiny-code
DEMO_OUT := out/tiny-code-4bit

all: build

# The revision is also stamped by hand: --version must name it even where the
# go command records no VCS information (GOFLAGS=-buildvcs=false).
REVISION := $(shell git describe --always --dirty 2>/dev/null)
LDFLAGS := -X github.com/fm-moe/fm/pkg/cli.buildRevision=$(REVISION)

build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do CGO_ENABLED=0 $(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/fm-$$c ./cmd/$$c || exit 1; done

# build-cuda: fm-infer with the NVIDIA backend (build tag cuda; purego, no cgo,
# so still CGO_ENABLED=0, but dynamically linked). docs/BACKENDS.md explains it.
build-cuda:
	@mkdir -p $(BIN)
	CGO_ENABLED=0 $(GO) build -tags cuda -ldflags "$(LDFLAGS)" -o $(BIN)/fm-infer-cuda ./cmd/infer

# vet also cross-builds for the other supported platforms (macOS, arm64), so a
# Linux-only call cannot slip in unnoticed, and checks that go.mod and go.sum
# are tidy (every direct dependency listed as one).
vet:
	$(GO) mod tidy -diff
	$(GO) vet ./...
	GOOS=darwin GOARCH=arm64 CGO_ENABLED=0 $(GO) build ./...
	GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build ./...
	GOOS=linux GOARCH=amd64 CGO_ENABLED=0 $(GO) vet -tags cuda ./pkg/backend/cuda/ ./cmd/infer/
	GOOS=linux GOARCH=amd64 CGO_ENABLED=0 GOEXPERIMENT=simd $(GO) vet ./pkg/backend/cpu/kernelcmp/
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

# The suite runs with CGO_ENABLED=0 (the binaries are pure Go); the concurrent
# packages (expert I/O pool, kernels' worker pool, generation loop, the HTTP server's
# queue and parallel generations) also run under
# the race detector, which needs cgo and a C compiler.
RACE_PKGS := ./pkg/experts/ ./pkg/backend/cpu/ ./pkg/sample/ ./pkg/server/

# The kernels (and the quantizer) are also tested without assembly (-tags noasm: the generic twins,
# what arm64 runs today) with the goldens of the model package, and cross-built
# for arm64 and run under qemu-user when it is installed (.ci/run installs it).
test: vet
	CGO_ENABLED=0 $(GO) test ./...
	CGO_ENABLED=0 $(GO) test -tags noasm ./pkg/backend/... ./pkg/model/ ./pkg/quant/
	CGO_ENABLED=0 GOEXPERIMENT=simd $(GO) test ./pkg/backend/cpu/kernelcmp/
	@if command -v qemu-aarch64-static >/dev/null 2>&1 || command -v qemu-aarch64 >/dev/null 2>&1; then \
		echo "arm64 kernel tests under qemu-user"; \
		GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) test -c -o $(BIN)/cpu-arm64.test ./pkg/backend/cpu/ && \
		$$(command -v qemu-aarch64-static || command -v qemu-aarch64) $(BIN)/cpu-arm64.test -test.short || exit 1; \
	else echo "no qemu-user: skipping the arm64 kernel tests"; fi
	@if command -v gcc >/dev/null 2>&1; then \
		echo "CGO_ENABLED=1 $(GO) test -race $(RACE_PKGS)"; \
		CGO_ENABLED=1 $(GO) test -race $(RACE_PKGS); \
	else echo "no C compiler: skipping the race-detector run"; fi

# kernelcmp: the measurement that chose the kernels' technology (hand assembly,
# avo, GOEXPERIMENT=simd; docs/PERF.md): every variant's tests, then the
# benchmarks, variants alternating within each iteration. Rerun it on a new CPU.
KCMP := ./pkg/backend/cpu/kernelcmp/
kernelcmp:
	CGO_ENABLED=0 GOEXPERIMENT=simd $(GO) test -v -run . $(KCMP)
	CGO_ENABLED=0 GOEXPERIMENT=simd $(GO) test -run '^$$' -bench /L2 -benchtime 300x $(KCMP)
	CGO_ENABLED=0 GOEXPERIMENT=simd $(GO) test -run '^$$' -bench /DRAM -benchtime 20x $(KCMP)

# kernelcmp-generate: rebuild the avo variant (generator in its own module,
# pkg/backend/cpu/kernelcmp/_avo; needs the module proxy once for avo).
kernelcmp-generate:
	$(GO) generate $(KCMP)

# demo: build, convert the bundled trained code model to 4-bit, verify it, generate.
demo: build
	$(BIN)/fm-extract $(DEMO_SRC) $(DEMO_OUT) --bits 4
	$(BIN)/fm-repack  $(DEMO_SRC) $(DEMO_OUT) --bits 4
	$(BIN)/fm-infer verify --model $(DEMO_OUT)
	$(BIN)/fm-infer run --model $(DEMO_OUT) --no-chat --prompt "def fibonacci(n):" --tokens 120 --timing

# quality: regenerate the quality table of docs/QUALITY.md (tiny-code at 16/8/4/3/2
# bits and K 4/3/2, perplexity, KL and top-1 against the 16-bit conversion; ~10 min).
quality:
	scripts/quality.sh

clean:
	rm -rf $(BIN) out
