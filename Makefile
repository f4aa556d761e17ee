# Sluice: the same targets locally and in CI.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: help install packages up down status test lint fmt typecheck bench chaos sizing clean

help:
	@echo "make up       start the whole local stack (installs what is missing)"
	@echo "make test     lint + every test (starts its own stack on another port base)"
	@echo "make down     stop the local stack (exactly the processes it started)"
	@echo "make status   show the stack's processes and URLs"
	@echo "make bench    the overload benchmark (Sluice vs a plain deployment)"
	@echo "make lint     ruff, ruff format --check, mypy strict on service/"
	@echo "make fmt      ruff format and autofix"

# Debian packages: PostgreSQL, PgBouncer, nginx, Prometheus and exporters.
packages:
	@bash deploy/install-packages.sh

# Python dependencies into .venv, from the lock file.
$(STAMP): requirements-dev.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock
	@touch $(STAMP)

install: packages $(STAMP)

up: install
	$(PY) -m deploy.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m deploy.stack down; else echo "nothing to stop"; fi

status: $(STAMP)
	$(PY) -m deploy.stack status

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

fmt: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: install lint
	$(PY) -m pytest

bench: install
	$(PY) -m bench

sizing: $(STAMP)
	$(PY) -m service.sizing --format table

clean: down
	rm -rf .sluice .sluice-* bench/results
