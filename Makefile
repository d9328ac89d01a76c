GO ?= go
BIN := bin
CMDS := extract repack requant2bit infer

.PHONY: all build test vet demo clean

all: build

build:
	@mkdir -p $(BIN)
	@for c in $(CMDS); do CGO_ENABLED=0 $(GO) build -o $(BIN)/fm-$$c ./cmd/$$c || exit 1; done

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1)

test: vet
	CGO_ENABLED=0 $(GO) test ./...

clean:
	rm -rf $(BIN) out
