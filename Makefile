# The two commands: `make demo` and `make test`. Both set up what is missing first.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PVCCTL := $(BIN)/pvcctl

.PHONY: setup host venv demo demo-down test test-packaging lint unit integration e2e bench clean chaos

setup: host venv

host:
	@bash scripts/setup-host.sh

venv: $(STAMP)

$(STAMP): pyproject.toml | host
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# compat: a plain path in a .pth file. The default editable mode imports a finder
	# (pathlib, importlib.util, fnmatch, re) at the start of every Python process of this
	# venv: some 20 ms of CPU on each pvcctl <TAB> (bench/cli_startup.py).
	$(BIN)/python -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

demo: setup
	$(PVCCTL) local up --nodes 3
	$(PVCCTL) apply -f manifests/
	$(PVCCTL) wait vm --all --for=condition=Ready --timeout=120s
	$(PVCCTL) get nodes
	$(PVCCTL) get vms

demo-down: venv
	$(PVCCTL) local down

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy schemas zkstore hypervisor controllers api cli localcluster bench
	$(BIN)/lint-imports

# Two workers: each module on one worker, host-wide ones together (tests/conftest.py). The 30
# slowest tests are listed at the end, to keep the 20-minute budget in view.
TEST_WORKERS ?= 2
# The wheel build and install test (marked packaging) runs in test-packaging: 15-20 s of
# pip and fresh imports that make test's time budget has no room for.
test: setup lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not packaging" --durations=30 tests

test-packaging: setup
	$(BIN)/python -m pytest -q -m packaging tests

unit: venv
	$(BIN)/python -m pytest -q tests/unit

integration: venv
	$(BIN)/python -m pytest -q tests/integration

e2e: venv
	$(BIN)/python -m pytest -q tests/e2e

# Randomized fault trials (tests/chaos): `make chaos TRIALS=N [SEED=S] [ZK_MEMBERS=3]` (3:
# against a ZooKeeper ensemble, with member loss among the faults), seeds printed, each failure
# printed with the one command that replays it.
TRIALS ?= 200
ZK_MEMBERS ?= 1
chaos: setup
	$(BIN)/python -m tests.chaos --trials $(TRIALS) $(if $(SEED),--seed $(SEED)) --zk-members $(ZK_MEMBERS)

bench: setup
	$(BIN)/python bench/apply_latency.py

clean: demo-down
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
