# Gitfleet — signed, atomic OTA updates for embedded Linux fleets, driven by Git.
# `make help` lists the targets.

GO      ?= go
BIN     ?= bin
PKGS    ?= ./...
# Generous per-package limit; CI's whole run must stay well under 30 minutes.
TESTFLAGS ?= -timeout 20m

.DEFAULT_GOAL := help

.PHONY: help run test bench lint build fuzz attacks dist

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*## "}; {printf "  make %-8s %s\n", $$1, $$2}'

build: ## Build gitfleet and gitfleet-agent into ./bin
	$(GO) build -o $(BIN)/ ./cmd/...

run: build ## Run the quickstart (embedded store, no Redis needed)
	@./scripts/quickstart

test: ## Install missing test peers (Debian packages), then run every test
	@./scripts/test-deps
	$(GO) build $(PKGS)
	$(GO) test $(TESTFLAGS) $(PKGS)

bench: ## Run the benchmarks (artifact read+verify of 1 GiB, …)
	$(GO) test -run '^$$' -bench . -benchmem -benchtime 1x $(PKGS)

attacks: ## Run the attack suite (every TestAttack…), listed as attacks and expected refusals
	@./scripts/test-deps
	@./scripts/attacks

fuzz: ## Run every fuzzer for FUZZTIME each (default 2m), one after another
	@./scripts/fuzz-all $${FUZZTIME:-2m}

lint: ## gofmt, go vet, and staticcheck when installed
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	@if command -v staticcheck >/dev/null 2>&1; then staticcheck $(PKGS); else echo "staticcheck not installed; skipped"; fi

dist: ## Build release archives (linux amd64, arm64, armv7) and the agent's .deb into dist/
	@./scripts/dist
