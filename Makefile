# ctvoco developer commands. Everything runs inside ./.venv, created on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# PyTorch build to install first. requirements/lock.txt pins the same versions (make lock);
# overriding TORCH needs a new lock too.
TORCH ?= torch==2.14.1 torchvision==0.29.1
# Pinned versions of the tested environment (core + dev + docs), and of the image's (core).
LOCK := requirements/lock.txt
IMAGE_LOCK := requirements/image.txt
LOCK_TARGET := --python-version 3.11 --python-platform x86_64-manylinux_2_28
PYTEST_ARGS ?=

.PHONY: install lock demo test test-slow lint docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel

$(VENV)/.installed: pyproject.toml $(LOCK) | $(BIN)/python
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) $(TORCH)
	$(BIN)/python -m pip install --quiet --constraint $(LOCK) -e ".[dev,docs]"
	touch $@

## install: create .venv and install ctvoco with its dev and docs extras, at the locked versions
install: $(VENV)/.installed

$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "uv>=0.5"

## lock: re-pin requirements/lock.txt and requirements/image.txt from pyproject.toml and TORCH
## (Python 3.11, Linux x86_64; add --upgrade through UV_ARGS to move to newer releases)
lock: | $(BIN)/uv
	printf '%s\n' $(TORCH) > requirements/torch.in
	$(BIN)/uv pip compile pyproject.toml requirements/torch.in --extra dev --extra docs \
		$(LOCK_TARGET) --custom-compile-command "make lock" --quiet $(UV_ARGS) \
		--output-file $(LOCK)
	$(BIN)/uv pip compile pyproject.toml requirements/torch.in --constraint $(LOCK) \
		$(LOCK_TARGET) --custom-compile-command "make lock" --quiet $(UV_ARGS) \
		--output-file $(IMAGE_LOCK)

## demo: the whole pipeline on a synthetic cohort (CPU), results table and report in ./demo
demo: install
	$(BIN)/ctvoco-demo --root demo

## lint: ruff (lint and format) on the whole tree, and the import contract of the floors (docs/architecture.md)
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
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
