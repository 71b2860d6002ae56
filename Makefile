# Everything goes through deploy/install.sh first: it is idempotent and silent (and takes well
# under a second) when the machine is already set up, so every target can afford it.
SHELL := /bin/bash
.DEFAULT_GOAL := test

VENV   := .venv
PYTHON := $(VENV)/bin/python
# Further checks that run between mypy and pytest, e.g. EXTRA_CHECKS='$(PYTHON) -m some.check'.
EXTRA_CHECKS ?=

.PHONY: install test lint demo clean

install:
	@deploy/install.sh

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache

test: lint
	$(if $(strip $(EXTRA_CHECKS)),$(EXTRA_CHECKS),@true)
	$(VENV)/bin/pytest -q --durations=40

demo: install
	@if [ -f sim/demo.py ]; then \
	  exec $(PYTHON) -m sim.demo; \
	else \
	  echo "demo not built yet: sim/demo.py does not exist (it will run: $(PYTHON) -m sim.demo)"; \
	fi

# Removes run-time data and caches; keeps .venv (make test re-uses it).
clean:
	rm -rf var .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache .grimp_cache tests/artifacts build *.egg-info
	find . -path ./.venv -prune -o -type d -name __pycache__ -exec rm -rf {} +
