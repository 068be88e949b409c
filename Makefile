# ctvoco developer commands. Everything runs inside ./.venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch build to install first (override e.g. TORCH="torch torchvision" for the newest).
TORCH ?= torch==2.14.1 torchvision==0.29.1
PYTEST_ARGS ?=

.PHONY: install demo test test-slow lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev,docs]"
	touch $@

## install: create .venv and install ctvoco with its dev and docs extras
install: $(VENV)/.installed

## demo: the whole pipeline on a synthetic cohort (CPU), results table and report in ./demo
demo: install
	$(BIN)/ctvoco-demo --root demo

## lint: ruff on the whole tree, and the import contract of the floors (docs/architecture.md)
lint: install
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache

## test: lint, then the default test suite (tests marked slow excluded)
test: lint
	$(BIN)/pytest $(PYTEST_ARGS)

## test-slow: only the slow end-to-end tests
test-slow: install
	$(BIN)/pytest -m slow $(PYTEST_ARGS)

## docs: build the documentation site (strict: warnings are errors)
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) site build dist .pytest_cache .ruff_cache
