# pgpilot: `make dev` brings the operator up locally, `make test` runs every suite.
SHELL := bash
.SHELLFLAGS := -euo pipefail -c
CARGO ?= cargo

.PHONY: build test lint unit manifests bench certs fuzz bench-webhook controlplane dev e2e

build:
	$(CARGO) build --bins

## All tests: formatting, lints, unit, snapshot, property and CLI tests, the webhook
## over real TLS (tests/webhook_*.rs; the load tool runs as a smoke test), and end to end
## against a real control plane (tests/e2e_*.rs; `make controlplane` builds it first, or
## the first e2e suite does).
test: lint dataplane-deps unit

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

## Development CA and serving certificate for the webhook in webhook-certs/ (idempotent).
certs:
	bash webhook-certs/generate.sh

## Randomized robustness run of the webhook: 100 000 mutated AdmissionReviews from a fresh
## seed (FUZZ_CASES=N, FUZZ_SEED=N to replay). `make test` runs a seeded 5 000-case run.
fuzz:
	$(CARGO) test --release --test webhook_fuzz -- --ignored --nocapture

## Webhook load test against a precomputed-response baseline (figures go into the README).
BENCH_ARGS ?= --clients 8 --seconds 10
bench-webhook:
	$(CARGO) bench --bench webhook -- $(BENCH_ARGS)

## kube-apiserver, kube-controller-manager, kubectl and etcd built from Go modules, cached
## under ~/.cache/pgpilot (PGPILOT_CACHE): minutes the first time, instant after.
controlplane:
	hack/build-controlplane.sh

## Try it: a local control plane with the operator, the CRD and the webhooks, in the
## foreground until Ctrl-C. It prints the `export KUBECONFIG=...` for a second terminal.
dev: certs
	bin=$$(hack/build-controlplane.sh) && \
	$(CARGO) build --bins && \
	PGPILOT_CONTROLPLANE_BIN="$$bin" exec $(CARGO) run --quiet -- dev

## The end-to-end suites alone (tests/e2e_*.rs).
e2e:
	PGPILOT_CONTROLPLANE_BIN="$$(hack/build-controlplane.sh)" $(CARGO) test --test 'e2e_*'

## Scale run of the reconciler on the real control plane (500 clusters; figures in the README).
bench-controller:
	PGPILOT_E2E_RESYNC_SECONDS=60 $(CARGO) test --release --test bench_controller -- --ignored --nocapture

## The data plane for real (tests/dataplane.rs, also part of `make test`): the rendered
## Patroni, pgBackRest and pgBouncer configurations run with the real programs against a
## real control plane; prints failover, backup/restore and pooling figures. Needs root.
.PHONY: dataplane dataplane-deps
dataplane-deps:
	bash hack/dataplane/install.sh

dataplane: dataplane-deps
	$(CARGO) test --test dataplane -- --nocapture
