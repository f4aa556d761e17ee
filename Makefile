# Sluice: the same targets locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install packages test-packages up down status test lint fmt bench sizing sizing-staging sizing-k8s-staging grafana clean

help:
	@echo "make up       start the whole local stack (installs what is missing)"
	@echo "make test     lint + every test (starts its own stack on another port base)"
	@echo "make down     stop the local stack (exactly the processes it started)"
	@echo "make status   show the stack's processes and URLs"
	@echo "make clean    stop and remove every local stack's state (and database directory)"
	@echo "make bench    the overload benchmark: Sluice vs a plain deployment, 20 clients (docs/benchmark.md)"
	@echo "              BENCH_ARGS=--one-core: each deployment on one core; \"--baseline REV\": REV's stack beside this code"
	@echo "make lint     ruff, ruff format --check, mypy strict, deptry (every dependency imported)"
	@echo "make fmt      ruff format and autofix"

# Debian packages: Python, PostgreSQL, PgBouncer, nginx (with njs), Prometheus,
# Alertmanager and the exporters.
packages:
	@bash deploy/install-packages.sh

# And what only the tests use: chromium, for the local dashboards' browser test.
test-packages:
	@bash deploy/install-packages.sh --test

# Python dependencies into .venv, from the lock file (python3 and its venv
# module come from `packages` on a fresh machine).
$(STAMP): requirements-dev.lock | packages
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	@touch $(STAMP)

install: packages $(STAMP)

up: install
	$(PY) -m deploy up

down:
	@if [ -x $(PY) ]; then $(PY) -m deploy down; else echo "nothing to stop"; fi

status: $(STAMP)
	$(PY) -m deploy status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/deptry .

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install test-packages lint
	$(PY) -m pytest

# BENCH_ARGS: options of python -m bench, e.g. BENCH_ARGS=--one-core or "--baseline dccb707".
bench: install
	$(PY) -m bench $(BENCH_ARGS)

sizing: $(STAMP)
	$(PY) -m service.sizing --format table

# The compose and k8s deployments cannot compute their limits, so they load a
# generated env file; tests/config fails when it drifts from service/sizing.py.
STAGING_REPLICAS ?= 2
STAGING_CPU_CORES ?= 2
STAGING_DB_BUDGET ?= 40
K8S_MAX_REPLICAS ?= 6
define sizing_env
	@{ sed '/^SLUICE_REPLICAS=/,$$d' $(1); \
	   echo "SLUICE_REPLICAS=$(2)"; echo "SLUICE_CPU_CORES=$(STAGING_CPU_CORES)"; \
	   echo "SLUICE_DB_CONNECTION_BUDGET=$(STAGING_DB_BUDGET)"; \
	   echo "# Derived (python -m service.sizing --replicas $(2) --cpu-cores $(STAGING_CPU_CORES) --db-connection-budget $(STAGING_DB_BUDGET)):"; \
	   $(PY) -m service.sizing --replicas $(2) --cpu-cores $(STAGING_CPU_CORES) --db-connection-budget $(STAGING_DB_BUDGET); \
	 } > $(1).tmp && mv $(1).tmp $(1)
endef

sizing-staging: $(STAMP)
	$(call sizing_env,deploy/sizing.env,$(STAGING_REPLICAS))

sizing-k8s-staging: $(STAMP)
	$(call sizing_env,deploy/k8s/overlays/staging/sizing.env,$(K8S_MAX_REPLICAS))

# The Grafana JSON and the local stack's console pages, from grafana/generate.py.
grafana: $(STAMP)
	$(PY) grafana/generate.py

# Every .sluice* stack of this checkout: stopped, then its state directory and
# (as root) its database directory under /var/lib/sluice removed.
clean:
	@if [ -x $(PY) ]; then $(PY) -m deploy clean --all; else rm -rf .sluice .sluice-*; fi
	rm -rf bench/results
