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

# Trial PKI and secrets for both parties (deploy/README.md); deploy/*/pki/ is
# gitignored and never committed. The TLS server certificates also name the
# compose services, so the trial in deploy/compose.yaml works as is.
DEPLOY_HOSTS_US ?= localhost,127.0.0.1,::1,nats-us
DEPLOY_HOSTS_JP ?= localhost,127.0.0.1,::1,nats-jp

.PHONY: deploy-pki
deploy-pki: ## trial PKI and secrets of both parties in deploy/us/pki, deploy/jp/pki (never committed)
	@$(GO) run ./cmd/cmx pki init --party US --out deploy/us/pki --hosts $(DEPLOY_HOSTS_US)
	@$(GO) run ./cmd/cmx pki init --party JP --out deploy/jp/pki --hosts $(DEPLOY_HOSTS_JP)
	@set -e; umask 077; for side in us jp; do \
	  pw=$$(head -c 32 /dev/urandom | base64 | tr -dc 'A-Za-z0-9'); \
	  printf 'CMXNATS_GATEWAY_PASSWORD=%s\nCMX_NATS_PASSWORD=%s\n' "$$pw" "$$pw" > deploy/$$side/pki/secret.env; \
	done; echo "wrote deploy/us/pki/secret.env and deploy/jp/pki/secret.env (trial gateway passwords)"

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
