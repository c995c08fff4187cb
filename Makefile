# The README's two commands: `make demo` and `make test`. Both set everything up on a fresh
# machine (a .venv with the pinned stack) before they run.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
PY ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DB ?= data/tarq.duckdb
PRESET ?= small
SEED ?= 7

export DO_NOT_TRACK := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export MLFLOW_DISABLE_TELEMETRY := true
export GX_ANALYTICS_ENABLED := false
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test lint clean-data

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' 2>&1 | { grep -v 'is ignored: it is neither' || true; }
	$(BIN)/python -c "import torch, duckdb, faiss, mlflow, prefect, great_expectations, tarq" 
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/tarq demo-data --db $(DB) --preset $(PRESET) --seed $(SEED) --if-missing
	$(BIN)/tarq validate --db $(DB) --run-date latest

test: install
	$(BIN)/ruff check tarq flows tests benchmarks scripts
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: install
	$(BIN)/ruff check tarq flows tests benchmarks scripts
	$(BIN)/ruff format --check tarq flows tests benchmarks scripts

clean-data:
	rm -rf data/ gx/ outputs/
