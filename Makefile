# podcrew — the commands users type. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= $(shell command -v uv 2>/dev/null || echo "$(HOME)/.local/bin/uv")
PYTEST_ARGS ?=

.PHONY: help setup test-deps run up test test-unit test-integration test-containers lint format clean images base-image chart-test kind-up kind-down deploy e2e dev bench eval

BASE_IMAGE ?= python:3.12-slim
IMAGE_TAG ?= dev

help: ## Show this help
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

$(UV):
	python3 -m pip install --user --quiet uv || python3 -m pip install --user --quiet --break-system-packages uv

# checkov (the chart's policy checks, tests/chart/test_checkov.py) runs in its own tool
# environment: its pins clash with the workspace's. Keep in step with CHECKOV there.
CHECKOV ?= checkov==3.3.30

setup: $(UV) ## Install uv if missing, sync every workspace member from uv.lock, fetch checkov
	$(UV) sync --all-packages --frozen
	$(UV) tool run --from $(CHECKOV) checkov --version >/dev/null

run: setup ## Start the whole stack on loopback, ask the demo question, show progress, stop
	$(UV) run --frozen podcrew demo

up: setup ## Run the stack in the foreground until Ctrl-C
	$(UV) run --frozen podcrew up

test-deps: ## Install what the tests need beyond PyPI when missing: Prometheus, a Docker daemon (apt, as root or via sudo)
	scripts/ensure-test-deps.sh

# Run on a Redis Cluster too (tests/integration/conftest.py, PODCREW_TEST_REDIS): runs, events,
# cancel, limits, budgets, idempotency and webhooks.
CLUSTER_TESTS = tests/integration/test_runs.py tests/integration/test_guardrails.py tests/integration/test_webhooks.py

test: setup test-deps ## Run every test (unit, then integration with real redis-server and services), then the core integration tests on a Redis Cluster
	$(UV) run --frozen pytest $(PYTEST_ARGS)
	PODCREW_TEST_REDIS=cluster $(UV) run --frozen pytest $(CLUSTER_TESTS) $(PYTEST_ARGS)

test-cluster: setup ## Only the core integration tests, on a Redis Cluster of six nodes
	PODCREW_TEST_REDIS=cluster $(UV) run --frozen pytest $(CLUSTER_TESTS) $(PYTEST_ARGS)

test-unit: setup ## Only the fast unit tests
	$(UV) run --frozen pytest -m "not integration and not containers" $(PYTEST_ARGS)

test-integration: setup test-deps ## Only the integration tests
	$(UV) run --frozen pytest -m integration $(PYTEST_ARGS)

test-containers: setup test-deps ## Build the images and run the whole pipeline as containers
	$(UV) run --frozen pytest -m containers $(PYTEST_ARGS)

images: ## Build the service images (BASE_IMAGE=podcrew/base:bookworm where no registry is reachable)
	scripts/build-images.sh --base-image $(BASE_IMAGE) --tag $(IMAGE_TAG)

base-image: ## Build the air-gapped Python base from Debian packages (debootstrap + docker import)
	scripts/build-base-image.sh

chart-test: setup ## Lint, install (recorded) and validate the Helm chart for Kubernetes 1.31-1.35; no cluster needed
	$(UV) run --frozen pytest tests/chart $(PYTEST_ARGS)

kind-up: ## Create the local kind cluster (k8s/kind/cluster.yaml)
	kind get clusters | grep -qx podcrew || kind create cluster --config k8s/kind/cluster.yaml

kind-down: ## Delete the local kind cluster
	kind delete cluster --name podcrew

deploy: ## Install or upgrade podcrew on the current cluster with the kind values
	helm upgrade --install podcrew charts/podcrew -n podcrew --create-namespace -f k8s/examples/values-kind.yaml --wait

e2e: ## On kind with add-ons: install, ask a question, check scaling reacts to load (needs Docker, kind, helm, registry access)
	scripts/e2e.sh

dev: ## Build, load and deploy to the kind cluster on every change (skaffold dev -p kind)
	skaffold dev -p kind

eval: setup ## Score the golden set's reports on the offline model and gate on eval/baseline.json (docs/evaluation.md)
	$(UV) run --frozen podcrew eval eval/golden.jsonl --baseline eval/baseline.json --out eval-results

bench: setup ## DESIGN.md's budgets in one run: the floor, the stack, the tutorial baseline and a LangGraph peer (~6-9 min); results in bench/results/
	$(UV) run --frozen python -m bench $(BENCH_ARGS)

lint: setup ## ruff, mypy --strict and the import-linter contracts
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .
	$(UV) run --frozen mypy packages/podcrew-core/src packages/podcrew-simulator/src packages/podcrew-cli/src packages/podcrew-kb/src packages/podcrew-eval/src services/orchestrator/src services/research-agent/src services/writer-agent/src services/operator/src
	$(UV) run --frozen lint-imports

format: setup ## Apply ruff's fixes and formatting
	$(UV) run --frozen ruff check --fix .
	$(UV) run --frozen ruff format .

clean: ## Remove caches and the virtual environment
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
