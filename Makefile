# cmx — bilateral exchange gateway. `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash
GO ?= go
PKGS := ./...
FUZZTIME ?= 10s
BIN := bin

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-8s %s\n", $$1, $$2}'

.PHONY: build
build: ## build cmxd and cmx into ./bin
	@mkdir -p $(BIN)
	@$(GO) build -trimpath -o $(BIN)/ ./cmd/...

.PHONY: demo
demo: ## run the whole exchange on this machine (two gateways, two NATS servers, a leafnode)
	@$(GO) run ./cmd/cmx demo

.PHONY: interop-deps
interop-deps:
	@if command -v npm >/dev/null 2>&1; then cd envelope/interop && npm ci --silent --no-audit --no-fund >/dev/null; fi

.PHONY: test
test: interop-deps ## run every test (the CI entry point)
	@$(GO) vet $(PKGS)
	@$(GO) test -count=1 -timeout 14m $(PKGS)

.PHONY: race
race: ## run the tests with the race detector
	@$(GO) test -race -count=1 -timeout 20m $(PKGS)

.PHONY: bench
bench: ## end-to-end benchmark (results in bench/results/)
	@$(GO) run ./cmd/cmx bench

.PHONY: gobench
gobench: ## Go micro-benchmarks of the crypto and schema paths
	@$(GO) test -run '^$$' -bench . -benchmem ./envelope/ ./certs/

.PHONY: lint
lint: ## gofmt, go vet, staticcheck
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }
	@$(GO) vet $(PKGS)
	@$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 $(PKGS)

.PHONY: fuzz
fuzz: ## run each fuzz target briefly (FUZZTIME=10s)
	@set -e; for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz' || true); do \
	    echo "fuzz $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
	  done; done

.PHONY: vuln
vuln: ## govulncheck
	@$(GO) run golang.org/x/vuln/cmd/govulncheck@latest $(PKGS)
