# Rekisteri: the one list of commands. CI calls `make test` (see .ci/run).
# Everything installs itself on first use: the Python env (uv, cached), Kafka jars (Maven Central),
# SeaweedFS (built with Go), PostgreSQL (Debian packages). Downloads are cached outside the checkout.

SHELL := /bin/bash
.DEFAULT_GOAL := help

CACHE ?= $(or $(REKISTERI_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/rekisteri)
UV_VERSION := 0.13.8
UV := $(CACHE)/uv-$(UV_VERSION)/bin/uv
PY := .venv/bin/python
export UV_PYTHON_DOWNLOADS := never
export UV_PYTHON := python3.11
NATIVE := deploy/native

.PHONY: help install run stop test test-unit lint fmt contracts bench \
        infra-up infra-down infra-status clean

help: ## List the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(UV):
	@echo "[make] installing uv $(UV_VERSION) into $(CACHE)"
	@python3 -m venv $(CACHE)/uv-$(UV_VERSION)
	@$(CACHE)/uv-$(UV_VERSION)/bin/pip install -q uv==$(UV_VERSION)

.venv/.synced: $(UV) pyproject.toml uv.lock
	@$(UV) sync --frozen --quiet
	@touch $@

install: .venv/.synced ## Install the Python environment and the infrastructure binaries
	@bash $(NATIVE)/infra.sh install

infra-up: .venv/.synced ## Install (if missing), start and provision Kafka, PostgreSQL, SeaweedFS
	@bash $(NATIVE)/infra.sh up

infra-down: ## Stop the infrastructure (state is kept in .rekisteri/)
	@bash $(NATIVE)/infra.sh down

infra-status: ## Show what is running
	@bash $(NATIVE)/infra.sh status
	@bash $(NATIVE)/run.sh status

run: .venv/.synced ## Run the whole system on this machine (Ctrl-C stops everything)
	@bash $(NATIVE)/run.sh run

stop: ## Stop a `make run` from another shell
	@bash $(NATIVE)/run.sh stop

test: .venv/.synced ## Start what is needed, run the whole suite against the real servers, stop
	@bash $(NATIVE)/test.sh

test-unit: .venv/.synced ## Only the fast unit tier (no network)
	@$(PY) -m pytest tests/unit -q

lint: .venv/.synced ## ruff (lint + format check) and mypy strict
	@.venv/bin/ruff check .
	@.venv/bin/ruff format --check .
	@.venv/bin/mypy

fmt: .venv/.synced ## Format and autofix
	@.venv/bin/ruff format .
	@.venv/bin/ruff check --fix .

contracts: .venv/.synced ## Regenerate JSON Schemas and AsyncAPI documents under contracts/
	@$(PY) -m contracts.generate

bench: .venv/.synced ## Benchmarks against raw-client baselines (needs the infrastructure)
	@bash $(NATIVE)/bench.sh

clean: infra-down ## Stop and delete all local state (data, logs, generated secrets)
	@rm -rf .rekisteri
