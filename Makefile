# Stepwise. `make demo` and `make test` are the two commands a new machine needs;
# each installs what it uses (Python packages, Debian's prometheus, the Go-built
# control plane) and reuses it afterwards.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

UV_VERSION := 0.13.9
PYTHON ?= python3
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
UV := $(shell command -v uv 2>/dev/null || echo $(HOME)/.local/bin/uv)
VENV := .venv
RUN := $(VENV)/bin
export PYTHONPATH := $(CURDIR)/hack

.PHONY: help
help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# --- dependencies -------------------------------------------------------------------

$(UV):
	$(PYTHON) -m pip install --quiet --user "uv==$(UV_VERSION)" 2>/dev/null \
	  || $(PYTHON) -m pip install --quiet --break-system-packages --user "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) pyproject.toml uv.lock
	$(UV) sync --frozen --quiet
	touch $@

.PHONY: python-deps
python-deps: $(VENV)/.synced ## install the locked Python packages into .venv

.PHONY: prometheus
prometheus: ## install Debian's prometheus package if it is missing
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  $(SUDO) apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

.PHONY: control-plane
control-plane: ## build etcd, kube-apiserver, controller-manager, scheduler, kubectl, kwok (cached)
	@bash hack/cluster/build.sh >/dev/null

.PHONY: deps
deps: python-deps prometheus control-plane ## everything the tests and the demo need
	@bash hack/cluster/build-traefik.sh >/dev/null

# --- checks and tests ---------------------------------------------------------------

.PHONY: lint
lint: python-deps ## ruff, ruff format, mypy --strict, import contracts
	$(RUN)/ruff check .
	$(RUN)/ruff format --check .
	$(RUN)/mypy
	$(RUN)/lint-imports

.PHONY: test
test: deps lint ## the whole suite: lint, unit, integration and end-to-end tests
	$(RUN)/pytest

.PHONY: test-unit
test-unit: python-deps ## the pure tests only (no processes)
	$(RUN)/pytest tests/unit

.PHONY: fmt
fmt: python-deps ## format the code
	$(RUN)/ruff format .
	$(RUN)/ruff check --fix .

# --- local cluster ------------------------------------------------------------------

.PHONY: cluster-up
cluster-up: deps ## start the local control plane and Prometheus; prints the kubeconfig path
	$(RUN)/python -m localcluster up

.PHONY: cluster-down
cluster-down: python-deps ## stop what cluster-up started
	$(RUN)/python -m localcluster down

# --- generated files ----------------------------------------------------------------

.PHONY: crds
crds: python-deps ## regenerate the CRD YAML (deploy/crds, charts/stepwise/crds) from the models
	$(RUN)/python -m controller.api.crd

# --- demo ---------------------------------------------------------------------------

.PHONY: demo
demo: deps ## local cluster, Prometheus, demo app, controller: v2 promoted, v3 rolled back
	$(RUN)/python -m demodriver

# --- benchmarks (not part of make test) ---------------------------------------------

.PHONY: bench
bench: deps ## the benchmarks in bench/: each prints a table and writes bench/results/<name>.json
	$(RUN)/python -m bench.judge_simulation
	$(RUN)/python -m bench.rollback
	$(RUN)/python -m bench.overhead
	$(RUN)/python -m bench.burst
	$(RUN)/python -m bench.failover
	$(RUN)/python -m bench.scale

# --- packaging ----------------------------------------------------------------------

.PHONY: helm
helm: ## build Helm from its Go module into the binary cache (cached; the tests call it too)
	@bash hack/cluster/build-helm.sh >/dev/null

.PHONY: chart
chart: helm ## helm lint the chart and render it (cluster-wide and namespaced) to stdout
	@HELM=$$(bash hack/cluster/build-helm.sh); \
	  $$HELM lint charts/stepwise; \
	  $$HELM template stepwise charts/stepwise --namespace stepwise-system; \
	  $$HELM template stepwise charts/stepwise --namespace stepwise-system --set 'watchNamespaces={team-a}'

.PHONY: test-packaging
test-packaging: deps ## chart, kustomize base, Dockerfile, dashboard and least-privilege RBAC tests
	$(RUN)/pytest tests/unit/test_dockerfile.py tests/unit/test_grafana_dashboard.py tests/integration/test_packaging.py

.PHONY: image
image: ## build the controller image (needs Docker; the tests do not build it)
	docker build -t stepwise:$$(sed -nE 's/^version = "(.*)"/\1/p' pyproject.toml) .
